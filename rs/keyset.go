package rs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults for KeySetConfig fields left zero.
const (
	// DefaultMinRefreshInterval is the least time between two JWKS
	// fetches. A token with a random kid makes the key set refetch at
	// most this often, so an attacker cannot make us hammer the IdP.
	DefaultMinRefreshInterval = 30 * time.Second
	// DefaultRefreshInterval is how old the cached keys may get before a
	// request triggers a background refresh (key rotation with overlap is
	// handled by the unknown-kid refetch; this catches removed keys).
	DefaultRefreshInterval = time.Hour
	// DefaultFetchTimeout bounds one discovery or JWKS request.
	DefaultFetchTimeout = 10 * time.Second
)

// maxDocumentSize bounds a discovery document or JWKS we read.
const maxDocumentSize = 1 << 20

// maxKeys bounds the keys kept from one JWKS.
const maxKeys = 100

var (
	// ErrUnknownKey means the JWS names a key (kid) the key set does not
	// hold, even after a refresh.
	ErrUnknownKey = errors.New("rs: unknown signing key")
	// ErrKeysUnavailable means no key set could be loaded yet (the JWKS
	// or discovery endpoint is unreachable or invalid).
	ErrKeysUnavailable = errors.New("rs: signing keys unavailable")
)

// KeySetConfig configures a remote key set.
type KeySetConfig struct {
	// JWKSURL is the JWKS to fetch. If empty, it is discovered from
	// Issuer.
	JWKSURL string
	// Issuer is used for discovery when JWKSURL is empty: the jwks_uri of
	// the issuer's metadata at each of DiscoveryPaths, in order. The
	// document's "issuer" must equal Issuer exactly.
	Issuer string
	// DiscoveryPaths are the well-known suffixes tried for discovery;
	// empty means /.well-known/openid-configuration then
	// /.well-known/oauth-authorization-server.
	DiscoveryPaths []string
	// HTTPClient fetches documents (http.DefaultClient if nil).
	HTTPClient *http.Client
	// MinRefreshInterval is the least time between fetches
	// (DefaultMinRefreshInterval if zero).
	MinRefreshInterval time.Duration
	// RefreshInterval is the age after which cached keys are refreshed in
	// the background (DefaultRefreshInterval if zero).
	RefreshInterval time.Duration
	// FetchTimeout bounds each HTTP request (DefaultFetchTimeout if zero).
	FetchTimeout time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Logger receives fetch failures (nothing is logged if nil).
	Logger *slog.Logger
}

// KeySet is a cached set of ES256 verification keys (EC P-256), either
// fetched from a JWKS URL or fixed. Only keys with kty EC, crv P-256, no
// private part, alg absent or ES256 and use absent or "sig" are kept; all
// others in the document are skipped. A KeySet is safe for concurrent use
// and may be shared by a Validator and a Receiver of the same issuer.
type KeySet struct {
	cfg    KeySetConfig
	static bool

	keys atomic.Pointer[keyMap]

	mu        sync.Mutex
	inflight  chan struct{} // closed when the running fetch ends
	lastFetch time.Time     // start of the latest fetch attempt
	jwksURL   string        // resolved JWKS URL
	lastErr   error         // error of the latest fetch, for ErrKeysUnavailable
	refreshAt atomic.Int64  // unix nanoseconds after which keys are stale
}

type keyMap struct {
	byKID map[string]*ecdsa.PublicKey
	only  *ecdsa.PublicKey // the single key, used for a JWS without kid
}

// NewKeySet returns a key set that fetches keys on first use.
func NewKeySet(cfg KeySetConfig) (*KeySet, error) {
	if cfg.JWKSURL == "" && cfg.Issuer == "" {
		return nil, errors.New("rs: key set needs a JWKS URL or an issuer to discover it from")
	}
	for _, u := range []string{cfg.JWKSURL, cfg.Issuer} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return nil, fmt.Errorf("rs: %q is not an absolute http(s) URL", u)
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.MinRefreshInterval <= 0 {
		cfg.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.DiscoveryPaths) == 0 {
		cfg.DiscoveryPaths = []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"}
	}
	return &KeySet{cfg: cfg, jwksURL: cfg.JWKSURL}, nil
}

