package detect

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIPList(t *testing.T) {
	l, err := ParseIPList(strings.NewReader("# Tor exits\n192.0.2.7\n\n198.51.100.0/24 # a range\n2001:db8::/32\n::ffff:203.0.113.9\n10.1.2.3/8\n"))
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"192.0.2.7": true, "192.0.2.8": false, "198.51.100.200": true, "2001:db8:1::1": true,
		"2001:db9::1": false, "203.0.113.9": true, "::ffff:192.0.2.7": true, "10.200.0.1": true, "11.0.0.1": false} {
		if got := l.Contains(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: %v, want %v", ip, got, want)
		}
	}
	if l.Len() != 5 || !l.ContainsString("192.0.2.7") || l.ContainsString("nonsense") || l.ContainsString("") {
		t.Errorf("len %d", l.Len())
	}
	var nilList *IPList
	if nilList.Contains(netip.MustParseAddr("192.0.2.7")) || nilList.Len() != 0 {
		t.Error("a nil list contains nothing")
	}
	for in, line := range map[string]string{"192.0.2.1\nfoo\n": "line 2", "192.0.2.0/33\n": "line 1", "\n\n" + strings.Repeat("1", 300) + "\n": "line 3"} {
		if _, err := ParseIPList(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), line) {
			t.Errorf("%q: %v, want an error naming %s", in[:min(len(in), 20)], err, line)
		}
	}
	p := filepath.Join(t.TempDir(), "deny.txt")
	if err := os.WriteFile(p, []byte("192.0.2.0/24\nbad entry\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIPList(p); err == nil || !strings.Contains(err.Error(), "deny.txt") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("load: %v", err)
	}
	if _, err := LoadIPList(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file loads")
	}
}
