package oauth

// The device authorization grant (RFC 8628). A device without a usable
// browser asks for a device code and a short user code at
// /device_authorization; the user types the user code at /device in any
// browser, signs in (or uses the SSO session) and approves or denies; the
// device meanwhile polls the token endpoint with the device code.
//
// The device code is a 256-bit secret stored only as a keyed hash. The
// user code has 8 characters from the RFC 8628 §6.1 base-20 alphabet
// (about 34.5 bits) and is short-lived; wrong guesses are throttled per
// client IP (§5.1). A DPoP proof on the device authorization request, or
// dpop_jkt, commits the grant to that key (the RFC 9449 §10.1 idea applied
// to this grant): redeeming it needs a proof signed by the same key.
//
// A claims request parameter (a resource's claims challenge the device
// passes on, e.g. an acr for multi-factor authentication) is stored with
// the request. The verification page then approves only with a sign-in
// that meets its acr: a weaker SSO session steps up (the second factor, as
// at the authorization endpoint) before the approval is offered, and a
// user who cannot step up is refused without answering the device (its
// polls stay authorization_pending until the code expires or someone who
// can meet the acr approves it).

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

const (
	// userCodeAlphabet is RFC 8628 §6.1's base-20 set: no vowels (no
	// words), no digits or letters that are easily confused.
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
	// deviceInterval is the minimum polling interval given to clients;
	// each slow_down adds deviceSlowDown to the stored interval (§3.5).
	deviceInterval = 5 * time.Second
	deviceSlowDown = 5 * time.Second
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
// request and the session that will approve it.
type deviceConfirmState struct {
	Hash   []byte `json:"h"`
	SID    string `json:"s"`
	UserID string `json:"u"`
}

// handleDeviceAuthorization is the device authorization endpoint (RFC 8628
// §3.1, §3.2). The client authenticates as at the token endpoint and must
// be allowed the device_code grant.
func (p *Provider) handleDeviceAuthorization(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	form, c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	resp, e := p.deviceAuthorization(r, form, c)
	if e != nil {
		p.tokenFailed(r, c.ID, e)
		writeTokenError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

type deviceAuthorizationResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

// deviceAuthorization validates a device authorization request and stores
// the new device code.
func (p *Provider) deviceAuthorization(r *http.Request, form url.Values, c *model.Client) (*deviceAuthorizationResponse, *Error) {
	if !c.AllowsGrant(model.GrantDeviceCode) {
		return nil, newErr(ErrUnauthorizedClient, "client may not use the device authorization grant")
	}
	scope, e := p.checkScope(c, form.Get("scope"))
	if e != nil {
		return nil, e
	}
	if len(form["claims"]) > 1 {
		return nil, newErr(ErrInvalidRequest, "parameter claims given more than once")
	}
	rawClaims := form.Get("claims")
	if _, e := parseClaims(rawClaims); e != nil {
		return nil, e
	}
	jkt := form.Get("dpop_jkt")
	if jkt != "" && !jktRE.MatchString(jkt) {
		return nil, newErr(ErrInvalidRequest, "dpop_jkt is malformed")
	}
	h, e := proofHeader(r)
	if e != nil {
		return nil, e
	}
	if h != "" {
		proof, e := p.checkProof(r, h, "")
		if e != nil {
			return nil, e
		}
		if jkt != "" && jkt != proof.JKT {
			return nil, newErr(ErrInvalidDPoPProof, "dpop_jkt does not match the DPoP proof key").withReason("dpop_jkt_mismatch")
		}
		jkt = proof.JKT
	}
	now := p.c.Now()
	ttl := p.c.Lifetimes.DeviceCode
	deviceCode := secret.RandomToken()
	dc := &model.DeviceCode{
		Hash: p.c.TokenHasher.Sum(deviceCode), ClientID: c.ID, Scope: scope, DPoPJKT: jkt, Claims: rawClaims,
		Status: model.DeviceCodePending, CreatedAt: now, ExpiresAt: now.Add(ttl), Interval: deviceInterval,
	}
	// User codes are unique among live requests; a collision (one in 20^8
	// per live request) just draws again.
	var err error
	for range 4 {
		dc.UserCode = newUserCode()
		if err = p.c.Store.CreateDeviceCode(r.Context(), dc); !errors.Is(err, store.ErrAlreadyExists) {
			break
		}
	}
	if err != nil {
		return nil, serverError(err)
	}
	shown := formatUserCode(dc.UserCode)
	return &deviceAuthorizationResponse{
		DeviceCode:              deviceCode,
		UserCode:                shown,
		VerificationURI:         p.url(PathDevice),
		VerificationURIComplete: p.url(PathDevice) + "?" + url.Values{"user_code": {shown}}.Encode(),
		ExpiresIn:               int(ttl / time.Second),
		Interval:                int(deviceInterval / time.Second),
	}, nil
}

// grantDeviceCode is the device access token request (RFC 8628 §3.4,
// §3.5). The request's state changes atomically in one store update: the
// poll time and interval while pending, the redemption once approved.
func (p *Provider) grantDeviceCode(tr *tokenRequest) (*tokenResponse, *Error) {
	ctx := tr.r.Context()
	c := tr.client
	if !c.AllowsGrant(model.GrantDeviceCode) {
		return nil, newErr(ErrUnauthorizedClient, "client may not use the device authorization grant")
	}
	raw := tr.get("device_code")
	if raw == "" {
		return nil, newErr(ErrInvalidRequest, "device_code is required")
	}
	now := p.c.Now()
	invalid := func(reason string) *Error {
		return newErr(ErrInvalidGrant, "device_code is invalid").withReason(reason)
	}
	// pollErr is the answer to a poll that is saved (pending, slow_down);
	// errors returned from fn leave the request untouched.
	var pollErr *Error
	dc, err := p.c.Store.UpdateDeviceCode(ctx, p.c.TokenHasher.Sum(raw), func(d *model.DeviceCode) error {
		pollErr = nil
		switch {
		case d.ClientID != c.ID:
			return invalid("device_code_client_mismatch")
		case !d.UsedAt.IsZero():
			return invalid("device_code_reused")
		case !now.Before(d.ExpiresAt):
			return newErr(ErrExpiredToken, "device_code has expired").withReason("device_code_expired")
		}
		switch d.Status {
		case model.DeviceCodePending:
			interval := d.Interval
			if interval <= 0 {
				interval = deviceInterval
			}
			if !d.LastPoll.IsZero() && now.Sub(d.LastPoll) < interval {
				d.Interval = interval + deviceSlowDown
				pollErr = newErr(ErrSlowDown, "polling too fast; wait at least the interval, now increased by 5 seconds").withReason("device_slow_down")
			} else {
				pollErr = newErr(ErrAuthorizationPending, "the user has not yet approved the request")
			}
			d.LastPoll = now
			return nil
		case model.DeviceCodeDenied:
			e := newErr(ErrAccessDenied, "the user denied the request").withReason("device_denied")
			e.Status = http.StatusBadRequest // a token error response (RFC 8628 §3.5)
			return e
		case model.DeviceCodeApproved:
			if d.DPoPJKT != "" && (tr.proof == nil || tr.proof.JKT != d.DPoPJKT) {
				// Not used up: whoever holds the right key may still redeem it.
				return newErr(ErrInvalidGrant, "DPoP key does not match the key of the device authorization request").withReason("dpop_jkt_mismatch")
			}
			d.UsedAt = now
			return nil
		default:
			return serverError(errors.New("device code in unknown state " + d.Status))
		}
	})
	var e *Error
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, invalid("device_code_unknown")
	case errors.As(err, &e):
		return nil, e
	case err != nil:
		return nil, serverError(err)
	case pollErr != nil:
		return nil, pollErr
	}
	sess, u, e := p.liveSession(ctx, dc.SessionID, dc.UserID)
	if e != nil {
		return nil, e
	}
	g := grant{flow: policy.FlowDeviceCode, client: c, user: u, sess: sess, scope: dc.Scope, authTime: dc.AuthTime, amr: dc.AMR, acr: dc.ACR}
	return p.issue(tr, g, model.EventTokenIssued, nil)
}

// handleDevicePage shows the form for the user code (the verification
// URI), prefilled from ?user_code= (verification_uri_complete).
func (p *Provider) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	code := normalizeUserCode(r.URL.Query().Get("user_code"))
	if !validUserCode(code) {
		code = ""
	}
	p.renderDevice(w, r, formatUserCode(code), "", http.StatusOK)
}

func (p *Provider) renderDevice(w http.ResponseWriter, r *http.Request, userCode, msg string, status int) {
	p.c.Pages.Render(w, status, "device.html", web.DeviceData{
		UserCode: userCode, Error: msg, CSRF: p.csrfToken(w, r), Action: PathDevice,
	})
}

// handleDeviceCode takes the typed user code. A wrong code shows the form
// again; a right one continues with the SSO session, or with sign-in.
func (p *Provider) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if _, ok := p.checkCSRF(r); !ok {
		p.c.Pages.Error(w, http.StatusForbidden, "Session expired", "This form expired or was not sent from this browser. Open the address shown on your device again.", ri.CorrID)
		return
	}
	typed := r.PostFormValue("user_code")
	if len(typed) > 64 {
		typed = typed[:64]
	}
	now := p.c.Now()
	// A token is taken before the lookup, so parallel guesses cannot all
	// pass the check, and given back when the code was right.
	if !p.userCodeLimit.Take(ri.IP, now) {
		p.renderDevice(w, r, typed, "Too many attempts. Wait a few minutes and try again.", http.StatusTooManyRequests)
		return
	}
	code := normalizeUserCode(typed)
	var dc *model.DeviceCode
	if validUserCode(code) {
		var err error
		dc, err = p.c.Store.GetDeviceCodeByUserCode(ctx, code)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			p.userCodeLimit.Refund(ri.IP, now)
			p.c.Log.ErrorContext(ctx, "get device code", "correlation_id", ri.CorrID, "err", err)
			p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", ri.CorrID)
			return
		}
	}
	if dc == nil || !deviceCodeOpen(dc, now) {
		p.renderDevice(w, r, typed, "That code is not valid or has expired. Check the code on your device.", http.StatusBadRequest)
		return
	}
	p.userCodeLimit.Refund(ri.IP, now)
	c, err := p.client(ctx, dc.ClientID)
	if err != nil {
		p.c.Pages.Error(w, http.StatusBadRequest, "Request rejected", "The application is no longer registered.", ri.CorrID)
		return
	}
	dr := &deviceRequest{Hash: dc.Hash, ClientID: dc.ClientID, DPoPJKT: dc.DPoPJKT}
	if sess, u := p.ssoSession(ctx, r); sess != nil {
		p.renderDeviceConfirm(w, r, dr, c, sess, u)
		return
	}
	p.renderLogin(w, r, &interaction{Device: dr}, c, "", "", http.StatusOK)
}

