package signin

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/browser"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/web"
)

const interactionTTL = 15 * time.Minute

// interaction is what a sign-in continues once the user is signed in:
// exactly one of an authorization request (the code goes to the client's
// redirect URI) or a device approval (RFC 8628: the user confirms a
// device's request). It travels sealed in the sign-in pages.
type interaction struct {
	Auth   *authz.Request `json:"a,omitempty"`
	Device *deviceRequest `json:"d,omitempty"`
}

// clientID names the client the sign-in is for ("" when the state is
// empty or ambiguous, which callers treat as invalid).
func (in *interaction) clientID() string {
	switch {
	case in == nil || (in.Auth == nil) == (in.Device == nil):
		return ""
	case in.Auth != nil:
		return in.Auth.ClientID
	default:
		return in.Device.ClientID
	}
}

// formOrigin is the extra origin the sign-in pages' forms may end up at
// (the redirect URI's, for CSP form-action); a device approval stays on
// Ward.
func (in *interaction) formOrigin() string {
	if in.Auth != nil {
		return browser.OriginOf(in.Auth.RedirectURI)
	}
	return ""
}

// dpopJKT is the DPoP key the client committed to, if any.
func (in *interaction) dpopJKT() string {
	if in.Auth != nil {
		return in.Auth.DPoPJKT
	}
	return in.Device.DPoPJKT
}

// Authorize continues an authorization request the authorization
// endpoint validated: an SSO session that satisfies it (max_age, a
// DBSC-bound session's bound cookie, Conditional Access) gets its code at
// once; otherwise the login page, or login_required for prompt=none.
func (h *Handler) Authorize(w http.ResponseWriter, r *http.Request, req *authz.Request, c *model.Client) {
	if !strings.Contains(req.Prompt, "login") {
		now := h.c.Now()
		if sess, u := h.signedIn(r); sess != nil && (req.MaxAge < 0 || now.Sub(sess.AuthTime) <= time.Duration(req.MaxAge)*time.Second) {
			if _, ok := h.signInAccess(w, r, req, c, u, sess, sess.AuthTime, sess.AMR, false); !ok {
				return
			}
			_ = h.c.Store.TouchSession(r.Context(), sess.ID, now)
			h.c.Protocol.IssueCode(w, r, req, c, sess)
			return
		}
	}
	if req.PromptNone() {
		h.c.Protocol.RedirectError(w, r, req, oautherr.New(oautherr.LoginRequired, "the user is not signed in"))
		return
	}
	h.renderLogin(w, r, &interaction{Auth: req}, c, "", "", http.StatusOK)
}

func (h *Handler) renderLogin(w http.ResponseWriter, r *http.Request, in *interaction, c *model.Client, username, msg string, status int) {
	csrf := h.browser.CSRFToken(w, r)
	blob, err := h.browser.Seal("authreq", interactionTTL, csrf, in)
	if err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	d := web.LoginData{ClientName: c.Name, Username: username, Error: msg, CSRF: csrf, Request: blob, Action: PathLogin}
	if h.c.Identity.PasskeysEnabled() {
		var err error
		if d.Passkey, err = h.passkeyLoginForm(r.Context(), in, csrf, h.info(r).IP); errors.Is(err, identity.ErrPasskeyBusy) {
			h.c.Log.InfoContext(r.Context(), "passkey sign-in not offered", "correlation_id", correlationID(r), "reason", "throttled")
		} else if err != nil {
			// The password form still works.
			h.c.Log.ErrorContext(r.Context(), "begin passkey sign-in", "correlation_id", correlationID(r), "err", err)
		}
	}
	h.c.Pages.Render(w, status, "login.html", d, in.formOrigin())
}

// resumeInteraction checks the CSRF token of a sign-in form post, opens
// its sealed state (field name in the form) into v and loads the client
// that clientID names once v is filled. On failure it has written the
// error page.
func (h *Handler) resumeInteraction(w http.ResponseWriter, r *http.Request, purpose, field string, v any, clientID func() string) (string, *model.Client, bool) {
	corr := correlationID(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	csrf, ok := h.browser.CheckCSRF(r)
	if !ok {
		h.c.Pages.Error(w, http.StatusForbidden, "Session expired", "Your sign-in form expired or was not sent from this browser. Go back to the application and start again.", corr)
		return "", nil, false
	}
	if err := h.browser.Unseal(purpose, r.PostFormValue(field), csrf, v); err != nil || clientID() == "" {
		h.c.Pages.Error(w, http.StatusBadRequest, "Sign-in expired", "This sign-in took too long or was altered. Go back to the application and start again.", corr)
		return "", nil, false
	}
	c, err := h.c.Protocol.Client(r.Context(), clientID())
	if err != nil {
		h.c.Pages.Error(w, http.StatusBadRequest, "Sign-in request rejected", "The application is no longer registered.", corr)
		return "", nil, false
	}
	return csrf, c, true
}
