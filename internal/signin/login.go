package signin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/oauth/protection"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

// mfaState is the sealed state between the password and the second factor.
type mfaState struct {
	UserID string       `json:"u"`
	In     *interaction `json:"i"`
	// PhishingResistant: only a passkey or security key will do (a
	// policy's or a claims request's authentication strength).
	PhishingResistant bool `json:"p,omitempty"`
	// Ceremony is the WebAuthn ceremony of the page's passkey form (only
	// in that form's state).
	Ceremony string `json:"w,omitempty"`
}

func (h *Handler) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	var in interaction
	csrf, c, ok := h.resumeInteraction(w, r, "authreq", "req", &in, in.clientID)
	if !ok {
		return
	}
	username := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	u, err := h.c.Identity.CheckPassword(ctx, identity.Attempt{Username: username, Password: r.PostFormValue("password"), IP: ri.IP, UserAgent: ri.UserAgent})
	if err != nil {
		ev := ri.Event(model.EventSignInFailed)
		ev.Outcome, ev.Reason, ev.ClientID, ev.Actor = model.OutcomeFailure, identity.Reason(err), c.ID, "anonymous"
		// The typed username is not recorded: people type passwords into it.
		// An existing account is named by its id instead.
		ev.UserID = identity.FailedUserID(err)
		ev.Data = map[string]string{"stage": "password"}
		_ = h.events.Emit(ctx, ev)
		msg := "Incorrect username or password."
		switch {
		case errors.Is(err, identity.ErrLocked):
			msg = "Too many failed attempts. Try again later."
		case errors.Is(err, identity.ErrThrottled):
			msg = throttledMessage(err)
		case !errors.Is(err, identity.ErrInvalidCredentials):
			h.c.Log.ErrorContext(ctx, "check password", "correlation_id", ri.CorrID, "err", err)
			msg = "Sign-in failed. Try again."
		}
		h.renderLogin(w, r, &in, c, username, msg, http.StatusUnauthorized)
		return
	}
	if h.c.Identity.HasTOTP(u) || h.c.Identity.HasPasskey(ctx, u.ID) {
		h.renderMFA(w, r, &mfaState{UserID: u.ID, In: &in}, c, csrf, "", http.StatusOK)
		return
	}
	h.completeSignIn(w, r, &in, c, u, []string{"pwd"}, authz.ACRPassword, nil)
}

// throttledMessage words a refusal by a sign-in budget: the network's,
// or the whole instance's (its budget of failures, or too many sign-ins
// waiting to be checked).
func throttledMessage(err error) string {
	if identity.Reason(err) == identity.ReasonThrottled {
		return "Too many sign-in attempts from your network. Try again in a minute."
	}
	return "Too many sign-in attempts right now. Try again in a minute."
}

func (h *Handler) renderMFA(w http.ResponseWriter, r *http.Request, st *mfaState, c *model.Client, csrf, msg string, status int) {
	h.renderMFAPage(w, r, st, c, csrf, msg, status, false)
}

// renderMFAPage renders the second-factor page; recovery opens its
// recovery-code form. It offers what the user has: a TOTP code (and
// recovery codes), a passkey or security key; only the latter when a
// phishing-resistant sign-in is required.
func (h *Handler) renderMFAPage(w http.ResponseWriter, r *http.Request, st *mfaState, c *model.Client, csrf, msg string, status int, recovery bool) {
	ctx := r.Context()
	u, err := h.c.Store.GetUser(ctx, st.UserID)
	if err != nil {
		h.c.Pages.Error(w, http.StatusBadRequest, "Sign-in failed", "Sign-in failed. Go back to the application and start again.", correlationID(r))
		return
	}
	st.Ceremony = ""
	blob, err := h.browser.Seal("mfa", 5*time.Minute, csrf, st)
	if err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	d := web.MFAData{ClientName: c.Name, Error: msg, CSRF: csrf, State: blob, Action: PathLoginMFA, Recovery: recovery,
		TOTP: h.c.Identity.HasTOTP(u) && !st.PhishingResistant}
	if st.PhishingResistant {
		d.Notice = c.Name + " requires a phishing-resistant sign-in: use your passkey or security key."
		d.PasskeyRecovery = h.c.PasskeyRecoveryCode && h.c.Identity.HasTOTP(u)
	}
	if h.c.Identity.HasPasskey(ctx, u.ID) {
		if d.Passkey, err = h.passkeyMFAForm(ctx, st, u, csrf); err != nil {
			h.c.Log.ErrorContext(ctx, "begin passkey step-up", "correlation_id", correlationID(r), "err", err)
			if !d.TOTP && d.Error == "" {
				d.Error = "Your passkey or security key cannot be used on this server right now. Ask your administrator."
			}
		} else {
			d.Passkey.Alone = !d.TOTP
		}
	}
	h.c.Pages.Render(w, status, "mfa.html", d, st.In.formOrigin())
}

