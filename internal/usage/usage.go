// Package usage serves POST /usage: the token-use reports of resource
// servers (rs.UsageReporter, `ward gateway`), recorded as token.used
// events, one per record, so that the risk engine sees every use of a
// token at a resource as it sees every refresh at the token endpoint.
//
// A reporter authenticates with an access token of its own client (the
// client credentials grant), issued for Ward (its issuer in "aud"), with
// the scope ward:usage; DPoP-bound tokens are checked with their proof
// like at every Ward resource (oauth.Provider.AuthenticateResource). A
// user's token is refused whatever its scopes.
//
// Everything is bounded: the body (MaxBody), the records of one report
// (MaxRecords), every field (MaxField, and the formats of times,
// addresses, results and proof statuses). A malformed body is refused
// whole (400, 413, 415); a malformed record only by itself: the others
// are recorded and the response names the refused ones by index.
package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
	"github.com/ward-idp/ward/rs"
)

// Path is the endpoint.
const Path = "/usage"

// Scope is what a reporter's token must carry.
const Scope = "ward:usage"

// Limits of one report.
const (
	MaxBody    = 1 << 20 // bytes
	MaxRecords = 1000
	MaxField   = 256 // bytes of any string field
	// MaxCount bounds the uses one record may stand for.
	MaxCount = 1_000_000
	// MaxAge and MaxSkew bound a record's time: reports held back by an
	// outage arrive late, but a use from days ago or from the future is
	// not a use to record now.
	MaxAge  = 24 * time.Hour
	MaxSkew = 5 * time.Minute
	// maxListed bounds the refused records the response names.
	maxListed = 20
)

// Authenticator checks the access token of a request to a Ward resource
// (oauth.Provider).
type Authenticator interface {
	AuthenticateResource(r *http.Request) (*oauth.Caller, string, *oauth.Error)
}

// Stats are the handler's counters since start.
type Stats struct {
	Reports         uint64 // reports accepted (2xx)
	ReportsRefused  uint64 // reports refused whole (4xx)
	Records         uint64 // records recorded as token.used
	RecordsRefused  uint64 // records refused one by one
	DroppedReported uint64 // records reporters said they dropped
}

// Handler serves POST /usage.
type Handler struct {
	auth     Authenticator
	events   *bus.Emitter
	issuer   string
	now      func() time.Time
	log      *slog.Logger
	dpopAlgs string

	reports, reportsRefused, records, recordsRefused, dropped atomic.Uint64
}

// New returns the handler. issuer is Ward's issuer URL (tokens must name
// it in "aud").
func New(auth Authenticator, b bus.Bus, issuer string, now func() time.Time, log *slog.Logger) *Handler {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	algs := make([]string, len(dpop.DefaultAlgs))
	for i, a := range dpop.DefaultAlgs {
		algs[i] = string(a)
	}
	return &Handler{auth: auth, events: bus.NewEmitter(b, now).Logging(log), issuer: strings.TrimSuffix(issuer, "/"),
		now: now, log: log.With("component", "usage"), dpopAlgs: strings.Join(algs, " ")}
}

// Register adds the route to mux.
func (h *Handler) Register(mux *http.ServeMux) { mux.HandleFunc("POST "+Path, h.serve) }

// Stats returns the counters.
func (h *Handler) Stats() Stats {
	return Stats{Reports: h.reports.Load(), ReportsRefused: h.reportsRefused.Load(), Records: h.records.Load(),
		RecordsRefused: h.recordsRefused.Load(), DroppedReported: h.dropped.Load()}
}

// apiError is a refusal of the whole report.
type apiError struct {
	status int
	code   string
	desc   string
	scheme string // challenge scheme of a 401/403
	nonce  string
	scope  bool // insufficient_scope: name the scope
}

// refusedRecord names a record refused by itself.
type refusedRecord struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// response is the answer to an accepted report.
type response struct {
	Accepted int             `json:"accepted"`
	Refused  int             `json:"refused"`
	Errors   []refusedRecord `json:"errors,omitempty"`
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	reporter, e := h.authenticate(r)
	var resp *response
	if e == nil {
		resp, e = h.report(w, r, reporter)
	}
	if e != nil {
		h.reportsRefused.Add(1)
		h.log.WarnContext(r.Context(), "usage report refused", "status", e.status, "error", e.code, "reporter", reporter,
			"correlation_id", w.Header().Get("X-Correlation-ID"))
		h.writeError(w, e)
		return
	}
	h.reports.Add(1)
	writeJSON(w, http.StatusOK, resp)
}

