package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/grant"
	"github.com/ward-idp/ward/internal/store"
)

// handleToken is the token endpoint: it authenticates the client, parses
// the request into a grant.Request (DPoP proof verified, claims parsed)
// and hands it to the grant of its grant_type; package grant decides.
func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	if ns := p.c.DPoP.Nonces; ns != nil {
		w.Header().Set("DPoP-Nonce", ns.Nonce())
	}
	form, c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	var jti *store.DeferredJTI
	if form.Get("grant_type") == model.GrantClientCredentials {
		// Nothing is written before the token's event: the proof's jti
		// is recorded with it, in one write (store.DeferredJTI).
		var ctx context.Context
		ctx, jti = store.WithDeferredJTI(r.Context())
		r = r.WithContext(ctx)
	}
	req, e := p.tokenRequest(r, form, c)
	var resp *grant.Response
	if e == nil {
		resp, e = p.grant(r.Context(), req)
	} else if a, ok := p.grants[req.GrantType].(grant.Attributor); ok && recorded(e) {
		// Refused at the door (a bad proof): name the credential anyway.
		a.Attribute(r.Context(), req, e)
	}
	if je := p.recordDeferredJTI(r.Context(), jti); je != nil && (e == nil || je.Code == ErrInvalidDPoPProof) {
		resp, e = nil, je
	}
	if e != nil {
		p.grantFailed(r, req, e)
		writeTokenError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// recordDeferredJTI records the proof's jti that the grant did not
// record with its event (a refusal, an error): a proof is used once
// whatever the answer. A replay is refused as one.
func (p *Provider) recordDeferredJTI(ctx context.Context, d *store.DeferredJTI) *Error {
	key, exp, ok := d.Take()
	if !ok {
		return nil
	}
	err := p.c.Store.RecordJTI(ctx, key, exp)
	switch {
	case errors.Is(err, store.ErrReplay):
		return grant.ProofReplayed()
	case err != nil:
		return serverError(err) // fail closed
	}
	return nil
}

// tokenRequest parses a token request of client c: its DPoP proof
// (required when the client registered DPoP-bound tokens) and claims
// parameter.
func (p *Provider) tokenRequest(r *http.Request, form url.Values, c *model.Client) (*grant.Request, *Error) {
	req := &grant.Request{GrantType: form.Get("grant_type"), Client: c, Form: form, Origin: p.info(r)}
	h, e := proofHeader(r)
	if e == nil && len(form["claims"]) > 1 {
		e = newErr(ErrInvalidRequest, "parameter claims given more than once")
	}
	if e == nil {
		req.Claims, e = authz.ParseClaims(form.Get("claims"))
	}
	switch {
	case e != nil:
	case h != "":
		req.Proof, e = p.checkProof(r, h, "")
	case c.DPoPBoundAccessTokens:
		e = newErr(ErrInvalidDPoPProof, "this client must send a DPoP proof").WithReason("dpop_required")
	}
	return req, e
}

// grant answers a parsed token request with the grant of its grant_type.
func (p *Provider) grant(ctx context.Context, req *grant.Request) (*grant.Response, *Error) {
	h := p.grants[req.GrantType]
	switch {
	case req.GrantType == "":
		return nil, newErr(ErrInvalidRequest, "grant_type is required")
	case h == nil:
		return nil, newErr(ErrUnsupportedGrantType, "unsupported grant_type")
	}
	return h.Grant(ctx, req)
}

// proofHeader returns the request's single DPoP header ("" when absent).
func proofHeader(r *http.Request) (string, *Error) {
	h, err := dpop.FromRequest(r)
	if errors.Is(err, dpop.ErrNoProof) {
		return "", nil
	}
	if err != nil {
		return "", newErr(ErrInvalidDPoPProof, "exactly one DPoP header is allowed").WithReason("dpop_multiple_headers")
	}
	return h, nil
}

// checkProof verifies a DPoP proof for this request's endpoint and maps
// failures to protocol errors, attaching a fresh nonce where one is due.
func (p *Provider) checkProof(r *http.Request, proofJWT, accessToken string) (*dpop.Proof, *Error) {
	proof, err := p.c.DPoP.Verify(r.Context(), proofJWT, dpop.Check{
		Method: r.Method, URL: p.url(r.URL.Path), AccessToken: accessToken,
		RequireNonce: p.c.RequireDPoPNonce && p.c.DPoP.Nonces != nil,
	})
	if err == nil {
		return proof, nil
	}
	var de *dpop.Error
	if !errors.As(err, &de) {
		return nil, serverError(err) // the replay cache failed: fail closed
	}
	e := newErr(de.Code, de.Description).WithReason("dpop_" + string(de.Reason))
	if de.Code == ErrUseDPoPNonce && p.c.DPoP.Nonces != nil {
		e.DPoPNonce = p.c.DPoP.Nonces.Nonce()
	}
	return nil, e
}

// recorded reports whether a token error is worth a record: the normal
// nonce handshake and device polling (RFC 8628 §3.5) are not failures.
func recorded(e *Error) bool {
	return e.Code != ErrUseDPoPNonce && e.Code != ErrAuthorizationPending
}

// tokenFailed records a failed request of client clientID ("" when
// unknown) to an endpoint that authenticates clients.
func (p *Provider) tokenFailed(r *http.Request, clientID string, e *Error) {
	p.grantFailed(r, &grant.Request{Client: &model.Client{ID: clientID}}, e)
}

// grantFailed records a failed token request, attributed to the
// credential it presented when the grant found it (e.Subject, e.Data),
// with its grant type and the status of its DPoP proof.
func (p *Provider) grantFailed(r *http.Request, req *grant.Request, e *Error) {
	ri := p.info(r)
	t := model.EventTokenRequestFailed
	proofRejected := e.Code == ErrInvalidDPoPProof || e.Code == ErrUseDPoPNonce
	if proofRejected {
		t = model.EventDPoPProofRejected
	}
	if e.Code == ErrServerError {
		p.c.Log.ErrorContext(r.Context(), "token endpoint", "correlation_id", ri.CorrID, "err", e.Cause)
	}
	if !recorded(e) {
		return
	}
	clientID := req.Client.ID
	ev := ri.Event(t)
	ev.Outcome, ev.ClientID, ev.Actor = model.OutcomeFailure, clientID, clientID
	ev.UserID, ev.SessionID, ev.DeviceID = e.Subject.UserID, e.Subject.SessionID, e.Subject.DeviceID
	ev.Reason = e.Reason
	if ev.Reason == "" {
		ev.Reason = e.Code
	}
	ev.Data = map[string]string{"error": e.Code, "endpoint": r.URL.Path}
	if _, known := p.grants[req.GrantType]; known {
		ev.Data[activity.DataGrant] = req.GrantType
	}
	switch {
	case req.Proof != nil:
		ev.Data[activity.DataJKT] = req.Proof.JKT
	case proofRejected && e.Reason != "dpop_required":
		ev.Data[activity.DataProof] = string(activity.ProofInvalid)
	case proofRejected:
		ev.Data[activity.DataProof] = string(activity.ProofMissing)
	}
	for k, v := range e.Data {
		ev.Data[k] = v
	}
	if ev.Data[activity.DataProof] == "" && req.Proof != nil {
		ev.Data[activity.DataProof] = string(activity.ProofOK)
	}
	ctx := r.Context()
	if e.Commit != nil {
		// The refused code is spent with this record, in one transaction.
		ctx = p.events.Pending(ctx, ev, nil)
		if err := e.Commit(ctx); err != nil {
			p.c.Log.ErrorContext(ctx, "token endpoint: spending the refused code failed", "correlation_id", ri.CorrID, "err", err)
		}
	}
	_ = p.events.Emit(ctx, ev)
}
