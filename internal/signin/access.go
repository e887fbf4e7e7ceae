package signin

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/explain"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/oauth/protection"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

// Controls a sign-in can satisfy only on a registered device.
var deviceControls = []string{policy.ControlRegisteredDevice, policy.ControlCompliantDevice, policy.ControlTokenProtection}

// satisfiableBy reports whether a requirement is met once every control in
// done is met.
func satisfiableBy(r policy.Requirement, done ...string) bool {
	met := 0
	for _, c := range r.Controls {
		if slices.Contains(done, c) || (c == policy.ControlAuthStrengthPrefix+policy.StrengthPasswordTOTP && slices.Contains(done, policy.ControlMFA)) {
			met++
		}
	}
	if r.Operator == policy.OperatorAny {
		return met > 0
	}
	return met == len(r.Controls)
}

// allSatisfiableBy reports whether every requirement is met once every
// control in done is (true for none).
func allSatisfiableBy(rs []policy.Requirement, done ...string) bool {
	for _, rq := range rs {
		if !satisfiableBy(rq, done...) {
			return false
		}
	}
	return true
}

// needsMFA reports whether a requirement names a second factor.
func needsMFA(rs []policy.Requirement) bool {
	for _, rq := range rs {
		if slices.Contains(rq.Controls, policy.ControlMFA) || slices.Contains(rq.Controls, policy.ControlAuthStrengthPrefix+policy.StrengthPasswordTOTP) {
			return true
		}
	}
	return false
}

// needsPhishingResistant reports whether a requirement names the
// phishing-resistant authentication strength (a passkey).
func needsPhishingResistant(rs []policy.Requirement) bool {
	for _, rq := range rs {
		if slices.Contains(rq.Controls, policy.ControlAuthStrengthPrefix+policy.StrengthPhishingResistant) {
			return true
		}
	}
	return false
}

// step is what a sign-in does about a Conditional Access result.
type step int

const (
	stepAllow          step = iota // go on (device requirements may be left to the token endpoint)
	stepBlock                      // a policy blocks
	stepSignInAgain                // an SSO session older than the sign-in frequency: sign in again
	stepMFA                        // step up with the second factor; evaluated again after it
	stepPasskey                    // step up with a passkey or security key (phishing-resistant)
	stepPasswordSignIn             // only a password change is missing, for an SSO session: sign in again first
	stepPassword                   // only a password change is missing: change it here
	stepUnmet                      // controls the sign-in cannot satisfy: name them
)

// plan decides the step for result res of a sign-in of u at authTime.
// fresh reports that the user has just authenticated (password and, when
// enrolled, TOTP), otherwise an SSO session is being reused; prompt that
// pages may be shown; jkt is the DPoP key the client committed to ("":
// the device is not known until the token request, which evaluates again
// with the proof's key, so device requirements are decided there).
func (h *Handler) plan(ctx context.Context, res *access.Result, u *model.User, authTime time.Time, fresh, prompt bool, jkt string) step {
	if res.Outcome == policy.OutcomeBlock {
		return stepBlock
	}
	freq := res.Session.SignInFrequency
	if !fresh && (res.Session.SignInEveryTime || (freq > 0 && h.c.Now().Sub(authTime) > freq)) {
		return stepSignInAgain
	}
	if res.Outcome != policy.OutcomeAllowWithControls {
		return stepAllow
	}
	hasPasskey := h.c.Identity.HasPasskey(ctx, u.ID)
	if needsPhishingResistant(res.Requirements) && hasPasskey {
		return stepPasskey
	}
	if needsMFA(res.Requirements) && (h.c.Identity.HasTOTP(u) || hasPasskey) {
		return stepMFA
	}
	// Self-remediation of user risk: when a password change is all that
	// is missing, the user changes it here, right after proving the old
	// one (a reused SSO session signs in again first).
	if prompt && u.PasswordHash != "" && len(res.Requirements) > 0 && allSatisfiableBy(res.Requirements, policy.ControlPasswordChange) {
		if !fresh {
			return stepPasswordSignIn
		}
		return stepPassword
	}
	if jkt == "" && allSatisfiableBy(res.Requirements, deviceControls...) {
		return stepAllow
	}
	return stepUnmet
}