// handleLoginMFA takes the second factor: a TOTP code (field otp), or a
// recovery code (field recovery, the page's second form) from a user who
// lost the authenticator.
func (h *Handler) handleLoginMFA(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	st, csrf, c, u, ok := h.resumeMFA(w, r, "mfa")
	if !ok {
		return
	}
	if st.PhishingResistant {
		if _, recovery := r.PostForm["recovery"]; recovery && h.c.PasskeyRecoveryCode {
			h.passkeyRecovery(w, r, st, c, csrf, u)
			return
		}
		// Only the passkey form serves this step; a code is not enough.
		h.renderMFA(w, r, st, c, csrf, "Use your passkey or security key.", http.StatusBadRequest)
		return
	}
	if _, recovery := r.PostForm["recovery"]; recovery {
		h.loginRecoveryCode(w, r, st, c, csrf, u)
		return
	}
	if err := h.c.Identity.CheckTOTP(ctx, u, strings.TrimSpace(r.PostFormValue("otp")), ri.IP); err != nil {
		h.secondFactorFailed(r, c, u, err, "totp")
		msg := "That code is not valid. Try the current code."
		switch {
		case errors.Is(err, identity.ErrTOTPUsed):
			msg = "That code was already used. Wait for the next code from your app."
		case errors.Is(err, identity.ErrLocked) || errors.Is(err, identity.ErrThrottled):
			msg = "Too many failed attempts. Try again later."
		}
		h.renderMFA(w, r, st, c, csrf, msg, http.StatusUnauthorized)
		return
	}
	h.completeSignIn(w, r, st.In, c, u, []string{"pwd", "otp", "mfa"}, authz.ACRMFA, nil)
}

// acrOf is the acr of a sign-in with these methods.
func acrOf(amr []string) string {
	switch access.Strength(amr) {
	case policy.StrengthPhishingResistant:
		return authz.ACRPhishingResistant
	case policy.StrengthPasswordTOTP:
		return authz.ACRMFA
	}
	return authz.ACRPassword
}

// amrRecoveryCode is what a sign-in with a recovery code records: a
// one-time code (RFC 8176 "otp") as the second factor, like TOTP, so it
// meets the same multi-factor requirements (docs/protocol.md).
var amrRecoveryCode = []string{"pwd", "otp", "mfa"}

// recoveryUse is a sign-in's second factor when it was a recovery code.
type recoveryUse struct {
	left int // codes left after it (-1: unknown)
}

// notice tells the user who signed in with a recovery code where they
// stand.
func (rc *recoveryUse) notice() string {
	switch {
	case rc == nil:
		return ""
	case rc.left == 0:
		return "You signed in with your last recovery code. Ask your administrator for new codes and to set up your authenticator again."
	case rc.left == 1:
		return "You signed in with a recovery code; you have 1 left. If you lost your authenticator, ask your administrator to set up a new one."
	case rc.left > 1:
		return "You signed in with a recovery code; you have " + strconv.Itoa(rc.left) + " left. If you lost your authenticator, ask your administrator to set up a new one."
	}
	return "You signed in with a recovery code. If you lost your authenticator, ask your administrator to set up a new one."
}

// recoveryCodeRefused is what the page says when a recovery code is
// refused: a wrong code, a code used before (each works once), too many
// attempts, or (logged, not shown) a failure on our side.
func (h *Handler) recoveryCodeRefused(r *http.Request, err error) string {
	switch {
	case errors.Is(err, identity.ErrRecoveryCodeUsed): // before ErrInvalidRecoveryCode, which it wraps
		return "That recovery code was already used. Each code works once: enter another one."
	case errors.Is(err, identity.ErrInvalidRecoveryCode):
		return "That recovery code is not valid. Check it and try again."
	case errors.Is(err, identity.ErrLocked) || errors.Is(err, identity.ErrThrottled):
		return "Too many failed attempts. Try again later."
	}
	h.c.Log.ErrorContext(r.Context(), "check recovery code", "correlation_id", h.info(r).CorrID, "err", err)
	return "Sign-in failed. Try again."
}

