package signin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/web"
)

// Passkey paths.
const (
	// PathLoginPasskey takes a usernameless passkey sign-in.
	PathLoginPasskey = "/login/passkey"
	// PathLoginMFAPasskey takes a passkey or security key as the second
	// factor (or the phishing-resistant step-up).
	PathLoginMFAPasskey = "/login/mfa/passkey"
	// PathAccount is "My account": the user's passkeys.
	PathAccount              = "/account"
	PathAccountPasskeys      = "/account/passkeys"
	PathAccountPasskeyRemove = "/account/passkeys/remove"
	PathAccountPasskeyRename = "/account/passkeys/rename"
)

// accountFreshness is how recent a sign-in must be to add or remove a
// passkey from "My account".
const accountFreshness = 10 * time.Minute

// passkeyLoginState is the sealed state of the login page's passkey form.
type passkeyLoginState struct {
	Ceremony string       `json:"w"`
	In       *interaction `json:"i"`
}

// passkeyLoginForm begins a usernameless sign-in for the login page.
func (h *Handler) passkeyLoginForm(ctx context.Context, in *interaction, csrf, ip string) (*web.PasskeyForm, error) {
	cer, err := h.c.Identity.BeginPasskeyLogin(ctx, ip)
	if err != nil {
		return nil, err
	}
	blob, err := h.browser.Seal("pklogin", interactionTTL, csrf, &passkeyLoginState{Ceremony: cer.ID, In: in})
	if err != nil {
		return nil, err
	}
	return &web.PasskeyForm{Action: PathLoginPasskey, CSRF: csrf, State: blob, Options: string(cer.Options), Label: "Sign in with a passkey"}, nil
}

// passkeyMFAForm begins a step-up with one of u's credentials.
func (h *Handler) passkeyMFAForm(ctx context.Context, st *mfaState, u *model.User, csrf string) (*web.PasskeyForm, error) {
	cer, err := h.c.Identity.BeginWebAuthnMFA(ctx, u)
	if err != nil {
		return nil, err
	}
	pst := *st
	pst.Ceremony = cer.ID
	blob, err := h.browser.Seal("mfapk", 5*time.Minute, csrf, &pst)
	if err != nil {
		return nil, err
	}
	return &web.PasskeyForm{Action: PathLoginMFAPasskey, CSRF: csrf, State: blob, Options: string(cer.Options), Label: "Use a passkey or security key"}, nil
}

// passkeyResponse reads the browser's answer (bounded by
// resumeInteraction's body limit).
func passkeyResponse(r *http.Request) []byte { return []byte(r.PostFormValue("response")) }

// passkeyMessage words a failed passkey for the person signing in.
func passkeyMessage(err error) string {
	switch {
	case errors.Is(err, identity.ErrPasskeyExpired):
		return "That passkey request expired or was already used. Try again."
	case errors.Is(err, identity.ErrLocked), errors.Is(err, identity.ErrThrottled):
		return "Too many failed attempts. Try again later."
	case identity.Reason(err) == identity.ReasonPasskeyWrongOrigin:
		return "That passkey answer was made for another site. Make sure the address bar shows this server."
	case identity.Reason(err) == identity.ReasonPasskeyNoUV:
		return "Your passkey did not verify you (PIN or biometric). Try again."
	case errors.Is(err, identity.ErrInvalidPasskey):
		return "That passkey could not be verified. Try again, or sign in with your password."
	}
	return "Sign-in failed. Try again."
}

// passkeyFailed records a failed passkey sign-in.
func (h *Handler) passkeyFailed(r *http.Request, c *model.Client, err error, stage string) {
	ctx := r.Context()
	ri := h.info(r)
	ev := ri.Event(model.EventSignInFailed)
	ev.Outcome, ev.Reason, ev.ClientID, ev.Actor = model.OutcomeFailure, identity.Reason(err), c.ID, "anonymous"
	if uid := identity.FailedUserID(err); uid != "" {
		ev.UserID, ev.Actor = uid, uid
	}
	ev.Data = map[string]string{"stage": stage}
	_ = h.events.Emit(ctx, ev)
	if identity.Reason(err) == identity.ReasonInternal {
		h.c.Log.ErrorContext(ctx, "passkey sign-in", "correlation_id", ri.CorrID, "err", err)
	}
}