// ssoSession returns the browser's live SSO session and its user, or nils.
func (p *Provider) ssoSession(ctx context.Context, r *http.Request) (*model.Session, *model.User) {
	sid := p.sessionFromCookie(r)
	if sid == "" {
		return nil, nil
	}
	now := p.c.Now()
	sess, err := p.c.Store.GetSession(ctx, sid)
	if err != nil || !sess.Active(now) || !p.dbscSatisfied(r, sess) {
		return nil, nil
	}
	u, err := p.c.Store.GetUser(ctx, sess.UserID)
	if err != nil || u.Disabled {
		return nil, nil
	}
	_ = p.c.Store.TouchSession(ctx, sid, now)
	return sess, u
}

// deviceCodeOpen reports whether a request still waits for the user.
func deviceCodeOpen(dc *model.DeviceCode, now time.Time) bool {
	return dc.Status == model.DeviceCodePending && dc.UsedAt.IsZero() && now.Before(dc.ExpiresAt)
}

// renderDeviceConfirm asks the signed-in user to approve or deny the
// device's request, naming the client and the scopes (RFC 8628 §5.4).
func (p *Provider) renderDeviceConfirm(w http.ResponseWriter, r *http.Request, dr *deviceRequest, c *model.Client, sess *model.Session, u *model.User) {
	ctx := r.Context()
	corr := correlationID(r)
	dc, err := p.c.Store.GetDeviceCode(ctx, dr.Hash)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		p.c.Log.ErrorContext(ctx, "get device code", "correlation_id", corr, "err", err)
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", corr)
		return
	}
	if err != nil || dc.ClientID != c.ID || !deviceCodeOpen(dc, p.c.Now()) {
		p.deviceGone(w, r)
		return
	}
	// The device's claims challenge: a session below the acr it asks for
	// steps up first (or is refused); the request stays pending.
	cr, e := parseClaims(dc.Claims)
	if e != nil {
		p.c.Log.ErrorContext(ctx, "stored device claims", "correlation_id", corr, "err", e.Description)
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", corr)
		return
	}
	if !cr.acrMet(sess.ACR) {
		p.c.Log.InfoContext(ctx, "device approval needs a stronger sign-in", "correlation_id", corr,
			"user_id", u.ID, "client_id", c.ID, "session_acr", sess.ACR, "requested_acr", strings.Join(cr.ACR, " "))
		p.claimsStepUp(w, r, &interaction{Device: dr}, cr, c, u)
		return
	}
	csrf := p.csrfToken(w, r)
	blob, err := p.seal("devconfirm", interactionTTL, csrf, deviceConfirmState{Hash: dc.Hash, SID: sess.ID, UserID: u.ID})
	if err != nil {
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", corr)
		return
	}
	p.c.Pages.Render(w, http.StatusOK, "device_confirm.html", web.DeviceConfirmData{
		ClientName: c.Name, UserCode: formatUserCode(dc.UserCode), Scopes: strings.Fields(dc.Scope),
		Username: u.Username, CSRF: csrf, State: blob, Action: PathDeviceConfirm,
	})
}

