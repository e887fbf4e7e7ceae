package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/web"
)

// AccessEvaluator decides Conditional Access (the access service).
type AccessEvaluator interface {
	Evaluate(ctx context.Context, req access.Request) (*access.Result, error)
}

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

// tokenAccess applies Conditional Access at the token endpoint, after the
// grant is otherwise valid and before anything is issued or rotated, so a
// refused request changes nothing. The result's session controls are
// applied by the caller.
func (p *Provider) tokenAccess(tr *tokenRequest, g grant, dev *model.Device, protection string) (*access.Result, *Error) {
	if p.c.Access == nil {
		return nil, nil
	}
	ctx := tr.r.Context()
	res, err := p.c.Access.Evaluate(ctx, access.Request{
		Flow: g.flow, User: g.user, Client: g.client, Device: dev, IP: tr.ri.IP,
		AuthTime: g.authTime, AMR: g.amr, TokenProtected: protection == ProtectionRegisteredDevice,
	})
	if err != nil {
		return nil, serverError(err) // fail closed
	}
	ref := " (reference " + tr.ri.CorrID + ")"
	var e *Error
	switch {
	case res.Outcome == policy.OutcomeBlock:
		e = accessErr(g.flow, "access is blocked by a Conditional Access policy"+ref).withReason("ca_block")
	case res.Outcome == policy.OutcomeAllowWithControls:
		e = accessErr(g.flow, "Conditional Access requires "+describeControls(res.Controls)+"; sign in again to satisfy it"+ref).withReason("ca_controls_unmet")
	case g.user != nil && g.flow != policy.FlowInteractive && res.Session.SignInFrequency > 0 && p.c.Now().Sub(g.authTime) > res.Session.SignInFrequency:
		e = accessErr(g.flow, "the sign-in is older than the Conditional Access sign-in frequency; sign in again"+ref).withReason("ca_sign_in_frequency")
	}
	if e != nil {
		e.Data = map[string]string{}
		res.EventData(e.Data)
		return nil, e
	}
	return res, nil
}

// accessErr is the token error for a Conditional Access refusal: the
// device grant's access_denied (RFC 8628 §3.5), unauthorized_client for a
// client's own grant, invalid_grant for a user's code or refresh token.
func accessErr(flow, desc string) *Error {
	switch flow {
	case policy.FlowDeviceCode:
		e := newErr(ErrAccessDenied, desc)
		e.Status = http.StatusBadRequest
		return e
	case policy.FlowClientCredentials:
		return newErr(ErrUnauthorizedClient, desc)
	}
	return newErr(ErrInvalidGrant, desc)
}

var controlText = map[string]string{
	policy.ControlMFA:              "multi-factor authentication",
	policy.ControlRegisteredDevice: "a registered device",
	policy.ControlCompliantDevice:  "a compliant device",
	policy.ControlTokenProtection:  "token protection (a session bound to a registered device's key)",
	policy.ControlPasswordChange:   "a password change",
}

func describeControls(cs []string) string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if t, ok := controlText[c]; ok {
			out = append(out, t)
		} else if s, ok := strings.CutPrefix(c, policy.ControlAuthStrengthPrefix); ok {
			out = append(out, "authentication strength "+s)
		} else {
			out = append(out, c)
		}
	}
	return strings.Join(out, ", ")
}