// NewStaticKeySet returns a key set holding the usable keys of set; it
// never fetches anything. It fails if set holds no usable key.
func NewStaticKeySet(set jose.JSONWebKeySet) (*KeySet, error) {
	m := newKeyMap(set.Keys)
	if len(m.byKID) == 0 && m.only == nil {
		return nil, errors.New("rs: the key set holds no public EC P-256 signing key")
	}
	ks := &KeySet{static: true}
	ks.keys.Store(m)
	return ks, nil
}

// Key returns the key named kid (hasKID false: a JWS without kid, accepted
// only when the set holds exactly one key). An unknown kid triggers a
// refetch unless one ran within MinRefreshInterval; concurrent callers
// share one fetch. It returns ErrUnknownKey or ErrKeysUnavailable.
func (ks *KeySet) Key(ctx context.Context, kid string, hasKID bool) (*ecdsa.PublicKey, error) {
	m := ks.keys.Load()
	if k := m.lookup(kid, hasKID); k != nil {
		if !ks.static && ks.cfg.Now().UnixNano() > ks.refreshAt.Load() {
			ks.refreshAsync()
		}
		return k, nil
	}
	if ks.static {
		return nil, ErrUnknownKey
	}
	if err := ks.refresh(ctx); err != nil && m == nil {
		return nil, err
	}
	m = ks.keys.Load()
	if m == nil {
		return nil, ErrKeysUnavailable
	}
	if k := m.lookup(kid, hasKID); k != nil {
		return k, nil
	}
	return nil, ErrUnknownKey
}

func (m *keyMap) lookup(kid string, hasKID bool) *ecdsa.PublicKey {
	if m == nil {
		return nil
	}
	if !hasKID {
		return m.only
	}
	return m.byKID[kid]
}

// refreshAsync starts a background fetch if none ran recently.
func (ks *KeySet) refreshAsync() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.inflight != nil || ks.cfg.Now().Sub(ks.lastFetch) < ks.cfg.MinRefreshInterval {
		return
	}
	ks.startFetchLocked()
}

// refresh fetches the keys unless a fetch ran within MinRefreshInterval,
// or waits for the fetch already running. It returns the fetch error, or
// ErrKeysUnavailable if it did not fetch and no keys are loaded.
func (ks *KeySet) refresh(ctx context.Context) error {
	ks.mu.Lock()
	ch := ks.inflight
	if ch == nil {
		if !ks.lastFetch.IsZero() && ks.cfg.Now().Sub(ks.lastFetch) < ks.cfg.MinRefreshInterval {
			err := ks.lastErr
			ks.mu.Unlock()
			if ks.keys.Load() == nil {
				return keysUnavailable(err)
			}
			return nil
		}
		ch = ks.startFetchLocked()
	}
	ks.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	if ks.keys.Load() == nil {
		ks.mu.Lock()
		err := ks.lastErr
		ks.mu.Unlock()
		return keysUnavailable(err)
	}
	return nil
}

func keysUnavailable(cause error) error {
	if cause == nil {
		return ErrKeysUnavailable
	}
	return fmt.Errorf("%w: %v", ErrKeysUnavailable, cause)
}

// startFetchLocked runs one fetch in the background; the fetch does not
// use any caller's context, so one cancelled request cannot abort the
// fetch that other requests wait for.
func (ks *KeySet) startFetchLocked() chan struct{} {
	ch := make(chan struct{})
	ks.inflight = ch
	ks.lastFetch = ks.cfg.Now()
	// Until this fetch succeeds, requests need not look at the lock again
	// before the next fetch is allowed.
	ks.refreshAt.Store(ks.lastFetch.Add(ks.cfg.MinRefreshInterval).UnixNano())
	go func() {
		err := ks.fetch()
		if err != nil && ks.cfg.Logger != nil {
			ks.cfg.Logger.Warn("rs: key set refresh failed", "err", err)
		}
		ks.mu.Lock()
		ks.inflight = nil
		ks.lastErr = err
		ks.mu.Unlock()
		close(ch)
	}()
	return ch
}

