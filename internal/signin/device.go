package signin

// The verification side of the device authorization grant (RFC 8628):
// the user types the user code a device shows, signs in (or uses the SSO
// session) and approves or denies; the device meanwhile polls the token
// endpoint (package grant) with its device code.
//
// Conditional Access is evaluated for the approval (deviceAccess) with
// what is known then, where the sign-in pages would: it remediates as they
// do (second factor, password change, a fresh sign-in), and when the
// policies would refuse the token it says what failed and denies the
// device's request with the reason, instead of confirming a connection
// the token endpoint would then refuse. The token endpoint evaluates again
// at redemption, from the device's own address.
//
// Wrong user codes are throttled per client IP (§5.1). A claims request
// parameter the device sent (a resource's claims challenge, e.g. an acr
// for multi-factor authentication) is met before the approval is
// offered: a weaker SSO session steps up (the second factor, as at the
// authorization endpoint), and a user who cannot step up is refused
// without answering the device (its polls stay authorization_pending
// until the code expires or someone who can meet the acr approves it).

import (
	"context"
	"crypto/hmac"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

const (
	// Wrong user codes allowed per client IP: a burst of userCodeBurst,
	// then one more per userCodeRefill.
	userCodeBurst  = 10
	userCodeRefill = time.Minute
)

// deviceRequest is the sealed part of a sign-in that continues with a
// device approval.
type deviceRequest struct {
	Hash     []byte `json:"h"` // keyed hash of the device code: names the request
	ClientID string `json:"cid"`
	DPoPJKT  string `json:"jkt,omitempty"`
}

// deviceConfirmState is the sealed state of the approve/deny form: the
// request and the session that will approve it, and whether the user
// signed in for this approval (fresh, for Conditional Access).
type deviceConfirmState struct {
	Hash   []byte `json:"h"`
	SID    string `json:"s"`
	UserID string `json:"u"`
	Fresh  bool   `json:"f,omitempty"`
}

// handleDevicePage shows the form for the user code (the verification
// URI), prefilled from ?user_code= (verification_uri_complete).
func (h *Handler) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	code := authz.NormalizeUserCode(r.URL.Query().Get("user_code"))
	if !authz.ValidUserCode(code) {
		code = ""
	}
	h.renderDevice(w, r, authz.FormatUserCode(code), "", http.StatusOK)
}

func (h *Handler) renderDevice(w http.ResponseWriter, r *http.Request, userCode, msg string, status int) {
	h.c.Pages.Render(w, status, "device.html", web.DeviceData{
		UserCode: userCode, Error: msg, CSRF: h.browser.CSRFToken(w, r), Action: PathDevice,
	})
}

// handleDeviceCode takes the typed user code. A wrong code shows the form
// again; a right one continues with the SSO session, or with sign-in.
func (h *Handler) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if _, ok := h.browser.CheckCSRF(r); !ok {
		h.c.Pages.Error(w, http.StatusForbidden, "Session expired", "This form expired or was not sent from this browser. Open the address shown on your device again.", ri.CorrID)
		return
	}
	typed := r.PostFormValue("user_code")
	if len(typed) > 64 {
		typed = typed[:64]
	}
	dc, ok := h.lookupUserCode(w, r, ri, typed)
	if !ok {
		return
	}
	c, err := h.c.Protocol.Client(ctx, dc.ClientID)
	if err != nil {
		h.c.Pages.Error(w, http.StatusBadRequest, "Request rejected", "The application is no longer registered.", ri.CorrID)
		return
	}
	dr := &deviceRequest{Hash: dc.Hash, ClientID: dc.ClientID, DPoPJKT: dc.DPoPJKT}
	if sess, u := h.signedIn(r); sess != nil {
		if _, ok := h.deviceAccess(w, r, dr, c, u, sess, sess.AuthTime, sess.AMR, false); !ok {
			return
		}
		_ = h.c.Store.TouchSession(ctx, sess.ID, h.c.Now())
		h.renderDeviceConfirm(w, r, dr, c, sess, u, false, "")
		return
	}
	h.renderLogin(w, r, &interaction{Device: dr}, c, "", "", http.StatusOK)
}