// handleLoginPasskey takes a usernameless passkey sign-in: the passkey
// names the account, proves possession and (user verification) the PIN
// or biometric, so it is a complete, phishing-resistant sign-in.
func (h *Handler) handleLoginPasskey(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	var st passkeyLoginState
	_, c, ok := h.resumeInteraction(w, r, "pklogin", "state", &st, func() string { return st.In.clientID() })
	if !ok {
		return
	}
	use, err := h.c.Identity.FinishPasskeyLogin(ctx, st.Ceremony, passkeyResponse(r), ri.IP)
	if err != nil {
		h.passkeyFailed(r, c, err, "passkey")
		h.renderLogin(w, r, st.In, c, "", passkeyMessage(err), http.StatusUnauthorized)
		return
	}
	h.completeSignIn(w, r, st.In, c, use.User, use.AMR, acrOf(use.AMR), nil)
}

// handleLoginMFAPasskey takes a passkey or security key after the
// password (or for a phishing-resistant step-up of an SSO session).
func (h *Handler) handleLoginMFAPasskey(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	st, csrf, c, u, ok := h.resumeMFA(w, r, "mfapk")
	if !ok {
		return
	}
	use, err := h.c.Identity.FinishWebAuthnMFA(ctx, u, st.Ceremony, passkeyResponse(r), ri.IP)
	if err != nil {
		h.passkeyFailed(r, c, err, "passkey_mfa")
		h.renderMFA(w, r, st, c, csrf, passkeyMessage(err), http.StatusUnauthorized)
		return
	}
	amr := append([]string{"pwd"}, use.AMR...)
	h.completeSignIn(w, r, st.In, c, u, amr, acrOf(amr), nil)
}

// accountState is the sealed state of "My account"'s forms: the session
// they belong to and, for a registration form, its ceremony.
type accountState struct {
	SessionID string `json:"s"`
	Ceremony  string `json:"w,omitempty"`
	Kind      string `json:"k,omitempty"`
}

// accountFresh reports whether sess may change the account's passkeys:
// signed in within accountFreshness, with the second factor when the
// user has one (a stolen password alone, or an old session cookie, does
// not add a key that would then pass for phishing-resistant).
func (h *Handler) accountFresh(ctx context.Context, sess *model.Session, u *model.User) bool {
	if h.c.Now().Sub(sess.AuthTime) > accountFreshness {
		return false
	}
	if h.c.Identity.HasTOTP(u) || h.c.Identity.HasPasskey(ctx, u.ID) {
		return slices.Contains(sess.AMR, "mfa")
	}
	return true
}

func (h *Handler) handleAccount(w http.ResponseWriter, r *http.Request) {
	sess, u := h.signedIn(r)
	if sess == nil {
		h.c.Pages.Error(w, http.StatusUnauthorized, "Not signed in",
			"Sign in to an application that uses this server first, then come back to "+PathAccount+".", correlationID(r))
		return
	}
	h.renderAccount(w, r, sess, u, "", "", http.StatusOK)
}

func (h *Handler) renderAccount(w http.ResponseWriter, r *http.Request, sess *model.Session, u *model.User, msg, notice string, status int) {
	ctx := r.Context()
	csrf := h.browser.CSRFToken(w, r)
	blob, err := h.browser.Seal("account", interactionTTL, csrf, &accountState{SessionID: sess.ID})
	if err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	d := web.AccountData{Username: u.Username, Error: msg, Notice: notice, CSRF: csrf, State: blob, Remove: PathAccountPasskeyRemove,
		Rename: PathAccountPasskeyRename, MaxName: identity.MaxPasskeyNameLen}
	creds, err := h.c.Identity.ListPasskeys(ctx, u.ID)
	if err != nil {
		h.c.Log.ErrorContext(ctx, "list passkeys", "correlation_id", correlationID(r), "err", err)
	}
	for _, c := range creds {
		p := web.AccountPasskey{ID: c.ID, Name: c.Name, Kind: "Security key", Created: c.CreatedAt.UTC().Format("2006-01-02"), Synced: c.BackupState}
		if c.Discoverable {
			p.Kind = "Passkey"
		}
		if !c.LastUsedAt.IsZero() {
			p.LastUsed = c.LastUsedAt.UTC().Format("2006-01-02 15:04 UTC")
		}
		d.Passkeys = append(d.Passkeys, p)
	}
	switch {
	case !h.c.Identity.PasskeysEnabled():
		d.Reauth = "Passkeys are not enabled on this server."
	case !h.accountFresh(ctx, sess, u):
		d.Reauth = "To add or remove a passkey, sign in again (with your second factor, if you have one): changes need a sign-in from the last 10 minutes."
	case len(creds) >= identity.MaxPasskeysPerUser:
		d.Reauth = "You have the most passkeys an account can have; remove one to add another."
	default:
		for _, kind := range []string{identity.MethodPasskey, identity.MethodSecurityKey} {
			f, err := h.passkeyRegisterForm(ctx, sess, u, kind, csrf)
			if err != nil {
				h.c.Log.ErrorContext(ctx, "begin passkey registration", "correlation_id", correlationID(r), "err", err)
				break
			}
			if kind == identity.MethodPasskey {
				d.Add = f
			} else {
				d.AddKey = f
			}
		}
	}
	h.c.Pages.Render(w, status, "account.html", d)
}