// userDevice is the registered device of DPoP key jkt when it counts for
// u (protection.DeviceOf), or nil.
func (h *Handler) userDevice(ctx context.Context, jkt string, u *model.User) *model.Device {
	if jkt == "" || h.c.Devices == nil {
		return nil
	}
	if d, err := h.c.Devices.LookupByJKT(ctx, jkt); err == nil && protection.DeviceOf(d, u.ID) {
		return d
	}
	return nil
}

// evaluate asks Conditional Access about sign-in at in flow, with this
// request's address and device and the sign-in's risk. A risky SSO
// sign-in does not count the session's earlier authentication: a policy
// that requires a second factor gets one now (a step-up), instead of the
// factor the session performed before its cookie was copied.
func (h *Handler) evaluate(ctx context.Context, flow string, at *attempt) (*access.Result, error) {
	amr := at.amr
	if at.sso != nil && at.risk != policy.RiskNone {
		amr = nil
	}
	return h.c.Access.Evaluate(ctx, access.Request{
		Flow: flow, User: at.u, Client: at.c, Device: at.dev, IP: at.ri.IP, AuthTime: at.authTime, AMR: amr,
		TokenProtected: at.dev != nil && at.dev.Status == model.DeviceActive, SignInRisk: at.risk,
	})
}

// accessFailed answers a sign-in whose policies could not be evaluated:
// access is refused (fail closed).
func (h *Handler) accessFailed(w http.ResponseWriter, r *http.Request, ri origin.Info, err error) {
	h.c.Log.ErrorContext(r.Context(), "conditional access", "correlation_id", ri.CorrID, "err", err)
	h.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Access policies could not be evaluated, so access is refused. Try again later.", ri.CorrID)
}

// signInRefused records a sign-in Conditional Access refused (an SSO
// sign-in's refusal is its signin.sso: ssoRecord).
func (h *Handler) signInRefused(ctx context.Context, at *attempt, reason string, res *access.Result) {
	if at.sso != nil {
		return
	}
	ri, c, u, dev := at.ri, at.c, at.u, at.dev
	ev := ri.Event(model.EventSignInFailed)
	ev.Outcome, ev.Reason, ev.ClientID, ev.UserID, ev.Actor = model.OutcomeFailure, reason, c.ID, u.ID, u.ID
	ev.Data = map[string]string{"stage": "conditional_access"}
	if dev != nil {
		ev.DeviceID = dev.ID
	}
	res.EventData(ev.Data)
	_ = h.events.Emit(ctx, ev)
}

// requireMFA adds a claims request for a multi-factor acr (a resource's
// step-up challenge) to res as one more MFA requirement.
func requireMFA(res *access.Result) {
	res.Requirements = append(res.Requirements, policy.Requirement{Policy: "claims:acr", Operator: policy.OperatorAll, Controls: []string{policy.ControlMFA}})
	if !slices.Contains(res.Controls, policy.ControlMFA) {
		res.Controls = append(res.Controls, policy.ControlMFA)
	}
	res.Outcome = policy.OutcomeAllowWithControls
}

// requirePhishingResistant adds a claims request for the
// phishing-resistant acr to res as one more requirement.
func requirePhishingResistant(res *access.Result) {
	ctl := policy.ControlAuthStrengthPrefix + policy.StrengthPhishingResistant
	res.Requirements = append(res.Requirements, policy.Requirement{Policy: "claims:acr", Operator: policy.OperatorAll, Controls: []string{ctl}})
	if !slices.Contains(res.Controls, ctl) {
		res.Controls = append(res.Controls, ctl)
	}
	res.Outcome = policy.OutcomeAllowWithControls
}

