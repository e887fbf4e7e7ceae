// Package deviceapi is the HTTP API the Ward agent talks to: device
// registration, posture nonces and posture reports, and the device's own
// compliance state.
//
// Routes (JSON, errors as {"error", "error_description"} like the admin
// API, Cache-Control: no-store):
//
//	GET  /devices/nonce          a posture nonce (no authentication)
//	POST /devices                register the device key (with TPM 2.0 key
//	                             attestation evidence: answers a challenge)
//	POST /devices/{id}/attestation  the answer to the attestation challenge
//	POST /devices/{id}/posture   submit a signed posture report
//	GET  /devices/{id}           the device and its compliance
//
// Every route but the nonce needs a user's access token issued by Ward for
// Ward (oauth.Provider.AuthenticateResource: signature, expiry, live
// session, DPoP proof) that is DPoP-bound. Registration needs the scope
// ward:device (model.ScopeDevice), which an administrator grants to the
// device agent's client only: a token the user gave any other application
// cannot register that application's key as the user's device.
// Registration also proves possession of the device key: the token's proof
// key (cnf.jkt, whose proof the provider has just verified) must be the
// key being registered. With TPM 2.0 key attestation evidence it answers a
// challenge, which the device's TPM answers at /devices/{id}/attestation
// (device.Service.RegisterAttested, ActivateAttestation). The other routes
// require the token to be bound to that device's key and to belong to the
// device's owner, so a token stolen from the device, or a token of another
// of the user's devices, cannot act for it.
package deviceapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
)

// maxBody bounds request bodies (a report is a few KiB).
const maxBody = 64 << 10

// Error codes besides the RFC 6750 / RFC 9449 ones of authentication
// failures (invalid_token, invalid_dpop_proof, use_dpop_nonce).
const (
	CodeInvalidRequest       = "invalid_request"
	CodeAccessDenied         = "access_denied"
	CodeInsufficientScope    = "insufficient_scope"
	CodeNotFound             = "not_found"
	CodeConflict             = "conflict"
	CodeInvalidReport        = "invalid_report"
	CodeInvalidAttestation   = "invalid_attestation"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeTooLarge             = "request_too_large"
	CodeServerError          = "server_error"
)

// API serves the device API.
type API struct {
	devices  *device.Service
	prov     *oauth.Provider
	issuer   string
	log      *slog.Logger
	dpopAlgs string
}

// New returns the device API. issuer is Ward's issuer URL: tokens must
// name it in their audience.
func New(devices *device.Service, prov *oauth.Provider, issuer string, log *slog.Logger) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	algs := make([]string, len(dpop.DefaultAlgs))
	for i, a := range dpop.DefaultAlgs {
		algs[i] = string(a)
	}
	return &API{devices: devices, prov: prov, issuer: strings.TrimSuffix(issuer, "/"),
		log: log.With("component", "deviceapi"), dpopAlgs: strings.Join(algs, " ")}
}

// Register adds the routes to mux.
func (api *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /devices/nonce", api.nonce)
	mux.HandleFunc("POST /devices", api.authed(api.register))
	mux.HandleFunc("POST /devices/{id}/attestation", api.authed(api.attestation))
	mux.HandleFunc("POST /devices/{id}/posture", api.authed(api.posture))
	mux.HandleFunc("GET /devices/{id}", api.authed(api.get))
	mux.HandleFunc("DELETE /devices/{id}", api.authed(api.deregister))
}

