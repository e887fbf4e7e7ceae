// Package grant answers token requests: one Handler per grant_type
// (authorization_code, refresh_token, client_credentials, device_code)
// and the issuing pipeline every successful grant ends in. It speaks no
// HTTP: the token endpoint (package oauth) authenticates the client,
// verifies the DPoP proof and parses the request into a Request; a grant
// returns a Response or a protocol error, which the endpoint writes.
//
// The issuing pipeline runs named steps in a fixed order (see issue):
// bind (the DPoP key and the registered device it belongs to), access
// (Conditional Access and the claims request), mint (access and ID
// tokens), rotate (the refresh token) and record (the event). Every
// refusal comes before rotate, so a refused request issues and rotates
// nothing. For a code grant rotate is the write that spends the code with
// what it yields and its event; a refusal of a code that passed the
// request checks spends it with the refusal's record instead
// (oautherr.Error.Commit).
package grant

import (
	"context"
	"log/slog"
	"net/url"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
)

// Request is a token request as the token endpoint parsed it.
type Request struct {
	// GrantType is the grant_type parameter.
	GrantType string
	// Client is the authenticated client.
	Client *model.Client
	// Form holds the request's parameters (each at most once).
	Form url.Values
	// Proof is the verified DPoP proof; nil when the request had none.
	Proof *dpop.Proof
	// Claims is the claims request parameter; nil when absent.
	Claims *authz.Claims
	// Origin is where the request came from, for events and logs.
	Origin origin.Info
}

// Get returns the first value of parameter k ("" when absent).
func (r *Request) Get(k string) string {
	if v := r.Form[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// jkt is the thumbprint of the proof's key ("" without a proof).
func (r *Request) jkt() string {
	if r.Proof == nil {
		return ""
	}
	return r.Proof.JKT
}

// Response is a successful token response (RFC 6749 §5.1).
type Response struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// Handler answers one grant_type.
type Handler interface {
	Grant(ctx context.Context, req *Request) (*Response, *oautherr.Error)
}

// DeviceLookup finds the registered device a DPoP key belongs to
// (store.ErrNotFound when none does): the device service.
type DeviceLookup interface {
	LookupByJKT(ctx context.Context, jkt string) (*model.Device, error)
}

// AccessEvaluator decides Conditional Access: the access service.
type AccessEvaluator interface {
	Evaluate(ctx context.Context, req access.Request) (*access.Result, error)
}

// SessionRevoker ends the session of a one-time value presented again
// (session.Service, which records each revocation once, with its events,
// and reports whether the call ended the session; a missing session is
// an error wrapping store.ErrNotFound).
type SessionRevoker interface {
	// RefreshTokenReused ends the session of a rotated refresh token
	// presented again (with a DPoP key of thumbprint jkt, "" for none).
	RefreshTokenReused(ctx context.Context, clientID string, rt *model.RefreshToken, jkt string) (bool, error)
	// CodeReused ends the session of an authorization code presented
	// again.
	CodeReused(ctx context.Context, clientID string, ac *model.AuthCode) (bool, error)
}

// Lifetimes of what the grants issue.
type Lifetimes struct {
	AccessToken  time.Duration
	IDToken      time.Duration
	RefreshToken time.Duration
	// CAEAccessToken is the access-token lifetime for CAE-capable requests
	// of CAE-capable clients.
	CAEAccessToken time.Duration
}

// Config is what the grants work with. Lifetimes must be set; Devices
// and Access may be nil (no device binding, no policies).
type Config struct {
	Issuer      string // without a trailing slash
	Store       store.Store
	Keys        *tokens.KeyManager
	TokenHasher *secret.Hasher
	Devices     DeviceLookup
	Access      AccessEvaluator
	Sessions    SessionRevoker
	Events      *bus.Emitter
	Lifetimes   Lifetimes
	Now         func() time.Time
	Log         *slog.Logger
}

// env is what every grant and the pipeline share.
type env struct{ Config }

// New returns the grant handlers by grant_type.
func New(c Config) map[string]Handler {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	e := &env{c}
	return map[string]Handler{
		model.GrantAuthorizationCode: authorizationCode{e},
		model.GrantRefreshToken:      refreshToken{e},
		model.GrantClientCredentials: clientCredentials{e},
		model.GrantDeviceCode:        deviceCode{e},
	}
}
