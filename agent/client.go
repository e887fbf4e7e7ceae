package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/ward-idp/ward/agent/internal/cae"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/dpop"
)

// Options configure a Client.
type Options struct {
	// Store holds the device key. nil opens the store the configuration
	// names (KeyStorage, KeyDir); Close then closes it.
	Store keystore.Store
	// Collector gathers the posture for ReportPosture; nil means
	// posture.NewCollector() (the running system).
	Collector posture.Collector
	// HTTPClient supplies the base transport and timeout; nil means a
	// client with http.DefaultTransport and a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
	// Interactive, when set, lets the Client sign the user in again when
	// the server refuses to refresh the session until the user does so
	// (see ReauthError): a Conditional Access policy or a resource's
	// claims challenge demands multi-factor authentication or a fresh
	// sign-in, the password was changed, the session was revoked. The
	// Client then runs the device authorization grant (RFC 8628) bound to
	// the device key, as enrolment does, passing the claims the server or
	// resource asked for, and calls Interactive with the code to show the
	// user. Interactive must return promptly: polling starts when it
	// returns; an error aborts the sign-in. The new session is saved in
	// the configuration, the old refresh token is revoked, and the
	// request that needed it goes on. Interactive runs while the Client
	// holds its session lock: it must not call the Client.
	//
	// nil: such refusals are returned as *ReauthError (ErrReauthRequired).
	Interactive func(ctx context.Context, p DevicePrompt) error
	// Sleep waits between the polls of an interactive sign-in (default: a
	// timer honouring ctx). Tests replace it to move a fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client acts for an enrolled device: it keeps the session (refresh
// token) fresh and sends requests with DPoP-bound access tokens signed by
// the device key. It is safe for concurrent use.
type Client struct {
	key       keystore.Key
	signer    *dpop.Signer
	dt        *dpop.Transport
	hc        *http.Client // token requests: DPoP proofs, no access token
	api       *http.Client // resource requests: Transport()
	collector posture.Collector
	now       func() time.Time
	store     keystore.Store
	ownStore  bool
	// interactive and sleep: Options.Interactive and Options.Sleep.
	interactive func(context.Context, DevicePrompt) error
	sleep       func(context.Context, time.Duration) error

	mu    sync.Mutex // guards cfg, dirty, meta; held during a refresh
	cfg   *Config
	dirty bool // cfg holds rotated tokens not yet saved
	meta  *metadata
}

// OpenStore opens a key store of the given kind: "file", "tpm" or "auto"
// (the TPM when /dev/tpmrm0 works, a file otherwise). dir is the store's
// directory, "" for its default. The store must be closed.
func OpenStore(kind, dir string) (keystore.Store, error) {
	switch kind {
	case "", "auto":
		return keystore.Detect(dir)
	case keystore.KindFile:
		return &keystore.FileStore{Dir: dir}, nil
	case keystore.KindTPM:
		s, err := keystore.OpenTPM(keystore.DefaultTPMPath)
		if err != nil {
			return nil, fmt.Errorf("agent: open the TPM: %w", err)
		}
		if dir != "" {
			s.Dir = dir
		}
		return s, nil
	default:
		return nil, fmt.Errorf("agent: unknown key store %q (want auto, file or tpm)", kind)
	}
}

// Open returns a Client for an enrolled device's configuration. It loads
// the device key and checks that it is the key the device enrolled with.
func Open(ctx context.Context, cfg *Config, o Options) (*Client, error) {
	if cfg == nil || cfg.DeviceID == "" || cfg.RefreshToken == "" {
		return nil, ErrNotEnrolled
	}
	c := &Client{cfg: cfg.clone(), store: o.Store, collector: o.Collector, now: o.Now, interactive: o.Interactive, sleep: o.Sleep}
	if c.now == nil {
		c.now = time.Now
	}
	if c.sleep == nil {
		c.sleep = sleep
	}
	if c.collector == nil {
		c.collector = posture.NewCollector()
	}
	if c.store == nil {
		s, err := OpenStore(cfg.KeyStorage, cfg.KeyDir)
		if err != nil {
			return nil, err
		}
		c.store, c.ownStore = s, true
	}
	key, err := c.store.Load(ctx, cfg.KeyName)
	if err != nil {
		c.Close()
		if errors.Is(err, keystore.ErrNotFound) {
			return nil, fmt.Errorf("agent: the device key %q is missing from the %s key store; enrol again: %w", cfg.KeyName, c.store.Kind(), err)
		}
		return nil, fmt.Errorf("agent: load the device key: %w", err)
	}
	if err := c.init(key, o.HTTPClient); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// init sets up the signer and HTTP clients for key.
func (c *Client) init(key keystore.Key, hc *http.Client) error {
	signer, err := dpop.NewSigner(key)
	if err != nil {
		return err
	}
	if c.cfg.JKT != "" && signer.Thumbprint() != c.cfg.JKT {
		return fmt.Errorf("agent: the key %q in the key store is not the key this device enrolled with", c.cfg.KeyName)
	}
	c.key, c.signer = key, signer
	base, timeout := baseTransport(hc)
	c.dt = &dpop.Transport{Base: base, Signer: signer}
	c.hc = &http.Client{Transport: c.dt, Timeout: timeout, CheckRedirect: noRedirect}
	// The timeout applies to each exchange with the resource, not to a
	// whole request: an interactive sign-in in between may take minutes.
	c.api = &http.Client{Transport: &transport{c: c, timeout: timeout}, CheckRedirect: noRedirect}
	return nil
}

// Load reads the configuration at path ("" for the default) and opens a
// Client for it.
func Load(ctx context.Context, path string, o Options) (*Client, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg, o)
}

func baseTransport(hc *http.Client) (http.RoundTripper, time.Duration) {
	if hc == nil {
		return http.DefaultTransport, 30 * time.Second
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return rt, hc.Timeout
}

// noRedirect stops the client at redirects: a redirect would carry the
// access token (and a proof for the wrong URL) to another place.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close releases the key store if the Client opened it.
func (c *Client) Close() error {
	if c.ownStore && c.store != nil {
		return c.store.Close()
	}
	return nil
}

// Config returns a copy of the current configuration (with the latest
// rotated tokens).
func (c *Client) Config() *Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.clone()
}

// Key returns the device key.
func (c *Client) Key() keystore.Key { return c.key }

// Thumbprint returns the RFC 7638 thumbprint of the device key.
func (c *Client) Thumbprint() string { return c.signer.Thumbprint() }

// HTTPClient returns a client whose requests carry the device's access
// token and a fresh DPoP proof (see Transport). It does not follow
// redirects.
func (c *Client) HTTPClient() *http.Client { return c.api }

// Token returns a valid access token, refreshing the session first when the
// saved one has expired.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return "", err
	}
	if c.cfg.AccessToken != "" && c.now().Before(c.cfg.TokenExpiry) {
		return c.cfg.AccessToken.Reveal(), nil
	}
	return c.refreshLocked(ctx, c.cfg.AccessToken.Reveal(), false, "")
}

