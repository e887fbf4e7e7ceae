package rs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/jws"
)

// maxTokenSize bounds the access token looked at, in bytes.
const maxTokenSize = 16 << 10

// maxHeaderCache bounds the cache of verified JOSE headers (one per
// signing key and typ spelling in practice).
const maxHeaderCache = 64

// Config configures a Validator. Issuer and Audience are required.
type Config struct {
	// Issuer is the exact "iss" of accepted tokens.
	Issuer string
	// Audience must be one of the token's "aud" values.
	Audience string
	// Scopes are required by Middleware (Require takes its own list).
	Scopes []string

	// Keys verifies token signatures. If nil, a KeySet is built from
	// JWKSURL, or from the issuer's discovery document when JWKSURL is
	// empty.
	Keys    *KeySet
	JWKSURL string
	// HTTPClient fetches discovery and JWKS (http.DefaultClient if nil).
	HTTPClient *http.Client

	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// ClockSkew is the tolerance for exp, nbf, iat and proof iat
	// (DefaultClockSkew if zero).
	ClockSkew time.Duration
	// MaxTokenLifetime refuses tokens whose exp - iat is longer; zero
	// means State's, or DefaultMaxTokenLifetime without State.
	MaxTokenLifetime time.Duration

	// AllowBearer accepts tokens without cnf.jkt presented with the
	// Bearer scheme. By default every token must be DPoP-bound.
	AllowBearer bool
	// DPoPAlgs are the accepted proof algorithms (dpop.DefaultAlgs if
	// empty), also announced in the DPoP challenge.
	DPoPAlgs []jose.SignatureAlgorithm
	// DPoPMaxAge is how old a proof may be (dpop.DefaultMaxAge if zero).
	DPoPMaxAge time.Duration
	// Nonces, if set, makes every proof carry a fresh server nonce
	// (RFC 9449 §9); share the key between instances.
	Nonces dpop.NonceSource
	// Replay records proof jti values (a dpop.MemoryReplayCache if nil;
	// use a shared cache when several instances serve the resource).
	Replay dpop.ReplayCache
	// ExternalURL is the scheme, host and optional path prefix clients
	// use to reach this server, e.g. "https://api.example.com/docs", when
	// a proxy changes them. The proof's htu is compared with ExternalURL
	// + the request path. If empty, the request's own scheme (TLS or
	// not), Host and path are used. Forwarded headers are never trusted
	// for this.
	ExternalURL string

	// State, if set, applies Continuous Access Evaluation decisions.
	State *RevocationState
	// Usage, if set, receives a record of every request that presented a
	// token.
	Usage *UsageReporter
	// TrustedProxies are the peers whose X-Forwarded-For is believed for
	// the client IP in usage records; ClientIP overrides the whole rule.
	TrustedProxies []netip.Prefix
	ClientIP       func(*http.Request) string

	// Realm is added to challenges if set.
	Realm string
	// Logger receives rejections at debug level (reason codes and token
	// identifiers, never tokens or proofs); nil logs nothing.
	Logger *slog.Logger
}

// Validator checks DPoP-bound (and, if allowed, bearer) RFC 9068 access
// tokens for one resource. It is safe for concurrent use.
type Validator struct {
	cfg     Config
	keys    *KeySet
	dpop    *dpop.Verifier
	algs    string
	skew    int64
	maxLife int64
	extBase *url.URL

	hdrMu    sync.RWMutex
	hdrCache map[string]jwsHeader
}