// Error is an error response.
type Error struct {
	Status      int
	Code        string
	Description string
	Reason      string // posture refusal reason, sent as "reason"
	Cause       error  // logged only
	// Challenge, when set, is the auth scheme of a WWW-Authenticate
	// challenge ("DPoP", "Bearer", or "*" for both).
	Challenge string
	DPoPNonce string
	// Scope is the scope an insufficient_scope challenge names.
	Scope string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

type errorBody struct {
	Error         string `json:"error"`
	Description   string `json:"error_description,omitempty"`
	Reason        string `json:"reason,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// DeviceJSON is a device as the agent sees it.
type DeviceJSON struct {
	ID         string           `json:"id"`
	UserID     string           `json:"user_id"`
	JKT        string           `json:"jkt"`
	Status     string           `json:"status"`
	Compliance string           `json:"compliance"`
	Failures   []device.Failure `json:"failures"`
	KeyStorage string           `json:"key_storage,omitempty"`
	// KeyAttested: Ward verified that the key lives in a TPM; without it
	// KeyStorage is only what the agent reported.
	KeyAttested    bool                   `json:"key_attested"`
	KeyAttestation *device.KeyAttestation `json:"key_attestation,omitempty"`
	Platform       string                 `json:"platform"`
	OSName         string                 `json:"os_name,omitempty"`
	OSVersion      string                 `json:"os_version,omitempty"`
	Hostname       string                 `json:"hostname,omitempty"`
	AgentVersion   string                 `json:"agent_version,omitempty"`
	TrustType      string                 `json:"trust_type"`
	ComplianceAt   time.Time              `json:"compliance_at,omitzero"`
	PostureAt      time.Time              `json:"posture_at,omitzero"`
	CreatedAt      time.Time              `json:"created_at"`
	LastSeen       time.Time              `json:"last_seen,omitzero"`
}

// DTO renders a device.
func DTO(d *model.Device) DeviceJSON {
	return DeviceJSON{
		ID: d.ID, UserID: d.UserID, JKT: d.JKT, Status: d.Status, Compliance: d.Compliance, Failures: device.DecodeFailures(d),
		KeyStorage: d.KeyStorage, KeyAttested: d.KeyAttested, KeyAttestation: device.DecodeKeyAttestation(d),
		Platform: d.Platform, OSName: d.OSName, OSVersion: d.OSVersion, Hostname: d.Hostname,
		AgentVersion: d.AgentVersion, TrustType: d.TrustType, ComplianceAt: d.ComplianceAt.UTC(), PostureAt: d.PostureAt.UTC(),
		CreatedAt: d.CreatedAt.UTC(), LastSeen: d.LastSeen.UTC(),
	}
}

// GET /devices/nonce
func (api *API) nonce(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"nonce": api.devices.Nonce()})
}

// registration is the body of POST /devices.
type registration struct {
	JWK           json.RawMessage `json:"jwk"`
	KeyStorage    string          `json:"key_storage"`
	Platform      string          `json:"platform"`
	OSName        string          `json:"os_name"`
	OSVersion     string          `json:"os_version"`
	Hostname      string          `json:"hostname"`
	AgentVersion  string          `json:"agent_version"`
	PostureReport string          `json:"posture_report"`
	// Attestation is TPM 2.0 key attestation evidence (optional).
	Attestation *attestationJSON `json:"attestation"`
}

// attestationJSON is TPM 2.0 key attestation evidence: the TPM's own
// structures, base64url without padding.
type attestationJSON struct {
	Format           string `json:"format"` // "tpm2"
	Nonce            string `json:"nonce"`
	EKPublic         string `json:"ek_public"`
	EKCertificate    string `json:"ek_certificate"`
	AKPublic         string `json:"ak_public"`
	KeyPublic        string `json:"key_public"`
	CertifyInfo      string `json:"certify_info"`
	CertifySignature string `json:"certify_signature"`
}

// challengeJSON is the attestation challenge of a registration.
type challengeJSON struct {
	CredentialBlob  string    `json:"credential_blob"`
	EncryptedSecret string    `json:"encrypted_secret"`
	State           string    `json:"state"`
	ExpiresAt       time.Time `json:"expires_at"`
}

var b64 = base64.RawURLEncoding.Strict()

// evidence decodes the attestation member of a registration.
func (a *attestationJSON) evidence() (*device.Attestation, error) {
	bad := func(desc string) error {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidAttestation, Reason: device.ReasonAttestationMalformed, Description: desc}
	}
	if a.Format != device.KeyMethodTPM2 {
		return nil, bad(`attestation.format must be "tpm2"`)
	}
	out := &device.Attestation{Nonce: a.Nonce}
	for _, f := range []struct {
		name string
		in   string
		dst  *[]byte
	}{
		{"ek_public", a.EKPublic, &out.EKPublic}, {"ek_certificate", a.EKCertificate, &out.EKCertificate},
		{"ak_public", a.AKPublic, &out.AKPublic}, {"key_public", a.KeyPublic, &out.KeyPublic},
		{"certify_info", a.CertifyInfo, &out.CertifyInfo}, {"certify_signature", a.CertifySignature, &out.Signature},
	} {
		b, err := b64.DecodeString(f.in)
		if err != nil {
			return nil, bad("attestation." + f.name + " is not base64url without padding")
		}
		*f.dst = b
	}
	return out, nil
}

// POST /devices
func (api *API) register(w http.ResponseWriter, r *http.Request, c *oauth.Caller) error {
	if err := requireDeviceScope(c); err != nil {
		return err
	}
	var body registration
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	_, jkt, err := device.ParseDeviceKey(body.JWK)
	if err != nil {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "jwk: " + err.Error()}
	}
	// Proof of possession: the provider verified the DPoP proof of the
	// request with the key the token is bound to; that key must be the
	// one being registered.
	if c.Claims.Cnf.JKT != jkt {
		return &Error{Status: http.StatusForbidden, Code: CodeAccessDenied,
			Description: "the access token must be DPoP-bound to the key being registered: sign the request's DPoP proof with the device key"}
	}
	reg := device.Registration{
		PublicJWK: body.JWK, KeyStorage: body.KeyStorage, Platform: body.Platform, OSName: body.OSName,
		OSVersion: body.OSVersion, Hostname: body.Hostname, AgentVersion: body.AgentVersion, TrustType: model.TrustRegistered,
	}
	var (
		d  *model.Device
		ch *device.Challenge
	)
	if body.Attestation != nil {
		ev, err := body.Attestation.evidence()
		if err != nil {
			return err
		}
		d, ch, err = api.devices.RegisterAttested(r.Context(), c.User.ID, reg, ev)
		if err != nil {
			return err
		}
	} else if d, err = api.devices.Register(r.Context(), c.User.ID, reg); err != nil {
		return err
	}
	var challenge *challengeJSON
	if ch != nil {
		challenge = &challengeJSON{CredentialBlob: b64.EncodeToString(ch.CredentialBlob), EncryptedSecret: b64.EncodeToString(ch.EncryptedSecret),
			State: ch.State, ExpiresAt: ch.ExpiresAt.UTC()}
	}
	if body.PostureReport != "" {
		nd, err := api.devices.SubmitPosture(r.Context(), d.ID, body.PostureReport)
		if err != nil {
			// The device is registered; the report can be sent again. Say
			// so instead of failing the registration.
			api.log.WarnContext(r.Context(), "initial posture report refused", "device_id", d.ID, "reason", device.PostureReason(err), "err", err)
			w.Header().Set("Location", "/devices/"+d.ID)
			writeJSON(w, http.StatusCreated, registered{DTO(d), postureErrorBody(err), challenge})
			return nil
		}
		d = nd
	}
	w.Header().Set("Location", "/devices/"+d.ID)
	writeJSON(w, http.StatusCreated, registered{DeviceJSON: DTO(d), Challenge: challenge})
	return nil
}

// registered is the answer to a registration.
type registered struct {
	DeviceJSON
	// PostureError says why the first posture report was refused.
	PostureError *errorBody `json:"posture_error,omitempty"`
	// Challenge is to be answered at POST /devices/{id}/attestation.
	Challenge *challengeJSON `json:"attestation_challenge,omitempty"`
}

// POST /devices/{id}/attestation {"state", "secret"}: the device's answer
// to its attestation challenge, as part of its registration (the scope is
// the registration's).
func (api *API) attestation(w http.ResponseWriter, r *http.Request, c *oauth.Caller) error {
	if err := requireDeviceScope(c); err != nil {
		return err
	}
	d, err := api.owned(r, c)
	if err != nil {
		return err
	}
	var body struct {
		State  string `json:"state"`
		Secret string `json:"secret"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	secret, err := b64.DecodeString(body.Secret)
	if body.State == "" || body.Secret == "" || err != nil {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest,
			Description: "state (as issued) and secret (base64url without padding) are required"}
	}
	nd, err := api.devices.ActivateAttestation(r.Context(), d.ID, body.State, secret)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DTO(nd))
	return nil
}