// signInAccess applies Conditional Access to an interactive sign-in before
// the code is issued (fresh: see plan). It returns the decision when the
// sign-in may go on; otherwise it has answered: redirect with
// access_denied, the MFA step-up, the login form again, the password
// change, or a page naming what failed and how to fix it.
func (h *Handler) signInAccess(w http.ResponseWriter, r *http.Request, req *authz.Request, c *model.Client, u *model.User, sess *model.Session, authTime time.Time, amr []string, fresh bool) (*access.Result, bool) {
	ctx := r.Context()
	at, err := h.newAttempt(ctx, r, &interaction{Auth: req}, c, u, sess, authTime, amr, fresh)
	if err != nil {
		h.accessFailed(w, r, at.ri, err)
		return nil, false
	}
	stepUp := req.Claims.WantsMFA() && access.Strength(amr) == policy.StrengthPassword
	stepUpPR := req.Claims.WantsPhishingResistant() && access.Strength(amr) != policy.StrengthPhishingResistant
	if h.c.Access == nil {
		if stepUp || stepUpPR {
			// A resource's step-up challenge (claims acr) without policies.
			h.ssoRecord(ctx, at, nil, "claims_mfa_required")
			h.claimsStepUp(w, r, &interaction{Auth: req}, req.Claims, c, u)
			return nil, false
		}
		h.ssoRecord(ctx, at, nil, "")
		return nil, true
	}
	ri, dev := at.ri, at.dev
	res, err := h.evaluate(ctx, policy.FlowInteractive, at)
	if err != nil {
		h.accessFailed(w, r, ri, err)
		return nil, false
	}
	switch {
	case res.Outcome == policy.OutcomeBlock:
	case stepUpPR:
		requirePhishingResistant(res)
	case stepUp:
		requireMFA(res)
	}
	prompt := !req.PromptNone()
	in := &interaction{Auth: req}
	redirect := func(code, desc string) { h.c.Protocol.RedirectError(w, r, req, oautherr.New(code, desc)) }
	st := h.plan(ctx, res, u, authTime, fresh, prompt, req.DPoPJKT)
	h.ssoRecord(ctx, at, res, stepReason[st])
	switch st {
	case stepAllow:
		return res, true
	case stepBlock:
		h.signInRefused(ctx, at, "ca_block", res)
		redirect(oautherr.AccessDenied, "access is blocked by a Conditional Access policy (reference "+ri.CorrID+")")
	case stepSignInAgain:
		if !prompt {
			redirect(oautherr.LoginRequired, "Conditional Access requires a fresh sign-in")
		} else {
			h.renderLogin(w, r, in, c, u.Username, "Sign in again to continue.", http.StatusOK)
		}
	case stepMFA:
		if !prompt {
			redirect(oautherr.InteractionRequired, "Conditional Access requires multi-factor authentication")
		} else {
			h.renderMFA(w, r, &mfaState{UserID: u.ID, In: in}, c, h.browser.CSRFToken(w, r), "This application requires a second factor.", http.StatusOK)
		}
	case stepPasskey:
		if !prompt {
			redirect(oautherr.InteractionRequired, "Conditional Access requires phishing-resistant authentication (a passkey or security key)")
		} else {
			h.renderMFA(w, r, &mfaState{UserID: u.ID, In: in, PhishingResistant: true}, c, h.browser.CSRFToken(w, r), "", http.StatusOK)
		}
	case stepPasswordSignIn:
		h.renderLogin(w, r, in, c, u.Username, "Sign in again to change your password.", http.StatusOK)
	case stepPassword:
		h.renderPasswordChange(w, r, &pwChangeState{UserID: u.ID, In: in, AMR: amr}, c, h.browser.CSRFToken(w, r), "", http.StatusOK)
	default:
		h.signInRefused(ctx, at, "ca_controls_unmet", res)
		if !prompt {
			redirect(oautherr.InteractionRequired, "Conditional Access requires "+explain.Controls(res.Controls))
		} else {
			h.c.Pages.Denied(w, http.StatusForbidden, "Access requires more",
				"Your organisation's access policies for "+c.Name+" are not met. Fix what is listed below and try again.",
				problems(res.Controls, dev, h.c.Identity.HasTOTP(u)), ri.CorrID)
		}
	}
	return nil, false
}