// signInAccess applies Conditional Access to an interactive sign-in before
// the code is issued. fresh reports that the user has just authenticated
// (password and, when enrolled, TOTP); otherwise an SSO session is being
// reused. It returns the decision when the sign-in may go on; otherwise it
// has answered: redirect with access_denied, the MFA step-up, the login
// form again, or a page naming what failed and how to fix it.
func (p *Provider) signInAccess(w http.ResponseWriter, r *http.Request, req *authRequest, c *model.Client, u *model.User, authTime time.Time, amr []string, fresh bool) (*access.Result, bool) {
	if p.c.Access == nil {
		if req.Claims.wantsMFA() && access.Strength(amr) == policy.StrengthPassword {
			// A resource's step-up challenge (claims acr) without policies.
			p.claimsStepUp(w, r, &interaction{Auth: req}, req.Claims, c, u)
			return nil, false
		}
		return nil, true
	}
	ctx := r.Context()
	ri := p.info(r)
	var dev *model.Device
	if req.DPoPJKT != "" && p.c.Devices != nil {
		if d, err := p.c.Devices.LookupByJKT(ctx, req.DPoPJKT); err == nil && deviceOf(d, u.ID) {
			dev = d
		}
	}
	res, err := p.c.Access.Evaluate(ctx, access.Request{
		Flow: policy.FlowInteractive, User: u, Client: c, Device: dev, IP: ri.IP, AuthTime: authTime, AMR: amr,
		TokenProtected: dev != nil && dev.Status == model.DeviceActive,
	})
	if err != nil {
		p.c.Log.ErrorContext(ctx, "conditional access", "correlation_id", ri.CorrID, "err", err)
		p.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Access policies could not be evaluated, so access is refused. Try again later.", ri.CorrID)
		return nil, false
	}
	prompt := !strings.Contains(req.Prompt, "none")
	denied := func(reason string) {
		ev := ri.event(model.EventSignInFailed)
		ev.Outcome, ev.Reason, ev.ClientID, ev.UserID, ev.Actor = model.OutcomeFailure, reason, c.ID, u.ID, u.ID
		ev.Data = map[string]string{"stage": "conditional_access"}
		if dev != nil {
			ev.DeviceID = dev.ID
		}
		res.EventData(ev.Data)
		_ = p.events.Emit(ctx, ev)
	}
	if res.Outcome == policy.OutcomeBlock {
		denied("ca_block")
		p.redirectWithError(w, r, &redirectError{Error: newErr(ErrAccessDenied, "access is blocked by a Conditional Access policy (reference "+ri.CorrID+")"), redirectURI: req.RedirectURI, state: req.State})
		return nil, false
	}
	freq := res.Session.SignInFrequency
	if !fresh && (res.Session.SignInEveryTime || (freq > 0 && p.c.Now().Sub(authTime) > freq)) {
		if !prompt {
			p.redirectWithError(w, r, &redirectError{Error: newErr(ErrLoginRequired, "Conditional Access requires a fresh sign-in"), redirectURI: req.RedirectURI, state: req.State})
			return nil, false
		}
		p.renderLogin(w, r, &interaction{Auth: req}, c, u.Username, "Sign in again to continue.", http.StatusOK)
		return nil, false
	}
	// A claims request for a multi-factor acr (a resource's step-up
	// challenge) is one more MFA requirement.
	if req.Claims.wantsMFA() && access.Strength(amr) == policy.StrengthPassword {
		res.Requirements = append(res.Requirements, policy.Requirement{Policy: "claims:acr", Operator: policy.OperatorAll, Controls: []string{policy.ControlMFA}})
		if !slices.Contains(res.Controls, policy.ControlMFA) {
			res.Controls = append(res.Controls, policy.ControlMFA)
		}
		res.Outcome = policy.OutcomeAllowWithControls
	}
	if res.Outcome != policy.OutcomeAllowWithControls {
		return res, true
	}
	// Step-up: when a requirement names MFA and the user has a second
	// factor, ask for it; the sign-in is then evaluated again.
	needMFA := false
	for _, rq := range res.Requirements {
		if slices.Contains(rq.Controls, policy.ControlMFA) || slices.Contains(rq.Controls, policy.ControlAuthStrengthPrefix+policy.StrengthPasswordTOTP) {
			needMFA = true
		}
	}
	rest := res.Requirements
	if needMFA && p.c.Identity.HasTOTP(u) {
		if !prompt {
			p.redirectWithError(w, r, &redirectError{Error: newErr("interaction_required", "Conditional Access requires multi-factor authentication"), redirectURI: req.RedirectURI, state: req.State})
			return nil, false
		}
		csrf := p.csrfToken(w, r)
		p.renderMFA(w, r, &mfaState{UserID: u.ID, In: &interaction{Auth: req}}, c, csrf, "This application requires a second factor.", http.StatusOK)
		return nil, false
	}
	// Self-remediation of user risk: when a password change is all that
	// is missing, the user changes it here, right after proving the old
	// one (a reused SSO session signs in again first).
	onlyPassword := len(rest) > 0
	for _, rq := range rest {
		if !satisfiableBy(rq, policy.ControlPasswordChange) {
			onlyPassword = false
		}
	}
	if onlyPassword && u.PasswordHash != "" && prompt {
		if !fresh {
			p.renderLogin(w, r, &interaction{Auth: req}, c, u.Username, "Sign in again to change your password.", http.StatusOK)
			return nil, false
		}
		p.renderPasswordChange(w, r, &pwChangeState{UserID: u.ID, In: &interaction{Auth: req}, AMR: amr}, c, p.csrfToken(w, r), "", http.StatusOK)
		return nil, false
	}
	// Without dpop_jkt the device is not known until the code exchange,
	// which evaluates again with the proof's key: device requirements are
	// decided there.
	if req.DPoPJKT == "" {
		deferred := true
		for _, rq := range rest {
			if !satisfiableBy(rq, deviceControls...) {
				deferred = false
			}
		}
		if deferred {
			return res, true
		}
	}
	denied("ca_controls_unmet")
	if !prompt {
		p.redirectWithError(w, r, &redirectError{Error: newErr("interaction_required", "Conditional Access requires "+describeControls(res.Controls)), redirectURI: req.RedirectURI, state: req.State})
		return nil, false
	}
	p.c.Pages.Denied(w, http.StatusForbidden, "Access requires more",
		"Your organisation's access policies for "+c.Name+" are not met. Fix what is listed below and try again.",
		problems(res.Controls, dev, p.c.Identity.HasTOTP(u)), ri.CorrID)
	return nil, false
}