// loginRecoveryCode takes a recovery code in place of the TOTP code. The
// answers say which case it is: a wrong code, a code used before (each
// works once), or too many attempts.
func (h *Handler) loginRecoveryCode(w http.ResponseWriter, r *http.Request, st *mfaState, c *model.Client, csrf string, u *model.User) {
	ctx := r.Context()
	ri := h.info(r)
	if err := h.c.Identity.CheckRecoveryCode(ctx, u, r.PostFormValue("recovery"), ri.IP); err != nil {
		h.secondFactorFailed(r, c, u, err, "recovery_code")
		h.renderMFAPage(w, r, st, c, csrf, h.recoveryCodeRefused(r, err), http.StatusUnauthorized, true)
		return
	}
	rc := &recoveryUse{left: -1}
	if n, err := h.c.Identity.RecoveryCodesLeft(ctx, u.ID); err == nil {
		rc.left = n
	} else {
		h.c.Log.ErrorContext(ctx, "count recovery codes", "correlation_id", ri.CorrID, "err", err)
	}
	h.completeSignIn(w, r, st.In, c, u, amrRecoveryCode, authz.ACRMFA, rc)
}

// completeSignIn creates the SSO session, records the sign-in and
// continues the interaction: it issues the code of an authorization
// request, or asks the user to confirm a device's request. rc is set
// when the second factor was a recovery code: the sign-in event says so,
// and a device confirmation tells the user how many codes are left.
func (h *Handler) completeSignIn(w http.ResponseWriter, r *http.Request, in *interaction, c *model.Client, u *model.User, amr []string, acr string, rc *recoveryUse) {
	ctx := r.Context()
	ri := h.info(r)
	now := h.c.Now()
	var ca *access.Result
	var ok bool
	if in.Device != nil {
		ca, ok = h.deviceAccess(w, r, in.Device, c, u, nil, now, amr, true)
	} else {
		ca, ok = h.signInAccess(w, r, in.Auth, c, u, nil, now, amr, true)
	}
	if !ok {
		return
	}
	sess, ok := h.startSession(w, r, in, c, u, amr, acr, now, func(sess *model.Session) *model.Event {
		ev := h.signInEvent(ctx, ri, in, c, u, sess, ca)
		if rc != nil {
			ev.Data["method"] = "recovery_code"
			if rc.left >= 0 {
				ev.Data["recovery_codes_left"] = strconv.Itoa(rc.left)
			}
		}
		return ev
	})
	if !ok {
		return
	}
	h.offerDBSC(w, sess.ID)
	if in.Device != nil {
		h.renderDeviceConfirm(w, r, in.Device, c, sess, u, true, rc.notice())
		return
	}
	h.c.Protocol.IssueCode(w, r, in.Auth, c, sess)
}

// startSession is where every sign-in becomes an SSO session: it creates
// the session (authenticated now with amr and acr) and records event(sess)
// (sign-in succeeded) in one transaction, then sets the session cookie.
// The session is created only if the user's risk is still the one u
// was read with, which Conditional Access judged (riskChanged otherwise).
// On failure it has answered, and the browser gets no cookie.
func (h *Handler) startSession(w http.ResponseWriter, r *http.Request, in *interaction, c *model.Client, u *model.User, amr []string, acr string, now time.Time, event func(*model.Session) *model.Event) (*model.Session, bool) {
	ctx := r.Context()
	ri := h.info(r)
	sess := &model.Session{
		ID: newID(), UserID: u.ID, AuthTime: now, AMR: amr, ACR: acr, IP: ri.IP, UserAgent: ri.UserAgent,
		CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(h.c.SessionAbsolute), IdleTimeout: h.c.SessionIdle,
	}
	// The session and its record commit together: a session never exists
	// without the sign-in that made it on record.
	ev := event(sess)
	ectx := h.events.Pending(ctx, ev, nil)
	// Only while the user's risk is what the decision read (u's): a
	// risk response committed since then may have revoked the user's
	// sessions up to its time, and a session created after it would
	// escape it although admitted on the old level.
	if err := h.c.Store.CreateSessionAtRisk(ectx, sess, store.RiskSeenOf(u)); err != nil {
		if errors.Is(err, store.ErrRiskChanged) {
			h.riskChanged(w, r, in, c, u)
			return nil, false
		}
		h.c.Log.ErrorContext(ctx, "create session", "correlation_id", ri.CorrID, "err", err)
		h.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Something went wrong on our side.", ri.CorrID)
		return nil, false
	}
	if err := h.events.Emit(ectx, ev); err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Something went wrong on our side.", ri.CorrID)
		return nil, false
	}
	h.browser.SetSession(w, sess.ID, sess.ExpiresAt)
	return sess, true
}