func (ks *KeySet) fetch() error {
	ctx, cancel := context.WithTimeout(context.Background(), ks.cfg.FetchTimeout)
	defer cancel()
	ks.mu.Lock()
	u := ks.jwksURL
	ks.mu.Unlock()
	if u == "" {
		var err error
		if u, err = ks.discover(ctx); err != nil {
			return err
		}
		ks.mu.Lock()
		ks.jwksURL = u
		ks.mu.Unlock()
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := getJSON(ctx, ks.cfg.HTTPClient, u, &doc); err != nil {
		return fmt.Errorf("rs: fetch JWKS: %w", err)
	}
	keys := make([]jose.JSONWebKey, 0, len(doc.Keys))
	for _, raw := range doc.Keys {
		// One key go-jose cannot parse (an unknown kty, say) must not
		// make the whole set unusable: skip it.
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) == nil {
			keys = append(keys, k)
		}
	}
	m := newKeyMap(keys)
	if len(m.byKID) == 0 && m.only == nil {
		return errors.New("rs: JWKS holds no public EC P-256 signing key")
	}
	ks.keys.Store(m)
	ks.refreshAt.Store(ks.cfg.Now().Add(ks.cfg.RefreshInterval).UnixNano())
	return nil
}

// discover reads the issuer's metadata and returns its jwks_uri.
func (ks *KeySet) discover(ctx context.Context) (string, error) {
	var errs []error
	for _, p := range ks.cfg.DiscoveryPaths {
		u := wellKnownURL(ks.cfg.Issuer, p)
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := getJSON(ctx, ks.cfg.HTTPClient, u, &doc); err != nil {
			errs = append(errs, err)
			continue
		}
		// OpenID Connect Discovery §4.3 / RFC 8414 §3.3: the document must
		// be about the issuer we asked for (mix-up defence).
		if doc.Issuer != ks.cfg.Issuer {
			errs = append(errs, fmt.Errorf("%s: issuer %q does not match", u, doc.Issuer))
			continue
		}
		j, err := url.Parse(doc.JWKSURI)
		if err != nil || (j.Scheme != "https" && j.Scheme != "http") || j.Host == "" {
			errs = append(errs, fmt.Errorf("%s: jwks_uri is not an absolute http(s) URL", u))
			continue
		}
		return doc.JWKSURI, nil
	}
	return "", fmt.Errorf("rs: discovery: %w", errors.Join(errs...))
}

// wellKnownURL inserts a well-known suffix between the host and the path of
// issuer (RFC 8414 §3.1); for an issuer without a path it appends it, which
// is also what OpenID Connect Discovery does.
func wellKnownURL(issuer, suffix string) string {
	u, err := url.Parse(issuer)
	if err != nil {
		return strings.TrimSuffix(issuer, "/") + suffix
	}
	path := strings.TrimSuffix(u.Path, "/")
	if path == "" {
		u.Path = suffix
	} else if strings.HasPrefix(suffix, "/.well-known/openid-configuration") {
		// OpenID Connect Discovery §4 appends to the issuer path.
		u.Path = path + suffix
	} else {
		u.Path = suffix + path
	}
	u.RawPath = ""
	return u.String()
}

// getJSON GETs u and decodes a JSON body of at most maxDocumentSize.
func getJSON(ctx context.Context, c *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return err
	}
	if len(body) > maxDocumentSize {
		return fmt.Errorf("GET %s: document too large", u)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// newKeyMap keeps the usable ES256 verification keys.
func newKeyMap(keys []jose.JSONWebKey) *keyMap {
	m := &keyMap{byKID: make(map[string]*ecdsa.PublicKey)}
	var usable []*ecdsa.PublicKey
	for _, k := range keys {
		pub, ok := k.Key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			continue // private keys (*ecdsa.PrivateKey) land here too: never use a published private key
		}
		if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if len(usable) >= maxKeys {
			break
		}
		usable = append(usable, pub)
		if k.KeyID != "" {
			if _, dup := m.byKID[k.KeyID]; dup {
				// Two keys under one kid: ambiguous, use neither.
				m.byKID[k.KeyID] = nil
				continue
			}
			m.byKID[k.KeyID] = pub
		}
	}
	for kid, k := range m.byKID {
		if k == nil {
			delete(m.byKID, kid)
		}
	}
	if len(usable) == 1 {
		m.only = usable[0]
	}
	return m
}