// New returns a Validator for cfg.
func New(cfg Config) (*Validator, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("Issuer is required"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("Audience is required"))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.MaxTokenLifetime <= 0 {
		cfg.MaxTokenLifetime = DefaultMaxTokenLifetime
		if cfg.State != nil {
			cfg.MaxTokenLifetime = cfg.State.MaxTokenLifetime()
		}
	}
	if cfg.State != nil && cfg.MaxTokenLifetime > cfg.State.MaxTokenLifetime() {
		errs = append(errs, fmt.Errorf("MaxTokenLifetime %v exceeds the CAE state's %v: revocations would expire before the tokens they revoke", cfg.MaxTokenLifetime, cfg.State.MaxTokenLifetime()))
	}
	if cfg.State != nil && cfg.ClockSkew > time.Duration(cfg.State.skew)*time.Second {
		errs = append(errs, fmt.Errorf("ClockSkew %v exceeds the CAE state's %ds: a revoked token could outlive its revocation", cfg.ClockSkew, cfg.State.skew))
	}
	if len(cfg.DPoPAlgs) == 0 {
		cfg.DPoPAlgs = dpop.DefaultAlgs
	}
	if cfg.Replay == nil {
		cfg.Replay = dpop.NewMemoryReplayCache(cfg.Now)
	}
	v := &Validator{
		cfg:      cfg,
		skew:     int64((cfg.ClockSkew + time.Second - 1) / time.Second),
		maxLife:  int64(cfg.MaxTokenLifetime / time.Second),
		hdrCache: make(map[string]jwsHeader),
	}
	if cfg.ExternalURL != "" {
		u, err := url.Parse(cfg.ExternalURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, errors.New("ExternalURL must be an absolute http(s) URL without query or fragment"))
		} else {
			u.Path = strings.TrimSuffix(u.Path, "/")
			u.RawPath = ""
			v.extBase = u
		}
	}
	algs := make([]string, len(cfg.DPoPAlgs))
	for i, a := range cfg.DPoPAlgs {
		algs[i] = string(a)
	}
	v.algs = strings.Join(algs, " ")
	v.keys = cfg.Keys
	if v.keys == nil && cfg.Issuer != "" {
		ks, err := NewKeySet(KeySetConfig{JWKSURL: cfg.JWKSURL, Issuer: cfg.Issuer, HTTPClient: cfg.HTTPClient, Now: cfg.Now, Logger: cfg.Logger})
		if err != nil {
			errs = append(errs, err)
		}
		v.keys = ks
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("rs: invalid config: %w", errors.Join(errs...))
	}
	v.dpop = &dpop.Verifier{
		Algs:   cfg.DPoPAlgs,
		MaxAge: cfg.DPoPMaxAge,
		Leeway: cfg.ClockSkew,
		Now:    cfg.Now,
		Replay: cfg.Replay,
		Nonces: cfg.Nonces,
	}
	return v, nil
}

// Keys returns the validator's key set (to share with a Receiver of the
// same issuer).
func (v *Validator) Keys() *KeySet { return v.keys }

// Middleware requires a valid token with Config.Scopes and puts its
// TokenInfo into the request context (see FromContext).
func (v *Validator) Middleware(next http.Handler) http.Handler {
	return v.Require(v.cfg.Scopes...)(next)
}

// Require returns middleware that requires a valid token with all of
// scopes (Config.Scopes are not added).
func (v *Validator) Require(scopes ...string) func(http.Handler) http.Handler {
	scopes = slices.Clone(scopes)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info, err := v.Authenticate(r, scopes...)
			if err != nil {
				v.WriteError(w, err)
				return
			}
			v.setNonce(w, info)
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), info)))
		})
	}
}

// setNonce hands out the current nonce when the proof used an older one,
// so clients rotate without a failed request (RFC 9449 §8.2).
func (v *Validator) setNonce(w http.ResponseWriter, info *TokenInfo) {
	if v.cfg.Nonces == nil || info.Scheme != "DPoP" {
		return
	}
	if n := v.cfg.Nonces.Nonce(); n != info.proofNonce {
		w.Header().Set("DPoP-Nonce", n)
	}
}

// WriteError answers a request that Authenticate rejected: status,
// WWW-Authenticate challenge(s) per RFC 6750 §3 and RFC 9449 §7.1,
// DPoP-Nonce when a nonce is required, and a JSON body with error and
// error_description. Errors that are not *Error become 500.
func (v *Validator) WriteError(w http.ResponseWriter, err error) {
	writeError(w, asError(err), v.algs, v.cfg.Realm, v.cfg.AllowBearer)
}

