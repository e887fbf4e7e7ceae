package rs

import (
	"net/http"
	"strings"
	"testing"
)

// Strict location: a token carrying ipr is accepted only from inside
// those ranges; elsewhere (or with ranges that do not parse) the answer is
// a claims challenge for a newer token.
func TestStrictLocation(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.TrustedProxies = mustPrefixes("192.0.2.1/32") })
	ipr := func(ranges ...any) func(map[string]any) {
		return func(c map[string]any) { c["ipr"] = append([]any{}, ranges...) }
	}
	from := func(tok, peer, xff string) *http.Request {
		r := f.dpopRequest(tok)
		r.RemoteAddr = peer + ":4711"
		if strings.Contains(peer, ":") {
			r.RemoteAddr = "[" + peer + "]:4711"
		}
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		return r
	}
	for _, tc := range []struct {
		name       string
		tok        string
		peer, xff  string
		wantStatus int
	}{
		{"no ipr claim, anywhere", f.token(), "198.51.100.7", "", 200},
		{"inside an IPv4 range", f.token(ipr("203.0.113.0/24", "2001:db8:100::/48")), "203.0.113.9", "", 200},
		{"inside the IPv6 range", f.token(ipr("203.0.113.0/24", "2001:db8:100::/48")), "2001:db8:100::5", "", 200},
		{"IPv4-mapped IPv6 peer", f.token(ipr("203.0.113.0/24")), "::ffff:203.0.113.9", "", 200},
		{"outside", f.token(ipr("203.0.113.0/24")), "198.51.100.7", "", 401},
		{"behind the trusted proxy, client inside", f.token(ipr("203.0.113.0/24")), "192.0.2.1", "203.0.113.50", 200},
		{"behind the trusted proxy, client outside", f.token(ipr("203.0.113.0/24")), "192.0.2.1", "198.51.100.7", 401},
		{"spoofed forwarded header from an untrusted peer", f.token(ipr("203.0.113.0/24")), "198.51.100.7", "203.0.113.50", 401},
		{"ranges that do not parse allow nothing", f.token(ipr("not-a-range")), "203.0.113.9", "", 401},
		{"an empty list allows nothing", f.token(ipr()), "203.0.113.9", "", 401},
	} {
		w := f.serve(from(tc.tok, tc.peer, tc.xff))
		if w.Code != tc.wantStatus {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, w.Code, tc.wantStatus, w.Header().Get("WWW-Authenticate"))
			continue
		}
		if tc.wantStatus == 401 {
			c, ok := ParseClaimsChallenge(w.Header())
			if !ok || c.Error != CodeInsufficientClaims || !strings.Contains(string(c.Claims), `"nbf"`) {
				t.Errorf("%s: challenge %q", tc.name, w.Header().Values("WWW-Authenticate"))
			}
			if nbf, ok := c.RequiredNotBefore(); !ok || !nbf.Equal(f.clk.Now().Truncate(1e9)) {
				t.Errorf("%s: required nbf %v", tc.name, nbf)
			}
		}
	}
}