// pwChangeState is the sealed state of the password change page: the user
// who has just signed in, how, and the sign-in to continue.
type pwChangeState struct {
	UserID string       `json:"u"`
	In     *interaction `json:"i"`
	AMR    []string     `json:"m"`
}

func (h *Handler) renderPasswordChange(w http.ResponseWriter, r *http.Request, st *pwChangeState, c *model.Client, csrf, msg string, status int) {
	blob, err := h.browser.Seal("pwchange", 5*time.Minute, csrf, st)
	if err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	h.c.Pages.Render(w, status, "password_change.html", web.PasswordChangeData{ClientName: c.Name, Error: msg, CSRF: csrf, State: blob, Action: PathLoginPassword}, st.In.formOrigin())
}

// handleLoginPassword takes the new password Conditional Access asked
// for. The change revokes the user's other sessions (as every password
// change does) and remediates the user risk; the sign-in then continues
// and is evaluated again.
func (h *Handler) handleLoginPassword(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	var st pwChangeState
	csrf, c, ok := h.resumeInteraction(w, r, "pwchange", "state", &st, func() string { return st.In.clientID() })
	if !ok {
		return
	}
	u, err := h.c.Store.GetUser(ctx, st.UserID)
	if err != nil || u.Disabled {
		h.c.Pages.Error(w, http.StatusBadRequest, "Sign-in failed", "Sign-in failed. Go back to the application and start again.", ri.CorrID)
		return
	}
	pw := r.PostFormValue("new_password")
	if pw != r.PostFormValue("confirm_password") {
		h.renderPasswordChange(w, r, &st, c, csrf, "The two passwords differ.", http.StatusBadRequest)
		return
	}
	if ok, err := h.c.Identity.VerifyPassword(ctx, u, pw); err == nil && ok {
		h.renderPasswordChange(w, r, &st, c, csrf, "Choose a password different from the current one.", http.StatusBadRequest)
		return
	}
	if err := h.c.Identity.SetPassword(ctx, u.ID, u.ID, pw); err != nil {
		msg := "The password could not be changed. Try again."
		if errors.Is(err, identity.ErrWeakPassword) {
			msg = err.Error()
		} else {
			h.c.Log.ErrorContext(ctx, "change password", "correlation_id", ri.CorrID, "err", err)
		}
		h.renderPasswordChange(w, r, &st, c, csrf, msg, http.StatusBadRequest)
		return
	}
	if u.RiskLevel != "" {
		if err := h.c.Identity.SetRisk(ctx, u.ID, u.ID, identity.RiskNone, "remediated: password changed at sign-in"); err != nil {
			h.c.Log.ErrorContext(ctx, "remediate user risk", "correlation_id", ri.CorrID, "err", err)
		}
	}
	if u, err = h.c.Store.GetUser(ctx, u.ID); err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Something went wrong on our side.", ri.CorrID)
		return
	}
	acr := acrOf(st.AMR)
	h.completeSignIn(w, r, st.In, c, u, st.AMR, acr, nil)
}