// Authenticate validates the request's access token (and DPoP proof) and
// checks the CAE state and scopes. On failure it returns an *Error to be
// written with WriteError. It records the jti of the proof, so call it
// once per request.
func (v *Validator) Authenticate(r *http.Request, scopes ...string) (*TokenInfo, error) {
	info, e := v.authenticate(r, scopes)
	if e == nil {
		v.report(r, info, nil)
		return info, nil
	}
	if e.Reason != "no_token" {
		v.report(r, info, e)
	}
	if v.cfg.Logger != nil && v.cfg.Logger.Enabled(r.Context(), slog.LevelDebug) {
		attrs := []any{"code", e.Code, "reason", e.Reason, "status", e.Status}
		if info != nil {
			attrs = append(attrs, "token_info", info)
		}
		if e.cause != nil {
			attrs = append(attrs, "err", e.cause)
		}
		v.cfg.Logger.DebugContext(r.Context(), "rs: request rejected", attrs...)
	}
	return nil, e
}

// authenticate returns the token info as soon as the signature is
// verified, even on a later failure, for usage records.
func (v *Validator) authenticate(r *http.Request, scopes []string) (*TokenInfo, *Error) {
	scheme, tok, e := v.credentials(r)
	if e != nil {
		return nil, e
	}
	claims, raw, e := v.verifyToken(r.Context(), tok)
	if e != nil {
		e.scheme = scheme
		return nil, e
	}
	info := claims.info(scheme, raw)
	now := v.cfg.Now()
	if e := v.checkClaims(claims, now.Unix()); e != nil {
		e.scheme = scheme
		return info, e
	}
	if e := v.checkBinding(r, scheme, tok, info); e != nil {
		if e.scheme == "" {
			e.scheme = scheme
		}
		return info, e
	}
	if v.cfg.State != nil {
		if d := v.cfg.State.Check(info); d != nil {
			e := caeError(d, v.cfg.State, now)
			e.scheme = scheme
			return info, e
		}
	}
	// Strict location: a token whose ipr claim excludes the client's
	// address is refused at once, with a challenge for a new token; the
	// IdP evaluates its location policies again (and refuses from there).
	if len(info.AllowedIPs) > 0 || hasIPR(claims) {
		ip, err := netip.ParseAddr(v.clientIP(r))
		if err != nil || !info.ipAllowed(ip) {
			e := newError(http.StatusUnauthorized, CodeInsufficientClaims, "location",
				"the access token may not be used from this network location")
			e.Claims = encodeClaims(map[string]any{"access_token": map[string]any{
				"nbf": map[string]any{"essential": true, "value": strconv.FormatInt(now.Unix(), 10)},
			}})
			e.scheme = scheme
			return info, e
		}
	}
	for _, s := range scopes {
		if !info.HasScope(s) {
			e := newError(http.StatusForbidden, CodeInsufficientScope, "insufficient_scope", "the access token lacks a required scope")
			e.Scope = strings.Join(scopes, " ")
			e.scheme = scheme
			return info, e
		}
	}
	return info, nil
}

// credentials reads the one Authorization header: "DPoP <token>" or, when
// allowed, "Bearer <token>" (RFC 6750 §2.1, RFC 9449 §7.1). Only the
// header is read; tokens in the query or body are not accepted.
func (v *Validator) credentials(r *http.Request) (scheme, tok string, e *Error) {
	hs := r.Header.Values("Authorization")
	switch len(hs) {
	case 0:
		return "", "", newError(http.StatusUnauthorized, "", "no_token", "")
	case 1:
	default:
		return "", "", newError(http.StatusBadRequest, CodeInvalidRequest, "multiple_authorization", "more than one Authorization header")
	}
	s, t, ok := strings.Cut(hs[0], " ")
	if !ok {
		return "", "", newError(http.StatusBadRequest, CodeInvalidRequest, "malformed_authorization", "malformed Authorization header")
	}
	t = strings.TrimLeft(t, " ")
	switch {
	case strings.EqualFold(s, "DPoP"):
		scheme = "DPoP"
	case strings.EqualFold(s, "Bearer"):
		scheme = "Bearer"
	default:
		// Another scheme (Basic, ...) is no credentials for this resource.
		return "", "", newError(http.StatusUnauthorized, "", "unsupported_scheme", "")
	}
	if !httpauth.IsToken68(t) {
		e := newError(http.StatusBadRequest, CodeInvalidRequest, "malformed_authorization", "malformed Authorization header")
		e.scheme = scheme
		return "", "", e
	}
	if scheme == "Bearer" && !v.cfg.AllowBearer {
		// Not even parsed: this resource takes sender-constrained tokens
		// only, so a bearer token is refused whatever it holds.
		return "", "", invalidToken("bearer_not_allowed", "this resource requires a DPoP-bound access token")
	}
	if len(t) > maxTokenSize {
		e := invalidToken("too_large", "the access token is too large")
		e.scheme = scheme
		return "", "", e
	}
	return scheme, t, nil
}