func (p *Provider) deviceGone(w http.ResponseWriter, r *http.Request) {
	p.c.Pages.Error(w, http.StatusBadRequest, "Code expired", "This code has expired or was already used. Start again on your device.", correlationID(r))
}

// errDeviceClosed: the request was answered, redeemed or expired meanwhile.
var errDeviceClosed = errors.New("device authorization no longer pending")

// errDeviceACR: the approving session does not meet the request's acr.
var errDeviceACR = errors.New("session does not meet the requested acr")

// handleDeviceConfirm records the user's decision.
func (p *Provider) handleDeviceConfirm(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	csrf, ok := p.checkCSRF(r)
	if !ok {
		p.c.Pages.Error(w, http.StatusForbidden, "Session expired", "This form expired or was not sent from this browser. Open the address shown on your device again.", ri.CorrID)
		return
	}
	var st deviceConfirmState
	if err := p.unseal("devconfirm", r.PostFormValue("state"), csrf, &st); err != nil || len(st.Hash) == 0 {
		p.c.Pages.Error(w, http.StatusBadRequest, "Request expired", "This page took too long or was altered. Open the address shown on your device again.", ri.CorrID)
		return
	}
	var status string
	switch r.PostFormValue("decision") {
	case "approve":
		status = model.DeviceCodeApproved
	case "deny":
		status = model.DeviceCodeDenied
	default:
		p.c.Pages.Error(w, http.StatusBadRequest, "Invalid request", "Choose Approve or Deny.", ri.CorrID)
		return
	}
	// The approving session must still be this browser's and alive.
	if !hmac.Equal([]byte(p.sessionFromCookie(r)), []byte(st.SID)) {
		p.c.Pages.Error(w, http.StatusBadRequest, "Signed out", "You signed out in the meantime. Open the address shown on your device again.", ri.CorrID)
		return
	}
	sess, u, e := p.liveSession(ctx, st.SID, st.UserID)
	if e == nil && sess.UserID != st.UserID {
		e = newErr(ErrInvalidGrant, "session changed")
	}
	if e == nil && !p.dbscSatisfied(r, sess) {
		e = newErr(ErrInvalidGrant, "bound session credential missing")
	}
	if e != nil {
		if e.Code == ErrServerError {
			p.c.Log.ErrorContext(ctx, "device confirm", "correlation_id", ri.CorrID, "err", e.Cause)
		}
		p.c.Pages.Error(w, http.StatusBadRequest, "Signed out", "Your sign-in has ended. Open the address shown on your device again.", ri.CorrID)
		return
	}
	now := p.c.Now()
	dc, err := p.c.Store.UpdateDeviceCode(ctx, st.Hash, func(d *model.DeviceCode) error {
		if !deviceCodeOpen(d, now) {
			return errDeviceClosed
		}
		if status == model.DeviceCodeApproved {
			// renderDeviceConfirm stepped up already; checked again here,
			// where the approval takes effect.
			if cr, e := parseClaims(d.Claims); e != nil || !cr.acrMet(sess.ACR) {
				return errDeviceACR
			}
		}
		d.Status = status
		if status == model.DeviceCodeApproved {
			d.UserID, d.SessionID, d.AuthTime, d.AMR, d.ACR = u.ID, sess.ID, sess.AuthTime, sess.AMR, sess.ACR
		}
		return nil
	})
	if errors.Is(err, errDeviceClosed) || errors.Is(err, store.ErrNotFound) {
		p.deviceGone(w, r)
		return
	} else if errors.Is(err, errDeviceACR) {
		p.c.Pages.Error(w, http.StatusForbidden, "Stronger sign-in required", "The device asked for a stronger sign-in than yours. Open the address shown on your device again.", ri.CorrID)
		return
	} else if err != nil {
		p.c.Log.ErrorContext(ctx, "update device code", "correlation_id", ri.CorrID, "err", err)
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", ri.CorrID)
		return
	}
	c, err := p.client(ctx, dc.ClientID)
	if err != nil {
		c = &model.Client{ID: dc.ClientID, Name: dc.ClientID}
	}
	ev := ri.event(model.EventDeviceCodeApproved)
	if status == model.DeviceCodeDenied {
		ev = ri.event(model.EventDeviceCodeDenied)
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
	if err := p.events.Emit(ctx, ev); err != nil && status == model.DeviceCodeApproved {
		// An approval that cannot be recorded must not take effect.
		_, _ = p.c.Store.UpdateDeviceCode(ctx, st.Hash, func(d *model.DeviceCode) error {
			if d.Status != model.DeviceCodeApproved || !d.UsedAt.IsZero() {
				return errDeviceClosed
			}
			d.Status = model.DeviceCodeDenied
			return nil
		})
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong on our side.", ri.CorrID)
		return
	}
	p.c.Pages.Render(w, http.StatusOK, "device_done.html", web.DeviceDoneData{ClientName: c.Name, Approved: status == model.DeviceCodeApproved})
}

// newUserCode draws a user code uniformly from the base-20 alphabet
// (rejection sampling: bytes >= 240 are discarded).
func newUserCode() string {
	out := make([]byte, 0, userCodeLen)
	var buf [16]byte
	for len(out) < userCodeLen {
		if _, err := rand.Read(buf[:]); err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		for _, b := range buf {
			if b < 240 && len(out) < userCodeLen {
				out = append(out, userCodeAlphabet[int(b)%len(userCodeAlphabet)])
			}
		}
	}
	return string(out)
}

// normalizeUserCode turns what a person typed into the stored form: upper
// case, without dashes or spaces (RFC 8628 §6.1).
func normalizeUserCode(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToUpper(r)
	}, s)
}

// validUserCode reports whether a normalised code can be a user code.
func validUserCode(s string) bool {
	if len(s) != userCodeLen {
		return false
	}
	for i := range len(s) {
		if !strings.ContainsRune(userCodeAlphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// formatUserCode shows a normalised code as XXXX-XXXX.
func formatUserCode(s string) string {
	if len(s) != userCodeLen {
		return s
	}
	return s[:4] + "-" + s[4:]
}
