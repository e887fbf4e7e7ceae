package rs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/httpauth"
)

// Error codes sent in the "error" parameter of WWW-Authenticate and in the
// JSON body of a rejection.
const (
	// CodeInvalidRequest: the Authorization header is malformed
	// (RFC 6750 §3.1); status 400.
	CodeInvalidRequest = "invalid_request"
	// CodeInvalidToken: the access token is invalid, expired, not for
	// this resource or not usable with the presented scheme; status 401.
	CodeInvalidToken = "invalid_token"
	// CodeInsufficientScope: the token lacks a required scope; status 403.
	CodeInsufficientScope = "insufficient_scope"
	// CodeInvalidDPoPProof: the DPoP proof is missing or invalid
	// (RFC 9449 §7.1); status 401.
	CodeInvalidDPoPProof = dpop.CodeInvalidProof
	// CodeUseDPoPNonce: the proof must carry the server nonce sent in
	// the DPoP-Nonce header (RFC 9449 §9); status 401.
	CodeUseDPoPNonce = dpop.CodeUseNonce
	// CodeInsufficientClaims: CAE state rejected the token; the
	// "claims" parameter says what a new token must show; status 401.
	CodeInsufficientClaims = "insufficient_claims"
	// CodeInsufficientUserAuthentication: the user must authenticate
	// again, stronger or more recently (RFC 9470 §3); status 401.
	CodeInsufficientUserAuthentication = "insufficient_user_authentication"
)

// Error is a rejected request. Description is a fixed text that is safe
// to send (never the token, the proof or other request data); Reason is a
// stable code for logs, metrics and usage records.
type Error struct {
	Status      int
	Code        string // "" when the request carried no credentials at all
	Description string
	Reason      string
	// Scope lists the scopes needed (insufficient_scope).
	Scope string
	// Claims is the base64url claims challenge (CAE rejections).
	Claims string
	// ACRValues and MaxAge are the RFC 9470 step-up parameters; MaxAge is
	// -1 when absent.
	ACRValues []string
	MaxAge    int
	// DPoPNonce is a fresh nonce for the DPoP-Nonce response header.
	DPoPNonce string
	// Decision is the CAE decision behind insufficient_claims and
	// insufficient_user_authentication.
	Decision *Decision

	scheme string // "DPoP", "Bearer", or "" for every accepted scheme
	cause  error
}

// Error implements error.
func (e *Error) Error() string {
	s := "rs: " + e.Code
	if e.Code == "" {
		s = "rs: no credentials"
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap returns the underlying cause (for example ErrKeysUnavailable or
// a *dpop.Error).
func (e *Error) Unwrap() error { return e.cause }

func newError(status int, code, reason, desc string) *Error {
	return &Error{Status: status, Code: code, Reason: reason, Description: desc, MaxAge: -1}
}

func invalidToken(reason, desc string) *Error {
	return newError(http.StatusUnauthorized, CodeInvalidToken, reason, desc)
}

// serverError hides an internal failure from the client.
func serverError(reason string, cause error) *Error {
	e := newError(http.StatusInternalServerError, "server_error", reason, "internal error")
	e.cause = cause
	return e
}

// caeError turns a CAE decision into the claims challenge.
func caeError(d *Decision, state *RevocationState, now time.Time) *Error {
	if d.Kind == Revoked {
		e := newError(http.StatusUnauthorized, CodeInsufficientClaims, d.Reason(),
			"the access token was issued before a revocation; obtain a new token")
		e.Claims = encodeClaims(map[string]any{
			"access_token": map[string]any{
				"nbf": map[string]any{"essential": true, "value": strconv.FormatInt(d.RevokedAt.Unix(), 10)},
			},
		})
		e.Decision = d
		return e
	}
	r := d.Requirement
	e := newError(http.StatusUnauthorized, CodeInsufficientUserAuthentication, d.Reason(),
		"a stronger or more recent authentication is required")
	at := map[string]any{}
	if r.ACR != "" {
		e.ACRValues = state.acrAtLeastValues(r.ACR)
		at["acr"] = map[string]any{"essential": true, "values": e.ACRValues}
	}
	if !r.AuthTimeAfter.IsZero() {
		// RFC 9470 max_age: auth_time must be at least now - max_age,
		// which is after AuthTimeAfter for any later authentication.
		age := int(now.Unix() - r.AuthTimeAfter.Unix())
		e.MaxAge = max(age, 0)
		at["auth_time"] = map[string]any{"essential": true}
	}
	e.Claims = encodeClaims(map[string]any{"access_token": at})
	e.Decision = d
	return e
}

func encodeClaims(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("rs: claims challenge: " + err.Error()) // only maps of strings, bools and slices
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// writeError writes e: status, WWW-Authenticate challenges, DPoP-Nonce
// and a small JSON body. algs is the DPoP algs parameter; bearer adds a
// Bearer challenge when no scheme was used yet.
func writeError(w http.ResponseWriter, e *Error, algs, realm string, bearer bool) {
	h := w.Header()
	if e.DPoPNonce != "" {
		h.Set("DPoP-Nonce", e.DPoPNonce)
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.Status == http.StatusBadRequest {
		params := e.challengeParams()
		dp := httpauth.Challenge{Scheme: "DPoP"}
		if algs != "" {
			dp.Params = append(dp.Params, httpauth.Param{Name: "algs", Value: algs})
		}
		bc := httpauth.Challenge{Scheme: "Bearer"}
		if realm != "" {
			dp.Params = append(dp.Params, httpauth.Param{Name: "realm", Value: realm})
			bc.Params = append(bc.Params, httpauth.Param{Name: "realm", Value: realm})
		}
		dp.Params = append(dp.Params, params...)
		bc.Params = append(bc.Params, params...)
		switch e.scheme {
		case "DPoP":
			h.Add("WWW-Authenticate", dp.String())
		case "Bearer":
			h.Add("WWW-Authenticate", bc.String())
		default:
			h.Add("WWW-Authenticate", dp.String())
			if bearer {
				h.Add("WWW-Authenticate", bc.String())
			}
		}
	}
	if e.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	h.Set("Cache-Control", "no-store")
	if e.Code == "" {
		w.WriteHeader(e.Status)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	body := struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.Code, e.Description}
	_ = json.NewEncoder(w).Encode(body)
}

// challengeParams returns the auth-params for e in a fixed order.
func (e *Error) challengeParams() []httpauth.Param {
	if e.Code == "" {
		return nil // RFC 6750 §3.1: no error code without credentials
	}
	p := httpauth.ErrorParams(e.Code, e.Description)
	if e.Scope != "" {
		p = append(p, httpauth.Param{Name: "scope", Value: e.Scope})
	}
	if len(e.ACRValues) > 0 {
		p = append(p, httpauth.Param{Name: "acr_values", Value: strings.Join(e.ACRValues, " ")})
	}
	if e.MaxAge >= 0 {
		p = append(p, httpauth.Param{Name: "max_age", Value: strconv.Itoa(e.MaxAge)})
	}
	if e.Claims != "" {
		p = append(p, httpauth.Param{Name: "claims", Value: e.Claims})
	}
	return p
}

// asError returns err as an *Error, wrapping anything else as an internal
// failure.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return serverError("internal", err)
}