// verifyToken checks the JWS (typ at+jwt, ES256, key from the key set)
// and decodes the claims.
func (v *Validator) verifyToken(ctx context.Context, tok string) (*accessClaims, []byte, *Error) {
	jw, err := jws.Split(tok)
	if err != nil || !jw.Complete() {
		return nil, nil, invalidToken("malformed", "the access token is not a signed JWT")
	}
	v.hdrMu.RLock()
	h, cached := v.hdrCache[jw.Header()]
	v.hdrMu.RUnlock()
	if !cached {
		var err error
		if h, err = parseJWSHeader(jw.Header(), "at+jwt"); err != nil {
			var je jwsError
			errors.As(err, &je)
			return nil, nil, invalidToken(string(je), "the access token has an invalid header")
		}
	}
	key, err := v.keys.Key(ctx, h.kid, h.hasKID)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return nil, nil, invalidToken("unknown_key", "the access token is signed with an unknown key")
		}
		e := newError(http.StatusServiceUnavailable, "temporarily_unavailable", "keys_unavailable", "the token signing keys cannot be loaded; retry later")
		e.cause = err
		return nil, nil, e
	}
	if !jws.VerifyES256(key, jw.SigningInput(), jw.Signature()) {
		return nil, nil, invalidToken("bad_signature", "the access token signature is invalid")
	}
	if !cached {
		v.hdrMu.Lock()
		if len(v.hdrCache) < maxHeaderCache {
			v.hdrCache[jw.Header()] = h
		}
		v.hdrMu.Unlock()
	}
	raw, err := jws.DecodeSegment(jw.Payload())
	if err != nil {
		return nil, nil, invalidToken("malformed", "the access token payload is malformed")
	}
	c := new(accessClaims)
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, nil, invalidToken("malformed", "the access token payload is malformed")
	}
	return c, raw, nil
}

// checkBinding enforces RFC 9449 §7: a bound token needs the DPoP scheme
// and a valid proof by its key; the DPoP scheme needs a bound token.
func (v *Validator) checkBinding(r *http.Request, scheme, tok string, info *TokenInfo) *Error {
	if info.JKT == "" {
		info.proof = ProofNone
		if scheme == "DPoP" {
			return invalidToken("unbound_token_as_dpop", "the access token is not DPoP-bound")
		}
		return nil // Bearer, allowed (credentials refuses it otherwise)
	}
	info.proof = ProofMissing
	if scheme != "DPoP" {
		// RFC 9449 §7.2: answer with the DPoP challenge the token needs.
		e := invalidToken("bound_token_as_bearer", "a DPoP-bound access token must be presented with the DPoP scheme")
		e.scheme = "DPoP"
		return e
	}
	proof, err := dpop.FromRequest(r)
	if err != nil {
		if errors.Is(err, dpop.ErrNoProof) {
			return newError(http.StatusUnauthorized, CodeInvalidDPoPProof, "dpop_missing", "a DPoP proof is required")
		}
		info.proof = ProofInvalid
		return v.proofError(err)
	}
	info.proof = ProofInvalid
	target := v.requestURL(r)
	p, err := v.dpop.Verify(r.Context(), proof, dpop.Check{
		Method:       r.Method,
		URL:          target,
		AccessToken:  tok,
		JKT:          info.JKT,
		RequireNonce: v.cfg.Nonces != nil,
	})
	if err != nil {
		if _, uerr := dpop.NormalizeHTU(target); uerr != nil {
			// No proof can match a request without a usable Host; that is
			// the client's problem, not a server error.
			return newError(http.StatusUnauthorized, CodeInvalidDPoPProof, "dpop_htu_mismatch", "DPoP proof htu does not match the request URI")
		}
		if de := (*dpop.Error)(nil); errors.As(err, &de) && de.Reason == dpop.ReasonKeyMismatch {
			v.wrongKey(r, proof, target, tok, info)
		}
		return v.proofError(err)
	}
	info.proof, info.proofJKT = ProofOK, p.JKT
	info.proofNonce = p.Nonce
	return nil
}