// riskChanged answers a sign-in whose session was refused because the
// user's risk changed after Conditional Access judged it (a risk response
// may have just ended the user's sessions): it records the refusal and
// asks the user to sign in again, which is judged on the risk as it now
// is (in: the interaction to continue).
func (h *Handler) riskChanged(w http.ResponseWriter, r *http.Request, in *interaction, c *model.Client, u *model.User) {
	ri := h.info(r)
	ev := ri.Event(model.EventSignInFailed)
	ev.Outcome, ev.Reason, ev.ClientID, ev.UserID, ev.Actor = model.OutcomeFailure, ReasonRiskChanged, c.ID, u.ID, u.ID
	ev.Data = map[string]string{"stage": "session"}
	_ = h.events.Emit(r.Context(), ev)
	h.renderLogin(w, r, in, c, u.Username, MessageRiskChanged, http.StatusConflict)
}

// ReasonRiskChanged is the reason of the signin.failed of a sign-in
// refused because the user's risk changed while it was being decided.
const ReasonRiskChanged = "risk_changed"

// MessageRiskChanged is what the sign-in page says then.
const MessageRiskChanged = "Your account's security status changed while you were signing in. Sign in again."

// resumeMFA resumes a second-factor step (purpose "mfa": a code, or
// "mfapk": a passkey): its sealed state, the client and the user who gave
// the password.
func (h *Handler) resumeMFA(w http.ResponseWriter, r *http.Request, purpose string) (*mfaState, string, *model.Client, *model.User, bool) {
	st := &mfaState{}
	csrf, c, ok := h.resumeInteraction(w, r, purpose, "state", st, func() string { return st.In.clientID() })
	if !ok {
		return nil, "", nil, nil, false
	}
	u, ok := h.pendingUser(w, r, st.UserID)
	if !ok {
		return nil, "", nil, nil, false
	}
	return st, csrf, c, u, true
}

// pendingUser loads the user a sign-in's sealed state names: a user
// deleted or disabled since ends the sign-in.
func (h *Handler) pendingUser(w http.ResponseWriter, r *http.Request, id string) (*model.User, bool) {
	u, err := h.c.Store.GetUser(r.Context(), id)
	if err != nil || u.Disabled {
		h.c.Pages.Error(w, http.StatusBadRequest, "Sign-in failed", "Sign-in failed. Go back to the application and start again.", correlationID(r))
		return nil, false
	}
	return u, true
}

// secondFactorFailed records a refused second factor (or recovery code)
// of u at stage.
func (h *Handler) secondFactorFailed(r *http.Request, c *model.Client, u *model.User, err error, stage string) {
	ev := h.info(r).Event(model.EventSignInFailed)
	ev.Outcome, ev.Reason, ev.ClientID, ev.UserID, ev.Actor = model.OutcomeFailure, identity.Reason(err), c.ID, u.ID, u.ID
	ev.Data = map[string]string{"stage": stage}
	_ = h.events.Emit(r.Context(), ev)
}

// signInEvent is the record of a successful sign-in, with its binding:
// bound when the client committed to a DPoP key (dpop_jkt; otherwise the
// token endpoint decides), and token protection as far as the sign-in
// can tell (does the key belong to the user's registered device?).
func (h *Handler) signInEvent(ctx context.Context, ri origin.Info, in *interaction, c *model.Client, u *model.User, sess *model.Session, ca *access.Result) *model.Event {
	ev := ri.Event(model.EventSignInSucceeded)
	ev.Actor, ev.UserID, ev.SessionID, ev.ClientID = u.ID, u.ID, sess.ID, c.ID
	// The session starts cookie-only; session.dbsc_registered records a
	// later binding to a browser key.
	ev.Data = map[string]string{"amr": strings.Join(sess.AMR, " "), "acr": sess.ACR, "session_binding": model.SessionBindingCookie}
	if in.Device != nil {
		ev.Data["flow"] = "device"
	}
	ca.EventData(ev.Data)
	jkt := in.dpopJKT()
	if jkt == "" {
		ev.Binding, ev.BindingReason = model.BindingUnbound, "no_dpop_jkt"
		ev.Data["token_protection"] = protection.Unbound
		return ev
	}
	ev.Binding = model.BindingDPoP
	ev.Data["jkt"] = jkt
	ev.Data["token_protection"] = protection.UnregisteredKey
	if h.c.Devices == nil {
		return ev
	}
	d, err := h.c.Devices.LookupByJKT(ctx, jkt)
	switch {
	case err != nil:
	case !protection.DeviceOf(d, u.ID):
		ev.Data["token_protection_reason"] = protection.ReasonDeviceOfAnotherUser
	case d.Status != model.DeviceActive:
		ev.DeviceID = d.ID
		ev.Data["token_protection_reason"] = "device_" + d.Status
	default:
		ev.DeviceID = d.ID
		ev.Data["token_protection"] = protection.RegisteredDevice
	}
	return ev
}
