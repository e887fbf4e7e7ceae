// Package oauth implements the protocol endpoints of Ward's authorization
// server: discovery, JWKS, the authorization endpoint (request
// validation, code issuance, error redirects), pushed authorization
// requests, device authorization (RFC 8628), the token endpoint,
// userinfo, introspection, revocation and logout, with client
// authentication and DPoP (RFC 9449) at the door.
//
// The endpoints parse requests and write responses. What a token request
// yields is decided by package grant (one handler per grant_type and the
// issuing pipeline, no HTTP); what happens in the browser between an
// authorization request and its code (sign-in, second factor, password
// change, Conditional Access remediation) by the sign-in pages
// (package signin), which the authorization endpoint hands the validated
// request to through Interaction and which call back through the
// exported IssueCode and RedirectError.
package oauth

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/browser"
	"github.com/ward-idp/ward/internal/oauth/grant"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/ratelimit"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
	"github.com/ward-idp/ward/internal/web"
	"github.com/ward-idp/ward/rs"
)

// Lifetimes of what the provider issues.
type Lifetimes struct {
	AccessToken   time.Duration
	IDToken       time.Duration
	RefreshToken  time.Duration
	Code          time.Duration
	PushedRequest time.Duration
	// DeviceCode is how long a device authorization (RFC 8628 device and
	// user code) stays valid.
	DeviceCode time.Duration
	// CAEAccessToken is the access-token lifetime for CAE-capable requests
	// of CAE-capable clients.
	CAEAccessToken time.Duration
}

// Config wires the provider to its services.
type Config struct {
	Issuer      string
	Store       store.Store
	Bus         bus.Bus
	Keys        *tokens.KeyManager
	Clients     *clients.Service
	TokenHasher *secret.Hasher
	// CookieKey authenticates the SSO and CSRF cookies (the sign-in
	// pages' key).
	CookieKey []byte
	DPoP      *dpop.Verifier
	// RequireDPoPNonce makes the token endpoint demand server nonces.
	RequireDPoPNonce bool
	Lifetimes        Lifetimes
	TrustedProxies   []netip.Prefix
	// ClientFailuresPerMinute bounds the failed client authentications of
	// one network (IPv4 address, IPv6 /64); beyond it requests get 429
	// and are not recorded (default 60).
	ClientFailuresPerMinute int
	Now                     func() time.Time
	Log                     *slog.Logger
	Pages                   *web.Pages
	// Devices finds the registered device of a DPoP key (token
	// protection); nil disables device binding.
	Devices DeviceLookup
	// Access decides Conditional Access for token requests; nil: no
	// policies.
	Access AccessEvaluator
	// Sessions ends sessions and records why (required).
	Sessions SessionRevoker
	// Changes delivers the client.* events stored by other processes
	// (another instance, a command-line tool); nil: only Bus's.
	Changes bus.Subscriber
}

// DeviceLookup finds the registered device a DPoP key belongs to
// (store.ErrNotFound when none does). The device service implements it.
type DeviceLookup interface {
	LookupByJKT(ctx context.Context, jkt string) (*model.Device, error)
}

// AccessEvaluator decides Conditional Access (the access service).
type AccessEvaluator interface {
	Evaluate(ctx context.Context, req access.Request) (*access.Result, error)
}

// SessionRevoker ends sessions (session.Service, which records each
// revocation once, with its events, and reports whether the call ended
// the session; a missing session is an error wrapping store.ErrNotFound).
type SessionRevoker interface {
	// Logout ends the session its user signed out of through clientID.
	Logout(ctx context.Context, id, clientID string) (bool, error)
	// AccessTokenRevoked ends the grant of a client in session id that
	// revoked its access token jti (valid until exp).
	AccessTokenRevoked(ctx context.Context, clientID, userID, id, jti string, exp time.Time) (bool, error)
	grant.SessionRevoker
}

// Interaction continues a validated authorization request in the
// browser: an SSO session or the sign-in pages, ending in IssueCode or
// RedirectError (signin.Handler).
type Interaction interface {
	Authorize(w http.ResponseWriter, r *http.Request, req *authz.Request, c *model.Client)
}

// Provider is the authorization server's protocol side.
type Provider struct {
	c        Config
	events   *bus.Emitter // records domain events; failures are logged
	clients  *clientCache
	grants   map[string]grant.Handler // by grant_type
	browser  *browser.State
	signIn   Interaction
	issuer   string
	dpopAlgs string
	// clientAuthLimit throttles failed client authentications per network.
	clientAuthLimit *ratelimit.Limiter
}

