// Package ssf serves Ward's OpenID Shared Signals Framework 1.0
// transmitter over HTTP: the transmitter configuration
// (/.well-known/ssf-configuration), stream management (SSF 1.0 §8:
// configuration, status, subjects, verification) and the RFC 8936 poll
// endpoint. The transmitter itself (mapping, signing, queueing, push
// delivery) is internal/cae; this package parses and renders.
//
// Receivers authenticate with access tokens Ward issues for Ward (its
// issuer in "aud"), normally by the client credentials grant, checked by
// oauth.Provider.AuthenticateResource (signature, expiry, DPoP proof of a
// bound token). Scopes: ssf.manage for every management call (ssf.read
// suffices for the GET calls), ssf.poll for the poll endpoint. A stream
// belongs to the client that created it: another client's stream is
// answered 404, like a missing one.
//
// Routes (JSON bodies; errors as {"error", "error_description"}, every
// error of the poll endpoint as RFC 8935's {"err", "description"} with a
// code of the SET error registry, see pollErrorCode; Cache-Control:
// no-store):
//
//	GET    /.well-known/ssf-configuration   transmitter configuration (public)
//	POST   /ssf/stream                      create a stream (201)
//	GET    /ssf/stream[?stream_id=]         read one stream, or list the caller's
//	PATCH  /ssf/stream                      update receiver-supplied properties
//	PUT    /ssf/stream                      replace them
//	DELETE /ssf/stream?stream_id=           delete (204)
//	GET    /ssf/status?stream_id=           status
//	POST   /ssf/status                      update status
//	POST   /ssf/subjects:add                add a subject (200)
//	POST   /ssf/subjects:remove             remove a subject (204)
//	POST   /ssf/verify                      request a verification SET (204)
//	POST   /ssf/poll/{stream_id}            RFC 8936 poll
package ssf

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
)

// Paths.
const (
	PathConfiguration = "/.well-known/ssf-configuration"
	PathStream        = "/ssf/stream"
	PathStatus        = "/ssf/status"
	PathAddSubject    = "/ssf/subjects:add"
	PathRemoveSubject = "/ssf/subjects:remove"
	PathVerify        = "/ssf/verify"
	PathPoll          = "/ssf/poll/"
)

// Scopes.
const (
	ScopeManage = "ssf.manage"
	ScopeRead   = "ssf.read"
	ScopePoll   = "ssf.poll"
)

// SpecVersion is the spec_version of the transmitter configuration.
const SpecVersion = "1_0"

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Handler serves the SSF endpoints.
type Handler struct {
	svc      *cae.Service
	prov     *oauth.Provider
	issuer   string
	log      *slog.Logger
	dpopAlgs string
	tokens   tokenCache
}

// New returns the SSF handlers. issuer is Ward's issuer URL (tokens must
// name it in "aud").
func New(svc *cae.Service, prov *oauth.Provider, issuer string, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	algs := make([]string, len(dpop.DefaultAlgs))
	for i, a := range dpop.DefaultAlgs {
		algs[i] = string(a)
	}
	return &Handler{svc: svc, prov: prov, issuer: strings.TrimSuffix(issuer, "/"), log: log.With("component", "ssf"),
		dpopAlgs: strings.Join(algs, " ")}
}

// KeysChanged drops what the handler remembers of verified tokens: call it
// when a signing key is retired (key.retired), whichever process did it.
func (h *Handler) KeysChanged() { h.tokens.forget() }

