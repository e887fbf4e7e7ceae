package server_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

// A native app or CLI registers http://127.0.0.1/cb and listens on
// whatever port it gets: the authorization endpoint accepts any port on a
// loopback IP redirect URI (RFC 8252 §7.3), the token endpoint wants the
// very redirect_uri of the request, and nothing else about the URI may
// differ.
func TestLoopbackRedirectAnyPort(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "cli", Name: "CLI", AuthMethod: "none",
			RedirectURIs: []string{"http://127.0.0.1/cb", "http://[::1]/cb"},
			GrantTypes:   []string{"authorization_code", "refresh_token"}, Scopes: []string{"openid", "offline_access"}})
	}})
	s := newSigner(t)
	const redirect = "http://127.0.0.1:53682/cb"
	verifier, challenge := wardtest.PKCE()
	b := in.Browser()
	in.Clock.Advance(31 * time.Second)
	loc := in.Login(t, b, in.AuthorizeURL("cli", challenge, url.Values{"redirect_uri": {redirect}, "scope": {"openid offline_access"}}),
		"alice", wardtest.AlicePassword, in.TOTP(t, 0))
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirect || loc.Query().Get("code") == "" {
		t.Fatalf("redirected to %s", loc)
	}
	redeem := func(code, verifier, redirect string) result {
		return do(t, in, call{path: "/token", signer: s, form: url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"code_verifier": {verifier}, "redirect_uri": {redirect}, "client_id": {"cli"}}})
	}
	if r := redeem(loc.Query().Get("code"), verifier, redirect); r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("redeem with the request's redirect_uri: %d %s", r.Status, r.Body)
	}

	// Another port at the token endpoint is another redirect URI.
	verifier, challenge = wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	loc = in.Login(t, in.Browser(), in.AuthorizeURL("cli", challenge, url.Values{"redirect_uri": {"http://[::1]:40001/cb"}, "scope": {"openid"}}),
		"alice", wardtest.AlicePassword, in.TOTP(t, 0))
	if loc.Host != "[::1]:40001" {
		t.Fatalf("IPv6 loopback: redirected to %s", loc)
	}
	wantError(t, redeem(loc.Query().Get("code"), verifier, "http://[::1]:40002/cb"), 400, "invalid_grant")

	// Refused at the authorization endpoint, shown to the user (never
	// redirected): other path, query, host, scheme, fragment, not a port.
	for _, bad := range []string{
		"http://127.0.0.1:53682/other", "http://127.0.0.1:53682/cb?x=1", "http://127.0.0.2:53682/cb",
		"https://127.0.0.1:53682/cb", "http://localhost:53682/cb", "http://127.0.0.1:53682/cb#f", "http://127.0.0.1:0/cb",
	} {
		_, challenge := wardtest.PKCE()
		resp, err := b.Get(in.AuthorizeURL("cli", challenge, url.Values{"redirect_uri": {bad}}))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.HasPrefix(resp.Header.Get("Location"), "http://127.0.0.1") {
			t.Errorf("redirect_uri %s: %d, Location %q", bad, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

// An https issuer gets Strict-Transport-Security on every response (RFC
// 6797), whether Ward or a proxy in front of it terminates TLS; a
// plain-http development issuer does not.
func TestStrictTransportSecurity(t *testing.T) {
	for _, tc := range []struct {
		issuer string
		want   string
	}{{"https://id.example.com", "max-age=31536000"}, {"", ""}} {
		in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
			if tc.issuer != "" {
				c.Issuer = tc.issuer
			}
		}})
		for _, path := range []string{"/healthz", "/.well-known/openid-configuration", "/authorize?client_id=nope"} {
			resp, err := http.Get(in.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Strict-Transport-Security"); got != tc.want {
				t.Errorf("issuer %q, %s: Strict-Transport-Security %q, want %q", tc.issuer, path, got, tc.want)
			}
		}
	}
}

// /livez answers while the process serves; /healthz also needs the store.
func TestLivezHealthz(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	for _, path := range []string{"/livez", "/healthz"} {
		resp, err := http.Get(in.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	if err := in.App.Store.Close(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/livez": http.StatusOK, "/healthz": http.StatusServiceUnavailable} {
		resp, err := http.Get(in.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("store closed, %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
