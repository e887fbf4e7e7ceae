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
