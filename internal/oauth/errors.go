package oauth

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ward-idp/ward/httpauth"
)

// OAuth, DPoP and device-grant error codes (RFC 6749 §5.2, RFC 6750 §3.1,
// RFC 9449 §5, §7, RFC 8628 §3.5).
const (
	ErrInvalidRequest          = "invalid_request"
	ErrInvalidClient           = "invalid_client"
	ErrInvalidGrant            = "invalid_grant"
	ErrUnauthorizedClient      = "unauthorized_client"
	ErrUnsupportedGrantType    = "unsupported_grant_type"
	ErrUnsupportedResponseType = "unsupported_response_type"
	ErrUnsupportedTokenType    = "unsupported_token_type"
	ErrInvalidScope            = "invalid_scope"
	ErrAccessDenied            = "access_denied"
	ErrLoginRequired           = "login_required"
	ErrServerError             = "server_error"
	ErrInvalidToken            = "invalid_token"
	ErrInsufficientScope       = "insufficient_scope"
	ErrInvalidDPoPProof        = "invalid_dpop_proof"
	ErrUseDPoPNonce            = "use_dpop_nonce"
	ErrInvalidRequestURI       = "invalid_request_uri"
	ErrInvalidRequestObject    = "invalid_request_object"
	ErrRequestNotSupported     = "request_not_supported"
	// Device authorization grant (RFC 8628 §3.5).
	ErrAuthorizationPending = "authorization_pending"
	ErrSlowDown             = "slow_down"
	ErrExpiredToken         = "expired_token"
)

// Error is a protocol error: what the client is told. Description must be
// safe to show (it never holds a token, secret or internal detail); the
// internal cause, if any, goes to the log under CorrelationID.
type Error struct {
	Code        string
	Description string
	Status      int
	// Reason is a machine-readable code for the audit log (may be more
	// specific than Code, for example "code_reused").
	Reason string
	// Cause is logged, never sent.
	Cause error
	// DPoPNonce, when set, is sent as the DPoP-Nonce header.
	DPoPNonce string
	// Data is added to the audit event of the failure (never sent).
	Data map[string]string
}

func (e *Error) Error() string {
	if e.Description != "" {
		return e.Code + ": " + e.Description
	}
	return e.Code
}

func (e *Error) Unwrap() error { return e.Cause }

func newErr(code, desc string) *Error {
	status := http.StatusBadRequest
	switch code {
	case ErrInvalidClient, ErrInvalidToken:
		status = http.StatusUnauthorized
	case ErrServerError:
		status = http.StatusInternalServerError
	case ErrInsufficientScope, ErrAccessDenied:
		status = http.StatusForbidden
	}
	return &Error{Code: code, Description: desc, Status: status}
}

func (e *Error) withReason(r string) *Error { e.Reason = r; return e }

func serverError(cause error) *Error {
	e := newErr(ErrServerError, "internal error")
	e.Cause = cause
	e.Reason = "internal"
	return e
}

// asError turns any error into a protocol error (server_error for
// unknown ones).
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return serverError(err)
}

type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeJSON writes v with no-store caching (RFC 6749 §5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeTokenError writes an error response from the token-style endpoints
// (token, PAR, introspect, revoke).
func writeTokenError(w http.ResponseWriter, e *Error) {
	if e.DPoPNonce != "" {
		w.Header().Set("DPoP-Nonce", e.DPoPNonce)
	}
	if e.Code == ErrInvalidClient && e.Status == http.StatusUnauthorized {
		c := httpauth.Challenge{Scheme: "Basic", Params: append([]httpauth.Param{{Name: "realm", Value: "ward"}}, httpauth.ErrorParams(ErrInvalidClient, "")...)}
		w.Header().Set("WWW-Authenticate", c.String())
	}
	writeJSON(w, e.Status, errorBody{Error: e.Code, Description: e.Description})
}

// writeResourceError answers a protected-resource request (userinfo,
// admin API) per RFC 6750 §3 and RFC 9449 §7.1: the challenge goes in
// WWW-Authenticate, for both schemes when the token kind is unknown.
func writeResourceError(w http.ResponseWriter, e *Error, scheme string, algs string) {
	if e.DPoPNonce != "" {
		w.Header().Set("DPoP-Nonce", e.DPoPNonce)
	}
	ps := httpauth.ErrorParams(e.Code, e.Description)
	h := w.Header()
	switch scheme {
	case "DPoP":
		h.Add("WWW-Authenticate", DPoPChallenge(algs, ps...).String())
	case "Bearer":
		h.Add("WWW-Authenticate", BearerChallenge(ps...).String())
	default:
		h.Add("WWW-Authenticate", BearerChallenge().String())
		h.Add("WWW-Authenticate", DPoPChallenge(algs).String())
	}
	writeJSON(w, e.Status, errorBody{Error: e.Code, Description: e.Description})
}

// BearerChallenge is Ward's Bearer challenge (RFC 6750 §3: realm "ward")
// with params, such as httpauth.ErrorParams.
func BearerChallenge(params ...httpauth.Param) httpauth.Challenge {
	return httpauth.Challenge{Scheme: "Bearer", Params: append([]httpauth.Param{{Name: "realm", Value: "ward"}}, params...)}
}

// DPoPChallenge is the DPoP challenge (RFC 9449 §7.1) naming the accepted
// proof algorithms (space-separated), with params.
func DPoPChallenge(algs string, params ...httpauth.Param) httpauth.Challenge {
	return httpauth.Challenge{Scheme: "DPoP", Params: append([]httpauth.Param{{Name: "algs", Value: algs}}, params...)}
}

// writeJSONCached writes a public, cacheable JSON document (the caller sets
// Cache-Control and may set Content-Type).
func writeJSONCached(w http.ResponseWriter, v any) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	_ = json.NewEncoder(w).Encode(v)
}
