package oauth

// The device authorization grant (RFC 8628): a device without a usable
// browser asks for a device code and a short user code at
// /device_authorization; the user types the user code at the sign-in's
// verification page (package signin) in any browser, signs in and
// approves or denies; the device meanwhile polls the token endpoint with
// the device code (package grant).
//
// The device code is a 256-bit secret stored only as a keyed hash. The
// user code has 8 characters from the RFC 8628 §6.1 base-20 alphabet
// (about 34.5 bits) and is short-lived. A DPoP proof on the device
// authorization request, or dpop_jkt, commits the grant to that key (the
// RFC 9449 §10.1 idea applied to this grant): redeeming it needs a proof
// signed by the same key. A claims request parameter (a resource's claims
// challenge the device passes on) is stored with the request for the
// approval to meet.

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/grant"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

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
	scope, e := authz.CheckScope(c, form.Get("scope"))
	if e != nil {
		return nil, e
	}
	if len(form["claims"]) > 1 {
		return nil, newErr(ErrInvalidRequest, "parameter claims given more than once")
	}
	rawClaims := form.Get("claims")
	if _, e := authz.ParseClaims(rawClaims); e != nil {
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
			return nil, newErr(ErrInvalidDPoPProof, "dpop_jkt does not match the DPoP proof key").WithReason("dpop_jkt_mismatch")
		}
		jkt = proof.JKT
	}
	now := p.c.Now()
	ttl := p.c.Lifetimes.DeviceCode
	deviceCode := secret.RandomToken()
	dc := &model.DeviceCode{
		Hash: p.c.TokenHasher.Sum(deviceCode), ClientID: c.ID, Scope: scope, DPoPJKT: jkt, Claims: rawClaims,
		Status: model.DeviceCodePending, CreatedAt: now, ExpiresAt: now.Add(ttl), Interval: grant.DeviceInterval,
	}
	// User codes are unique among live requests; a collision (one in 20^8
	// per live request) just draws again.
	var err error
	for range 4 {
		dc.UserCode = authz.NewUserCode()
		if err = p.c.Store.CreateDeviceCode(r.Context(), dc); !errors.Is(err, store.ErrAlreadyExists) {
			break
		}
	}
	if err != nil {
		return nil, serverError(err)
	}
	shown := authz.FormatUserCode(dc.UserCode)
	return &deviceAuthorizationResponse{
		DeviceCode:              deviceCode,
		UserCode:                shown,
		VerificationURI:         p.url(authz.VerificationPath),
		VerificationURIComplete: p.url(authz.VerificationPath) + "?" + url.Values{"user_code": {shown}}.Encode(),
		ExpiresIn:               int(ttl / time.Second),
		Interval:                int(grant.DeviceInterval / time.Second),
	}, nil
}
