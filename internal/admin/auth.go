package admin

import (
	"net/http"
	"slices"
	"strings"

	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
	"github.com/ward-idp/ward/internal/tokens"
)

// Reasons recorded on admin.access_denied events besides those of
// oauth.AuthenticateResource (no_token, token_invalid, dpop_invalid, ...).
const (
	ReasonAudience   = "audience_mismatch" // the token is not meant for Ward
	ReasonNotAUser   = "not_a_user"        // a client (client_credentials) token
	ReasonNotAdmin   = "not_admin"         // the user lacks the admin role
	ReasonNoScope    = "scope_missing"     // the token lacks ward:admin
	ReasonBadRequest = "invalid_request"   // e.g. an unknown Authorization scheme
)

// denial is why a request was refused.
type denial struct {
	status int
	code   string
	desc   string
	reason string
	scheme string // "DPoP", "Bearer" or "" (unknown: challenge with both)
	claims *tokens.AccessClaims
	user   *model.User
	cause  error // internal cause, logged only
}

// authorize applies the admin API's access rule to r.
func (api *API) authorize(r *http.Request) (*model.User, *denial) {
	c, scheme, e := api.auth.AuthenticateResource(r)
	if e != nil {
		d := &denial{status: http.StatusUnauthorized, code: e.Code, desc: e.Description, reason: e.Reason, scheme: scheme, cause: e.Cause}
		switch e.Code {
		case oauth.ErrInvalidToken, oauth.ErrInvalidDPoPProof, oauth.ErrUseDPoPNonce:
			// RFC 6750 §3.1 and RFC 9449 §7.1: 401 at a resource,
			// whatever status the provider's error carries.
		case oauth.ErrServerError:
			d.status = http.StatusInternalServerError
		default:
			d.status = http.StatusBadRequest
		}
		if d.reason == "" {
			d.reason = e.Code
			if e.Code == oauth.ErrInvalidRequest {
				d.reason = ReasonBadRequest
			}
		}
		if d.code == oauth.ErrInvalidToken && d.reason == "no_token" {
			d.desc = "an access token is required"
		}
		return nil, d
	}
	cl := c.Claims
	deny := func(status int, code, desc, reason string) (*model.User, *denial) {
		return nil, &denial{status: status, code: code, desc: desc, reason: reason, scheme: scheme, claims: cl, user: c.User}
	}
	// RFC 9068 §4: a resource server checks that it is the audience.
	if !slices.Contains([]string(cl.Audience), api.issuer) {
		return deny(http.StatusUnauthorized, oauth.ErrInvalidToken, "the access token is not meant for this server", ReasonAudience)
	}
	if c.User == nil {
		return deny(http.StatusForbidden, oauth.ErrAccessDenied, "the admin API needs a user's token, not a client's", ReasonNotAUser)
	}
	if !c.User.HasRole(model.RoleAdmin) {
		return deny(http.StatusForbidden, oauth.ErrAccessDenied, "the user is not an administrator", ReasonNotAdmin)
	}
	if !slices.Contains(strings.Fields(cl.Scope), ScopeAdmin) {
		return deny(http.StatusForbidden, oauth.ErrInsufficientScope, "the access token lacks the "+ScopeAdmin+" scope", ReasonNoScope)
	}
	return c.User, nil
}

// deny records the refusal and answers it per RFC 6750 §3 and RFC 9449
// §7.1.
func (api *API) deny(w http.ResponseWriter, r *http.Request, rc *reqCtx, d *denial) {
	ev := &model.Event{Type: model.EventAdminAccessDenied, Actor: "anonymous", IP: rc.ip,
		UserAgent: rc.ua, CorrelationID: rc.corrID, Outcome: model.OutcomeFailure, Reason: d.reason,
		Data: map[string]string{"method": r.Method, "path": truncate(r.URL.Path, 256), "error": d.code}}
	if cl := d.claims; cl != nil {
		ev.Actor, ev.ClientID, ev.SessionID, ev.TokenID = cl.Subject, cl.ClientID, cl.SID, cl.JTI
		if d.user != nil {
			ev.UserID = d.user.ID
		}
	}
	// The emitter logs a failure; the denial stands either way.
	_ = api.events.Emit(r.Context(), ev)
	if d.status == http.StatusInternalServerError {
		api.writeError(w, r, rc, &Error{Status: d.status, Code: CodeServerError, Cause: d.cause})
		return
	}
	if d.status == http.StatusUnauthorized || d.code == oauth.ErrInsufficientScope || d.status == http.StatusBadRequest {
		var ps []httpauth.Param
		if d.reason != "no_token" {
			ps = httpauth.ErrorParams(d.code, d.desc)
			if d.code == oauth.ErrInsufficientScope {
				ps = append(ps, httpauth.Param{Name: "scope", Value: ScopeAdmin})
			}
		}
		oauth.AddChallenges(w.Header(), d.scheme, api.dpopAlgs, ps...)
	}
	writeJSON(w, d.status, errorBody{Error: d.code, Description: d.desc})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
