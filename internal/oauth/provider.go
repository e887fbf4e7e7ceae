// Package oauth implements Ward's authorization server: discovery, JWKS,
// the authorization endpoint with its sign-in interaction, pushed
// authorization requests, device authorization (RFC 8628), the token
// endpoint (authorization_code, refresh_token, client_credentials,
// device_code) with DPoP (RFC 9449), userinfo, introspection, revocation
// and logout.
//
// Handlers parse requests and render responses; the protocol decisions
// live in the grant functions, which return values or *Error.
package oauth

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/ratelimit"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
	"github.com/ward-idp/ward/internal/web"
	"github.com/ward-idp/ward/rs"
)

// Lifetimes of what the provider issues.
type Lifetimes struct {
	AccessToken     time.Duration
	IDToken         time.Duration
	RefreshToken    time.Duration
	Code            time.Duration
	PushedRequest   time.Duration
	SessionIdle     time.Duration
	SessionAbsolute time.Duration
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
	Identity    *identity.Service
	Clients     *clients.Service
	TokenHasher *secret.Hasher
	// CookieKey authenticates the SSO cookie and signed interaction state.
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
	// Access decides Conditional Access for sign-ins and token requests;
	// nil: no policies.
	Access AccessEvaluator
	// Sessions ends sessions and records why (required).
	Sessions SessionRevoker
	// Changes delivers the client.* events stored by other processes
	// (another instance, a command-line tool); nil: only Bus's.
	Changes bus.Subscriber
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
	// RefreshTokenReused ends the session of a rotated refresh token
	// presented again (with a DPoP key of thumbprint jkt, "" for none).
	RefreshTokenReused(ctx context.Context, clientID string, rt *model.RefreshToken, jkt string) (bool, error)
	// CodeReused ends the session of an authorization code presented
	// again.
	CodeReused(ctx context.Context, clientID string, ac *model.AuthCode) (bool, error)
}

// Provider is the authorization server.
type Provider struct {
	c        Config
	events   *bus.Emitter // records domain events; failures are logged
	clients  *clientCache
	issuer   string
	secure   bool // issuer is https: cookies get Secure
	dpopAlgs string
	// userCodeLimit throttles wrong user codes per client IP (RFC 8628 §5.1).
	userCodeLimit *ratelimit.Limiter
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
	def(&l.SessionIdle, 72*time.Hour)
	def(&l.SessionAbsolute, 30*24*time.Hour)
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
	return &Provider{
		c:               c,
		events:          bus.NewEmitter(c.Bus, c.Now).Logging(c.Log),
		clients:         cc,
		issuer:          strings.TrimSuffix(c.Issuer, "/"),
		secure:          strings.HasPrefix(c.Issuer, "https://"),
		dpopAlgs:        strings.Join(dpopAlgs(c.DPoP), " "),
		userCodeLimit:   ratelimit.New(userCodeBurst, userCodeRefill, 10000),
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
	PathLogin      = "/login"
	PathLoginMFA   = "/login/mfa"
	// PathLoginPassword is the password change Conditional Access can
	// require during sign-in (user risk self-remediation).
	PathLoginPassword = "/login/password"
	// Device authorization grant (RFC 8628): the client's endpoint, the
	// verification page where the user types the code, and the
	// approve/deny form.
	PathDeviceAuthorization = "/device_authorization"
	PathDevice              = "/device"
	PathDeviceConfirm       = "/device/confirm"
)

// Register adds the provider's routes to mux.
func (p *Provider) Register(mux *http.ServeMux) {
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
	mux.HandleFunc("POST "+PathLogin, p.handleLogin)
	mux.HandleFunc("POST "+PathLoginMFA, p.handleLoginMFA)
	mux.HandleFunc("POST "+PathLoginPassword, p.handleLoginPassword)
	mux.HandleFunc("POST "+PathDeviceAuthorization, p.handleDeviceAuthorization)
	mux.HandleFunc("GET "+PathDevice, p.handleDevicePage)
	mux.HandleFunc("POST "+PathDevice, p.handleDeviceCode)
	mux.HandleFunc("POST "+PathDeviceConfirm, p.handleDeviceConfirm)
	mux.HandleFunc("POST "+PathDBSCRegister, p.handleDBSCRegister)
	mux.HandleFunc("POST "+PathDBSCRefresh, p.handleDBSCRefresh)
	for _, path := range []string{PathToken, PathPAR, PathDeviceAuthorization, PathIntrospect, PathRevoke, PathJWKS, PathUserinfo, "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
		mux.HandleFunc("OPTIONS "+path, p.handlePreflight)
	}
}

// url returns the absolute URL of an endpoint path.
func (p *Provider) url(path string) string { return p.issuer + path }

// reqInfo is what every event records about the request.
type reqInfo struct {
	IP        string
	UserAgent string
	CorrID    string
}

func (p *Provider) info(r *http.Request) reqInfo {
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return reqInfo{IP: p.clientIP(r).String(), UserAgent: ua, CorrID: correlationID(r)}
}

func (ri reqInfo) event(t model.EventType) *model.Event {
	return &model.Event{Type: t, IP: ri.IP, UserAgent: ri.UserAgent, CorrelationID: ri.CorrID, Outcome: model.OutcomeSuccess}
}

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

func newID() string { return secret.RandomString(16) }

type ctxKey int

const corrKey ctxKey = 1

// WithRequestContext is middleware giving each request a correlation id
// (X-Correlation-ID response header) that errors and logs share, and
// attaching the request's origin (client IP under the trusted-proxy rule,
// user agent, correlation id) for the events it causes.
func WithRequestContext(next http.Handler, trusted []netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := secret.RandomString(9)
		w.Header().Set("X-Correlation-ID", id)
		ua := r.UserAgent()
		if len(ua) > 256 {
			ua = ua[:256]
		}
		ctx := context.WithValue(r.Context(), corrKey, id)
		ctx = bus.WithOrigin(ctx, bus.Origin{IP: rs.ClientIP(r, trusted).String(), UserAgent: ua, CorrelationID: id})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func correlationID(r *http.Request) string {
	if v, ok := r.Context().Value(corrKey).(string); ok {
		return v
	}
	return ""
}
