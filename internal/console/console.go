// Package console is Ward's web console at /console: server-rendered
// pages (html/template, with htmx, vendored, for partial updates; every
// page works without JavaScript) for security operators, helpdesk staff
// and administrators: a dashboard of sign-ins, token-protection coverage,
// refused replays, risk and device compliance; users with their sessions,
// devices, second factors and risk; devices with their posture; the
// sign-in and audit logs with their verification status.
//
// The console is a client of Ward itself (ward-console): an operator
// signs in through Ward's own sign-in pages (authorization code with
// PKCE, a multi-factor acr requested and required), so Conditional
// Access applies to it like to any application. Its session is the access
// token it was issued, sealed in a __Host- cookie (HttpOnly, SameSite
// Strict, Secure under HTTPS). Every request checks that token as any
// Ward resource does (signature, expiry, revocation, strict location) and
// the Ward session behind it (live, user enabled, bound to this browser
// when the session is DBSC-bound), then the operator's current roles: a
// revoked session, a disabled user or a removed role ends access at the
// next request.
//
// Every state change needs a POST with the session's synchronizer CSRF
// token and a same-origin Origin header; every denial is recorded as
// console.access_denied. Changes go through the services, which record
// them with the operator as actor. Pages are served under a strict CSP
// (scripts and styles from Ward only, no inline script or style).
//
// static/htmx.min.js is htmx 2.0.11 (npm package htmx.org, dist/htmx.min.js,
// SHA-256 d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717),
// Zero-Clause BSD licence (static/htmx.LICENSE), embedded as it is.
package console

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
)

// Prefix is the path of the console.
const Prefix = "/console"

// The interfaces below are what the console asks of each service, method
// for method; the wiring passes the services themselves.

// Identity is the identity service (identity.Service).
type Identity interface {
	GetUser(ctx context.Context, id string) (*model.User, error)
	GetUserByUsername(ctx context.Context, username string) (*model.User, error)
	ListUsers(ctx context.Context) ([]*model.User, error)
	SetPassword(ctx context.Context, actor, userID, password string) error
	SetDisabled(ctx context.Context, actor, userID string, disabled bool) error
	Unlock(ctx context.Context, actor, userID string) error
	HasTOTP(u *model.User) bool
	GroupsOf(ctx context.Context, userID string) ([]*model.Group, error)
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
}

// Sessions is the owner of sign-in sessions (session.Service).
type Sessions interface {
	Get(ctx context.Context, id string) (*model.Session, error)
	List(ctx context.Context, f session.Filter) ([]*model.Session, error)
	Revoke(ctx context.Context, actor, id string, cause model.RevocationCause) (bool, error)
	RevokeUser(ctx context.Context, actor, userID string, cause model.RevocationCause) ([]string, error)
	Logout(ctx context.Context, id, clientID string) (bool, error)
	Bindings(ctx context.Context, ids []string) (map[string]*session.Binding, error)
}

// Devices is the device service (device.Service).
type Devices interface {
	List(ctx context.Context, f device.Filter) ([]*model.Device, error)
	Get(ctx context.Context, id string) (*model.Device, error)
	Disable(ctx context.Context, actor, id string) (*model.Device, error)
	MarkLost(ctx context.Context, actor, id string) (*model.Device, error)
	Enable(ctx context.Context, actor, id string) (*model.Device, error)
}

// Risk is the risk service (risk.Service).
type Risk interface {
	List(ctx context.Context, levels []string, limit int) (*risk.Listing, error)
	Explain(ctx context.Context, userID, sessionID string) (*risk.Explanation, error)
	Dismiss(ctx context.Context, actor string, t risk.Target, reason string) (*risk.Dismissal, error)
	ConfirmCompromised(ctx context.Context, actor, userID, reason string) ([]string, error)
}

// AuditLog reads the audit record (the store does).
type AuditLog interface {
	ListEvents(ctx context.Context, q audit.Query) ([]*audit.Record, error)
	CountEvents(ctx context.Context, f store.EventCountFilter) ([]store.EventCount, error)
}

// Authenticator checks an access token as every Ward resource does
// (oauth.Provider).
type Authenticator interface {
	AuthenticateResource(r *http.Request) (*oauth.Caller, string, *oauth.Error)
}

// BrowserBinding says whether a request comes from the browser a Ward
// session is bound to (the sign-in's Device Bound Session Credentials).
type BrowserBinding interface {
	BrowserBound(r *http.Request, sess *model.Session) bool
}