// claimsStepUp answers a claims acr request the signed-in user's session
// does not meet, when no policies are configured (an authorization
// request) or for a device approval: the MFA page, which continues in with
// a new multi-factor session, or a page saying the account has no second
// factor (or that the acr asked for is not one Ward offers). An
// authorization request with prompt=none goes back with
// interaction_required.
func (h *Handler) claimsStepUp(w http.ResponseWriter, r *http.Request, in *interaction, cr *authz.Claims, c *model.Client, u *model.User) {
	if in.Auth != nil && in.Auth.PromptNone() {
		h.c.Protocol.RedirectError(w, r, in.Auth, oautherr.New(oautherr.InteractionRequired, "the requested acr needs multi-factor authentication"))
		return
	}
	if cr.WantsPhishingResistant() {
		if !h.c.Identity.HasPasskey(r.Context(), u.ID) {
			h.c.Pages.Denied(w, http.StatusForbidden, "Access requires more", "The application asked for a phishing-resistant sign-in.",
				problems([]string{policy.ControlAuthStrengthPrefix + policy.StrengthPhishingResistant}, nil, false), correlationID(r))
			return
		}
		h.renderMFA(w, r, &mfaState{UserID: u.ID, In: in, PhishingResistant: true}, c, h.browser.CSRFToken(w, r), "", http.StatusOK)
		return
	}
	if !cr.WantsMFA() {
		h.c.Pages.Denied(w, http.StatusForbidden, "Access requires more", "The application asked for a kind of sign-in this server does not offer.",
			[]web.Problem{{What: "Requested authentication context (acr): " + strings.Join(cr.ACR, ", ") + ".",
				Fix: "Ask the application's administrator which sign-in it needs."}}, correlationID(r))
		return
	}
	if !h.c.Identity.HasTOTP(u) && !h.c.Identity.HasPasskey(r.Context(), u.ID) {
		h.c.Pages.Denied(w, http.StatusForbidden, "Access requires more", "The application asked for a stronger sign-in.",
			problems([]string{policy.ControlMFA}, nil, false), correlationID(r))
		return
	}
	h.renderMFA(w, r, &mfaState{UserID: u.ID, In: in}, c, h.browser.CSRFToken(w, r), "This application requires a second factor.", http.StatusOK)
}

// deviceAccess applies Conditional Access to a device approval (RFC 8628)
// with what is known when the user approves: the user and how they signed
// in, the client, the key the device committed to (dpop_jkt) and its
// registered device, and the approving browser's request. The token
// endpoint evaluates again when the device redeems the code, from the
// device's own address. fresh: see plan.
//
// It returns the decision when the approval may go on; otherwise it has
// answered, where the sign-in pages remediate: the second factor, the
// password change, the login form again. When the policies would refuse
// the token, the page names what failed and the device's request is
// denied with the reason, so that its next poll gets access_denied saying
// why instead of waiting for a token it would not get.
func (h *Handler) deviceAccess(w http.ResponseWriter, r *http.Request, dr *deviceRequest, c *model.Client, u *model.User, sess *model.Session, authTime time.Time, amr []string, fresh bool) (*access.Result, bool) {
	ctx := r.Context()
	in := &interaction{Device: dr}
	at, err := h.newAttempt(ctx, r, in, c, u, sess, authTime, amr, fresh)
	if err != nil {
		h.accessFailed(w, r, at.ri, err)
		return nil, false
	}
	if h.c.Access == nil {
		h.ssoRecord(ctx, at, nil, "")
		return nil, true
	}
	ri, dev := at.ri, at.dev
	res, err := h.evaluate(ctx, policy.FlowDeviceCode, at)
	if err != nil {
		h.accessFailed(w, r, ri, err)
		return nil, false
	}
	st := h.plan(ctx, res, u, authTime, fresh, true, dr.DPoPJKT)
	h.ssoRecord(ctx, at, res, stepReason[st])
	switch st {
	case stepAllow:
		return res, true
	case stepSignInAgain:
		h.renderLogin(w, r, in, c, u.Username, "Sign in again to continue.", http.StatusOK)
	case stepMFA:
		h.renderMFA(w, r, &mfaState{UserID: u.ID, In: in}, c, h.browser.CSRFToken(w, r), "This application requires a second factor.", http.StatusOK)
	case stepPasskey:
		h.renderMFA(w, r, &mfaState{UserID: u.ID, In: in, PhishingResistant: true}, c, h.browser.CSRFToken(w, r), "", http.StatusOK)
	case stepPasswordSignIn:
		h.renderLogin(w, r, in, c, u.Username, "Sign in again to change your password.", http.StatusOK)
	case stepPassword:
		h.renderPasswordChange(w, r, &pwChangeState{UserID: u.ID, In: in, AMR: amr}, c, h.browser.CSRFToken(w, r), "", http.StatusOK)
	case stepBlock:
		h.refuseDevice(w, r, ri, &deviceRefusal{dr: dr, c: c, u: u, dev: dev, res: res, reason: "ca_block",
			desc: "access is blocked by a Conditional Access policy (reference " + ri.CorrID + ")"})
	default:
		h.refuseDevice(w, r, ri, &deviceRefusal{dr: dr, c: c, u: u, dev: dev, res: res, reason: "ca_controls_unmet",
			desc: "Conditional Access requires " + explain.Controls(res.Controls) + " (reference " + ri.CorrID + ")"})
	}
	return nil, false
}