// Register adds the routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathConfiguration, h.configuration)
	if u, err := url.Parse(h.issuer); err == nil && strings.Trim(u.Path, "/") != "" {
		// SSF 1.0 §7.2.1: an issuer with a path is discovered at
		// /.well-known/ssf-configuration/<path>.
		mux.HandleFunc("GET "+PathConfiguration+"/"+strings.Trim(u.Path, "/"), h.configuration)
	}
	mux.HandleFunc("POST "+PathStream, h.authed(ScopeManage, h.createStream))
	mux.HandleFunc("GET "+PathStream, h.authed(ScopeRead, h.readStream))
	mux.HandleFunc("PATCH "+PathStream, h.authed(ScopeManage, h.updateStream))
	mux.HandleFunc("PUT "+PathStream, h.authed(ScopeManage, h.replaceStream))
	mux.HandleFunc("DELETE "+PathStream, h.authed(ScopeManage, h.deleteStream))
	mux.HandleFunc("GET "+PathStatus, h.authed(ScopeRead, h.readStatus))
	mux.HandleFunc("POST "+PathStatus, h.authed(ScopeManage, h.updateStatus))
	mux.HandleFunc("POST "+PathAddSubject, h.authed(ScopeManage, h.changeSubject(true)))
	mux.HandleFunc("POST "+PathRemoveSubject, h.authed(ScopeManage, h.changeSubject(false)))
	mux.HandleFunc("POST "+PathVerify, h.authed(ScopeManage, h.verify))
	mux.HandleFunc("POST "+PathPoll+"{stream_id}", h.authed(ScopePoll, h.poll))
}

func (h *Handler) url(path string) string { return h.issuer + path }

// PollURL returns the poll endpoint of a stream.
func (h *Handler) PollURL(streamID string) string { return h.url(PathPoll + streamID) }

// GET /.well-known/ssf-configuration (SSF 1.0 §7.1).
func (h *Handler) configuration(w http.ResponseWriter, r *http.Request) {
	doc := map[string]any{
		"spec_version":               SpecVersion,
		"issuer":                     h.issuer,
		"jwks_uri":                   h.url(oauth.PathJWKS),
		"delivery_methods_supported": []string{model.DeliveryPush, model.DeliveryPoll},
		"configuration_endpoint":     h.url(PathStream),
		"status_endpoint":            h.url(PathStatus),
		"add_subject_endpoint":       h.url(PathAddSubject),
		"remove_subject_endpoint":    h.url(PathRemoveSubject),
		"verification_endpoint":      h.url(PathVerify),
		"authorization_schemes":      []map[string]string{{"spec_urn": "urn:ietf:rfc:6749"}},
		"default_subjects":           "ALL",
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	if r.Header.Get("Origin") != "" {
		w.Header().Set("Access-Control-Allow-Origin", "*")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}

// ---- errors ----

// apiError is an error response.
type apiError struct {
	status int
	code   string
	desc   string
	scope  string // insufficient_scope: the scope needed
	scheme string // challenge scheme for 401/403
	nonce  string
	cause  error // logged only
}

func (e *apiError) Error() string { return e.code + ": " + e.desc }

func badRequest(format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "invalid_request", desc: fmt.Sprintf(format, a...)}
}

// writeError answers err. poll selects the poll endpoint's body (RFC 8935
// §2.3 {"err", "description"}, which RFC 8936 §2.5.1 leaves open and
// Ward's documentation promises) for every error of that endpoint,
// authentication included; the RFC 6750 challenge is the same on all
// endpoints.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error, poll bool) {
	var e *apiError
	if !errors.As(err, &e) {
		var ce *cae.Error
		switch {
		case errors.As(err, &ce):
			e = &apiError{code: "invalid_request", desc: ce.Description}
			switch ce.Kind {
			case cae.KindNotFound:
				e.status, e.code = http.StatusNotFound, "not_found"
			case cae.KindConflict:
				e.status, e.code = http.StatusConflict, "conflict"
			case cae.KindTooMany:
				e.status, e.code = http.StatusTooManyRequests, "too_many_requests"
			default:
				e.status = http.StatusBadRequest
			}
		default:
			e = &apiError{status: http.StatusInternalServerError, code: "server_error", cause: err}
		}
	}
	corr := w.Header().Get("X-Correlation-ID")
	if e.status >= 500 {
		h.log.ErrorContext(r.Context(), "ssf: request failed", "method", r.Method, "path", r.URL.Path, "correlation_id", corr, "err", e.cause)
		e.desc = "internal error; correlation id " + corr
	}
	if e.status == http.StatusUnauthorized || e.code == oauth.ErrInsufficientScope {
		var ps []httpauth.Param
		if e.code != "" && e.code != "no_token" {
			ps = httpauth.ErrorParams(e.code, e.desc)
			if e.scope != "" {
				ps = append(ps, httpauth.Param{Name: "scope", Value: e.scope})
			}
		}
		oauth.AddChallenges(w.Header(), e.scheme, h.dpopAlgs, ps...)
		if e.nonce != "" {
			w.Header().Set("DPoP-Nonce", e.nonce)
		}
	}
	code := e.code
	if code == "no_token" {
		code = oauth.ErrInvalidToken
		if e.desc == "" {
			e.desc = "an access token is required"
		}
	}
	if poll {
		writeJSON(w, e.status, map[string]string{"err": pollErrorCode(e.status), "description": e.desc})
		return
	}
	writeJSON(w, e.status, map[string]string{"error": code, "error_description": e.desc})
}