// Deps is what the console is built from. Risk, Verify, Log and Now are
// optional.
type Deps struct {
	// Issuer is Ward's issuer URL; the console is served at Issuer +
	// Prefix and accepts state changes only from the issuer's origin.
	Issuer   string
	Identity Identity
	Sessions Sessions
	Devices  Devices
	Risk     Risk
	// Incidents is the incident service; nil: no incident pages.
	Incidents Incidents
	// Access is the Conditional Access service; nil: no policy pages.
	Access Access
	// Graph draws investigation graphs (on the incident and user
	// pages); nil: no graphs.
	Graph Graphs
	// Clients and Keys are the client registry and the signing keys;
	// nil: no such pages.
	Clients Clients
	Keys    SigningKeys
	Audit   AuditLog
	// Verify checks the audit log's hash chain and signed checkpoints
	// (chain.Verify); nil: the logs page shows no verification.
	Verify func(ctx context.Context) (*chain.Report, error)
	// Auth checks the console's access tokens.
	Auth Authenticator
	// Browser holds console sessions to their Ward session's DBSC binding.
	Browser BrowserBinding
	// Token is Ward's token endpoint: the console redeems its codes
	// there, in process, like any client.
	Token http.Handler
	// ClientID and ClientSecret are the console's client credentials.
	ClientID     string
	ClientSecret string
	// CookieKey seals the console's cookies (32 bytes).
	CookieKey []byte
	// Bus records the console's own events (denials, exports, sign-ins).
	Bus bus.Bus
	Now func() time.Time
	Log *slog.Logger
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console serves the web console. Create it with New, add pages with
// AddPage, and mount it with Register.
type Console struct {
	d       Deps
	events  *bus.Emitter
	t       *template.Template
	mux     *http.ServeMux
	issuer  string
	origin  string
	secure  bool
	cookies *sealer
	pages   []Page
	// verification caches the last audit log verification.
	verifyMu  sync.Mutex
	verifyAt  time.Time
	verifyRep *chain.Report
	verifyErr error
}

// New returns the console over d.
func New(d Deps) (*Console, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	d.Log = d.Log.With("component", "console")
	t, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	cs, err := newSealer(d.CookieKey)
	if err != nil {
		return nil, err
	}
	issuer := strings.TrimSuffix(d.Issuer, "/")
	c := &Console{
		d: d, t: t, mux: http.NewServeMux(), issuer: issuer, origin: originOf(issuer),
		secure: strings.HasPrefix(issuer, "https://"), cookies: cs,
		events: bus.NewEmitter(d.Bus, d.Now).Logging(d.Log),
	}
	c.routes()
	return c, nil
}

// Page is a page another part of Ward adds to the console (incidents,
// the investigation graph): served at Prefix + Path behind the same
// sign-in, role and CSRF checks, and listed in the navigation.
type Page struct {
	Path  string // e.g. "/incidents"; the handler also gets Path + "/..."
	Title string
	// Permission the operator needs (PermView for reading pages).
	Permission Permission
	// Handler serves the page; Operator(r.Context()) is the operator and
	// Render draws the console's layout around its content.
	Handler http.Handler
}

// AddPage mounts p (before Register).
func (c *Console) AddPage(p Page) {
	c.pages = append(c.pages, p)
	c.handle("GET "+Prefix+p.Path, p.Permission, func(w http.ResponseWriter, r *http.Request) { p.Handler.ServeHTTP(w, r) })
	c.handle(Prefix+p.Path+"/", p.Permission, func(w http.ResponseWriter, r *http.Request) { p.Handler.ServeHTTP(w, r) })
}

// Register mounts the console on mux.
func (c *Console) Register(mux *http.ServeMux) {
	mux.Handle(Prefix+"/", c)
	mux.Handle("GET "+Prefix, http.RedirectHandler(Prefix+"/", http.StatusSeeOther))
}

// ServeHTTP routes a console request; unknown paths get the console's
// not-found page.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := c.mux.Handler(r); pattern == "" {
		c.securityHeaders(w)
		c.errorPage(w, r, http.StatusNotFound, "Not found", "There is no such page in the console.")
		return
	}
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	sub, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix(Prefix+"/static/", http.FileServer(http.FS(sub)))
	c.mux.Handle("GET "+Prefix+"/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	// Signing in and out.
	c.mux.HandleFunc("GET "+Prefix+"/login", c.handleLogin)
	c.mux.HandleFunc("GET "+Prefix+"/callback", c.handleCallback)
	c.mux.HandleFunc("GET "+Prefix+"/signed-out", c.handleSignedOut)
	c.handle("POST "+Prefix+"/logout", PermSignOut, c.handleLogout)
	// Pages.
	c.handle("GET "+Prefix+"/{$}", PermView, c.handleDashboard)
	c.handle("GET "+Prefix+"/users", PermView, c.handleUsers)
	c.handle("GET "+Prefix+"/users/{id}", PermView, c.handleUser)
	c.handle("POST "+Prefix+"/users/{id}/sessions/revoke", PermRevokeSessions, c.handleRevokeUserSessions)
	c.handle("POST "+Prefix+"/users/{id}/sessions/{sid}/revoke", PermRevokeSessions, c.handleRevokeSession)
	c.handle("POST "+Prefix+"/users/{id}/disable", PermDisableUsers, c.handleSetDisabled(true))
	c.handle("POST "+Prefix+"/users/{id}/enable", PermDisableUsers, c.handleSetDisabled(false))
	c.handle("POST "+Prefix+"/users/{id}/password", PermResetPasswords, c.handleResetPassword)
	c.handle("POST "+Prefix+"/users/{id}/unlock", PermResetPasswords, c.handleUnlock)
	c.handle("POST "+Prefix+"/users/{id}/risk/dismiss", PermManageRisk, c.handleDismissRisk)
	c.handle("POST "+Prefix+"/users/{id}/risk/confirm-compromised", PermManageRisk, c.handleConfirmCompromised)
	c.handle("GET "+Prefix+"/devices", PermView, c.handleDevices)
	c.handle("GET "+Prefix+"/devices/{id}", PermView, c.handleDevice)
	c.handle("POST "+Prefix+"/devices/{id}/{action}", PermManageDevices, c.handleDeviceAction)
	if c.d.Incidents != nil {
		c.handle("GET "+Prefix+"/incidents", PermView, c.handleIncidents)
		c.handle("GET "+Prefix+"/incidents/{ref}", PermView, c.handleIncident)
		c.handle("POST "+Prefix+"/incidents/{ref}/assign", PermManageIncidents, c.incidentAction(c.handleIncidentAssign))
		c.handle("POST "+Prefix+"/incidents/{ref}/comment", PermManageIncidents, c.incidentAction(c.handleIncidentComment))
		c.handle("POST "+Prefix+"/incidents/{ref}/status", PermManageIncidents, c.incidentAction(c.handleIncidentStatus))
		c.handle("POST "+Prefix+"/incidents/{ref}/merge", PermManageIncidents, c.incidentAction(c.handleIncidentMerge))
		c.handle("POST "+Prefix+"/incidents/{ref}/act", PermManageIncidents, c.handleIncidentAct)
	}
	if c.d.Access != nil {
		c.handle("GET "+Prefix+"/access", PermViewAccess, c.handleAccess)
		c.handle("GET "+Prefix+"/access/diff", PermViewAccess, c.handleAccessDiff)
		c.handle("GET "+Prefix+"/access/whatif", PermViewAccess, c.handleWhatIf)
		c.handle("GET "+Prefix+"/access/report-only", PermViewAccess, c.handleReportOnly)
	}
	if c.d.Clients != nil {
		c.handle("GET "+Prefix+"/clients", PermViewConfig, c.handleClients)
		c.handle("GET "+Prefix+"/clients/{id}", PermViewConfig, c.handleClient)
		c.handle("POST "+Prefix+"/clients/{id}/secret", PermManageClients, c.handleRotateClientSecret)
	}
	if c.d.Keys != nil {
		c.handle("GET "+Prefix+"/keys", PermViewConfig, c.handleKeys)
		c.handle("POST "+Prefix+"/keys/rotate", PermManageKeys, c.handleRotateKeys)
	}
	c.handle("GET "+Prefix+"/logs", PermViewLogs, c.handleLogs)
	c.handle("GET "+Prefix+"/logs/verification", PermViewLogs, c.handleVerification)
	c.handle("GET "+Prefix+"/logs/export", PermExportLogs, c.handleExport)
}

// securityHeaders are the headers of every console response: the
// sign-in pages' policy (nothing inline, no framing, forms to Ward only),
// with scripts and requests to Ward itself for htmx.
func (c *Console) securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin (not no-referrer): browsers send "Origin: null" on a
	// POST under no-referrer, and the console checks the Origin.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// originOf returns scheme://host of an absolute URL.
func originOf(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return ""
	}
	host, _, _ := strings.Cut(rest, "/")
	return scheme + "://" + host
}

// userLookup finds users by id for one request, each once; a user that
// no longer exists is nil.
type userLookup struct {
	ctx context.Context
	id  Identity
	m   map[string]*model.User
}

func (c *Console) lookup(ctx context.Context) *userLookup {
	return &userLookup{ctx: ctx, id: c.d.Identity, m: map[string]*model.User{}}
}

func (l *userLookup) get(id string) *model.User {
	if id == "" {
		return nil
	}
	u, ok := l.m[id]
	if !ok {
		u, _ = l.id.GetUser(l.ctx, id)
		l.m[id] = u
	}
	return u
}
