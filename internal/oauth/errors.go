package oauth

import (
	"encoding/json"
	"net/http"

	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
)

// Protocol error codes (package oautherr has them all).
const (
	ErrInvalidRequest          = oautherr.InvalidRequest
	ErrInvalidClient           = oautherr.InvalidClient
	ErrInvalidGrant            = oautherr.InvalidGrant
	ErrUnauthorizedClient      = oautherr.UnauthorizedClient
	ErrUnsupportedGrantType    = oautherr.UnsupportedGrantType
	ErrUnsupportedResponseType = oautherr.UnsupportedResponseType
	ErrUnsupportedTokenType    = oautherr.UnsupportedTokenType
	ErrInvalidScope            = oautherr.InvalidScope
	ErrAccessDenied            = oautherr.AccessDenied
	ErrLoginRequired           = oautherr.LoginRequired
	ErrServerError             = oautherr.ServerError
	ErrInvalidToken            = oautherr.InvalidToken
	ErrInsufficientScope       = oautherr.InsufficientScope
	ErrInvalidDPoPProof        = oautherr.InvalidDPoPProof
	ErrUseDPoPNonce            = oautherr.UseDPoPNonce
	ErrInvalidRequestURI       = oautherr.InvalidRequestURI
	ErrRequestNotSupported     = oautherr.RequestNotSupported
	ErrAuthorizationPending    = oautherr.AuthorizationPending
)

// Error is a protocol error (oautherr.Error): what the client is told.
type Error = oautherr.Error

func newErr(code, desc string) *Error { return oautherr.New(code, desc) }

func serverError(cause error) *Error { return oautherr.Server(cause) }

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
	var ps []httpauth.Param
	if scheme == "DPoP" || scheme == "Bearer" {
		ps = httpauth.ErrorParams(e.Code, e.Description)
	}
	AddChallenges(w.Header(), scheme, algs, ps...)
	writeJSON(w, e.Status, errorBody{Error: e.Code, Description: e.Description})
}

// AddChallenges adds the WWW-Authenticate challenges of a refused request
// to a protected resource (RFC 6750 §3, RFC 9449 §7.1): the scheme the
// request used ("DPoP" or "Bearer"), or both when it used neither, each
// with params (such as httpauth.ErrorParams; none for a request that
// carried no token). algs are the accepted proof algorithms.
func AddChallenges(h http.Header, scheme, algs string, params ...httpauth.Param) {
	switch scheme {
	case "DPoP":
		h.Add("WWW-Authenticate", DPoPChallenge(algs, params...).String())
	case "Bearer":
		h.Add("WWW-Authenticate", BearerChallenge(params...).String())
	default:
		h.Add("WWW-Authenticate", BearerChallenge(params...).String())
		h.Add("WWW-Authenticate", DPoPChallenge(algs, params...).String())
	}
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
