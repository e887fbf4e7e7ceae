// Package signin is the sign-in interaction of Ward's authorization
// server: the pages a person goes through in a browser between an
// authorization request and its code, or between typing a device's user
// code and approving it. It covers the login form, the second factor,
// the password change Conditional Access can require, Conditional Access
// at sign-in and at device approval (remediating where it can: a second
// factor, a password change, a fresh sign-in; naming what failed where it
// cannot), the device verification and confirmation pages (RFC 8628), and
// Device Bound Session Credentials for the SSO session.
//
// It meets the protocol endpoints (package oauth) through two small
// interfaces and never imports them: the authorization endpoint hands it a
// validated request (Handler.Authorize), and it continues into the
// endpoint's code issuance and error redirects (Protocol). The values they
// exchange, the browser cookies and sealed state, and the wording of
// Conditional Access come from oauth's leaf packages.
package signin

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/browser"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/ratelimit"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

// Protocol is what a sign-in continues into: the authorization server's
// protocol side (oauth.Provider).
type Protocol interface {
	// Client returns a client registration (store.ErrNotFound when none).
	Client(ctx context.Context, id string) (*model.Client, error)
	// IssueCode issues the code of req for the signed-in session and
	// redirects the browser to the client.
	IssueCode(w http.ResponseWriter, r *http.Request, req *authz.Request, c *model.Client, sess *model.Session)
	// RedirectError sends an authorization error to the client of req.
	RedirectError(w http.ResponseWriter, r *http.Request, req *authz.Request, e *oautherr.Error)
}

// DeviceLookup finds the registered device a DPoP key belongs to
// (store.ErrNotFound when none does): the device service.
type DeviceLookup interface {
	LookupByJKT(ctx context.Context, jkt string) (*model.Device, error)
}

// AccessEvaluator decides Conditional Access: the access service.
type AccessEvaluator interface {
	Evaluate(ctx context.Context, req access.Request) (*access.Result, error)
}

// RiskAssessor computes the risk of a sign-in before Conditional Access
// decides it (the risk engine). It is given the activity the sign-in
// would record: kind signin (credentials just checked) or sso_signin (an
// SSO session reused; SessionID is that session), with the user, client,
// device, DBSC key, IP and user agent of this request; the id is not
// known yet. It returns none, low, medium or high; an error refuses the
// sign-in (fail closed, like Conditional Access).
type RiskAssessor interface {
	AssessSignIn(ctx context.Context, a activity.Activity) (level string, err error)
}

// Config wires the sign-in to its services.
type Config struct {
	Issuer   string
	Store    store.Store
	Bus      bus.Bus
	Identity *identity.Service
	// CookieKey authenticates the SSO cookie and the sealed interaction
	// state (the protocol endpoints' key).
	CookieKey []byte
	// SessionIdle and SessionAbsolute bound the SSO sessions a sign-in
	// creates (defaults 72 h and 30 days).
	SessionIdle     time.Duration
	SessionAbsolute time.Duration
	TrustedProxies  []netip.Prefix
	Now             func() time.Time
	Log             *slog.Logger
	Pages           *web.Pages
	// Devices finds the registered device of a DPoP key; nil: no device
	// registry.
	Devices DeviceLookup
	// Access decides Conditional Access; nil: no policies.
	Access AccessEvaluator
	// Risk computes each sign-in's risk for Conditional Access's sign-in
	// risk condition; nil: every sign-in's risk is none.
	Risk RiskAssessor
	// Protocol is the authorization server the sign-in continues into
	// (required).
	Protocol Protocol
	// PasskeyRecoveryCode lets a user who lost every passkey use a TOTP
	// recovery code at a phishing-resistant step to reach My account and
	// add a new one (passkeys.recovery_fallback: recovery_code).
	PasskeyRecoveryCode bool
}

// Handler serves the sign-in pages.
type Handler struct {
	c       Config
	events  *bus.Emitter // records domain events; failures are logged
	browser *browser.State
	issuer  string
	// userCodeLimit throttles wrong user codes per client IP (RFC 8628 §5.1).
	userCodeLimit *ratelimit.Limiter
}

