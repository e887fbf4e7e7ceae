package textclean

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"plain", 10, "plain"},
		{" a\x00b\nc\u0085d\t ", 10, "a b c d"},
		{"bad \xff\xfe utf8", 20, "bad    utf8"},
		{"héllo", 2, "h"}, // é is two bytes: not split
		{"héllo", 3, "hé"},
		{"日本語", 4, "日"},
		{"", 5, ""},
		{"abc", 0, ""},
	} {
		got := Clean(tc.in, tc.n)
		if got != tc.want {
			t.Errorf("Clean(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
		if !utf8.ValidString(got) || len(got) > tc.n {
			t.Errorf("Clean(%q, %d) = %q: invalid or too long", tc.in, tc.n, got)
		}
	}
}

func TestClip(t *testing.T) {
	if got := Clip("abc", -1); got != "" {
		t.Errorf("Clip with a negative bound: %q", got)
	}
	s := strings.Repeat("é", 100)
	for n := range 50 {
		if got := Clip(s, n); len(got) > n || !utf8.ValidString(got) || len(got) < n-1 {
			t.Errorf("Clip(%d): %q", n, got)
		}
	}
}

func FuzzClean(f *testing.F) {
	f.Add("a\x00b", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		got := Clean(s, n)
		if len(got) > n || !utf8.ValidString(got) || strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("Clean(%q, %d) = %q", s, n, got)
		}
	})
}
