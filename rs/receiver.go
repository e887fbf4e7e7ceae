package rs

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/jws"
)

// ReceiverConfig configures a Receiver. Issuer, Audience and State are
// required.
type ReceiverConfig struct {
	// Issuer is the transmitter's exact "iss".
	Issuer string
	// Audience must be one of the SET's "aud" values.
	Audience string
	// State receives the revocations and requirements.
	State *RevocationState

	// Keys verifies SET signatures. If nil, a KeySet is built from
	// JWKSURL, or discovered from Issuer (/.well-known/ssf-configuration,
	// then /.well-known/openid-configuration).
	Keys       *KeySet
	JWKSURL    string
	HTTPClient *http.Client

	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// ClockSkew is how far in the future iat may be (DefaultClockSkew if
	// zero).
	ClockSkew time.Duration
	// MaxAge is how old (by iat) a SET may be (State's MaxTokenLifetime
	// if zero: an older event cannot affect a live token).
	MaxAge time.Duration

	// ACRFor maps an assurance-level-change (namespace, current_level) to
	// the acr a token must have; nil uses current_level itself when it is
	// one of the State's ACR levels.
	ACRFor func(namespace, level string) (acr string, ok bool)
	// StepUpACR is the acr required after a risk-level-change to MEDIUM
	// (the State's strongest ACR level if empty).
	StepUpACR string

	// OnEvent, if set, sees every accepted SET (including SSF
	// verification and stream-updated events, and events that changed
	// nothing) with the actions applied. An error makes delivery fail so
	// the transmitter sends the SET again (state updates are idempotent).
	OnEvent func(ctx context.Context, set *SET, actions []Action) error
	// Logger receives refused SETs and applied actions (nil logs
	// nothing).
	Logger *slog.Logger
}

// Action is one state change a SET caused.
type Action struct {
	// Kind is "revoke_session", "revoke_user", "revoke_device",
	// "revoke_user_device", "revoke_token", "require" or
	// "clear_requirement".
	Kind     string
	Issuer   string // users and tokens
	ID       string // sid, sub, did or jti
	DeviceID string // revoke_user_device
	At       time.Time
	// Requirement is set for "require"; for "clear_requirement" it is
	// either nil (any requirement set at or before At) or has Risk set
	// (only a risk step-up: a risk-level-change to LOW).
	Requirement *Requirement
}

// Result is the outcome of processing one SET.
type Result struct {
	SET     *SET
	Actions []Action
	// Duplicate is true when the jti was already processed; nothing was
	// applied again.
	Duplicate bool
}

// Receiver verifies SETs from one SSF transmitter and applies them to a
// RevocationState. Mount PushHandler for push delivery (RFC 8935) or run
// a Poller (RFC 8936). It is safe for concurrent use.
type Receiver struct {
	cfg    ReceiverConfig
	keys   *KeySet
	skew   time.Duration
	maxAge time.Duration
	seen   seenSet
}

// NewReceiver returns a Receiver for cfg.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("Issuer is required"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("Audience is required"))
	}
	if cfg.State == nil {
		errs = append(errs, errors.New("State is required"))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.MaxAge <= 0 && cfg.State != nil {
		cfg.MaxAge = cfg.State.MaxTokenLifetime()
	}
	if cfg.StepUpACR == "" && cfg.State != nil && len(cfg.State.levels) > 0 {
		cfg.StepUpACR = cfg.State.levels[len(cfg.State.levels)-1]
	}
	r := &Receiver{cfg: cfg, keys: cfg.Keys, skew: cfg.ClockSkew, maxAge: cfg.MaxAge}
	r.seen.init(cfg.Now)
	if r.keys == nil && cfg.Issuer != "" {
		ks, err := NewKeySet(KeySetConfig{
			JWKSURL: cfg.JWKSURL, Issuer: cfg.Issuer, HTTPClient: cfg.HTTPClient, Now: cfg.Now, Logger: cfg.Logger,
			DiscoveryPaths: []string{"/.well-known/ssf-configuration", "/.well-known/openid-configuration"},
		})
		if err != nil {
			errs = append(errs, err)
		}
		r.keys = ks
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("rs: invalid receiver config: %w", errors.Join(errs...))
	}
	return r, nil
}

