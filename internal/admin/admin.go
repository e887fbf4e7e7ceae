// Package admin is Ward's admin API: JSON over HTTP under /admin/api/v1
// for users, groups, OAuth clients, sessions and the audit log.
//
// Every request is authenticated with an access token Ward itself issued
// (oauth.Provider.AuthenticateResource: signature, expiry, the DPoP proof of
// a bound token, and a live session and user). It is authorised when the
// token belongs to a user (not a client_credentials token), is meant for
// Ward (its audience contains the issuer), the user holds model.RoleAdmin
// and the token's scope contains ward:admin. Every denial is recorded as an
// admin.access_denied event.
//
// Handlers parse and render; the identity and clients services decide and
// publish the domain events, attributed to the admin's user id. Responses
// are explicit DTOs: password hashes, TOTP seeds, client-secret hashes and
// private keys never leave the server. A generated client secret is shown
// once, in the response that created it.
package admin

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/textclean"
	"github.com/ward-idp/ward/rs"
)

// Prefix is the path prefix of every admin API route.
const Prefix = "/admin/api/v1"

// ScopeAdmin is the scope an access token needs to call the admin API.
const ScopeAdmin = "ward:admin"

// maxBody bounds request bodies.
const maxBody = 64 << 10

// API serves the admin API. Create it with New and add it to a mux with
// Register.
type API struct {
	identity  Identity
	clients   Clients
	devices   Devices
	access    Access
	sessions  Sessions
	risk      Risk
	incidents Incidents
	graph     Graph
	audit     AuditLog
	auth      Authenticator
	events    *bus.Emitter // records the API's own events (denials)
	log       *slog.Logger
	now       func() time.Time
	issuer    string
	trusted   []netip.Prefix
	dpopAlgs  string
	mux       *http.ServeMux
}

// New returns the admin API over d.
func New(d Deps) *API {
	api := &API{
		identity:  d.Identity,
		clients:   d.Clients,
		devices:   d.Devices,
		access:    d.Access,
		sessions:  d.Sessions,
		risk:      d.Risk,
		incidents: d.Incidents,
		graph:     d.Graph,
		audit:     d.Audit,
		auth:      d.Auth,
		log:       d.Log,
		now:       d.Now,
		issuer:    strings.TrimSuffix(d.Issuer, "/"),
		trusted:   d.TrustedProxies,
		mux:       http.NewServeMux(),
	}
	if api.log == nil {
		api.log = slog.New(slog.DiscardHandler)
	}
	api.log = api.log.With("component", "admin")
	if api.now == nil {
		api.now = time.Now
	}
	api.events = bus.NewEmitter(d.Bus, api.now).Logging(api.log)
	// The server's DPoP verifier uses the default algorithms; the
	// provider does not export its list.
	algs := make([]string, len(dpop.DefaultAlgs))
	for i, a := range dpop.DefaultAlgs {
		algs[i] = string(a)
	}
	api.dpopAlgs = strings.Join(algs, " ")
	api.routes()
	return api
}

// Register adds the admin API under Prefix to mux.
func (api *API) Register(mux *http.ServeMux) {
	mux.Handle(Prefix+"/", api)
}

func (api *API) routes() {
	// Users.
	api.handle("GET /users", api.listUsers)
	api.handle("POST /users", api.createUser)
	api.handle("GET /users/{id}", api.getUser)
	api.handle("PATCH /users/{id}", api.patchUser)
	api.handle("POST /users/{id}/unlock", api.unlockUser)
	api.handle("DELETE /users/{id}/totp", api.removeTOTP)
	api.handle("POST /users/{id}/recovery-codes", api.newRecoveryCodes)
	api.handle("GET /users/{id}/passkeys", api.listPasskeys)
	api.handle("PATCH /users/{id}/passkeys/{pid}", api.renamePasskey)
	api.handle("DELETE /users/{id}/passkeys/{pid}", api.removePasskey)
	api.handle("POST /users/{id}/passkeys/reset", api.resetPasskeys)
	api.handle("DELETE /users/{id}", api.deleteUser)
	api.handle("GET /users/{id}/sessions", api.listUserSessions)
	api.handle("POST /users/{id}/sessions/revoke", api.revokeUserSessions)
	// Groups.
	api.handle("GET /groups", api.listGroups)
	api.handle("POST /groups", api.createGroup)
	api.handle("GET /groups/{id}", api.getGroup)
	api.handle("POST /groups/{id}/members", api.addMember)
	api.handle("DELETE /groups/{id}/members/{user_id}", api.removeMember)
	api.handle("DELETE /groups/{id}", api.deleteGroup)
	// Clients.
	api.handle("GET /clients", api.listClients)
	api.handle("POST /clients", api.createClient)
	api.handle("GET /clients/{id}", api.getClient)
	api.handle("PATCH /clients/{id}", api.patchClient)
	api.handle("POST /clients/{id}/secret", api.rotateClientSecret)
	api.handle("DELETE /clients/{id}", api.deleteClient)
	// Sessions.
	api.handle("GET /sessions", api.listSessions)
	api.handle("GET /sessions/{id}", api.getSession)
	api.handle("DELETE /sessions/{id}", api.deleteSession)
	// Audit log.
	api.handle("GET /events", api.listEvents)
	api.riskRoutes()
	// The investigation graph (graph.go).
	api.graphRoutes()
	// Incidents (incidents.go).
	api.incidentRoutes()
	// Devices and compliance policies (devices.go).
	api.deviceRoutes()
	// Conditional Access (conditional.go).
	api.accessRoutes()
}