// authenticate checks the reporter's token: valid for Ward, of a client
// (not a user), with the usage scope. It returns the client id.
func (h *Handler) authenticate(r *http.Request) (string, *apiError) {
	c, scheme, oe := h.auth.AuthenticateResource(r)
	if oe != nil {
		e := &apiError{status: oe.Status, code: oe.Code, desc: oe.Description, scheme: scheme, nonce: oe.DPoPNonce}
		if oe.Reason == "no_token" {
			e.status, e.code, e.desc = http.StatusUnauthorized, oauth.ErrInvalidToken, "an access token is required"
		}
		if e.status == 0 || e.status == http.StatusBadRequest && oe.Code != oauth.ErrInvalidRequest {
			e.status = http.StatusUnauthorized
		}
		return "", e
	}
	cl := c.Claims
	switch {
	case !slices.Contains([]string(cl.Audience), h.issuer):
		return "", &apiError{status: http.StatusUnauthorized, code: oauth.ErrInvalidToken, desc: "the access token is not meant for this server", scheme: scheme}
	case c.User != nil || cl.SID != "" || cl.Subject != cl.ClientID:
		return cl.ClientID, &apiError{status: http.StatusForbidden, code: oauth.ErrInsufficientScope, desc: "usage reports need a client's own token (client credentials), not a user's", scheme: scheme, scope: true}
	case !slices.Contains(strings.Fields(cl.Scope), Scope):
		return cl.ClientID, &apiError{status: http.StatusForbidden, code: oauth.ErrInsufficientScope, desc: "the access token lacks the scope " + Scope, scheme: scheme, scope: true}
	}
	return cl.ClientID, nil
}

// report reads the body and records its records.
func (h *Handler) report(w http.ResponseWriter, r *http.Request, reporter string) (*response, *apiError) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: oauth.ErrInvalidRequest, desc: "the body must be application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: oauth.ErrInvalidRequest, desc: fmt.Sprintf("the body is larger than %d bytes", MaxBody)}
	case err != nil:
		return nil, &apiError{status: http.StatusBadRequest, code: oauth.ErrInvalidRequest, desc: "the body could not be read"}
	}
	recs, dropped, e := parseReport(body)
	if e != nil {
		return nil, e
	}
	if dropped > 0 {
		h.dropped.Add(dropped)
		h.log.WarnContext(r.Context(), "a resource dropped usage records", "reporter", reporter, "dropped", dropped)
	}
	// The events record where each use came from, never the reporter's
	// own address: the request's origin is kept only for its correlation id.
	ctx := bus.WithOrigin(r.Context(), bus.Origin{CorrelationID: w.Header().Get("X-Correlation-ID")})
	resp := &response{}
	now := h.now()
	for i, raw := range recs {
		ev, err := h.event(raw, reporter, now)
		if err == nil {
			err = h.events.Emit(ctx, ev)
			if err != nil {
				return nil, &apiError{status: http.StatusInternalServerError, code: oauth.ErrServerError, desc: "the report could not be recorded; send it again"}
			}
		}
		if err != nil {
			resp.Refused++
			if len(resp.Errors) < maxListed {
				resp.Errors = append(resp.Errors, refusedRecord{Index: i, Error: err.Error()})
			}
			continue
		}
		resp.Accepted++
	}
	h.records.Add(uint64(resp.Accepted))
	if resp.Refused > 0 {
		h.recordsRefused.Add(uint64(resp.Refused))
		h.log.WarnContext(r.Context(), "usage records refused", "reporter", reporter, "refused", resp.Refused, "accepted", resp.Accepted)
	}
	return resp, nil
}