// MaxAge is how old (by iat) a SET may be and still be accepted: a
// follower replays at least this far back.
func (r *Receiver) MaxAge() time.Duration { return r.maxAge }

// Verify checks a compact SET: size, JOSE header (typ secevent+jwt,
// ES256), signature with the transmitter's key, iss, aud, iat window and
// the SSF claim rules (see ParseSETClaims). It neither de-duplicates nor
// applies. A refused SET yields a *SETError; any other error is a
// temporary failure (keys unavailable) and the SET should be retried.
func (r *Receiver) Verify(ctx context.Context, compact string) (*SET, error) {
	if len(compact) > maxSETSize {
		return nil, badSET("SET too large")
	}
	c, err := jws.Split(compact)
	if err != nil || !c.Complete() {
		return nil, badSET("not a compact JWS")
	}
	h, err := parseJWSHeader(c.Header(), "secevent+jwt")
	if err != nil {
		switch err {
		case jwsAlg:
			return nil, setErr(SETErrInvalidKey, "alg must be ES256")
		case jwsTyp:
			return nil, badSET("typ must be secevent+jwt")
		}
		return nil, badSET("invalid JOSE header")
	}
	key, err := r.keys.Key(ctx, h.kid, h.hasKID)
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return nil, setErr(SETErrInvalidKey, "unknown signing key")
		}
		return nil, fmt.Errorf("rs: SET keys: %w", err)
	}
	if !jws.VerifyES256(key, c.SigningInput(), c.Signature()) {
		return nil, setErr(SETErrAuthenticationFailed, "signature verification failed")
	}
	payload, err := jws.DecodeSegment(c.Payload())
	if err != nil {
		return nil, badSET("payload is not base64url")
	}
	set, err := ParseSETClaims(payload)
	if err != nil {
		return nil, err
	}
	if set.Issuer != r.cfg.Issuer {
		return nil, setErr(SETErrInvalidIssuer, "unexpected issuer")
	}
	aud := false
	for _, a := range set.Audience {
		aud = aud || a == r.cfg.Audience
	}
	if !aud {
		return nil, setErr(SETErrInvalidAudience, "this receiver is not an audience of the SET")
	}
	now := r.cfg.Now()
	if set.IssuedAt.After(now.Add(r.skew)) {
		return nil, badSET("iat is in the future")
	}
	if set.IssuedAt.Before(now.Add(-r.maxAge)) {
		return nil, badSET("iat is too old")
	}
	return set, nil
}

// Process verifies a compact SET, skips it if its jti was already
// processed, applies it to the state and calls OnEvent.
func (r *Receiver) Process(ctx context.Context, compact string) (*Result, error) {
	set, err := r.Verify(ctx, compact)
	if err != nil {
		r.logRefused(ctx, err)
		return nil, err
	}
	return r.apply(ctx, set)
}

func (r *Receiver) apply(ctx context.Context, set *SET) (*Result, error) {
	key := set.Issuer + "\x00" + set.JTI
	if r.seen.has(key) {
		return &Result{SET: set, Duplicate: true}, nil
	}
	actions := r.Apply(set)
	if r.cfg.OnEvent != nil {
		if err := r.cfg.OnEvent(ctx, set, actions); err != nil {
			return nil, fmt.Errorf("rs: OnEvent: %w", err)
		}
	}
	// Recorded only after success: a failed callback lets the
	// transmitter's retry through.
	r.seen.add(key, set.IssuedAt.Add(r.maxAge+r.skew))
	if r.cfg.Logger != nil {
		r.cfg.Logger.InfoContext(ctx, "rs: SET applied", "jti", set.JTI, "event", set.Event.Type, "actions", len(actions))
	}
	return &Result{SET: set, Actions: actions}, nil
}

func (r *Receiver) logRefused(ctx context.Context, err error) {
	if r.cfg.Logger == nil {
		return
	}
	var se *SETError
	if errors.As(err, &se) {
		r.cfg.Logger.WarnContext(ctx, "rs: SET refused", "err", se.Code, "description", se.Description)
		return
	}
	r.cfg.Logger.WarnContext(ctx, "rs: SET not processed", "err", err)
}

