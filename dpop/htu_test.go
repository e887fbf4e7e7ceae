package dpop

import (
	"net/url"
	"strings"
	"testing"
)

func TestNormalizeHTU(t *testing.T) {
	tests := []struct {
		in, want string // want "" = error
	}{
		{"https://server.example.com/token", "https://server.example.com/token"},
		{"HTTPS://Server.Example.COM/token", "https://server.example.com/token"},
		{"https://server.example.com:443/token", "https://server.example.com/token"},
		{"https://server.example.com:0443/token", "https://server.example.com/token"},
		{"http://server.example.com:80/token", "http://server.example.com/token"},
		{"http://server.example.com:443/token", "http://server.example.com:443/token"},
		{"https://server.example.com:8443/token", "https://server.example.com:8443/token"},
		{"https://server.example.com:/token", "https://server.example.com/token"},
		{"https://server.example.com", "https://server.example.com/"},
		{"https://server.example.com?x", "https://server.example.com/"},
		{"https://server.example.com/token?x=1&y=2", "https://server.example.com/token"},
		{"https://server.example.com/token#frag", "https://server.example.com/token"},
		{"https://server.example.com/token#frag?x", "https://server.example.com/token"},
		{"https://server.example.com/%7euser/%41b%2fc%2Fd", "https://server.example.com/~user/Ab%2Fc%2Fd"},
		{"https://server.example.com/a%3ab", "https://server.example.com/a%3Ab"},
		{"https://server.example.com/a/./b/../c", "https://server.example.com/a/c"},
		{"https://server.example.com/a/%2E%2E/c", "https://server.example.com/c"},
		{"https://server.example.com/a/..", "https://server.example.com/"},
		{"https://server.example.com/../../x", "https://server.example.com/x"},
		{"https://server.example.com/a/.", "https://server.example.com/a/"},
		{"https://server.example.com/a b/é", "https://server.example.com/a%20b/%C3%A9"},
		{"https://server.example.com/a%20b/%c3%a9", "https://server.example.com/a%20b/%C3%A9"},
		{"https://server.example.com/API", "https://server.example.com/API"},
		{"https://[2001:DB8::1]:443/x", "https://[2001:db8::1]/x"},
		{"https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443/x"},
		{"https://%73erver.example.com/", "https://server.example.com/"},
		{"https://server.example.com./", "https://server.example.com./"},
		{"http://%00/", ""},
		{"http://a%2Fb/", ""},
		{"http://a%40b/", ""},
		{"http://%C3%A9.example/", ""},
		{"http://[fe80::1%25en0]/", ""},
		{"https://[2001:db8:0:0:0:0:0:1]/", "https://[2001:db8::1]/"},
		{"https://[::ffff:192.0.2.1]/", "https://[::ffff:192.0.2.1]/"},
		{"http://[]/", ""},
		{"http://[192.0.2.1]/", ""},
		{"http://[v1.x]/", ""},
		{"", ""},
		{"/token", ""},
		{"server.example.com/token", ""},
		{"ftp://server.example.com/", ""},
		{"javascript://server.example.com/", ""},
		{"https:///token", ""},
		{"https://user:pass@server.example.com/", ""},
		{"https://server.example.com:99999/", ""},
		{"https://server.example.com:-1/", ""},
		{"https://server.example.com:44a/", ""},
		{"https://server.example.com/%zz", ""},
		{"https://server.example.com/%4", ""},
		{"https://server.example.com/a\nb", ""},
		{"https://server.example.com/a\x00b", ""},
		{"https://serv er.example.com/", ""},
		{"https://server.example.com\\@evil.example/", ""},
		{"https://[::1/", ""},
		{"https://[::1]x/", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeHTU(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("NormalizeHTU(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeHTU(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// checkNormalized asserts the invariants of a normalised URL.
func checkNormalized(t *testing.T, in, out string) {
	t.Helper()
	if strings.ContainsAny(out, "?# ") {
		t.Fatalf("NormalizeHTU(%q) = %q contains query, fragment or space", in, out)
	}
	again, err := NormalizeHTU(out)
	if err != nil || again != out {
		t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, out, again, err)
	}
	u, err := url.Parse(out)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", out, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Host != strings.ToLower(u.Host) || u.User != nil {
		t.Fatalf("NormalizeHTU(%q) = %q: bad scheme/host %q %q", in, out, u.Scheme, u.Host)
	}
}

func TestNormalizeHTUInvariants(t *testing.T) {
	for _, in := range []string{"https://a/b", "HTTP://A:80", "https://a/%2e%2E/./x/", "https://a/é?x#y", "https://[::1]:0/"} {
		out, err := NormalizeHTU(in)
		if err != nil {
			t.Fatalf("NormalizeHTU(%q): %v", in, err)
		}
		checkNormalized(t, in, out)
	}
}