// parseReport reads {"records": [...], "dropped": n}: the envelope
// strictly, the records as raw values for one-by-one validation.
func parseReport(body []byte) ([]json.RawMessage, uint64, *apiError) {
	bad := func(desc string) *apiError {
		return &apiError{status: http.StatusBadRequest, code: oauth.ErrInvalidRequest, desc: desc}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var env struct {
		Records *[]json.RawMessage `json:"records"`
		Dropped *json.Number       `json:"dropped"`
	}
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		return nil, 0, bad("the body is not a usage report: " + jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, 0, bad("the body is not a usage report: text after the JSON object")
	}
	if env.Records == nil {
		return nil, 0, bad("records is required")
	}
	if n := len(*env.Records); n > MaxRecords {
		return nil, 0, bad(fmt.Sprintf("%d records, more than %d in one report", n, MaxRecords))
	}
	var dropped uint64
	if env.Dropped != nil {
		n, err := strconv.ParseUint(env.Dropped.String(), 10, 63)
		if err != nil {
			return nil, 0, bad("dropped must be a non-negative integer")
		}
		dropped = n
	}
	return *env.Records, dropped, nil
}

// event validates one record and returns its token.used event.
func (h *Handler) event(raw json.RawMessage, reporter string, now time.Time) (*model.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var rec rs.UsageRecord
	if err := dec.Decode(&rec); err != nil {
		return nil, errors.New(jsonReason(err))
	}
	if err := validate(&rec, now); err != nil {
		return nil, err
	}
	ev := &model.Event{
		Type: model.EventTokenUsed, Time: rec.Time, Actor: reporter, SessionID: rec.SessionID, ClientID: rec.ClientID,
		DeviceID: rec.DeviceID, TokenID: rec.TokenID, IP: rec.ClientIP, UserAgent: rec.UserAgent,
		Outcome: model.OutcomeSuccess, Reason: rec.Reason,
		Data: map[string]string{"reporter": reporter},
	}
	if rec.SessionID != "" {
		// A user's token names its session; a client's own token has no
		// user (its sub is the client).
		ev.UserID = rec.Subject
	}
	if rec.Result == rs.ResultRejected {
		ev.Outcome = model.OutcomeFailure
	}
	jkt, bound, proof := rec.JKT, rec.BoundJKT, rec.Proof
	if proof == "" && bound == "" {
		// A reporter that predates proof statuses sends the token's key
		// as jkt.
		jkt, bound = "", rec.JKT
	}
	for k, v := range map[string]string{activity.DataJKT: jkt, activity.DataBoundJKT: bound, activity.DataProof: proof, activity.DataResource: rec.Audience} {
		if v != "" {
			ev.Data[k] = v
		}
	}
	if bound != "" {
		ev.Binding = model.BindingDPoP
	}
	if rec.Count > 1 {
		ev.Data[activity.DataCount] = strconv.Itoa(rec.Count)
	}
	return ev, nil
}

var proofs = []string{rs.ProofOK, rs.ProofMissing, rs.ProofWrongKey, rs.ProofInvalid, rs.ProofNone}

// validate reports the first field of rec that is not what a record may
// hold. Messages name the field, never echo its value.
func validate(rec *rs.UsageRecord, now time.Time) error {
	switch {
	case rec.Time.IsZero():
		return errors.New("time: missing")
	case rec.Time.Before(now.Add(-MaxAge)):
		return fmt.Errorf("time: older than %s", MaxAge)
	case rec.Time.After(now.Add(MaxSkew)):
		return errors.New("time: in the future")
	case rec.Result != rs.ResultAllowed && rec.Result != rs.ResultRejected:
		return errors.New("result: must be allowed or rejected")
	case rec.Proof != "" && !slices.Contains(proofs, rec.Proof):
		return errors.New("proof: must be one of ok, missing, wrong_key, invalid, none")
	case rec.Count < 0 || rec.Count > MaxCount:
		return fmt.Errorf("count: must be between 0 and %d", MaxCount)
	}
	for _, f := range []struct{ name, v string }{
		{"jti", rec.TokenID}, {"sid", rec.SessionID}, {"sub", rec.Subject}, {"client_id", rec.ClientID}, {"did", rec.DeviceID},
		{"jkt", rec.JKT}, {"bound_jkt", rec.BoundJKT}, {"aud", rec.Audience}, {"client_ip", rec.ClientIP},
		{"user_agent", rec.UserAgent}, {"reason", rec.Reason},
	} {
		if len(f.v) > MaxField {
			return fmt.Errorf("%s: longer than %d bytes", f.name, MaxField)
		}
		if !utf8.ValidString(f.v) || strings.ContainsFunc(f.v, isControl) {
			return fmt.Errorf("%s: not printable text", f.name)
		}
	}
	if rec.ClientIP != "" {
		if _, err := netip.ParseAddr(rec.ClientIP); err != nil {
			return errors.New("client_ip: not an IP address")
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// jsonReason shortens encoding/json's errors without echoing the input.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return "wrong type (" + te.Value + ")"
		}
		return te.Field + ": wrong type (" + te.Value + ")"
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return "time: not an RFC 3339 time"
	}
	if s := err.Error(); strings.HasPrefix(s, "json: unknown field ") {
		name := strings.TrimPrefix(s, "json: unknown field ")
		if len(name) > 40 {
			name = name[:40] + `…"`
		}
		return "unknown field " + name
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "incomplete JSON"
	}
	return "malformed"
}

func (h *Handler) writeError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusUnauthorized || e.status == http.StatusForbidden {
		ps := httpauth.ErrorParams(e.code, e.desc)
		if e.scope {
			ps = append(ps, httpauth.Param{Name: "scope", Value: Scope})
		}
		oauth.AddChallenges(w.Header(), e.scheme, h.dpopAlgs, ps...)
		if e.nonce != "" {
			w.Header().Set("DPoP-Nonce", e.nonce)
		}
	}
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
