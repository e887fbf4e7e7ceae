package signin

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/policy"
)

// attempt is one sign-in being decided: credentials just checked, or an
// SSO session reused (sso: that session). Conditional Access sees this
// request's address, device and risk either way, never the session's
// original ones.
type attempt struct {
	ri       origin.Info
	in       *interaction
	c        *model.Client
	u        *model.User
	sso      *model.Session // nil: a fresh sign-in
	dev      *model.Device  // the user's registered device holding the client's DPoP key
	authTime time.Time
	amr      []string
	risk     string // the sign-in risk (RiskAssessor), none by default
}

// newAttempt gathers what a sign-in is decided on, its risk included. sess
// is the SSO session when the sign-in reuses one (fresh false), or nil.
// The error is the risk assessor's: the sign-in is refused.
func (h *Handler) newAttempt(ctx context.Context, r *http.Request, in *interaction, c *model.Client, u *model.User, sess *model.Session, authTime time.Time, amr []string, fresh bool) (*attempt, error) {
	at := &attempt{ri: h.info(r), in: in, c: c, u: u, authTime: authTime, amr: amr, risk: policy.RiskNone}
	if !fresh && sess != nil {
		at.sso = sess
	}
	at.dev = h.userDevice(ctx, in.dpopJKT(), u)
	if h.c.Risk == nil {
		return at, nil
	}
	a := at.activity(h.c.Now())
	level, err := h.c.Risk.AssessSignIn(ctx, a)
	if err != nil {
		return at, err
	}
	if level != "" {
		at.risk = level
	}
	return at, nil
}

// activity is the attempt as the activity record has it. Its id names
// this attempt (the event's own id is known only once it is recorded):
// detections of the sign-in cite it, and two attempts never share one.
func (at *attempt) activity(now time.Time) activity.Activity {
	a := activity.Activity{
		Time: now, ID: "signin-attempt:" + rand.Text(), Kind: activity.KindSignIn, UserID: at.u.ID, ClientID: at.c.ID,
		JKT: at.in.dpopJKT(), MFA: access.Strength(at.amr) == policy.StrengthPasswordTOTP || access.Strength(at.amr) == policy.StrengthPhishingResistant,
		IP: at.ri.IP, UserAgent: at.ri.UserAgent, Proof: activity.ProofNone,
	}
	if at.dev != nil {
		a.DeviceID = at.dev.ID
	}
	if s := at.sso; s != nil {
		a.Kind, a.SessionID = activity.KindSSOSignIn, s.ID
		if s.DBSCKeyJKT != "" {
			// The SSO cookie of a DBSC session works only with the bound
			// cookie its browser key refreshes: proof of that key.
			a.BoundJKT, a.Proof = s.DBSCKeyJKT, activity.ProofOK
		}
	}
	return a
}

// stepReason is the reason an SSO sign-in records for each step.
var stepReason = map[step]string{
	stepBlock:          "ca_block",
	stepSignInAgain:    "ca_sign_in_again",
	stepMFA:            "ca_mfa_required",
	stepPasskey:        "ca_phishing_resistant_required",
	stepPasswordSignIn: "ca_password_change_required",
	stepPassword:       "ca_password_change_required",
	stepUnmet:          "ca_controls_unmet",
}

// ssoRecord records an SSO sign-in (signin.sso), for a fresh sign-in
// nothing (signin.succeeded records it once the session exists): its
// user, session, client, device, keys, this request's address and user
// agent, its risk and Conditional Access's decision. reason "" is a
// sign-in that goes on to its code or device approval; any other is one
// that did not (blocked, or sent to a step-up or a fresh sign-in).
func (h *Handler) ssoRecord(ctx context.Context, at *attempt, res *access.Result, reason string) {
	if at.sso == nil {
		return
	}
	sess, a := at.sso, at.activity(h.c.Now())
	ev := at.ri.Event(model.EventSSOSignIn)
	ev.Actor, ev.UserID, ev.SessionID, ev.ClientID, ev.DeviceID = at.u.ID, at.u.ID, sess.ID, at.c.ID, a.DeviceID
	ev.Data = map[string]string{
		activity.DataAMR: strings.Join(sess.AMR, " "), "acr": sess.ACR, activity.DataProof: string(a.Proof),
		"sign_in_risk": at.risk, "session_binding": model.SessionBindingCookie,
	}
	if a.BoundJKT != "" {
		ev.Data[activity.DataBoundJKT], ev.Data["session_binding"] = a.BoundJKT, model.SessionBindingDBSC
	}
	if a.JKT != "" {
		ev.Binding, ev.Data[activity.DataJKT] = model.BindingDPoP, a.JKT
	} else {
		ev.Binding, ev.BindingReason = model.BindingUnbound, "no_dpop_jkt"
	}
	if at.in.Device != nil {
		ev.Data["flow"] = "device"
	}
	if reason != "" {
		ev.Outcome, ev.Reason = model.OutcomeFailure, reason
	}
	res.EventData(ev.Data)
	_ = h.events.Emit(ctx, ev)
}