// lookupUserCode finds the open request of a typed user code. A token of
// the network's budget is taken before the lookup, so parallel guesses
// cannot all pass the check, and given back when the code was right. On
// failure it has answered.
func (h *Handler) lookupUserCode(w http.ResponseWriter, r *http.Request, ri origin.Info, typed string) (*model.DeviceCode, bool) {
	now := h.c.Now()
	if !h.userCodeLimit.Take(ri.IP, now) {
		h.renderDevice(w, r, typed, "Too many attempts. Wait a few minutes and try again.", http.StatusTooManyRequests)
		return nil, false
	}
	code := authz.NormalizeUserCode(typed)
	var dc *model.DeviceCode
	if authz.ValidUserCode(code) {
		var err error
		dc, err = h.c.Store.GetDeviceCodeByUserCode(r.Context(), code)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			h.userCodeLimit.Refund(ri.IP, now)
			h.c.Log.ErrorContext(r.Context(), "get device code", "correlation_id", ri.CorrID, "err", err)
			h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", ri.CorrID)
			return nil, false
		}
	}
	if dc == nil || !deviceCodeOpen(dc, now) {
		h.renderDevice(w, r, typed, "That code is not valid or has expired. Check the code on your device.", http.StatusBadRequest)
		return nil, false
	}
	h.userCodeLimit.Refund(ri.IP, now)
	return dc, true
}

// deviceCodeOpen reports whether a request still waits for the user.
func deviceCodeOpen(dc *model.DeviceCode, now time.Time) bool {
	return dc.Status == model.DeviceCodePending && dc.UsedAt.IsZero() && now.Before(dc.ExpiresAt)
}

// renderDeviceConfirm asks the signed-in user to approve or deny the
// device's request, naming the client and the scopes (RFC 8628 §5.4).
// Conditional Access allowed the approval already (fresh: right after a
// sign-in). notice, when set, is shown above the decision.
func (h *Handler) renderDeviceConfirm(w http.ResponseWriter, r *http.Request, dr *deviceRequest, c *model.Client, sess *model.Session, u *model.User, fresh bool, notice string) {
	ctx := r.Context()
	corr := correlationID(r)
	dc, err := h.c.Store.GetDeviceCode(ctx, dr.Hash)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		h.c.Log.ErrorContext(ctx, "get device code", "correlation_id", corr, "err", err)
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", corr)
		return
	}
	if err != nil || dc.ClientID != c.ID || !deviceCodeOpen(dc, h.c.Now()) {
		h.deviceGone(w, r)
		return
	}
	// The device's claims challenge: a session below the acr it asks for
	// steps up first (or is refused); the request stays pending.
	cr, e := authz.ParseClaims(dc.Claims)
	if e != nil {
		h.c.Log.ErrorContext(ctx, "stored device claims", "correlation_id", corr, "err", e.Description)
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", corr)
		return
	}
	if !cr.ACRMet(sess.ACR) {
		h.c.Log.InfoContext(ctx, "device approval needs a stronger sign-in", "correlation_id", corr,
			"user_id", u.ID, "client_id", c.ID, "session_acr", sess.ACR, "requested_acr", strings.Join(cr.ACR, " "))
		h.claimsStepUp(w, r, &interaction{Device: dr}, cr, c, u)
		return
	}
	csrf := h.browser.CSRFToken(w, r)
	blob, err := h.browser.Seal("devconfirm", interactionTTL, csrf, deviceConfirmState{Hash: dc.Hash, SID: sess.ID, UserID: u.ID, Fresh: fresh})
	if err != nil {
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", corr)
		return
	}
	h.c.Pages.Render(w, http.StatusOK, "device_confirm.html", web.DeviceConfirmData{
		ClientName: c.Name, UserCode: authz.FormatUserCode(dc.UserCode), Scopes: strings.Fields(dc.Scope),
		Username: u.Username, CSRF: csrf, State: blob, Action: PathDeviceConfirm, Notice: notice,
	})
}

func (h *Handler) deviceGone(w http.ResponseWriter, r *http.Request) {
	h.c.Pages.Error(w, http.StatusBadRequest, "Code expired", "This code has expired or was already used. Start again on your device.", correlationID(r))
}