// New returns the sign-in handler.
func New(c Config) *Handler {
	if c.SessionIdle <= 0 {
		c.SessionIdle = 72 * time.Hour
	}
	if c.SessionAbsolute <= 0 {
		c.SessionAbsolute = 30 * 24 * time.Hour
	}
	if c.Protocol == nil {
		panic("signin: Config.Protocol is required")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		c:             c,
		events:        bus.NewEmitter(c.Bus, c.Now).Logging(c.Log),
		browser:       browser.New(c.CookieKey, strings.HasPrefix(c.Issuer, "https://"), c.Now),
		issuer:        strings.TrimSuffix(c.Issuer, "/"),
		userCodeLimit: ratelimit.New(userCodeBurst, userCodeRefill, 10000),
	}
}

// Page paths.
const (
	PathLogin    = "/login"
	PathLoginMFA = "/login/mfa"
	// PathLoginPassword is the password change Conditional Access can
	// require during sign-in (user risk self-remediation).
	PathLoginPassword = "/login/password"
	// PathDevice is the device grant's verification page, where the user
	// types the code; PathDeviceConfirm takes the approval or denial.
	PathDevice        = authz.VerificationPath
	PathDeviceConfirm = "/device/confirm"
	// Device Bound Session Credentials.
	PathDBSCRegister = "/dbsc/register"
	PathDBSCRefresh  = "/dbsc/refresh"
)

// Register adds the sign-in pages to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathLogin, h.handleLogin)
	mux.HandleFunc("POST "+PathLoginMFA, h.handleLoginMFA)
	mux.HandleFunc("POST "+PathLoginPassword, h.handleLoginPassword)
	mux.HandleFunc("POST "+PathLoginPasskey, h.handleLoginPasskey)
	mux.HandleFunc("POST "+PathLoginMFAPasskey, h.handleLoginMFAPasskey)
	mux.HandleFunc("GET "+PathAccount, h.handleAccount)
	mux.HandleFunc("POST "+PathAccountPasskeys, h.handleAccountAddPasskey)
	mux.HandleFunc("POST "+PathAccountPasskeyRemove, h.handleAccountRemovePasskey)
	mux.HandleFunc("POST "+PathAccountPasskeyRename, h.handleAccountRenamePasskey)
	mux.HandleFunc("GET "+PathDevice, h.handleDevicePage)
	mux.HandleFunc("POST "+PathDevice, h.handleDeviceCode)
	mux.HandleFunc("POST "+PathDeviceConfirm, h.handleDeviceConfirm)
	mux.HandleFunc("POST "+PathDBSCRegister, h.handleDBSCRegister)
	mux.HandleFunc("POST "+PathDBSCRefresh, h.handleDBSCRefresh)
}

// url returns the absolute URL of a path.
func (h *Handler) url(path string) string { return h.issuer + path }

// info is the request's origin for events and logs.
func (h *Handler) info(r *http.Request) origin.Info { return origin.Of(r, h.c.TrustedProxies) }

func correlationID(r *http.Request) string { return origin.CorrelationID(r) }

func newID() string { return secret.RandomString(16) }

// signedIn returns the browser's live SSO session and its user, or nils:
// an authentic cookie, an active session (with its bound cookie when
// DBSC-bound) of a user who is not disabled.
func (h *Handler) signedIn(r *http.Request) (*model.Session, *model.User) {
	sid := h.browser.Session(r)
	if sid == "" {
		return nil, nil
	}
	ctx := r.Context()
	sess, err := h.c.Store.GetSession(ctx, sid)
	if err != nil || !sess.Active(h.c.Now()) || !h.dbscSatisfied(r, sess) {
		return nil, nil
	}
	u, err := h.c.Store.GetUser(ctx, sess.UserID)
	if err != nil || u.Disabled {
		return nil, nil
	}
	return sess, u
}