// Refresh redeems the refresh token now, whatever the state of the access
// token, and returns the new access token.
func (c *Client) Refresh(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return "", err
	}
	return c.refreshLocked(ctx, c.cfg.AccessToken.Reveal(), true, "")
}

// refreshAfter refreshes because the server refused failed; if another
// request refreshed in the meantime, the newer token is returned instead.
// claims, when set, is a resource's claims challenge (JSON): it is sent
// with the refresh, and a token refreshed meanwhile without it is not
// reused.
func (c *Client) refreshAfter(ctx context.Context, failed, claims string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return "", err
	}
	if at := c.cfg.AccessToken.Reveal(); claims == "" && at != "" && at != failed && c.now().Before(c.cfg.TokenExpiry) {
		return at, nil
	}
	return c.refreshLocked(ctx, failed, claims != "", claims)
}

// TokenSource adapts the Client to golang.org/x/oauth2. The tokens it
// returns have type DPoP: send them through Transport (or a dpop.Transport
// with the device key), never as Bearer tokens. The refresh token is not
// exposed.
func (c *Client) TokenSource(ctx context.Context) oauth2.TokenSource {
	return tokenSource{ctx: ctx, c: c}
}

type tokenSource struct {
	ctx context.Context
	c   *Client
}

func (s tokenSource) Token() (*oauth2.Token, error) {
	at, err := s.c.Token(s.ctx)
	if err != nil {
		return nil, err
	}
	s.c.mu.Lock()
	exp := s.c.cfg.TokenExpiry
	s.c.mu.Unlock()
	return &oauth2.Token{AccessToken: at, TokenType: "DPoP", Expiry: exp}, nil
}

// flushLocked retries saving rotated tokens that could not be saved: the
// new access token is not used until the new refresh token is on disk.
func (c *Client) flushLocked() error {
	if !c.dirty {
		return nil
	}
	if err := c.cfg.Save(); err != nil {
		return fmt.Errorf("agent: the rotated refresh token is not saved yet: %w", err)
	}
	c.dirty = false
	return nil
}

// metaLocked returns the server metadata, fetching it once.
func (c *Client) metaLocked(ctx context.Context) (*metadata, error) {
	if c.meta != nil {
		return c.meta, nil
	}
	m, err := discover(ctx, &http.Client{Transport: c.dt.Base, Timeout: c.hc.Timeout, CheckRedirect: noRedirect}, c.cfg.Server)
	if err != nil {
		return nil, err
	}
	c.meta = m
	return m, nil
}