// Codes of the poll endpoint's errors. The first three are RFC 8935's
// "Security Event Token Error Codes" registry (RFC 8936 §2.6 refers to
// it); the registry has none for a transmitter's own failure.
const (
	pollErrInvalidRequest = "invalid_request"       // 4xx: the request, its stream or its body
	pollErrAuthentication = "authentication_failed" // 401: no or a bad access token
	pollErrAccessDenied   = "access_denied"         // 403: a token without ssf.poll, a user's token
	pollErrServer         = "server_error"          // 5xx: Ward's own failure
)

// pollErrorCode is the "err" of a poll error answered with status: the
// status tells the receiver what to do (the OAuth code of a token error is
// in WWW-Authenticate), the code only classifies it.
func pollErrorCode(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return pollErrAuthentication
	case status == http.StatusForbidden:
		return pollErrAccessDenied
	case status >= 500:
		return pollErrServer
	default:
		return pollErrInvalidRequest
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func noContent(w http.ResponseWriter, status int) {
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
}

// ---- authentication ----

// authed authenticates the receiver and checks its scope (ssf.manage
// satisfies ssf.read) before calling next with its client id.
func (h *Handler) authed(scope string, next func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		clientID, err := h.authenticate(r, scope)
		if err == nil {
			err = next(w, r, clientID)
		}
		if err != nil {
			h.writeError(w, r, err, scope == ScopePoll)
		}
	}
}

func (h *Handler) authenticate(r *http.Request, scope string) (string, error) {
	if len(r.URL.Query()["access_token"]) > 0 {
		// RFC 6750 §2.3 is not supported (CAEP interoperability profile).
		return "", &apiError{status: http.StatusBadRequest, code: "invalid_request", desc: "access tokens are accepted in the Authorization header only"}
	}
	if id, ok := h.tokens.get(r.Header.Get("Authorization"), scope, h.svc.Now()); ok {
		return id, nil
	}
	c, scheme, oe := h.prov.AuthenticateResource(r)
	if oe != nil {
		e := &apiError{status: http.StatusUnauthorized, code: oe.Code, desc: oe.Description, scheme: scheme, nonce: oe.DPoPNonce, cause: oe.Cause}
		switch oe.Code {
		case oauth.ErrInvalidToken, oauth.ErrInvalidDPoPProof, oauth.ErrUseDPoPNonce:
			if oe.Reason == "no_token" {
				e.code = "no_token"
			}
		case oauth.ErrServerError:
			e.status = http.StatusInternalServerError
		default:
			e.status = http.StatusBadRequest
		}
		return "", e
	}
	cl := c.Claims
	if !slices.Contains([]string(cl.Audience), h.issuer) {
		return "", &apiError{status: http.StatusUnauthorized, code: oauth.ErrInvalidToken, desc: "the access token is not meant for this server", scheme: scheme}
	}
	if c.User != nil || cl.SID != "" {
		return "", &apiError{status: http.StatusForbidden, code: oauth.ErrAccessDenied, scheme: scheme,
			desc: "stream management needs a client's token (client credentials grant), not a user's"}
	}
	granted := strings.Fields(cl.Scope)
	ok := slices.Contains(granted, scope) || (scope == ScopeRead && slices.Contains(granted, ScopeManage))
	if !ok {
		return "", &apiError{status: http.StatusForbidden, code: oauth.ErrInsufficientScope, scope: scope, scheme: scheme,
			desc: "the access token lacks the " + scope + " scope"}
	}
	if cl.ClientID == "" {
		return "", &apiError{status: http.StatusForbidden, code: oauth.ErrAccessDenied, scheme: scheme, desc: "the access token names no client"}
	}
	if scheme == "Bearer" && cl.Cnf == nil {
		h.tokens.put(r.Header.Get("Authorization"), cl.ClientID, granted, time.Unix(cl.ExpiresAt, 0))
	}
	return cl.ClientID, nil
}

