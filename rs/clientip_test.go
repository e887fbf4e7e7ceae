package rs

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

// TestClientIPAttacks exercises ClientIP from the attacker's side: a
// client choosing its address through X-Forwarded-For, directly or
// behind a trusted proxy.
func TestClientIPAttacks(t *testing.T) {
	trusted := mustPrefixes("10.0.0.0/8", "2001:db8:1::/48")
	for _, tc := range []struct {
		name   string
		remote string
		xff    []string // one X-Forwarded-For field each
		want   string   // "" = the zero Addr
		peerOK bool     // TrustedPeer
	}{
		{"no header", "203.0.113.9:1234", nil, "203.0.113.9", false},
		{"spoofed by an untrusted peer", "203.0.113.9:1234", []string{"198.51.100.1"}, "203.0.113.9", false},
		{"spoofed trusted address by an untrusted peer", "203.0.113.9:1234", []string{"10.0.0.1"}, "203.0.113.9", false},
		{"spoofed in several fields by an untrusted peer", "203.0.113.9:1234", []string{"198.51.100.1", "198.51.100.2"}, "203.0.113.9", false},
		{"through a trusted proxy", "10.1.2.3:1234", []string{"198.51.100.1"}, "198.51.100.1", true},
		{"client-forged entries left of the proxy's", "10.1.2.3:1234", []string{"1.2.3.4, 5.6.7.8, 198.51.100.1"}, "198.51.100.1", true},
		{"two proxies", "10.1.2.3:1234", []string{"1.2.3.4, 198.51.100.1, 10.9.9.9"}, "198.51.100.1", true},
		{"a forged second field does not hide the proxy's entry", "10.1.2.3:1234", []string{"198.51.100.1", "10.9.9.9"}, "198.51.100.1", true},
		{"fields in order, right to left", "10.1.2.3:1234", []string{"1.2.3.4", "198.51.100.1, 10.9.9.9"}, "198.51.100.1", true},
		{"client forges a trusted address", "10.1.2.3:1234", []string{"10.6.6.6, 198.51.100.1"}, "198.51.100.1", true},
		{"all hops trusted", "10.1.2.3:1234", []string{"10.5.5.5, 10.9.9.9"}, "10.5.5.5", true},
		{"garbage from the proxy", "10.1.2.3:1234", []string{"garbage"}, "10.1.2.3", true},
		{"garbage left of a trusted hop", "10.1.2.3:1234", []string{"198.51.100.1, garbage, 10.9.9.9"}, "10.9.9.9", true},
		{"empty hop", "10.1.2.3:1234", []string{"198.51.100.1, , 10.9.9.9"}, "10.9.9.9", true},
		{"trailing comma", "10.1.2.3:1234", []string{"198.51.100.1,"}, "10.1.2.3", true},
		{"empty field", "10.1.2.3:1234", []string{""}, "10.1.2.3", true},
		{"address with port", "10.1.2.3:1234", []string{"198.51.100.1:4711"}, "10.1.2.3", true},
		{"bracketed IPv6", "10.1.2.3:1234", []string{"[2001:db8::1]"}, "10.1.2.3", true},
		{"zoned IPv6", "10.1.2.3:1234", []string{"fe80::1%eth0"}, "10.1.2.3", true},
		{"host name", "10.1.2.3:1234", []string{"evil.example"}, "10.1.2.3", true},
		{"IPv6 client through a trusted proxy", "10.1.2.3:1234", []string{" 2001:db8:2::7 "}, "2001:db8:2::7", true},
		{"IPv6 trusted proxy", "[2001:db8:1::5]:443", []string{"198.51.100.1"}, "198.51.100.1", true},
		{"IPv4-mapped peer is unmapped", "[::ffff:203.0.113.9]:1", nil, "203.0.113.9", false},
		{"IPv4-mapped trusted peer", "[::ffff:10.1.2.3]:1", []string{"198.51.100.1"}, "198.51.100.1", true},
		{"IPv4-mapped hop is unmapped", "10.1.2.3:1234", []string{"::ffff:198.51.100.1"}, "198.51.100.1", true},
		{"IPv4-mapped trusted hop", "10.1.2.3:1234", []string{"198.51.100.1, ::ffff:10.9.9.9"}, "198.51.100.1", true},
		{"peer without port", "203.0.113.9", nil, "203.0.113.9", false},
		{"peer not an address", "@", []string{"198.51.100.1"}, "", false},
		{"no peer", "", []string{"198.51.100.1"}, "", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		got := ClientIP(r, trusted)
		want := netip.Addr{}
		if tc.want != "" {
			want = netip.MustParseAddr(tc.want)
		}
		if got != want {
			t.Errorf("%s: ClientIP = %v, want %v", tc.name, got, want)
		}
		if TrustedPeer(r, trusted) != tc.peerOK {
			t.Errorf("%s: TrustedPeer = %v", tc.name, !tc.peerOK)
		}
	}
	// No trusted proxies: always the peer.
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.1.2.3:1"
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	if got := ClientIP(r, nil); got != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("no trusted proxies: %v", got)
	}
}