// handlerFunc is an admin handler. It writes a success response itself
// and returns an error for everything else (see writeError).
type handlerFunc func(w http.ResponseWriter, r *http.Request, rc *reqCtx) error

// handle registers fn for "METHOD /path" relative to Prefix.
// Every id in the path and every query value is checked first
// (checkParams).
func (api *API) handle(pattern string, fn handlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	names := wildcards(path)
	api.mux.HandleFunc(method+" "+Prefix+path, func(w http.ResponseWriter, r *http.Request) {
		rc := fromContext(r.Context())
		err := checkParams(r, names)
		if err == nil {
			err = fn(w, r, rc)
		}
		if err != nil {
			api.writeError(w, r, rc, err)
		}
	})
}

// pathParam is a wildcard of a route and what it names (the singular of
// the segment before it: "user" for /users/{id}).
type pathParam struct{ name, what string }

// wildcards lists a route pattern's path wildcards.
func wildcards(path string) []pathParam {
	var ps []pathParam
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if name, ok := strings.CutPrefix(seg, "{"); ok && strings.HasSuffix(name, "}") && name != "$}" {
			what := "resource"
			if i > 0 && segs[i-1] != "" && !strings.HasPrefix(segs[i-1], "{") {
				what = strings.TrimSuffix(segs[i-1], "s")
			}
			ps = append(ps, pathParam{strings.TrimSuffix(strings.TrimSuffix(name, "}"), "..."), what})
		}
	}
	return ps
}

// checkParams refuses a request whose path ids or query values could
// name nothing stored (control characters such as NUL, which PostgreSQL
// refuses in text, invalid UTF-8, overlong): a path id is a 404, a query
// value a 400 naming the parameter. Nothing is looked up.
func checkParams(r *http.Request, params []pathParam) error {
	for _, p := range params {
		if !textclean.ValidParam(r.PathValue(p.name), textclean.MaxPathID) {
			return &Error{Status: http.StatusNotFound, Code: CodeNotFound,
				Description: fmt.Sprintf("%s not found: the %s in the path is not a valid id (at most %d bytes of UTF-8 text without control characters)", p.what, p.name, textclean.MaxPathID)}
		}
	}
	if k, bad := textclean.BadQuery(r.URL.Query()); bad {
		return invalid("query parameter %s: not valid (at most %d bytes of UTF-8 text without control characters other than line breaks and tabs)", k, textclean.MaxQueryValue)
	}
	return nil
}

// reqCtx is what a handler knows about the request beyond its parameters.
type reqCtx struct {
	admin  *model.User // the authorised caller
	corrID string
	ip     string
	ua     string
}

// actor is the id changes are attributed to.
func (rc *reqCtx) actor() string { return rc.admin.ID }

type ctxKey struct{}

func fromContext(ctx context.Context) *reqCtx {
	rc, _ := ctx.Value(ctxKey{}).(*reqCtx)
	return rc
}

// ServeHTTP authenticates and authorises the caller before routing, so
// that unauthenticated callers learn nothing about the routes, then
// dispatches. Unknown routes and methods get JSON errors.
func (api *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	corr := h.Get("X-Correlation-ID")
	if corr == "" {
		corr = secret.RandomString(9)
		h.Set("X-Correlation-ID", corr)
	}
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	rc := &reqCtx{corrID: corr, ip: rs.ClientIP(r, api.trusted).String(), ua: ua}
	user, d := api.authorize(r)
	if d != nil {
		api.deny(w, r, rc, d)
		return
	}
	rc.admin = user
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, rc))
	if _, pattern := api.mux.Handler(r); pattern == "" {
		api.noRoute(w, r, rc)
		return
	}
	api.mux.ServeHTTP(w, r)
}

// noRoute answers a request no route matches: 405 with Allow when the
// path exists for other methods, else 404.
func (api *API) noRoute(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	h, _ := api.mux.Handler(r)
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		api.writeError(w, r, rc, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed,
			Description: "method " + r.Method + " is not allowed here"})
		return
	}
	api.writeError(w, r, rc, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Description: "no such endpoint"})
}

// recorder captures what the mux's own not-found / not-allowed handler
// would write.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}