// tokenCache remembers the outcome of checking unbound client tokens
// (keyed by a hash of the Authorization header) until they expire, so a
// long-polling receiver does not pay a signature verification per
// request. Only tokens that AuthenticateResource accepted on the same
// grounds are cached: client credentials tokens (no session to be
// revoked), Bearer, no DPoP binding (whose proof must be checked on every
// request).
type tokenCache struct {
	mu sync.Mutex
	m  map[[32]byte]cachedToken
}

type cachedToken struct {
	clientID string
	scopes   []string
	exp      time.Time
}

// maxCachedTokens bounds the cache; when full it starts over.
const maxCachedTokens = 10000

func (c *tokenCache) get(authz, scope string, now time.Time) (string, bool) {
	if authz == "" {
		return "", false
	}
	k := sha256.Sum256([]byte(authz))
	c.mu.Lock()
	t, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(t.exp) {
		return "", false
	}
	if !slices.Contains(t.scopes, scope) && !(scope == ScopeRead && slices.Contains(t.scopes, ScopeManage)) {
		return "", false
	}
	return t.clientID, true
}

// forget empties the cache (a signing key was retired: tokens it signed no
// longer verify, and none may be accepted from memory).
func (c *tokenCache) forget() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

func (c *tokenCache) put(authz, clientID string, scopes []string, exp time.Time) {
	k := sha256.Sum256([]byte(authz))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedTokens {
		c.m = make(map[[32]byte]cachedToken)
	}
	c.m[k] = cachedToken{clientID: clientID, scopes: slices.Clone(scopes), exp: exp}
}

// ---- request bodies ----

// readObject reads a JSON object body: at most maxBody bytes, one object.
// A Content-Type other than application/json is refused with 415; none is
// accepted (the SSF examples send none).
func readObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, &apiError{status: http.StatusUnsupportedMediaType, code: "invalid_request", desc: "the request body must be application/json"}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "invalid_request", desc: fmt.Sprintf("the request body is larger than %d bytes", maxBody)}
		}
		return nil, badRequest("the request body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("the request body is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, badRequest("the request body is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("the request body must hold a single JSON object")
	}
	return obj, nil
}

// str reads an optional string member (present reports presence).
func str(obj map[string]json.RawMessage, name string) (v string, present bool, err error) {
	raw, ok := obj[name]
	if !ok || string(raw) == "null" {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", true, badRequest("%s must be a string", name)
	}
	return v, true, nil
}

func strList(obj map[string]json.RawMessage, name string) (v []string, present bool, err error) {
	raw, ok := obj[name]
	if !ok || string(raw) == "null" {
		return nil, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil || raw[0] != '[' {
		return nil, true, badRequest("%s must be an array of strings", name)
	}
	return v, true, nil
}

// readStreamObject reads a management request's JSON object and its
// required stream_id.
func readStreamObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, string, error) {
	obj, err := readObject(w, r)
	if err != nil {
		return nil, "", err
	}
	id, err := streamID(obj)
	if err != nil {
		return nil, "", err
	}
	return obj, id, nil
}

// streamID reads the required stream_id member.
func streamID(obj map[string]json.RawMessage) (string, error) {
	id, present, err := str(obj, "stream_id")
	if err != nil {
		return "", err
	}
	if !present || id == "" {
		return "", badRequest("stream_id is required")
	}
	return id, nil
}
