// Package loadgen is the client side that generates load on Ward over
// plain HTTP, shared by the load generator (cmd/ward-load) and the
// scale-out test's gateway clients (test/cluster): a browser that signs
// in through Ward's pages (authorization code with PKCE), a token client
// that signs a fresh DPoP proof for every request and follows the
// server's DPoP-Nonce, and a DPoP-bound request to a resource behind
// ward gateway. It knows nothing of the server but its HTTP interface.
package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
)

// Result is one answer of the token endpoint or a resource: its status
// and JSON body (an OAuth error's error and error_description), or the
// transport error.
type Result struct {
	Status int
	Body   map[string]any
	Header http.Header
	Err    error
}

// Code is the answer's status and OAuth error code ("200 -",
// "400 invalid_grant"), or "transport_error".
func (r Result) Code() string {
	if r.Err != nil {
		return "transport_error"
	}
	c, _ := r.Body["error"].(string)
	if c == "" {
		c = "-"
	}
	return fmt.Sprintf("%d %s", r.Status, c)
}

// do sends req and reads the whole answer; decode says whether its body
// is read as JSON.
func do(hc *http.Client, req *http.Request, decode func(status int) bool) Result {
	resp, err := hc.Do(req)
	if err != nil {
		return Result{Err: err}
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return Result{Err: err}
	}
	r := Result{Status: resp.StatusCode, Header: resp.Header}
	if decode(r.Status) {
		_ = json.Unmarshal(raw, &r.Body)
	}
	return r
}

// TokenClient posts grants to a token endpoint with client_secret_basic
// and, with a Signer, a DPoP proof each (a new jti and the current iat:
// replaying one proof would measure the replay cache, not the server).
// It keeps the newest DPoP-Nonce and retries once on use_dpop_nonce. A
// TokenClient is one client's: it is not safe for concurrent use.
type TokenClient struct {
	HTTP     *http.Client
	Endpoint string
	ClientID string
	Secret   string
	Signer   *dpop.Signer // nil: no proof

	Nonce        string // the server's newest DPoP-Nonce
	NonceRetries int    // requests sent again with a new nonce
	ahead        []string
}

// SignAhead signs n proofs now, for the next n requests (each is used
// once): this moves the client's signing out of a measured window. A
// new nonce makes them stale; the requests after it sign their own.
func (tc *TokenClient) SignAhead(n int) {
	if tc.Signer == nil || n <= 0 {
		return
	}
	tc.ahead = make([]string, 0, n)
	for range n {
		p, err := tc.Signer.Proof(http.MethodPost, tc.Endpoint, "", tc.Nonce)
		if err != nil {
			return
		}
		tc.ahead = append(tc.ahead, p)
	}
}

// proof returns a proof signed ahead of time, or a fresh one.
func (tc *TokenClient) proof() (string, error) {
	if n := len(tc.ahead); n > 0 {
		p := tc.ahead[n-1]
		tc.ahead = tc.ahead[:n-1]
		return p, nil
	}
	return tc.Signer.Proof(http.MethodPost, tc.Endpoint, "", tc.Nonce)
}

// Post sends one grant.
func (tc *TokenClient) Post(ctx context.Context, form url.Values) Result {
	body := form.Encode()
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, tc.Endpoint, strings.NewReader(body))
		if err != nil {
			return Result{Err: err}
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(tc.ClientID), url.QueryEscape(tc.Secret))
		if tc.Signer != nil {
			p, err := tc.proof()
			if err != nil {
				return Result{Err: err}
			}
			req.Header.Set("DPoP", p)
		}
		r := do(tc.HTTP, req, func(int) bool { return true })
		if nonce := r.Header.Get("DPoP-Nonce"); nonce != "" && nonce != tc.Nonce {
			tc.Nonce = nonce
			tc.ahead = tc.ahead[:0] // signed with the old nonce: stale
		}
		if r.Status == http.StatusBadRequest && r.Body["error"] == "use_dpop_nonce" && attempt == 0 {
			tc.NonceRetries++
			continue
		}
		return r
	}
}

// GetResource sends GET u with the access token at: with a signer as a
// DPoP-bound token with a fresh proof bound to it (ath), without as a
// bearer token. The body of an error answer is read as JSON.
func GetResource(ctx context.Context, hc *http.Client, u, at string, s *dpop.Signer) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Result{Err: err}
	}
	scheme := "Bearer"
	if s != nil {
		p, err := s.Proof(http.MethodGet, u, at, "")
		if err != nil {
			return Result{Err: err}
		}
		req.Header.Set("DPoP", p)
		scheme = "DPoP"
	}
	req.Header.Set("Authorization", scheme+" "+at)
	return do(hc, req, func(status int) bool { return status/100 != 2 })
}

// Browser returns a client with a cookie jar of its own that follows no
// redirects (each is looked at), over tr.
func Browser(tr http.RoundTripper, timeout time.Duration) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: tr, Jar: jar, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Send sends one request (a form POST when form is not nil) and returns
// the answer with its whole body.
func Send(ctx context.Context, c *http.Client, method, u string, form url.Values) (*http.Response, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// HiddenFields returns the hidden inputs of a page's forms.
func HiddenFields(body string) url.Values {
	v := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	return v
}

// Login is an authorization request of a client and the user who
// answers Ward's sign-in form.
type Login struct {
	AuthorizeURL string // the authorization endpoint
	LoginURL     string // where the sign-in form posts (issuer + "/login")
	ClientID     string
	RedirectURI  string
	Scope        string
	Username     string
	Password     string
}

// Start opens the authorization request (PKCE S256) in the browser b and
// posts the password on the sign-in form. It returns the answer to the
// password (the redirect to the client, or the next page: a second
// factor, a refusal) and the PKCE verifier for the code exchange.
func (l Login) Start(ctx context.Context, b *http.Client) (*http.Response, string, string, error) {
	vb := make([]byte, 32)
	rand.Read(vb)
	verifier := base64.RawURLEncoding.EncodeToString(vb)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {l.ClientID}, "redirect_uri": {l.RedirectURI},
		"scope": {l.Scope}, "state": {verifier[:12]}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"}}
	resp, body, err := Send(ctx, b, http.MethodGet, l.AuthorizeURL+"?"+q.Encode(), nil)
	if err != nil {
		return nil, "", "", err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="password"`) {
		return nil, "", "", fmt.Errorf("authorize: status %d, no sign-in form: %.200s", resp.StatusCode, body)
	}
	form := HiddenFields(body)
	form.Set("username", l.Username)
	form.Set("password", l.Password)
	resp, body, err = Send(ctx, b, http.MethodPost, l.LoginURL, form)
	return resp, body, verifier, err
}

// CodeOf returns the authorization code of a redirect to the client (""
// when the answer is not one).
func CodeOf(resp *http.Response) string {
	if resp == nil || resp.StatusCode != http.StatusSeeOther {
		return ""
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return ""
	}
	return loc.Query().Get("code")
}
