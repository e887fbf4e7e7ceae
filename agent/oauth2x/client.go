package oauth2x

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/ward-idp/ward/agent/internal/cae"
	"github.com/ward-idp/ward/dpop"
)

// expiryDelta: a token is refreshed this long before it expires.
const expiryDelta = 10 * time.Second

// Options configure a Client.
type Options struct {
	// Signer holds the key DPoP-bound tokens are bound to: token requests
	// and resource requests then carry a fresh DPoP proof (RFC 9449), and
	// the server's DPoP-Nonce is used and a use_dpop_nonce refusal retried
	// once. Give the same key's DPoPOption to AuthCodeURL. With a Signer
	// only DPoP tokens are accepted; without one, only Bearer tokens.
	Signer *dpop.Signer
	// HTTPClient supplies the base transport and the timeout of
	// HTTPClient and of token requests; nil means http.DefaultTransport
	// and 30 s.
	HTTPClient *http.Client
	// OnToken is called with every new token — from Exchange and from
	// each refresh — before the token is used. Persist the refresh token
	// there: Ward rotates it on every use, and a rotated token presented
	// again is taken for theft and ends the session. If OnToken fails,
	// the new token is not handed out; it is kept and OnToken is called
	// again at the next use.
	OnToken func(*oauth2.Token) error
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
}

// Client holds one user's token for a golang.org/x/oauth2 Config and
// refreshes it — when it expires, and with the claims of a resource's
// claims challenge (see Transport). It is the only party that may refresh
// the token: do not also use Config.TokenSource or Config.Client with the
// same refresh token. A Client is an oauth2.TokenSource, and safe for
// concurrent use.
type Client struct {
	cfg     *oauth2.Config
	base    http.RoundTripper
	timeout time.Duration
	dt      *dpop.Transport // nil without a Signer
	tokenHC *http.Client    // token endpoint: proofs, no access token
	onToken func(*oauth2.Token) error
	now     func() time.Time

	mu      sync.Mutex // guards the rest; held during refreshes
	tok     *oauth2.Token
	claims  string // the claims of the request that issued tok
	unsaved bool   // OnToken has not accepted tok yet
	style   oauth2.AuthStyle
}

// New returns a Client for cfg. tok is the current token (for example one
// saved by OnToken earlier), or nil before Exchange.
func New(cfg *oauth2.Config, tok *oauth2.Token, o Options) (*Client, error) {
	if cfg == nil || cfg.Endpoint.TokenURL == "" {
		return nil, errors.New("oauth2x: the Config has no token endpoint")
	}
	u, err := url.Parse(cfg.Endpoint.TokenURL)
	if err != nil || u.Host == "" || !cae.SecureURL(u) {
		return nil, errors.New("oauth2x: the token endpoint must be an https URL (http only on loopback)")
	}
	c := &Client{cfg: cfg, base: http.DefaultTransport, timeout: 30 * time.Second, onToken: o.OnToken, now: o.Now, style: cfg.Endpoint.AuthStyle}
	if c.now == nil {
		c.now = time.Now
	}
	if o.HTTPClient != nil {
		if o.HTTPClient.Transport != nil {
			c.base = o.HTTPClient.Transport
		}
		c.timeout = o.HTTPClient.Timeout
	}
	token := c.base
	if o.Signer != nil {
		c.dt = &dpop.Transport{Base: c.base, Signer: o.Signer}
		token = c.dt
	}
	c.tokenHC = &http.Client{Transport: token, Timeout: c.timeout, CheckRedirect: noRedirect}
	if tok != nil {
		if err := c.checkType(tok); err != nil {
			return nil, err
		}
		c.tok = clone(tok)
	}
	return c, nil
}

// noRedirect stops at redirects: a token request or a request with an
// access token is never sent on to another place.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func clone(t *oauth2.Token) *oauth2.Token {
	c := *t
	return &c
}

// checkType accepts DPoP tokens with a Signer and Bearer tokens without
// one: a server that answers a DPoP request with a Bearer token has not
// bound it, and a DPoP token cannot be used without its key.
func (c *Client) checkType(tok *oauth2.Token) error {
	switch typ := tok.Type(); {
	case c.dt != nil && !strings.EqualFold(typ, "DPoP"):
		return fmt.Errorf("oauth2x: the server issued a %q token, not a DPoP-bound one", typ)
	case c.dt == nil && !strings.EqualFold(typ, "Bearer"):
		return fmt.Errorf("oauth2x: the token type is %q; a DPoP-bound token needs Options.Signer", typ)
	}
	return nil
}