// problems explains each unmet control and how to fix it; a non-compliant
// device's failing compliance rules are named one by one.
func problems(controls []string, dev *model.Device, hasTOTP bool) []web.Problem {
	var out []web.Problem
	for _, ctl := range controls {
		switch ctl {
		case policy.ControlMFA, policy.ControlAuthStrengthPrefix + policy.StrengthPasswordTOTP:
			if !hasTOTP {
				out = append(out, web.Problem{What: "Multi-factor authentication is required, and your account has no second factor.",
					Fix: "Ask your administrator to enrol an authenticator app (TOTP) for your account."})
			}
		case policy.ControlRegisteredDevice, policy.ControlTokenProtection:
			switch {
			case dev == nil:
				out = append(out, web.Problem{What: "This application accepts only sign-ins from a registered device whose key protects the session.",
					Fix: "Sign in through the Ward device agent on a registered device (ward device enroll, then ward device run)."})
			case dev.Status != model.DeviceActive:
				out = append(out, web.Problem{What: "This device is " + dev.Status + ".", Fix: "Contact your administrator."})
			}
		case policy.ControlCompliantDevice:
			switch {
			case dev == nil:
				out = append(out, web.Problem{What: "A compliant, registered device is required.",
					Fix: "Sign in through the Ward device agent on a registered device (ward device enroll, then ward device run)."})
			case dev.Status != model.DeviceActive:
				out = append(out, web.Problem{What: "This device is " + dev.Status + ".", Fix: "Contact your administrator."})
			case dev.Compliance != model.Compliant:
				out = append(out, complianceProblems(dev)...)
			}
		case policy.ControlPasswordChange:
			out = append(out, web.Problem{What: "Your account is at high risk: the password must be changed.",
				Fix: "Change your password (ask your administrator to reset it), then sign in again."})
		default:
			out = append(out, web.Problem{What: "Required: " + describeControls([]string{ctl}) + "."})
		}
	}
	return out
}

// complianceProblems lists a device's failing compliance rules.
func complianceProblems(dev *model.Device) []web.Problem {
	var fs []struct{ Rule, Detail, Fix string }
	if len(dev.ComplianceFailures) > 0 {
		_ = json.Unmarshal(dev.ComplianceFailures, &fs)
	}
	if len(fs) == 0 {
		return []web.Problem{{What: "This device is not compliant (" + dev.Compliance + ").",
			Fix: "Report the device's posture again (ward device posture) and check with your administrator."}}
	}
	out := make([]web.Problem, 0, len(fs))
	for _, f := range fs {
		out = append(out, web.Problem{What: "Compliance rule " + f.Rule + " failed: " + f.Detail, Fix: f.Fix})
	}
	return out
}

// pwChangeState is the sealed state of the password change page: the user
// who has just signed in, how, and the sign-in to continue.
type pwChangeState struct {
	UserID string       `json:"u"`
	In     *interaction `json:"i"`
	AMR    []string     `json:"m"`
}

