// Package oautherr is the protocol error of Ward's authorization server:
// what a client or a browser is told (code, safe description, HTTP
// status), what the audit log records (reason, data) and what only the
// log sees (cause). The token grants, the protocol endpoints and the
// sign-in pages all return it; only the HTTP layer writes it.
package oautherr

import (
	"context"
	"net/http"
)

// OAuth, DPoP and device-grant error codes (RFC 6749 §5.2, RFC 6750 §3.1,
// RFC 9449 §5, §7, RFC 8628 §3.5).
const (
	InvalidRequest          = "invalid_request"
	InvalidClient           = "invalid_client"
	InvalidGrant            = "invalid_grant"
	UnauthorizedClient      = "unauthorized_client"
	UnsupportedGrantType    = "unsupported_grant_type"
	UnsupportedResponseType = "unsupported_response_type"
	UnsupportedTokenType    = "unsupported_token_type"
	InvalidScope            = "invalid_scope"
	AccessDenied            = "access_denied"
	LoginRequired           = "login_required"
	InteractionRequired     = "interaction_required"
	ServerError             = "server_error"
	InvalidToken            = "invalid_token"
	InsufficientScope       = "insufficient_scope"
	InvalidDPoPProof        = "invalid_dpop_proof"
	UseDPoPNonce            = "use_dpop_nonce"
	InvalidRequestURI       = "invalid_request_uri"
	InvalidRequestObject    = "invalid_request_object"
	RequestNotSupported     = "request_not_supported"
	// Device authorization grant (RFC 8628 §3.5).
	AuthorizationPending = "authorization_pending"
	SlowDown             = "slow_down"
	ExpiredToken         = "expired_token"
)

// Error is a protocol error: what the client is told. Description must be
// safe to show (it never holds a token, secret or internal detail); the
// internal cause, if any, goes to the log under the request's correlation
// id.
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
	// Subject names whom the failure concerns when the request's
	// credential was found (a refresh token's or a code's user, session
	// and device), for its audit event; never sent.
	Subject Subject
	// Commit, when set, is the store write that the failure's audit event
	// commits with (store.WithEvent on ctx): spending the one-time code
	// the refused request presented, so that the code is used up exactly
	// when the refusal is recorded. The endpoint calls it with the event
	// pending and then emits the event with the same context.
	Commit func(ctx context.Context) error
}

// Subject is who a refused request concerns, by id.
type Subject struct {
	UserID, SessionID, DeviceID string
}

// SetData sets Data[k] = v (creating Data) and returns e.
func (e *Error) SetData(k, v string) *Error {
	if e.Data == nil {
		e.Data = map[string]string{}
	}
	e.Data[k] = v
	return e
}

func (e *Error) Error() string {
	if e.Description != "" {
		return e.Code + ": " + e.Description
	}
	return e.Code
}

func (e *Error) Unwrap() error { return e.Cause }

// New returns an error with code's usual status.
func New(code, desc string) *Error {
	status := http.StatusBadRequest
	switch code {
	case InvalidClient, InvalidToken:
		status = http.StatusUnauthorized
	case ServerError:
		status = http.StatusInternalServerError
	case InsufficientScope, AccessDenied:
		status = http.StatusForbidden
	}
	return &Error{Code: code, Description: desc, Status: status}
}

// WithReason sets the audit reason and returns e.
func (e *Error) WithReason(r string) *Error { e.Reason = r; return e }

// TokenAccessDenied is access_denied as a token error response (RFC 8628
// §3.5): 400, where an authorization or resource error would be 403.
func TokenAccessDenied(desc string) *Error {
	e := New(AccessDenied, desc)
	e.Status = http.StatusBadRequest
	return e
}

// Server is server_error with its internal cause (logged, never sent).
func Server(cause error) *Error {
	e := New(ServerError, "internal error")
	e.Cause = cause
	e.Reason = "internal"
	return e
}
