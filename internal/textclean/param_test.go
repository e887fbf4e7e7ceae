package textclean

import (
	"net/url"
	"strings"
	"testing"
)

func TestValidParam(t *testing.T) {
	for _, v := range []string{"", "u-1", "0f8e5c1e-8d47-4c8b-9a55-3a1b2b6c7d8e", "Jürgen", "日本", "a b", strings.Repeat("x", MaxPathID)} {
		if !ValidParam(v, MaxPathID) {
			t.Errorf("%q refused", v)
		}
	}
	for _, v := range []string{"a\x00b", "\x00", "a\nb", "a\tb", "\x7f", "a\u0085b", "\xff", "a\xc3", strings.Repeat("x", MaxPathID+1)} {
		if ValidParam(v, MaxPathID) {
			t.Errorf("%q accepted", v)
		}
	}
	if k, bad := BadQuery(url.Values{"user_id": {"u1"}, "q": {"ok", "b\x00d"}}); !bad || k != "q" {
		t.Errorf("BadQuery: %q %v", k, bad)
	}
	if _, bad := BadQuery(url.Values{"a\x00": {"x"}}); !bad {
		t.Error("a bad parameter name passed")
	}
	if _, bad := BadQuery(url.Values{"user_id": {"u1"}, "comment": {"two\nlines\twith a tab\r\n"}}); bad {
		t.Error("a good query refused")
	}
	if _, bad := BadQuery(url.Values{"comment": {"a\x00b"}}); !bad {
		t.Error("a NUL in free text passed")
	}
}

func TestPrintableID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"u-1", true},
		{"192.0.2.1", true},
		{"2001:db8::1", true},
		{strings.Repeat("a", MaxID), true},
		{strings.Repeat("a", MaxID+1), false},
		{"", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x00b", false},
		{"a\x7f", false},
		{"é", false},
	} {
		if got := PrintableID(tc.in); got != tc.want {
			t.Errorf("PrintableID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
