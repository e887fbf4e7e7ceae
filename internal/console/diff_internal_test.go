package console

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// lcs is the length of a longest common subsequence (the reference).
func lcs(a, b []string) int {
	t := make([][]int, len(a)+1)
	for i := range t {
		t[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				t[i][j] = t[i+1][j+1] + 1
			} else {
				t[i][j] = max(t[i+1][j], t[i][j+1])
			}
		}
	}
	return t[0][0]
}

// TestLineDiff: the script turns a into b, numbers the lines right and
// is as short as any (checked against the LCS) on random inputs.
func TestLineDiff(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"a", "b", "c", "d", "{", "}", `"x": 1`}
	gen := func() []string {
		out := make([]string, rng.IntN(30))
		for i := range out {
			out[i] = words[rng.IntN(len(words))]
		}
		return out
	}
	for i := 0; i < 2000; i++ {
		a, b := gen(), gen()
		if i%3 == 0 {
			b = append(append([]string{}, a[:len(a)/2]...), gen()...)
		}
		d := lineDiff(a, b)
		var old, nw []string
		edits := 0
		for _, l := range d {
			switch l.Op {
			case ' ':
				old, nw = append(old, l.Text), append(nw, l.Text)
				if a[l.Old-1] != l.Text || b[l.New-1] != l.Text {
					t.Fatalf("line numbers wrong: %+v", l)
				}
			case '-':
				old = append(old, l.Text)
				edits++
				if a[l.Old-1] != l.Text {
					t.Fatalf("old line number wrong: %+v", l)
				}
			case '+':
				nw = append(nw, l.Text)
				edits++
				if b[l.New-1] != l.Text {
					t.Fatalf("new line number wrong: %+v", l)
				}
			}
		}
		if strings.Join(old, "\n") != strings.Join(a, "\n") || strings.Join(nw, "\n") != strings.Join(b, "\n") {
			t.Fatalf("diff of %q and %q does not rebuild them: %+v", a, b, d)
		}
		if want := len(a) + len(b) - 2*lcs(a, b); edits != want {
			t.Fatalf("diff of %q and %q: %d edits, the shortest has %d", a, b, edits, want)
		}
	}
	// Far apart: past maxEdits the old is removed and the new added.
	var a, b []string
	for i := 0; i < maxEdits+10; i++ {
		a, b = append(a, "a"+strings.Repeat("x", i%7)), append(b, "b")
	}
	if d := lineDiff(a, b); len(d) != len(a)+len(b) {
		t.Fatalf("far-apart diff: %d lines", len(d))
	}
}