// New returns a provider. Zero lifetimes get defaults.
func New(c Config) *Provider {
	l := &c.Lifetimes
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.AccessToken, 10*time.Minute)
	def(&l.IDToken, 10*time.Minute)
	def(&l.RefreshToken, 30*24*time.Hour)
	def(&l.Code, time.Minute)
	def(&l.PushedRequest, 90*time.Second)
	def(&l.DeviceCode, 10*time.Minute)
	def(&l.CAEAccessToken, 24*time.Hour)
	if c.ClientFailuresPerMinute <= 0 {
		c.ClientFailuresPerMinute = 60
	}
	if c.Sessions == nil {
		panic("oauth: Config.Sessions is required")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	cc := newClientCache(c.Now)
	if c.Bus != nil {
		c.Bus.Subscribe("oauth-client-cache", cc.onEvent)
	}
	if c.Changes != nil {
		c.Changes.Subscribe("oauth-client-cache", cc.onEvent)
	}
	issuer := strings.TrimSuffix(c.Issuer, "/")
	events := bus.NewEmitter(c.Bus, c.Now).Logging(c.Log)
	gc := grant.Config{
		Issuer: issuer, Store: c.Store, Keys: c.Keys, TokenHasher: c.TokenHasher, Devices: c.Devices, Access: c.Access,
		Sessions: c.Sessions, Events: events, Now: c.Now, Log: c.Log,
		Lifetimes: grant.Lifetimes{AccessToken: l.AccessToken, IDToken: l.IDToken, RefreshToken: l.RefreshToken, CAEAccessToken: l.CAEAccessToken},
	}
	return &Provider{
		c:               c,
		events:          events,
		clients:         cc,
		grants:          grant.New(gc),
		browser:         browser.New(c.CookieKey, strings.HasPrefix(c.Issuer, "https://"), c.Now),
		issuer:          issuer,
		dpopAlgs:        strings.Join(dpopAlgs(c.DPoP), " "),
		clientAuthLimit: ratelimit.PerMinute(c.ClientFailuresPerMinute, 10000),
	}
}

func dpopAlgs(v *dpop.Verifier) []string {
	if len(v.Algs) == 0 {
		return []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "EdDSA"}
	}
	out := make([]string, len(v.Algs))
	for i, a := range v.Algs {
		out[i] = string(a)
	}
	return out
}

// Endpoint paths.
const (
	PathAuthorize  = "/authorize"
	PathPAR        = "/par"
	PathToken      = "/token"
	PathUserinfo   = "/userinfo"
	PathIntrospect = "/introspect"
	PathRevoke     = "/revoke"
	PathJWKS       = "/jwks"
	PathLogout     = "/logout"
	// PathDeviceAuthorization is the device authorization grant's
	// (RFC 8628) client endpoint; the verification page where the user
	// types the code is the sign-in's (authz.VerificationPath).
	PathDeviceAuthorization = "/device_authorization"
)

// Register adds the provider's routes to mux. The authorization endpoint
// hands validated requests to signIn.
func (p *Provider) Register(mux *http.ServeMux, signIn Interaction) {
	p.signIn = signIn
	mux.HandleFunc("GET /.well-known/openid-configuration", p.handleDiscovery)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", p.handleDiscovery)
	mux.HandleFunc("GET "+PathJWKS, p.handleJWKS)
	mux.HandleFunc("GET "+PathAuthorize, p.handleAuthorize)
	mux.HandleFunc("POST "+PathAuthorize, p.handleAuthorize)
	mux.HandleFunc("POST "+PathPAR, p.handlePAR)
	mux.HandleFunc("POST "+PathToken, p.handleToken)
	mux.HandleFunc("GET "+PathUserinfo, p.handleUserinfo)
	mux.HandleFunc("POST "+PathUserinfo, p.handleUserinfo)
	mux.HandleFunc("POST "+PathIntrospect, p.handleIntrospect)
	mux.HandleFunc("POST "+PathRevoke, p.handleRevoke)
	mux.HandleFunc("GET "+PathLogout, p.handleLogout)
	mux.HandleFunc("POST "+PathLogout, p.handleLogout)
	mux.HandleFunc("POST "+PathDeviceAuthorization, p.handleDeviceAuthorization)
	for _, path := range []string{PathToken, PathPAR, PathDeviceAuthorization, PathIntrospect, PathRevoke, PathJWKS, PathUserinfo, "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		mux.HandleFunc("OPTIONS "+path, p.handlePreflight)
	}
}

// TokenHandler is the token endpoint alone, for Ward's own clients that
// redeem their codes in process (the web console).
func (p *Provider) TokenHandler() http.Handler { return http.HandlerFunc(p.handleToken) }

// url returns the absolute URL of an endpoint path.
func (p *Provider) url(path string) string { return p.issuer + path }

// info is the request's origin for events and logs.
func (p *Provider) info(r *http.Request) origin.Info { return origin.Of(r, p.c.TrustedProxies) }

// clientIP is the connection's peer address, or the first untrusted hop
// of X-Forwarded-For when the peer is a configured trusted proxy
// (rs.ClientIP, the one client-IP rule).
func (p *Provider) clientIP(r *http.Request) netip.Addr {
	return rs.ClientIP(r, p.c.TrustedProxies)
}

// handlePreflight answers CORS preflight for the endpoints browsers call
// directly (public SPA clients). Credentials are never allowed.
func (p *Provider) handlePreflight(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
	w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, DPoP")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

func setCORS(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "DPoP-Nonce, WWW-Authenticate")
	}
}

// WithRequestContext is middleware giving each request a correlation id
// (X-Correlation-ID response header) that errors and logs share, and
// attaching the request's origin (client IP under the trusted-proxy rule,
// user agent, correlation id) for the events it causes (origin.Middleware).
func WithRequestContext(next http.Handler, trusted []netip.Prefix) http.Handler {
	return origin.Middleware(next, trusted)
}

func correlationID(r *http.Request) string { return origin.CorrelationID(r) }

// Client returns a client registration, from a cache kept fresh by
// client.* events (the sign-in pages use it too). The returned value is
// shared: callers must not modify it.
func (p *Provider) Client(ctx context.Context, id string) (*model.Client, error) {
	return p.client(ctx, id)
}