func (h *Handler) passkeyRegisterForm(ctx context.Context, sess *model.Session, u *model.User, kind, csrf string) (*web.PasskeyForm, error) {
	cer, err := h.c.Identity.BeginPasskeyRegistration(ctx, u, kind)
	if err != nil {
		return nil, err
	}
	blob, err := h.browser.Seal("account-add", interactionTTL, csrf, &accountState{SessionID: sess.ID, Ceremony: cer.ID, Kind: kind})
	if err != nil {
		return nil, err
	}
	f := &web.PasskeyForm{Action: PathAccountPasskeys, CSRF: csrf, State: blob, Options: string(cer.Options), Create: true, Kind: kind}
	if kind == identity.MethodPasskey {
		f.Label, f.Placeholder = "Add a passkey", "e.g. Laptop"
	} else {
		f.Label, f.Placeholder = "Add a security key (second factor)", "e.g. YubiKey"
	}
	return f, nil
}

// resumeAccount checks an account form's CSRF token and state, and that
// the browser is still signed in to the session the form was made for.
func (h *Handler) resumeAccount(w http.ResponseWriter, r *http.Request, purpose string) (*accountState, *model.Session, *model.User, bool) {
	corr := correlationID(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	csrf, ok := h.browser.CheckCSRF(r)
	if !ok {
		h.c.Pages.Error(w, http.StatusForbidden, "Session expired", "This form expired or was not sent from this browser. Open "+PathAccount+" again.", corr)
		return nil, nil, nil, false
	}
	var st accountState
	if err := h.browser.Unseal(purpose, r.PostFormValue("state"), csrf, &st); err != nil {
		h.c.Pages.Error(w, http.StatusBadRequest, "Form expired", "This form took too long or was altered. Open "+PathAccount+" again.", corr)
		return nil, nil, nil, false
	}
	sess, u := h.signedIn(r)
	if sess == nil || sess.ID != st.SessionID {
		h.c.Pages.Error(w, http.StatusUnauthorized, "Not signed in", "Your session ended. Sign in again, then open "+PathAccount+".", corr)
		return nil, nil, nil, false
	}
	return &st, sess, u, true
}

// handleAccountAddPasskey registers the passkey the page's ceremony
// created.
func (h *Handler) handleAccountAddPasskey(w http.ResponseWriter, r *http.Request) {
	st, sess, u, ok := h.resumeAccount(w, r, "account-add")
	if !ok {
		return
	}
	ctx := r.Context()
	if !h.accountFresh(ctx, sess, u) {
		h.renderAccount(w, r, sess, u, "Sign in again to add a passkey.", "", http.StatusForbidden)
		return
	}
	c, err := h.c.Identity.FinishPasskeyRegistration(ctx, u.ID, u, st.Ceremony, r.PostFormValue("name"), passkeyResponse(r))
	if err != nil {
		msg := passkeyMessage(err)
		switch {
		case errors.Is(err, identity.ErrInvalidInput):
			msg = "Give the passkey a name of at most 64 printable characters."
		case errors.Is(err, identity.ErrPasskeyNotAllowed), errors.Is(err, identity.ErrPasskeyTaken), errors.Is(err, identity.ErrTooManyPasskeys):
			msg = err.Error()
		case identity.Reason(err) == identity.ReasonInternal:
			h.c.Log.ErrorContext(ctx, "register passkey", "correlation_id", correlationID(r), "err", err)
		}
		h.renderAccount(w, r, sess, u, msg, "", http.StatusBadRequest)
		return
	}
	h.renderAccount(w, r, sess, u, "", "Added "+strings.TrimSpace(c.Name)+".", http.StatusOK)
}

// handleAccountRemovePasskey removes one of the user's passkeys.
func (h *Handler) handleAccountRemovePasskey(w http.ResponseWriter, r *http.Request) {
	_, sess, u, ok := h.resumeAccount(w, r, "account")
	if !ok {
		return
	}
	ctx := r.Context()
	if !h.accountFresh(ctx, sess, u) {
		h.renderAccount(w, r, sess, u, "Sign in again to remove a passkey.", "", http.StatusForbidden)
		return
	}
	if err := h.c.Identity.RemovePasskey(ctx, u.ID, u.ID, r.PostFormValue("id")); err != nil {
		status, msg := http.StatusInternalServerError, "The passkey could not be removed."
		if errors.Is(err, identity.ErrNotFound) {
			status, msg = http.StatusNotFound, "No such passkey."
		} else {
			h.c.Log.ErrorContext(ctx, "remove passkey", "correlation_id", correlationID(r), "err", err)
		}
		h.renderAccount(w, r, sess, u, msg, "", status)
		return
	}
	h.renderAccount(w, r, sess, u, "", "Passkey removed.", http.StatusOK)
}

// handleAccountRenamePasskey renames one of the user's passkeys. The
// form is the page's (CSRF token, state sealed for this session); a name
// is a label and changes nothing a key can do, so no recent sign-in is
// asked for. Only the signed-in user's own passkeys are found: another
// user's id is "No such passkey." (404), and keeps its name.
func (h *Handler) handleAccountRenamePasskey(w http.ResponseWriter, r *http.Request) {
	_, sess, u, ok := h.resumeAccount(w, r, "account")
	if !ok {
		return
	}
	ctx := r.Context()
	c, err := h.c.Identity.RenamePasskey(ctx, u.ID, u.ID, r.PostFormValue("id"), r.PostFormValue("name"))
	if err != nil {
		status, msg := http.StatusInternalServerError, "The passkey could not be renamed."
		switch {
		case errors.Is(err, identity.ErrInvalidInput):
			status, msg = http.StatusBadRequest, fmt.Sprintf("Give the passkey a name of 1 to %d characters, without control characters.", identity.MaxPasskeyNameLen)
		case errors.Is(err, identity.ErrNotFound):
			status, msg = http.StatusNotFound, "No such passkey."
		default:
			h.c.Log.ErrorContext(ctx, "rename passkey", "correlation_id", correlationID(r), "err", err)
		}
		h.renderAccount(w, r, sess, u, msg, "", status)
		return
	}
	h.renderAccount(w, r, sess, u, "", "Renamed to "+c.Name+".", http.StatusOK)
}

// passkeyRecovery is the configured fallback of a user who lost every
// passkey, at a step that requires one: a recovery code (counted and
// used once like at any second factor) creates an SSO session of
// password + one-time code and opens My account, where the user removes
// the lost passkeys and adds a new one. The application is not
// continued: its requirement is not met by a code. The use is recorded
// (passkey.recovery, a risk detection, the sign-in with stage
// passkey_recovery).
func (h *Handler) passkeyRecovery(w http.ResponseWriter, r *http.Request, st *mfaState, c *model.Client, csrf string, u *model.User) {
	ctx := r.Context()
	ri := h.info(r)
	if err := h.c.Identity.CheckRecoveryCode(ctx, u, r.PostFormValue("recovery"), ri.IP); err != nil {
		h.secondFactorFailed(r, c, u, err, "passkey_recovery")
		h.renderMFAPage(w, r, st, c, csrf, h.recoveryCodeRefused(r, err), http.StatusUnauthorized, true)
		return
	}
	if err := h.c.Identity.PasskeyFallbackUsed(ctx, u.ID, "recovery_code", ri.IP); err != nil {
		h.c.Log.ErrorContext(ctx, "record passkey recovery", "correlation_id", ri.CorrID, "err", err)
	}
	// No Conditional Access and no code for the application: the session
	// only opens My account.
	amr := amrRecoveryCode
	sess, ok := h.startSession(w, r, st.In, c, u, amr, acrOf(amr), h.c.Now(), func(sess *model.Session) *model.Event {
		ev := ri.Event(model.EventSignInSucceeded)
		ev.Actor, ev.UserID, ev.SessionID, ev.ClientID = u.ID, u.ID, sess.ID, c.ID
		ev.Data = map[string]string{"amr": strings.Join(amr, " "), "acr": sess.ACR, "session_binding": model.SessionBindingCookie,
			"stage": "passkey_recovery", "method": "recovery_code"}
		return ev
	})
	if !ok {
		return
	}
	h.renderAccount(w, r, sess, u, "", "You signed in with a recovery code. Remove the passkeys you lost, add a new one, then go back to "+c.Name+" and sign in with it.", http.StatusOK)
}