// Apply maps a verified SET to state changes (see docs/rs.md for the
// table) and returns them. It does not de-duplicate; applying the same
// SET twice changes nothing more.
func (r *Receiver) Apply(set *SET) []Action {
	ev := set.Event
	at := set.IssuedAt
	if !ev.Timestamp.IsZero() && ev.Timestamp.Before(at) {
		// The event happened before the SET was issued; a timestamp after
		// iat is clamped so a transmitter cannot block future tokens.
		at = ev.Timestamp
	}
	sub := set.Subject
	var acts []Action
	switch ev.Type {
	case EventSessionRevoked:
		acts = r.revokeMostSpecific(set, sub, at, "session")
	case EventTokenClaimsChange:
		if sub != nil && sub.Format == "jwt_id" {
			acts = []Action{{Kind: "revoke_token", Issuer: sub.Iss, ID: sub.JTI, At: at}}
		} else {
			acts = r.revokeMostSpecific(set, sub, at, "user")
		}
	case EventCredentialChange, EventAccountDisabled, EventAccountPurged, EventCredentialCompromise,
		EventSessionsRevoked, EventIdentifierRecycled:
		if iss, s, ok := userOf(sub, set.Issuer); ok {
			acts = []Action{{Kind: "revoke_user", Issuer: iss, ID: s, At: at}}
		}
	case EventDeviceComplianceChange:
		if ev.CurrentStatus == "not-compliant" {
			if did, ok := deviceOf(sub); ok {
				acts = []Action{{Kind: "revoke_device", ID: did, At: at}}
			}
		}
	case EventAssuranceLevelChange:
		iss, s, ok := userOf(sub, set.Issuer)
		if !ok {
			break
		}
		if ev.ChangeDirection == "decrease" {
			// A requirement set by an earlier increase could no longer be
			// met: drop it rather than lock the user out.
			acts = []Action{{Kind: "clear_requirement", Issuer: iss, ID: s, At: at}}
			break
		}
		if acr, ok := r.acrFor(ev.Namespace, ev.CurrentLevel); ok {
			acts = []Action{{Kind: "require", Issuer: iss, ID: s, At: at, Requirement: &Requirement{ACR: acr, Since: at}}}
		}
	case EventRiskLevelChange:
		acts = r.risk(set, sub, at)
	}
	for _, a := range acts {
		r.do(a)
	}
	return acts
}

// revokeMostSpecific revokes the narrowest thing a subject names: a
// session, else a user on a device, else a user, else a device. A simple
// subject is read as simple (the event's natural principal).
func (r *Receiver) revokeMostSpecific(set *SET, sub *Subject, at time.Time, simple string) []Action {
	if sub == nil {
		return nil
	}
	if sub.Format == "complex" {
		if sub.Session != nil {
			if sid, ok := idOf(sub.Session); ok {
				return []Action{{Kind: "revoke_session", ID: sid, At: at}}
			}
		}
		iss, s, uok := userOf(sub.User, set.Issuer)
		did, dok := deviceOf(sub.Device)
		switch {
		case uok && dok:
			return []Action{{Kind: "revoke_user_device", Issuer: iss, ID: s, DeviceID: did, At: at}}
		case uok:
			return []Action{{Kind: "revoke_user", Issuer: iss, ID: s, At: at}}
		case dok:
			return []Action{{Kind: "revoke_device", ID: did, At: at}}
		}
		return nil
	}
	if simple == "session" && sub.Format == "opaque" {
		return []Action{{Kind: "revoke_session", ID: sub.ID, At: at}}
	}
	if iss, s, ok := userOf(sub, set.Issuer); ok {
		return []Action{{Kind: "revoke_user", Issuer: iss, ID: s, At: at}}
	}
	return nil
}