// errDeviceClosed: the request was answered, redeemed or expired meanwhile.
var errDeviceClosed = errors.New("device authorization no longer pending")

// errDeviceACR: the approving session does not meet the request's acr.
var errDeviceACR = errors.New("session does not meet the requested acr")

// handleDeviceConfirm records the user's decision.
func (h *Handler) handleDeviceConfirm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	csrf, ok := h.browser.CheckCSRF(r)
	if !ok {
		h.c.Pages.Error(w, http.StatusForbidden, "Session expired", "This form expired or was not sent from this browser. Open the address shown on your device again.", ri.CorrID)
		return
	}
	var st deviceConfirmState
	if err := h.browser.Unseal("devconfirm", r.PostFormValue("state"), csrf, &st); err != nil || len(st.Hash) == 0 {
		h.c.Pages.Error(w, http.StatusBadRequest, "Request expired", "This page took too long or was altered. Open the address shown on your device again.", ri.CorrID)
		return
	}
	var status string
	switch r.PostFormValue("decision") {
	case "approve":
		status = model.DeviceCodeApproved
	case "deny":
		status = model.DeviceCodeDenied
	default:
		h.c.Pages.Error(w, http.StatusBadRequest, "Invalid request", "Choose Approve or Deny.", ri.CorrID)
		return
	}
	sess, u, ok := h.approvingSession(w, r, ri, &st)
	if !ok {
		return
	}
	if status == model.DeviceCodeApproved && !h.approvalAllowed(w, r, &st, sess, u) {
		return
	}
	dc, err := h.answerDevice(ctx, ri, st.Hash, status, sess, u)
	if errors.Is(err, errDeviceClosed) || errors.Is(err, store.ErrNotFound) {
		h.deviceGone(w, r)
		return
	} else if errors.Is(err, errDeviceACR) {
		h.c.Pages.Error(w, http.StatusForbidden, "Stronger sign-in required", "The device asked for a stronger sign-in than yours. Open the address shown on your device again.", ri.CorrID)
		return
	} else if err != nil {
		// Nothing changed: the decision commits with its record or not
		// at all.
		h.c.Log.ErrorContext(ctx, "update device code", "correlation_id", ri.CorrID, "err", err)
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", ri.CorrID)
		return
	}
	c, err := h.c.Protocol.Client(ctx, dc.ClientID)
	if err != nil {
		c = &model.Client{ID: dc.ClientID, Name: dc.ClientID}
	}
	h.c.Pages.Render(w, http.StatusOK, "device_done.html", web.DeviceDoneData{ClientName: c.Name, Approved: status == model.DeviceCodeApproved})
}

// approvingSession checks that the session of a confirmation is still
// this browser's and alive. On failure it has answered.
func (h *Handler) approvingSession(w http.ResponseWriter, r *http.Request, ri origin.Info, st *deviceConfirmState) (*model.Session, *model.User, bool) {
	if !hmac.Equal([]byte(h.browser.Session(r)), []byte(st.SID)) {
		h.c.Pages.Error(w, http.StatusBadRequest, "Signed out", "You signed out in the meantime. Open the address shown on your device again.", ri.CorrID)
		return nil, nil, false
	}
	sess, u, err := h.liveSession(r.Context(), st.SID, st.UserID)
	if err == nil && !h.dbscSatisfied(r, sess) {
		err = errSignedOut // the bound session credential is missing
	}
	if err != nil {
		if !errors.Is(err, errSignedOut) {
			h.c.Log.ErrorContext(r.Context(), "device confirm", "correlation_id", ri.CorrID, "err", err)
		}
		h.c.Pages.Error(w, http.StatusBadRequest, "Signed out", "Your sign-in has ended. Open the address shown on your device again.", ri.CorrID)
		return nil, nil, false
	}
	return sess, u, true
}

var errSignedOut = errors.New("the sign-in session has ended")

