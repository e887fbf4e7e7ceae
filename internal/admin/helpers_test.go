package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

const api = "/admin/api/v1"

// newSigner returns a DPoP signer with a fresh P-256 key.
func newSigner(t testing.TB) *dpop.Signer {
	t.Helper()
	return wardtest.NewSigner(t)
}

// result is a decoded response.
type result struct {
	Status int
	Header http.Header
	Body   string
	JSON   map[string]any
}

func (r result) str(k string) string { s, _ := r.JSON[k].(string); return s }

// list returns r.JSON[k] as a slice of objects.
func (r result) list(k string) []map[string]any {
	var out []map[string]any
	for _, v := range asSlice(r.JSON[k]) {
		if m, ok := v.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// wantStatus fails the test unless r has the status and error code
// (code "" for success responses).
func wantStatus(t testing.TB, r result, status int, code string) {
	t.Helper()
	if r.Status != status || r.str("error") != code {
		t.Fatalf("got %d %q (%s), want %d %q; body %.300s", r.Status, r.str("error"), r.str("error_description"), status, code, r.Body)
	}
}

// caller holds a token and the DPoP key it is bound to (nil: bearer).
type caller struct {
	in     *wardtest.Instance
	token  string
	signer *dpop.Signer
}

// req is one admin API request.
type req struct {
	method      string
	path        string // relative to /admin/api/v1, may have a query
	body        any    // JSON-encoded unless a string (sent as is)
	contentType string // default application/json when there is a body
	authz       string // overrides the Authorization header ("-" for none)
	proof       string // overrides the DPoP header
}

func (c *caller) do(t testing.TB, q req) result {
	t.Helper()
	var body io.Reader
	if q.body != nil {
		switch b := q.body.(type) {
		case string:
			body = strings.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			body = strings.NewReader(string(j))
		}
	}
	u := c.in.URL + api + q.path
	hr, err := http.NewRequest(q.method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if q.body != nil {
		ct := q.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	switch {
	case q.authz == "-":
	case q.authz != "":
		hr.Header.Set("Authorization", q.authz)
	case c.token != "" && c.signer != nil:
		hr.Header.Set("Authorization", "DPoP "+c.token)
	case c.token != "":
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	switch {
	case q.proof != "":
		hr.Header.Set("DPoP", q.proof)
	case c.signer != nil:
		hr.Header.Set("DPoP", c.proofFor(t, q.method, q.path))
	}
	return send(t, hr)
}

// proofFor makes a fresh DPoP proof for an admin API path.
func (c *caller) proofFor(t testing.TB, method, path string) string {
	t.Helper()
	p, _, _ := strings.Cut(path, "?")
	proof, err := c.signer.ProofAt(method, c.in.URL+api+p, c.token, "", c.in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return proof
}

func send(t testing.TB, hr *http.Request) result {
	t.Helper()
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &r.JSON)
	return r
}

// post sends a form to a token-style endpoint with an optional DPoP proof
// and basic client authentication.
func post(t testing.TB, in *wardtest.Instance, path string, form url.Values, s *dpop.Signer, basic ...string) result {
	t.Helper()
	hr, err := http.NewRequest(http.MethodPost, in.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		hr.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	if s != nil {
		p, err := s.ProofAt(http.MethodPost, in.URL+path, "", "", in.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("DPoP", p)
	}
	return send(t, hr)
}

// tokens is what the code flow returned.
type tokens struct {
	*caller
	refresh string
}

// signIn signs username in through the public DPoP client "spa" with
// scope and returns a DPoP-bound access token (and refresh token).
func signIn(t testing.TB, in *wardtest.Instance, username, scope string) tokens {
	t.Helper()
	return signInWith(t, in, "spa", username, scope)
}

// signInWith is signIn through another public client.
func signInWith(t testing.TB, in *wardtest.Instance, clientID, username, scope string) tokens {
	t.Helper()
	s := newSigner(t)
	verifier, challenge := wardtest.PKCE()
	extra := url.Values{"scope": {scope}, "dpop_jkt": {s.Thumbprint()}}
	password, otp := wardtest.BobPassword, ""
	if username == "alice" {
		password = wardtest.AlicePassword
		in.Clock.Advance(31 * time.Second) // a fresh TOTP step: each code is accepted once
		otp = in.TOTP(t, 0)
	}
	loc := in.Login(t, in.Browser(), in.AuthorizeURL(clientID, challenge, extra), username, password, otp)
	q := loc.Query()
	if q.Get("error") != "" || q.Get("code") == "" {
		t.Fatalf("authorize: %s %s", q.Get("error"), q.Get("error_description"))
	}
	r := post(t, in, "/token", url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {clientID}}, s)
	if r.Status != 200 || r.str("token_type") != "DPoP" {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	return tokens{caller: &caller{in: in, token: r.str("access_token"), signer: s}, refresh: r.str("refresh_token")}
}

// admin is alice with scope openid ward:admin.
func admin(t testing.TB, in *wardtest.Instance) *caller {
	t.Helper()
	return signIn(t, in, "alice", "openid ward:admin").caller
}

// events lists stored events of the given types, newest first.
func events(t testing.TB, in *wardtest.Instance, types ...model.EventType) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: types, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// userID returns the id of a user by name.
func userID(t testing.TB, in *wardtest.Instance, name string) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}