// risk maps risk-level-change: HIGH revokes the principal's tokens issued
// up to at, MEDIUM asks a user for step-up (StepUpACR and an
// authentication after at), LOW lifts that step-up (never a revocation). at is the event's time (CAEP event_timestamp, clamped to
// iat): a transmitter that spared the sessions signed in after a
// remediation says so by giving the time the level is about (Ward: the
// remediation), so their tokens, issued later, stay valid.
func (r *Receiver) risk(set *SET, sub *Subject, at time.Time) []Action {
	ev := set.Event
	principal := strings.ToUpper(ev.Principal)
	target := sub
	if sub != nil && sub.Format == "complex" {
		switch principal {
		case "USER":
			target = sub.User
		case "DEVICE":
			target = sub.Device
		case "SESSION":
			target = sub.Session
		}
	}
	switch ev.CurrentLevel {
	case "HIGH":
		switch principal {
		case "USER":
			if iss, s, ok := userOf(target, set.Issuer); ok {
				return []Action{{Kind: "revoke_user", Issuer: iss, ID: s, At: at}}
			}
		case "DEVICE":
			if did, ok := deviceOf(target); ok {
				return []Action{{Kind: "revoke_device", ID: did, At: at}}
			}
		case "SESSION":
			if sid, ok := idOf(target); ok {
				return []Action{{Kind: "revoke_session", ID: sid, At: at}}
			}
		}
	case "MEDIUM":
		if principal == "USER" && r.cfg.StepUpACR != "" {
			if iss, s, ok := userOf(target, set.Issuer); ok {
				req := &Requirement{ACR: r.cfg.StepUpACR, AuthTimeAfter: at, Since: at, Risk: true}
				return []Action{{Kind: "require", Issuer: iss, ID: s, At: at, Requirement: req}}
			}
		}
	case "LOW":
		// The transmitter no longer asks for step-up (Ward: its
		// Conditional Access does not either): lift a MEDIUM's step-up
		// set at or before this change. Revocations stay.
		if principal == "USER" {
			if iss, s, ok := userOf(target, set.Issuer); ok {
				return []Action{{Kind: "clear_requirement", Issuer: iss, ID: s, At: at, Requirement: &Requirement{Risk: true}}}
			}
		}
	}
	return nil
}

func (r *Receiver) acrFor(namespace, level string) (string, bool) {
	if r.cfg.ACRFor != nil {
		return r.cfg.ACRFor(namespace, level)
	}
	for _, l := range r.cfg.State.levels {
		if l == level {
			return level, true
		}
	}
	return "", false
}

func (r *Receiver) do(a Action) {
	st := r.cfg.State
	switch a.Kind {
	case "revoke_session":
		st.RevokeSession(a.ID, a.At)
	case "revoke_user":
		st.RevokeUser(a.Issuer, a.ID, a.At)
	case "revoke_device":
		st.RevokeDevice(a.ID, a.At)
	case "revoke_user_device":
		st.RevokeUserDevice(a.Issuer, a.ID, a.DeviceID, a.At)
	case "revoke_token":
		st.RevokeToken(a.Issuer, a.ID, a.At)
	case "require":
		st.Require(a.Issuer, a.ID, *a.Requirement)
	case "clear_requirement":
		st.clearRequirement(a.Issuer, a.ID, a.At, a.Requirement != nil && a.Requirement.Risk)
	}
}

// userOf maps a user subject to (issuer, sub): iss_sub directly, opaque
// as a sub at the SET issuer, aliases by their first mappable identifier.
// Email, phone and other formats need the application's own directory
// (see OnEvent).
func userOf(s *Subject, setIss string) (string, string, bool) {
	if s == nil {
		return "", "", false
	}
	switch s.Format {
	case "iss_sub":
		return s.Iss, s.Sub, true
	case "opaque":
		return setIss, s.ID, true
	case "aliases":
		for _, id := range s.Identifiers {
			if iss, sub, ok := userOf(id, setIss); ok {
				return iss, sub, true
			}
		}
	case "complex":
		return userOf(s.User, setIss)
	}
	return "", "", false
}

// idOf maps a session subject to its id (opaque id, or iss_sub sub).
func idOf(s *Subject) (string, bool) {
	if s == nil {
		return "", false
	}
	switch s.Format {
	case "opaque":
		return s.ID, true
	case "iss_sub":
		return s.Sub, true
	case "aliases":
		for _, id := range s.Identifiers {
			if v, ok := idOf(id); ok {
				return v, true
			}
		}
	}
	return "", false
}

// deviceOf maps a device subject (simple, or the device member of a
// complex one) to the device id tokens carry in did.
func deviceOf(s *Subject) (string, bool) {
	if s != nil && s.Format == "complex" {
		return idOf(s.Device)
	}
	return idOf(s)
}

