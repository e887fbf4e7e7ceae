package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

// noAutoRevoke turns off the automatic response to user risk
// (risk.auto_revoke_level off) for tests of the token endpoint's own
// refusals: they replay credentials as a thief would and then check what
// the legitimate client can still do, which the detectors' response
// (every session of the user revoked: TestTokenTheftEndToEnd in
// internal/gateway) would otherwise decide for them. The detections are
// still recorded.
func noAutoRevoke(c *config.Config) { c.Risk.AutoRevokeLevel = "off" }

// newSigner returns a DPoP signer with a fresh P-256 key.
func newSigner(t testing.TB) *dpop.Signer {
	t.Helper()
	return wardtest.NewSigner(t)
}

// result is a decoded JSON response.
type result struct {
	Status int
	Header http.Header
	JSON   map[string]any
	Body   string
	signer *dpop.Signer // the key a test used, for follow-up requests
}

func (r result) str(k string) string { s, _ := r.JSON[k].(string); return s }

// call is one request to a token-style endpoint.
type call struct {
	path     string
	form     url.Values
	basic    [2]string // client id, secret
	proof    string    // DPoP header value
	authz    string    // Authorization header value
	method   string
	noProof  bool
	signer   *dpop.Signer
	nonce    string
	proofURL string // override htu
	at       string // ath
	header   http.Header
}

func do(t testing.TB, in *wardtest.Instance, c call) result {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if c.form != nil {
		body = strings.NewReader(c.form.Encode())
	}
	req, err := http.NewRequest(method, in.URL+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.basic[0] != "" {
		req.SetBasicAuth(url.QueryEscape(c.basic[0]), url.QueryEscape(c.basic[1]))
	}
	if c.authz != "" {
		req.Header.Set("Authorization", c.authz)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if c.proof != "" {
		req.Header.Set("DPoP", c.proof)
	} else if c.signer != nil {
		u := in.URL + c.path
		if c.proofURL != "" {
			u = c.proofURL
		}
		p, err := c.signer.ProofAt(method, u, c.at, c.nonce, in.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("DPoP", p)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &r.JSON)
	return r
}

// wantError asserts an OAuth error response.
func wantError(t testing.TB, r result, status int, code string) {
	t.Helper()
	if r.Status != status || r.str("error") != code {
		t.Fatalf("got %d %q (%s), want %d %q", r.Status, r.str("error"), r.str("error_description"), status, code)
	}
}

// claims decodes a JWT's payload without verifying it.
func claims(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return wardtest.JWTClaims(t, jwt)
}

func header(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return wardtest.JWTHeader(t, jwt)
}

// codeFlow signs alice in through spa (or another public client) with
// dpop_jkt and returns the code and verifier.
func codeFlow(t testing.TB, in *wardtest.Instance, clientID string, s *dpop.Signer, extra url.Values) (code, verifier string) {
	t.Helper()
	verifier, challenge := wardtest.PKCE()
	if extra == nil {
		extra = url.Values{}
	}
	if s != nil && extra.Get("dpop_jkt") == "" {
		extra.Set("dpop_jkt", s.Thumbprint())
	}
	b := in.Browser()
	authorize := in.AuthorizeURL(clientID, challenge, extra)
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		in.Clock.Advance(31 * time.Second) // a fresh TOTP step: each code is accepted once
		var body string
		resp, body = in.TryLogin(t, b, authorize, "alice", wardtest.AlicePassword, in.TOTP(t, 0))
		// The risk engine may change alice's level under the sign-in (a
		// detection of an earlier step): refused, it is made again, as
		// the page asks.
		if !wardtest.RiskChanged(resp, body) || attempt == 1 {
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("sign-in: status %d, want 303; body: %.400s", resp.StatusCode, body)
			}
			break
		}
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("error") != "" {
		t.Fatalf("authorize error: %s %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("iss") != in.URL {
		t.Fatalf("iss = %q, want %q (RFC 9207)", q.Get("iss"), in.URL)
	}
	return q.Get("code"), verifier
}

func exchange(t testing.TB, in *wardtest.Instance, clientID, code, verifier string, s *dpop.Signer) result {
	t.Helper()
	return do(t, in, call{path: "/token", signer: s, form: url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}, "client_id": {clientID}}})
}

func refresh(t testing.TB, in *wardtest.Instance, clientID, rt string, s *dpop.Signer) result {
	t.Helper()
	return do(t, in, call{path: "/token", signer: s, form: url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}}})
}