// Context returns ctx carrying the HTTP client for token requests
// (oauth2.HTTPClient): with a Signer, it adds the DPoP proofs. Use it for
// Config calls of your own, such as Config.Exchange or RefreshToken.
func (c *Client) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.tokenHC)
}

// Exchange redeems an authorization code (Config.Exchange with the DPoP
// client and ClaimsOption("") declaring the CAE capability; a
// ClaimsOption in opts replaces it — pass the one given to AuthCodeURL),
// and makes the token the Client's.
func (c *Client) Exchange(ctx context.Context, code string, opts ...oauth2.AuthCodeOption) (*oauth2.Token, error) {
	cfg := c.cfg
	if cfg.ClientSecret == "" && cfg.Endpoint.AuthStyle == oauth2.AuthStyleAutoDetect {
		// A public client: client_id in the body straight away, not after
		// a failed HTTP Basic attempt.
		cfg = &oauth2.Config{ClientID: cfg.ClientID, Endpoint: cfg.Endpoint, RedirectURL: cfg.RedirectURL, Scopes: cfg.Scopes}
		cfg.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	}
	tok, err := cfg.Exchange(c.Context(ctx), code, append([]oauth2.AuthCodeOption{ClaimsOption("")}, opts...)...)
	if err != nil {
		return nil, err
	}
	if err := c.checkType(tok); err != nil {
		return nil, err
	}
	tok.Expiry = time.Time{}
	expiryOf(tok, c.now())
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setLocked(tok, ""); err != nil {
		return nil, err
	}
	return clone(tok), nil
}

// setLocked makes tok the current token and hands it to OnToken.
func (c *Client) setLocked(tok *oauth2.Token, claims string) error {
	c.tok, c.claims, c.unsaved = tok, claims, true
	return c.flushLocked()
}

// flushLocked calls OnToken for a token it has not accepted yet.
func (c *Client) flushLocked() error {
	if !c.unsaved {
		return nil
	}
	if c.onToken != nil {
		if err := c.onToken(clone(c.tok)); err != nil {
			return fmt.Errorf("oauth2x: the new token was not saved (OnToken): %w", err)
		}
	}
	c.unsaved = false
	return nil
}

// validLocked reports whether the current access token can be used.
func (c *Client) validLocked() bool {
	return c.tok != nil && c.tok.AccessToken != "" && (c.tok.Expiry.IsZero() || c.now().Add(expiryDelta).Before(c.tok.Expiry))
}

// Token implements oauth2.TokenSource: the current token, refreshed first
// if it has expired. The refresh runs on context.Background (bounded by
// the Options.HTTPClient timeout); TokenContext takes a context.
func (c *Client) Token() (*oauth2.Token, error) { return c.TokenContext(context.Background()) }

// TokenContext is Token with a context for the refresh.
func (c *Client) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return nil, err
	}
	if c.tok == nil {
		return nil, errors.New("oauth2x: no token yet (Exchange first)")
	}
	if c.validLocked() {
		return clone(c.tok), nil
	}
	return c.refreshLocked(ctx, "")
}

// Refresh redeems the refresh token now with claims (a resource's claims
// challenge, or "") and the CAE capability, and returns the new token.
// A refusal that needs the user is a *ReauthError.
func (c *Client) Refresh(ctx context.Context, claims string) (*oauth2.Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return nil, err
	}
	if c.tok == nil {
		return nil, errors.New("oauth2x: no token yet (Exchange first)")
	}
	return c.refreshLocked(ctx, claims)
}

// refreshAfter answers a claims challenge to the access token failed:
// another request may have answered the same challenge meanwhile, and its
// token is used then.
func (c *Client) refreshAfter(ctx context.Context, failed, claims string) (*oauth2.Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return nil, err
	}
	if c.tok == nil {
		return nil, errors.New("oauth2x: no token")
	}
	if c.tok.AccessToken != failed && c.claims == claims && c.validLocked() {
		return clone(c.tok), nil
	}
	return c.refreshLocked(ctx, claims)
}