// ErrAccessDenied, returned by a push Authorize function, answers 403
// access_denied instead of 401 authentication_failed.
var ErrAccessDenied = errors.New("rs: transmitter not authorized")

// RequireBearer returns an Authorize function for PushHandler that
// accepts exactly "Authorization: Bearer <token>" (the authorization_header
// the receiver gave the transmitter in the stream's delivery config),
// compared in constant time.
func RequireBearer(token string) func(*http.Request) error {
	want := []byte("Bearer " + token)
	return func(r *http.Request) error {
		hs := r.Header.Values("Authorization")
		if len(hs) != 1 || subtle.ConstantTimeCompare([]byte(hs[0]), want) != 1 {
			return errors.New("rs: bad push authorization")
		}
		return nil
	}
}

// PushHandler returns the RFC 8935 push endpoint: POST with
// Content-Type application/secevent+jwt and the SET as body. It answers
// 202 Accepted when the SET was applied (or had been already), 400 with
// {"err": code, "description": text} when the SET is refused, 401
// authentication_failed or 403 access_denied when authorize (if not nil)
// refuses the request, and 503 when the keys cannot be loaded (the
// transmitter should retry).
//
// A failed HTTP authentication is a 401, not a 400: RFC 8935 keeps 400
// for SETs that cannot be accepted, which a transmitter may drop, while a
// receiver-side credential problem must not lose events.
func (r *Receiver) PushHandler(authorize func(*http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeSETError(w, http.StatusMethodNotAllowed, setErr(SETErrInvalidRequest, "use POST"))
			return
		}
		if authorize != nil {
			if err := authorize(req); err != nil {
				if errors.Is(err, ErrAccessDenied) {
					writeSETError(w, http.StatusForbidden, setErr(SETErrAccessDenied, "the transmitter is not authorized"))
					return
				}
				c := httpauth.Challenge{Scheme: "Bearer", Params: httpauth.ErrorParams("invalid_token", "")}
				w.Header().Set("WWW-Authenticate", c.String())
				writeSETError(w, http.StatusUnauthorized, setErr(SETErrAuthenticationFailed, "the request could not be authenticated"))
				return
			}
		}
		mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
		if err != nil || mt != "application/secevent+jwt" {
			writeSETError(w, http.StatusBadRequest, badSET("Content-Type must be application/secevent+jwt"))
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, maxSETSize+1))
		if err != nil {
			writeSETError(w, http.StatusBadRequest, badSET("cannot read the request body"))
			return
		}
		if len(body) > maxSETSize {
			writeSETError(w, http.StatusBadRequest, badSET("SET too large"))
			return
		}
		_, err = r.Process(req.Context(), strings.TrimSpace(string(body)))
		var se *SETError
		switch {
		case err == nil:
			w.WriteHeader(http.StatusAccepted)
		case errors.As(err, &se):
			writeSETError(w, http.StatusBadRequest, se)
		default:
			w.Header().Set("Retry-After", "5")
			writeSETError(w, http.StatusServiceUnavailable, setErr(SETErrInvalidRequest, "temporarily unable to process the SET"))
		}
	})
}

func writeSETError(w http.ResponseWriter, status int, e *SETError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Err         string `json:"err"`
		Description string `json:"description"`
	}{e.Code, e.Description})
}

// seenSet remembers processed SET ids (hashed) until they could no longer
// pass the iat window.
type seenSet struct {
	mu        sync.Mutex
	seed      maphash.Seed
	m         map[uint64]int64 // hash -> expiry (unix seconds)
	now       func() time.Time
	nextSweep int64
}

func (s *seenSet) init(now func() time.Time) {
	s.seed, s.m, s.now = maphash.MakeSeed(), make(map[uint64]int64), now
}

func (s *seenSet) has(key string) bool {
	h := maphash.String(s.seed, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[h]
	return ok
}

func (s *seenSet) add(key string, exp time.Time) {
	h := maphash.String(s.seed, key)
	now := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now >= s.nextSweep {
		for k, e := range s.m {
			if e < now {
				delete(s.m, k)
			}
		}
		s.nextSweep = now + 60
	}
	s.m[h] = exp.Unix()
}