func (p *Provider) renderPasswordChange(w http.ResponseWriter, r *http.Request, st *pwChangeState, c *model.Client, csrf, msg string, status int) {
	blob, err := p.seal("pwchange", 5*time.Minute, csrf, st)
	if err != nil {
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	p.c.Pages.Render(w, status, "password_change.html", web.PasswordChangeData{ClientName: c.Name, Error: msg, CSRF: csrf, State: blob, Action: PathLoginPassword}, st.In.formOrigin())
}

// handleLoginPassword takes the new password Conditional Access asked
// for. The change revokes the user's other sessions (as every password
// change does) and remediates the user risk; the sign-in then continues
// and is evaluated again.
func (p *Provider) handleLoginPassword(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	var st pwChangeState
	csrf, c, ok := p.resumeInteraction(w, r, "pwchange", "state", &st, func() string { return st.In.clientID() })
	if !ok {
		return
	}
	u, err := p.c.Store.GetUser(ctx, st.UserID)
	if err != nil || u.Disabled || st.In.Auth == nil {
		p.c.Pages.Error(w, http.StatusBadRequest, "Sign-in failed", "Sign-in failed. Go back to the application and start again.", ri.CorrID)
		return
	}
	pw := r.PostFormValue("new_password")
	if pw != r.PostFormValue("confirm_password") {
		p.renderPasswordChange(w, r, &st, c, csrf, "The two passwords differ.", http.StatusBadRequest)
		return
	}
	if ok, err := p.c.Identity.VerifyPassword(ctx, u, pw); err == nil && ok {
		p.renderPasswordChange(w, r, &st, c, csrf, "Choose a password different from the current one.", http.StatusBadRequest)
		return
	}
	if err := p.c.Identity.SetPassword(ctx, u.ID, u.ID, pw); err != nil {
		msg := "The password could not be changed. Try again."
		if errors.Is(err, identity.ErrWeakPassword) {
			msg = err.Error()
		} else {
			p.c.Log.ErrorContext(ctx, "change password", "correlation_id", ri.CorrID, "err", err)
		}
		p.renderPasswordChange(w, r, &st, c, csrf, msg, http.StatusBadRequest)
		return
	}
	if u.RiskLevel != "" {
		if err := p.c.Identity.SetRisk(ctx, u.ID, u.ID, identity.RiskNone, "remediated: password changed at sign-in"); err != nil {
			p.c.Log.ErrorContext(ctx, "remediate user risk", "correlation_id", ri.CorrID, "err", err)
		}
	}
	if u, err = p.c.Store.GetUser(ctx, u.ID); err != nil {
		p.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Something went wrong on our side.", ri.CorrID)
		return
	}
	acr := acrPassword
	if slices.Contains(st.AMR, "otp") {
		acr = acrMFA
	}
	p.completeSignIn(w, r, st.In, c, u, st.AMR, acr)
}

// claimsStepUp answers a claims acr request the signed-in user's session
// does not meet, when no policies are configured (an authorization
// request) or for a device approval: the MFA page, which continues in with
// a new multi-factor session, or a page saying the account has no second
// factor (or that the acr asked for is not one Ward offers). An
// authorization request with prompt=none goes back with
// interaction_required.
func (p *Provider) claimsStepUp(w http.ResponseWriter, r *http.Request, in *interaction, cr *claimsRequest, c *model.Client, u *model.User) {
	if in.Auth != nil && strings.Contains(in.Auth.Prompt, "none") {
		p.redirectWithError(w, r, &redirectError{Error: newErr("interaction_required", "the requested acr needs multi-factor authentication"), redirectURI: in.Auth.RedirectURI, state: in.Auth.State})
		return
	}
	if !cr.wantsMFA() {
		p.c.Pages.Denied(w, http.StatusForbidden, "Access requires more", "The application asked for a kind of sign-in this server does not offer.",
			[]web.Problem{{What: "Requested authentication context (acr): " + strings.Join(cr.ACR, ", ") + ".",
				Fix: "Ask the application's administrator which sign-in it needs."}}, correlationID(r))
		return
	}
	if !p.c.Identity.HasTOTP(u) {
		p.c.Pages.Denied(w, http.StatusForbidden, "Access requires more", "The application asked for a stronger sign-in.",
			problems([]string{policy.ControlMFA}, nil, false), correlationID(r))
		return
	}
	p.renderMFA(w, r, &mfaState{UserID: u.ID, In: in}, c, p.csrfToken(w, r), "This application requires a second factor.", http.StatusOK)
}