func (c *Client) refreshLocked(ctx context.Context, claims string) (*oauth2.Token, error) {
	tok, style, err := refresh(ctx, c.tokenHC, c.cfg, c.style, c.tok.RefreshToken, claims)
	if err != nil {
		return nil, err
	}
	c.style = style
	if err := c.checkType(tok); err != nil {
		return nil, err
	}
	expiryOf(tok, c.now())
	if err := c.setLocked(tok, claims); err != nil {
		return nil, err
	}
	return clone(tok), nil
}

// HTTPClient returns an http.Client with Transport, the Options timeout,
// and no redirects followed.
func (c *Client) HTTPClient() *http.Client {
	return &http.Client{Transport: c.Transport(), Timeout: c.timeout, CheckRedirect: noRedirect}
}

// Transport returns an http.RoundTripper that sends each request with the
// access token — "Authorization: Bearer …", or for a DPoP-bound token
// "Authorization: DPoP …" with a fresh proof (which answers
// use_dpop_nonce once) — refreshing the token first when it has expired.
//
// When the resource answers with a claims challenge (see ParseChallenge),
// the token is refreshed with the challenge's claims and the request sent
// once more, if its body can be replayed (req.GetBody set, or no body;
// otherwise the 401 is returned as it is). A refusal that needs the user
// is returned as a *ReauthError (inside the *url.Error of http.Client)
// with the challenge and the claims for the new sign-in. A challenge with
// malformed claims is not followed: the response is returned as it is.
//
// Tokens are only sent over https, or http to a loopback host; an http
// URL elsewhere is an error and nothing is sent. A redirect that an
// http.Client follows to another origin (scheme, host, port) is sent
// without the token. Use the transport only for the resources the token
// is meant for.
func (c *Client) Transport() http.RoundTripper { return &transport{c: c} }

type transport struct{ c *Client }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := cae.CheckRequest(req, "oauth2x"); err != nil {
		return nil, err
	}
	closeBody := func() { cae.CloseBody(req) }
	ctx := req.Context()
	if crossOrigin(req) {
		// net/http drops Authorization on such a redirect; so do we.
		r := req.Clone(ctx)
		r.Header.Del("Authorization")
		r.Header.Del("DPoP")
		return t.c.base.RoundTrip(r)
	}
	tok, err := t.c.TokenContext(ctx)
	if err != nil {
		closeBody()
		return nil, err
	}
	resp, err := t.c.send(req.Clone(ctx), tok)
	if err != nil {
		return nil, err
	}
	ch, ok := ParseChallenge(resp)
	if !ok {
		return resp, nil
	}
	var body io.ReadCloser
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, nil // the body is gone: the caller decides
		}
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	tok2, err := t.c.refreshAfter(ctx, tok.AccessToken, ch.Claims)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		if body != nil {
			body.Close()
		}
		var re *ReauthError
		if errors.As(err, &re) {
			re.Challenge = ch
		}
		return nil, err
	}
	r2 := req.Clone(ctx)
	r2.Body = body
	if body == nil && req.Body == http.NoBody {
		r2.Body = http.NoBody
	}
	return t.c.send(r2, tok2) // once: a second challenge is the caller's
}

// send sends r with tok's access token.
func (c *Client) send(r *http.Request, tok *oauth2.Token) (*http.Response, error) {
	switch typ := tok.Type(); {
	case strings.EqualFold(typ, "DPoP") && c.dt != nil:
		r.Header.Set("Authorization", "DPoP "+tok.AccessToken)
		return c.dt.RoundTrip(r)
	case strings.EqualFold(typ, "Bearer"):
		r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		r.Header.Del("DPoP")
		return c.base.RoundTrip(r)
	}
	if r.Body != nil {
		r.Body.Close()
	}
	return nil, fmt.Errorf("oauth2x: cannot send a %q token (a DPoP-bound token needs Options.Signer)", tok.Type())
}

// crossOrigin reports whether req is a redirect (made by http.Client) to
// an origin other than the first request's.
func crossOrigin(req *http.Request) bool {
	first := req
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	return first != req && origin(first.URL) != origin(req.URL)
}

func origin(u *url.URL) string {
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return scheme + "://" + host + ":" + port
}
