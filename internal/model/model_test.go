package model

import "testing"

func TestAllowsRedirect(t *testing.T) {
	c := &Client{RedirectURIs: []string{
		"http://127.0.0.1/cb",
		"http://[::1]:8400/native?x=1",
		"http://localhost:9000/cb",
		"https://app.example/cb",
		"com.example.app:/oauth2redirect",
	}}
	for _, tc := range []struct {
		uri  string
		want bool
	}{
		{"http://127.0.0.1/cb", true},
		{"http://127.0.0.1:51234/cb", true}, // RFC 8252 §7.3: any port
		{"http://127.0.0.1:1/cb", true},
		{"http://[::1]:8400/native?x=1", true},
		{"http://[::1]:61000/native?x=1", true},
		{"http://[::1]/native?x=1", true},
		{"https://app.example/cb", true},
		{"com.example.app:/oauth2redirect", true},
		{"http://localhost:9000/cb", true},

		{"http://localhost:9001/cb", false},         // localhost: exact only
		{"http://127.0.0.1:51234/cb/../x", false},   // path must match
		{"http://127.0.0.1:51234/cb?next=/", false}, // query must match
		{"http://127.0.0.1:51234/CB", false},        // case of the path
		{"http://127.0.0.2:51234/cb", false},        // another loopback address is another host
		{"http://127.0.0.1:0/cb", false},            // not a port
		{"http://127.0.0.1:99999/cb", false},        // not a port
		{"http://127.0.0.1:080/cb", false},          // not canonical
		{"http://127.0.0.1:+80/cb", false},          // not canonical
		{"http://127.0.0.1:51234/cb#frag", false},   // fragment
		{"https://127.0.0.1:51234/cb", false},       // scheme must match
		{"http://user@127.0.0.1:51234/cb", false},   // userinfo
		{"http://[::1]:61000/native?x=2", false},    // query
		{"http://127.0.0.1.attacker.example/cb", false},
		{"https://app.example:8443/cb", false}, // only loopback IPs get any port
		{"", false},
	} {
		if got := c.AllowsRedirect(tc.uri); got != tc.want {
			t.Errorf("AllowsRedirect(%q) = %v, want %v", tc.uri, got, tc.want)
		}
	}
}