// wrongKey records who made a proof with another key than the token's,
// for the usage record: the proof is verified again without the binding,
// and only a proof whose signature holds counts as wrong_key with its
// key's thumbprint (a forged jwk header proves nothing). Only such a
// rejected request pays for the second verification.
func (v *Validator) wrongKey(r *http.Request, proof, target, tok string, info *TokenInfo) {
	if v.cfg.Usage == nil {
		return
	}
	p, err := v.dpop.Verify(r.Context(), proof, dpop.Check{Method: r.Method, URL: target, AccessToken: tok})
	if err == nil {
		info.proof, info.proofJKT = ProofWrongKey, p.JKT
	}
}

func (v *Validator) proofError(err error) *Error {
	var de *dpop.Error
	if !errors.As(err, &de) {
		return serverError("dpop_internal", err)
	}
	e := newError(http.StatusUnauthorized, de.Code, "dpop_"+string(de.Reason), de.Description)
	e.cause = err
	if de.Code == dpop.CodeUseNonce && v.cfg.Nonces != nil {
		e.DPoPNonce = v.cfg.Nonces.Nonce()
	}
	return e
}

// requestURL is the target URI as the client addressed it: ExternalURL
// (or the request's scheme and Host) plus the path the client sent
// (RequestURI, so that http.StripPrefix in front of us changes nothing).
func (v *Validator) requestURL(r *http.Request) string {
	path := r.URL.EscapedPath()
	if ru := r.RequestURI; ru != "" && ru != "*" {
		if i := strings.IndexAny(ru, "?#"); i >= 0 {
			ru = ru[:i]
		}
		if strings.HasPrefix(ru, "/") {
			path = ru
		} else if u, err := url.Parse(ru); err == nil && u.IsAbs() {
			path = u.EscapedPath() // absolute-form request target
		}
	}
	if path == "" {
		path = "/"
	}
	if v.extBase != nil {
		return v.extBase.Scheme + "://" + v.extBase.Host + v.extBase.EscapedPath() + path
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + path
}

// report sends a usage record when a reporter is configured. Claims are
// included only when the token's signature verified (info != nil).
func (v *Validator) report(r *http.Request, info *TokenInfo, e *Error) {
	if v.cfg.Usage == nil {
		return
	}
	rec := UsageRecord{
		Time:      v.cfg.Now(),
		ClientIP:  v.clientIP(r),
		UserAgent: r.UserAgent(),
		Result:    ResultAllowed,
		Audience:  v.cfg.Audience,
	}
	if e != nil {
		rec.Result, rec.Reason = ResultRejected, e.Reason
	}
	if info != nil {
		rec.TokenID, rec.SessionID, rec.Subject = info.JTI, info.SessionID, info.Subject
		rec.ClientID, rec.DeviceID, rec.BoundJKT = info.ClientID, info.DeviceID, info.JKT
		rec.Proof, rec.JKT = info.proof, info.proofJKT
	}
	v.cfg.Usage.Report(rec)
}

// clientIP is Config.ClientIP's answer, or ClientIP with the configured
// trusted proxies; when the peer is not an IP address, its RemoteAddr
// host as is.
func (v *Validator) clientIP(r *http.Request) string {
	if v.cfg.ClientIP != nil {
		return v.cfg.ClientIP(r)
	}
	if ip := ClientIP(r, v.cfg.TrustedProxies); ip.IsValid() {
		return ip.String()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// hasIPR reports an ipr claim, even one whose ranges did not parse (which
// then allows nothing: fail closed).
func hasIPR(c *accessClaims) bool { return c.IPR != nil }