// approvalAllowed evaluates Conditional Access again where the approval
// takes effect (policies, the device or the user may have changed since
// the page was shown). On refusal it has answered (deviceAccess).
func (h *Handler) approvalAllowed(w http.ResponseWriter, r *http.Request, st *deviceConfirmState, sess *model.Session, u *model.User) bool {
	ctx := r.Context()
	dc, err := h.c.Store.GetDeviceCode(ctx, st.Hash)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !deviceCodeOpen(dc, h.c.Now())) {
		h.deviceGone(w, r)
		return false
	}
	var c *model.Client
	if err == nil {
		c, err = h.c.Protocol.Client(ctx, dc.ClientID)
	}
	if err != nil {
		h.c.Log.ErrorContext(ctx, "device confirm", "correlation_id", correlationID(r), "err", err)
		h.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", correlationID(r))
		return false
	}
	dr := &deviceRequest{Hash: dc.Hash, ClientID: dc.ClientID, DPoPJKT: dc.DPoPJKT}
	_, ok := h.deviceAccess(w, r, dr, c, u, sess, sess.AuthTime, sess.AMR, st.Fresh)
	return ok
}

// liveSession loads session sid of user uid: errSignedOut when it ended,
// belongs to someone else or its user is gone or disabled.
func (h *Handler) liveSession(ctx context.Context, sid, uid string) (*model.Session, *model.User, error) {
	sess, err := h.c.Store.GetSession(ctx, sid)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!sess.Active(h.c.Now()) || sess.UserID != uid)) {
		return nil, nil, errSignedOut
	} else if err != nil {
		return nil, nil, err
	}
	u, err := h.c.Store.GetUser(ctx, uid)
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.Disabled) {
		return nil, nil, errSignedOut
	} else if err != nil {
		return nil, nil, err
	}
	return sess, u, nil
}

// answerDevice records the user's decision on the request, if it is still
// open, in one transaction with its event (device_code.approved or
// .denied), which it then publishes; an approval must (still) meet the
// acr the device asked for. The row is locked while the decision is
// checked and written: of two answers racing (approve twice, approve
// and deny), the second finds the request closed (errDeviceClosed) and
// records nothing.
func (h *Handler) answerDevice(ctx context.Context, ri origin.Info, hash []byte, status string, sess *model.Session, u *model.User) (*model.DeviceCode, error) {
	now := h.c.Now()
	var seen *model.DeviceCode // the request as the committing run changed it
	var ev *model.Event
	ectx := h.events.PendingEvents(ctx, func([]string) []*model.Event {
		ev = deviceAnswerEvent(ri, seen, status, sess, u)
		return []*model.Event{ev}
	})
	dc, err := h.c.Store.UpdateDeviceCode(ectx, hash, func(d *model.DeviceCode) error {
		if !deviceCodeOpen(d, now) {
			return errDeviceClosed
		}
		seen = d
		if status != model.DeviceCodeApproved {
			d.Status = status
			return nil
		}
		// renderDeviceConfirm stepped up already; checked again here,
		// where the approval takes effect.
		if cr, e := authz.ParseClaims(d.Claims); e != nil || !cr.ACRMet(sess.ACR) {
			return errDeviceACR
		}
		d.Status = status
		d.UserID, d.SessionID, d.AuthTime, d.AMR, d.ACR = u.ID, sess.ID, sess.AuthTime, sess.AMR, sess.ACR
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ev != nil {
		// Stored with the decision; failures are logged (Logging).
		_ = h.events.Emit(ectx, ev)
	}
	return dc, nil
}

// deviceAnswerEvent records an approval or denial.
func deviceAnswerEvent(ri origin.Info, dc *model.DeviceCode, status string, sess *model.Session, u *model.User) *model.Event {
	ev := ri.Event(model.EventDeviceCodeApproved)
	if status == model.DeviceCodeDenied {
		ev = ri.Event(model.EventDeviceCodeDenied)
		ev.Outcome, ev.Reason = model.OutcomeFailure, "user_denied"
	}
	ev.Actor, ev.UserID, ev.SessionID, ev.ClientID = u.ID, u.ID, sess.ID, dc.ClientID
	ev.Data = map[string]string{"scope": dc.Scope}
	if status == model.DeviceCodeApproved {
		ev.Data["acr"] = dc.ACR
	}
	if dc.DPoPJKT != "" {
		ev.Binding = model.BindingDPoP
		ev.Data["jkt"] = dc.DPoPJKT
	} else {
		ev.Binding, ev.BindingReason = model.BindingUnbound, "no_dpop_jkt"
	}
	return ev
}