func postureErrorBody(err error) *errorBody {
	e := classify(err)
	return &errorBody{Error: e.Code, Description: e.Description, Reason: e.Reason}
}

// POST /devices/{id}/posture
func (api *API) posture(w http.ResponseWriter, r *http.Request, c *oauth.Caller) error {
	d, err := api.owned(r, c)
	if err != nil {
		return err
	}
	var body struct {
		Report string `json:"report"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if body.Report == "" {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "report is required"}
	}
	nd, err := api.devices.SubmitPosture(r.Context(), d.ID, body.Report)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DTO(nd))
	return nil
}

// GET /devices/{id}
func (api *API) get(w http.ResponseWriter, r *http.Request, c *oauth.Caller) error {
	d, err := api.owned(r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DTO(d))
	return nil
}

// DELETE /devices/{id}: the device leaves (the agent enrolling again with
// --force, or uninstalled). Only the device itself can: its owner's token
// bound to its key. Its sessions end with it, as when an administrator
// deletes it.
func (api *API) deregister(w http.ResponseWriter, r *http.Request, c *oauth.Caller) error {
	d, err := api.owned(r, c)
	if err != nil {
		return err
	}
	if err := api.devices.Delete(r.Context(), c.User.ID, d.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// requireDeviceScope refuses a token without the device registration
// scope (RFC 6750 §3.1 insufficient_scope, naming the scope).
func requireDeviceScope(c *oauth.Caller) error {
	if slices.Contains(strings.Fields(c.Claims.Scope), model.ScopeDevice) {
		return nil
	}
	return &Error{Status: http.StatusForbidden, Code: CodeInsufficientScope, Challenge: c.Scheme, Scope: model.ScopeDevice,
		Description: "registering a device needs an access token with the " + model.ScopeDevice +
			" scope, which the device agent's client requests at enrolment (an administrator grants it to that client)"}
}

// owned loads the device of the path and checks that the caller is its
// owner with a token bound to its key. Another user's device and a
// missing one look the same (404).
func (api *API) owned(r *http.Request, c *oauth.Caller) (*model.Device, error) {
	d, err := api.devices.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, device.ErrNotFound) || err == nil && d.UserID != c.User.ID {
		return nil, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Description: "device not found"}
	}
	if err != nil {
		return nil, err
	}
	if c.Claims.Cnf.JKT != d.JKT {
		return nil, &Error{Status: http.StatusForbidden, Code: CodeAccessDenied,
			Description: "the access token must be DPoP-bound to this device's key"}
	}
	return d, nil
}

// authed authenticates the caller: a live user token for Ward, DPoP-bound.
func (api *API) authed(fn func(http.ResponseWriter, *http.Request, *oauth.Caller) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := api.authenticate(r)
		if err == nil {
			err = fn(w, r, c)
		}
		if err != nil {
			api.writeError(w, r, err)
		}
	}
}

func (api *API) authenticate(r *http.Request) (*oauth.Caller, error) {
	c, scheme, e := api.prov.AuthenticateResource(r)
	if e != nil {
		out := &Error{Status: http.StatusUnauthorized, Code: e.Code, Description: e.Description, Cause: e.Cause,
			Challenge: scheme, DPoPNonce: e.DPoPNonce}
		switch e.Code {
		case oauth.ErrInvalidToken, oauth.ErrInvalidDPoPProof, oauth.ErrUseDPoPNonce:
		case oauth.ErrServerError:
			out.Status, out.Challenge = http.StatusInternalServerError, ""
		default:
			out.Status = http.StatusBadRequest
		}
		if e.Reason == "no_token" {
			out.Description = "an access token is required"
		}
		if out.Challenge == "" && out.Status == http.StatusUnauthorized {
			out.Challenge = "*"
		}
		return nil, out
	}
	if !slices.Contains([]string(c.Claims.Audience), api.issuer) {
		return nil, &Error{Status: http.StatusUnauthorized, Code: oauth.ErrInvalidToken, Challenge: scheme,
			Description: "the access token is not meant for this server"}
	}
	if c.User == nil {
		return nil, &Error{Status: http.StatusForbidden, Code: CodeAccessDenied, Description: "the device API needs a user's token, not a client's"}
	}
	if c.Claims.Cnf == nil || c.Claims.Cnf.JKT == "" {
		return nil, &Error{Status: http.StatusForbidden, Code: CodeAccessDenied,
			Description: "the access token must be DPoP-bound to the device key (a bearer token is not accepted here)"}
	}
	return c, nil
}

// classify maps an error to the response.
func classify(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	if pe, ok := errors.AsType[*device.PostureError](err); ok {
		e := &Error{Status: http.StatusBadRequest, Code: CodeInvalidReport, Description: pe.Message, Reason: pe.Reason, Cause: err}
		switch pe.Reason {
		case device.ReasonUnknownDevice:
			e.Status, e.Code = http.StatusNotFound, CodeNotFound
		case device.ReasonDeviceInactive:
			e.Status, e.Code = http.StatusForbidden, CodeAccessDenied
		case device.ReasonReplayed:
			e.Status = http.StatusConflict
		}
		return e
	}
	if ae, ok := errors.AsType[*device.AttestationError](err); ok {
		e := &Error{Status: http.StatusBadRequest, Code: CodeInvalidAttestation, Description: ae.Message, Reason: ae.Reason, Cause: err}
		switch ae.Reason {
		case device.ReasonAlreadyAttested:
			e.Status = http.StatusConflict
		case device.ReasonDeviceInactive:
			e.Status, e.Code = http.StatusForbidden, CodeAccessDenied
		}
		return e
	}
	switch {
	case errors.Is(err, device.ErrKeyInUse):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Description: err.Error()}
	case errors.Is(err, device.ErrInvalid):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: err.Error()}
	case errors.Is(err, device.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Description: "not found"}
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeServerError, Cause: err}
}

func (api *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	body := errorBody{Error: e.Code, Description: e.Description, Reason: e.Reason}
	corr := w.Header().Get("X-Correlation-ID")
	if e.Status >= 500 {
		api.log.ErrorContext(r.Context(), "deviceapi: internal error", "correlation_id", corr, "method", r.Method,
			"route", r.Pattern, "err", e.Cause)
		body.Description = "internal error; correlation id " + corr
		body.CorrelationID = corr
	}
	if e.DPoPNonce != "" {
		w.Header().Set("DPoP-Nonce", e.DPoPNonce)
	}
	if e.Challenge != "" {
		var ps []httpauth.Param
		if e.Description != "" && !(e.Code == oauth.ErrInvalidToken && e.Description == "an access token is required") {
			ps = httpauth.ErrorParams(e.Code, e.Description)
			if e.Scope != "" {
				ps = append(ps, httpauth.Param{Name: "scope", Value: e.Scope})
			}
		}
		oauth.AddChallenges(w.Header(), e.Challenge, api.dpopAlgs, ps...) // "*": both
	}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads an application/json body of at most maxBody bytes:
// one object, no unknown fields.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType, Description: "the request body must be application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err = dec.Decode(dst); err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "the request body must hold a single JSON object"}
		}
		return nil
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Description: fmt.Sprintf("the request body is larger than %d bytes", maxBody)}
	}
	desc := "the request body is not valid JSON"
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		desc = fmt.Sprintf("field %s: expected %s", te.Field, te.Type)
	} else if s, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		desc = "unknown field " + s
	} else if errors.Is(err, io.EOF) {
		desc = "the request body is empty"
	}
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: desc}
}