// refreshLocked redeems the refresh token. It holds a file lock so that
// several agent processes never present the same refresh token, picks up a
// rotation another process saved, and saves the new refresh token before
// returning the new access token (unless force, an access token another
// process saved meanwhile is used instead of refreshing): if Save fails, the tokens stay in memory
// and the error is returned, so the new access token is not used while
// the only copy on disk is a spent refresh token.
func (c *Client) refreshLocked(ctx context.Context, failed string, force bool, claims string) (string, error) {
	m, err := c.metaLocked(ctx)
	if err != nil {
		return "", err
	}
	if c.cfg.path != "" {
		unlock, err := lockFile(ctx, c.cfg.path+".lock")
		if err != nil {
			return "", err
		}
		defer unlock()
		// Another process may have rotated the token since we read it.
		if disk, err := LoadConfig(c.cfg.path); err == nil && disk.DeviceID == c.cfg.DeviceID &&
			disk.RefreshToken != "" && disk.RefreshToken != c.cfg.RefreshToken {
			c.cfg.RefreshToken, c.cfg.AccessToken, c.cfg.TokenExpiry = disk.RefreshToken, disk.AccessToken, disk.TokenExpiry
			if at := disk.AccessToken.Reveal(); !force && at != "" && at != failed && c.now().Before(disk.TokenExpiry) {
				return at, nil
			}
		}
	}
	var tr tokenResponse
	err = postForm(ctx, c.hc, m.TokenEndpoint, "token refresh", url.Values{
		"grant_type":    {grantRefreshToken},
		"refresh_token": {c.cfg.RefreshToken.Reveal()},
		"client_id":     {c.cfg.ClientID},
		// The agent follows claims challenges: it says so with every
		// refresh, and passes on a resource's challenge.
		"claims": {withCapability(claims)},
	}, &tr)
	if err != nil {
		var oe *OAuthError
		if !errors.As(err, &oe) {
			return "", err
		}
		if needsSignIn(oe) {
			// Policy wants the user: sign in again if we may, otherwise
			// say so with the claims the new sign-in must satisfy.
			re := &ReauthError{Claims: withCapability(claims), Err: oe}
			if c.interactive == nil {
				return "", re
			}
			at, err := c.reauthLocked(ctx, m, re.Claims, oe.Description, c.interactive)
			if err != nil {
				return "", fmt.Errorf("%w; signing in again failed: %w", re, err)
			}
			return at, nil
		}
		if oe.Code == "invalid_grant" {
			return "", fmt.Errorf("%w (%s)", ErrSessionEnded, oe.Error())
		}
		return "", err
	}
	if err := checkToken(&tr, false); err != nil {
		return "", err
	}
	next := c.cfg.clone()
	if tr.RefreshToken != "" {
		next.RefreshToken = Secret(tr.RefreshToken)
	}
	next.AccessToken = Secret(tr.AccessToken)
	next.TokenExpiry = expiry(c.now(), tr.ExpiresIn)
	c.cfg = next
	if next.path != "" {
		if err := next.Save(); err != nil {
			c.dirty = true
			return "", fmt.Errorf("agent: the session was refreshed but the new refresh token could not be saved (the old one is spent; fix the problem before the agent exits): %w", err)
		}
	}
	return tr.AccessToken, nil
}

// Transport returns an http.RoundTripper that sends each request with
// "Authorization: DPoP <access token>" and a fresh DPoP proof signed by the
// device key (through dpop.Transport, which also answers use_dpop_nonce
// challenges). When the server answers 401 with error="invalid_token", or
// with a claims challenge (continuous access evaluation), the session is
// refreshed once — with the challenge's claims — and the request sent
// again; only if its body can be replayed (req.GetBody set, or no body).
// With Options.Interactive, a refresh refused until the user signs in
// again leads to that sign-in first; give the http.Client that uses the
// transport no Timeout then (HTTPClient times each exchange instead).
//
// Access tokens are sent over https only, or http to a loopback host.
func (c *Client) Transport() http.RoundTripper { return &transport{c: c} }

type transport struct {
	c *Client
	// timeout, if set, bounds each exchange with the resource (the
	// response body included), but not the refreshes and sign-ins in
	// between.
	timeout time.Duration
}

// send sends r through the DPoP transport within t.timeout.
func (t *transport) send(r *http.Request) (*http.Response, error) {
	if t.timeout <= 0 {
		return t.c.dt.RoundTrip(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), t.timeout)
	resp, err := t.c.dt.RoundTrip(r.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases the exchange's timeout when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := cae.CheckRequest(req, "agent"); err != nil {
		return nil, err
	}
	closeBody := func() { cae.CloseBody(req) }
	ctx := req.Context()
	at, err := t.c.Token(ctx)
	if err != nil {
		closeBody()
		return nil, err
	}
	r := req.Clone(ctx)
	r.Header.Set("Authorization", "DPoP "+at)
	resp, err := t.send(r)
	if err != nil {
		return resp, err
	}
	// A continuous access evaluation challenge: refresh with the claims
	// the resource names (Ward re-evaluates the session and its access
	// policies) and try once more; a refused refresh ends the session.
	claims := claimsChallenge(resp)
	if claims == "" && !tokenError(resp) {
		return resp, nil
	}
	var body io.ReadCloser
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, nil // cannot send it again
		}
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	at2, err := t.c.refreshAfter(ctx, at, claims)
	if err != nil {
		if body != nil {
			body.Close()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r2 := req.Clone(ctx)
	r2.Body = body
	if body == nil && req.Body == http.NoBody {
		r2.Body = http.NoBody
	}
	r2.Header.Set("Authorization", "DPoP "+at2)
	return t.send(r2)
}

func secureURL(u *url.URL) bool { return cae.SecureURL(u) }