// deviceRefusal is a device approval Conditional Access refused.
type deviceRefusal struct {
	dr     *deviceRequest
	c      *model.Client
	u      *model.User
	dev    *model.Device
	res    *access.Result
	reason string // ca_block, ca_controls_unmet
	desc   string // what the device is told
}

// deviceRefusalEvent is the device_code.denied of a refusal rf of the
// request dc.
func deviceRefusalEvent(ri origin.Info, rf *deviceRefusal, dc *model.DeviceCode) *model.Event {
	ev := ri.Event(model.EventDeviceCodeDenied)
	ev.Outcome, ev.Reason, ev.Actor, ev.UserID, ev.ClientID = model.OutcomeFailure, rf.reason, rf.u.ID, rf.u.ID, dc.ClientID
	ev.Data = map[string]string{"scope": dc.Scope, "stage": "conditional_access"}
	if rf.dev != nil {
		ev.DeviceID = rf.dev.ID
	}
	if dc.DPoPJKT != "" {
		ev.Binding = model.BindingDPoP
		ev.Data["jkt"] = dc.DPoPJKT
	} else {
		ev.Binding, ev.BindingReason = model.BindingUnbound, "no_dpop_jkt"
	}
	rf.res.EventData(ev.Data)
	return ev
}

// refuseDevice denies the device's request with the refusal's reason and
// description, records it, and shows the user what failed.
func (h *Handler) refuseDevice(w http.ResponseWriter, r *http.Request, ri origin.Info, rf *deviceRefusal) {
	ctx := r.Context()
	now := h.c.Now()
	// The denial and its record commit together.
	var seen *model.DeviceCode
	var ev *model.Event
	ectx := h.events.PendingEvents(ctx, func([]string) []*model.Event {
		ev = deviceRefusalEvent(ri, rf, seen)
		return []*model.Event{ev}
	})
	_, err := h.c.Store.UpdateDeviceCode(ectx, rf.dr.Hash, func(d *model.DeviceCode) error {
		if !deviceCodeOpen(d, now) || d.ClientID != rf.c.ID {
			return errDeviceClosed
		}
		d.Status, d.DenyReason, d.DenyDescription = model.DeviceCodeDenied, rf.reason, rf.desc
		seen = d
		return nil
	})
	switch {
	case errors.Is(err, errDeviceClosed) || errors.Is(err, store.ErrNotFound):
		h.deviceGone(w, r)
		return
	case err != nil:
		h.c.Log.ErrorContext(ctx, "deny device code", "correlation_id", ri.CorrID, "err", err)
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", ri.CorrID)
		return
	}
	if ev != nil {
		_ = h.events.Emit(ectx, ev)
	}
	if rf.reason == "ca_block" {
		h.c.Pages.Denied(w, http.StatusForbidden, "Access blocked",
			"Your organisation's access policies do not allow "+rf.c.Name+" to be used this way, so the device was not connected. It has been told that access is denied.",
			[]web.Problem{{What: "A Conditional Access policy blocks signing in to " + rf.c.Name + " through a device code.",
				Fix: "Ask your administrator, giving them the reference below."}}, ri.CorrID)
		return
	}
	h.c.Pages.Denied(w, http.StatusForbidden, "Access requires more",
		"Your organisation's access policies for "+rf.c.Name+" are not met, so the device was not connected. Fix what is listed below, then start again on your device.",
		problems(rf.res.Controls, rf.dev, h.c.Identity.HasTOTP(rf.u)), ri.CorrID)
}
