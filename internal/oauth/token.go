package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
)

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// tokenRequest is what every grant works with.
type tokenRequest struct {
	r      *http.Request
	ri     reqInfo
	form   map[string][]string
	client *model.Client
	proof  *dpop.Proof // nil: no DPoP header
	// claims is the claims request parameter (nil when absent).
	claims *claimsRequest
}

func (t *tokenRequest) get(k string) string {
	if v := t.form[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	if ns := p.c.DPoP.Nonces; ns != nil {
		w.Header().Set("DPoP-Nonce", ns.Nonce())
	}
	form, c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	tr := &tokenRequest{r: r, ri: p.info(r), form: form, client: c}
	h, e := proofHeader(r)
	if e == nil && len(form["claims"]) > 1 {
		e = newErr(ErrInvalidRequest, "parameter claims given more than once")
	}
	if e == nil {
		tr.claims, e = parseClaims(form.Get("claims"))
	}
	switch {
	case e != nil:
	case h != "":
		tr.proof, e = p.checkProof(r, h, "")
	case c.DPoPBoundAccessTokens:
		e = newErr(ErrInvalidDPoPProof, "this client must send a DPoP proof").withReason("dpop_required")
	}
	if e != nil {
		p.tokenFailed(r, c.ID, e)
		writeTokenError(w, e)
		return
	}
	var resp *tokenResponse
	switch gt := form.Get("grant_type"); gt {
	case model.GrantAuthorizationCode:
		resp, e = p.grantAuthorizationCode(tr)
	case model.GrantRefreshToken:
		resp, e = p.grantRefreshToken(tr)
	case model.GrantClientCredentials:
		resp, e = p.grantClientCredentials(tr)
	case model.GrantDeviceCode:
		resp, e = p.grantDeviceCode(tr)
	case "":
		e = newErr(ErrInvalidRequest, "grant_type is required")
	default:
		e = newErr(ErrUnsupportedGrantType, "unsupported grant_type")
	}
	if e != nil {
		p.tokenFailed(r, c.ID, e)
		writeTokenError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// proofHeader returns the request's single DPoP header ("" when absent).
func proofHeader(r *http.Request) (string, *Error) {
	h, err := dpop.FromRequest(r)
	if errors.Is(err, dpop.ErrNoProof) {
		return "", nil
	}
	if err != nil {
		return "", newErr(ErrInvalidDPoPProof, "exactly one DPoP header is allowed").withReason("dpop_multiple_headers")
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
	e := newErr(de.Code, de.Description).withReason("dpop_" + string(de.Reason))
	if de.Code == ErrUseDPoPNonce && p.c.DPoP.Nonces != nil {
		e.DPoPNonce = p.c.DPoP.Nonces.Nonce()
	}
	return nil, e
}

// tokenFailed records a failed token-endpoint request.
func (p *Provider) tokenFailed(r *http.Request, clientID string, e *Error) {
	ri := p.info(r)
	t := model.EventTokenRequestFailed
	if e.Code == ErrInvalidDPoPProof || e.Code == ErrUseDPoPNonce {
		t = model.EventDPoPProofRejected
	}
	if e.Code == ErrServerError {
		p.c.Log.ErrorContext(r.Context(), "token endpoint", "correlation_id", ri.CorrID, "err", e.Cause)
	}
	if e.Code == ErrUseDPoPNonce || e.Code == ErrAuthorizationPending {
		// The normal nonce handshake and device polling (RFC 8628 §3.5)
		// are not failures worth a record.
		return
	}
	ev := ri.event(t)
	ev.Outcome, ev.ClientID, ev.Actor = model.OutcomeFailure, clientID, clientID
	ev.Reason = e.Reason
	if ev.Reason == "" {
		ev.Reason = e.Code
	}
	ev.Data = map[string]string{"error": e.Code, "endpoint": r.URL.Path}
	for k, v := range e.Data {
		ev.Data[k] = v
	}
	_ = p.events.Emit(r.Context(), ev)
}

// grantAuthorizationCode redeems a code (RFC 6749 §4.1.3, RFC 7636 §4.6,
// RFC 9449 §10).
func (p *Provider) grantAuthorizationCode(tr *tokenRequest) (*tokenResponse, *Error) {
	ctx := tr.r.Context()
	c := tr.client
	if !c.AllowsGrant(model.GrantAuthorizationCode) {
		return nil, newErr(ErrUnauthorizedClient, "client may not use the authorization code grant")
	}
	code, verifier, redirectURI := tr.get("code"), tr.get("code_verifier"), tr.get("redirect_uri")
	if code == "" || redirectURI == "" {
		return nil, newErr(ErrInvalidRequest, "code and redirect_uri are required")
	}
	if verifier == "" {
		return nil, newErr(ErrInvalidRequest, "code_verifier is required (PKCE)").withReason("pkce_missing")
	}
	now := p.c.Now()
	hash := p.c.TokenHasher.Sum(code)
	// The request is checked against the code before the code is used:
	// someone who only saw a public client's code must not be able to
	// burn it with a wrong verifier (and make the legitimate redemption
	// look like a theft). Reuse is theft only after a redemption that
	// passed every check.
	ac, err := p.c.Store.GetAuthCode(ctx, hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, newErr(ErrInvalidGrant, "code is invalid or expired").withReason("code_unknown")
	case err != nil:
		return nil, serverError(err)
	case !ac.UsedAt.IsZero():
		return nil, p.codeReused(tr, ac)
	}
	if e := checkCode(tr, ac, now, redirectURI, verifier); e != nil {
		return nil, e
	}
	ac, err = p.c.Store.ConsumeAuthCode(ctx, hash, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, newErr(ErrInvalidGrant, "code is invalid or expired").withReason("code_unknown")
	case errors.Is(err, store.ErrAlreadyUsed):
		// Redeemed by a concurrent request that passed the same checks.
		return nil, p.codeReused(tr, ac)
	case err != nil:
		return nil, serverError(err)
	}
	sess, u, e := p.liveSession(ctx, ac.SessionID, ac.UserID)
	if e != nil {
		return nil, e
	}
	g := grant{flow: policy.FlowInteractive, client: c, user: u, sess: sess, scope: ac.Scope, authTime: ac.AuthTime, amr: ac.AMR, acr: ac.ACR, nonce: ac.Nonce}
	return p.issue(tr, g, model.EventTokenIssued, nil)
}

// checkCode checks a token request against the authorization code it
// presents: the same client, unexpired, the same redirect URI, the PKCE
// verifier, and the DPoP key the authorization request named.
func checkCode(tr *tokenRequest, ac *model.AuthCode, now time.Time, redirectURI, verifier string) *Error {
	if ac.ClientID != tr.client.ID {
		return newErr(ErrInvalidGrant, "code is invalid or expired").withReason("code_client_mismatch")
	}
	if !now.Before(ac.ExpiresAt) {
		return newErr(ErrInvalidGrant, "code is invalid or expired").withReason("code_expired")
	}
	if redirectURI != ac.RedirectURI {
		return newErr(ErrInvalidGrant, "redirect_uri does not match the authorization request").withReason("redirect_uri_mismatch")
	}
	if !pkceVerifierRE.MatchString(verifier) {
		return newErr(ErrInvalidGrant, "code_verifier is malformed").withReason("pkce_malformed")
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(ac.CodeChallenge)) != 1 {
		return newErr(ErrInvalidGrant, "code_verifier does not match code_challenge").withReason("pkce_mismatch")
	}
	if ac.DPoPJKT != "" && (tr.proof == nil || tr.proof.JKT != ac.DPoPJKT) {
		// Generic to the client: a thief learns nothing of the binding.
		return newErr(ErrInvalidGrant, "code is invalid or expired").withReason("dpop_jkt_mismatch")
	}
	return nil
}

// codeReused answers a code presented after a successful redemption: RFC
// 6749 §4.1.2, the session it issued is revoked. The answer is
// invalid_grant whatever the revocation does; its failure is logged.
func (p *Provider) codeReused(tr *tokenRequest, ac *model.AuthCode) *Error {
	ctx := tr.r.Context()
	if ac != nil && ac.ClientID == tr.client.ID {
		if revoked, err := p.c.Sessions.CodeReused(ctx, tr.client.ID, ac); err != nil && !revoked && !errors.Is(err, store.ErrNotFound) {
			p.c.Log.ErrorContext(ctx, "code reuse: revoking the session failed", "correlation_id", tr.ri.CorrID,
				"client_id", tr.client.ID, "session_id", ac.SessionID, "err", err)
		}
	}
	return newErr(ErrInvalidGrant, "code is invalid or expired").withReason("code_reused")
}

// grantRefreshToken rotates a refresh token (RFC 6749 §6, RFC 9700
// §4.14.2, RFC 9449 §5).
func (p *Provider) grantRefreshToken(tr *tokenRequest) (*tokenResponse, *Error) {
	ctx := tr.r.Context()
	c := tr.client
	if !c.AllowsGrant(model.GrantRefreshToken) {
		return nil, newErr(ErrUnauthorizedClient, "client may not use the refresh token grant")
	}
	raw := tr.get("refresh_token")
	if raw == "" {
		return nil, newErr(ErrInvalidRequest, "refresh_token is required")
	}
	now := p.c.Now()
	// One read for the token, its session and its user.
	rg, err := p.c.Store.GetRefreshGrant(ctx, p.c.TokenHasher.Sum(raw))
	if errors.Is(err, store.ErrNotFound) {
		return nil, p.refreshUnknown(ctx, tr)
	} else if err != nil {
		return nil, serverError(err)
	}
	rt := rg.Token
	if rt.ClientID != c.ID {
		return nil, newErr(ErrInvalidGrant, "refresh token is invalid or expired").withReason("refresh_client_mismatch")
	}
	if !rt.RotatedAt.IsZero() {
		return nil, p.refreshReused(tr, rt)
	}
	if !now.Before(rt.ExpiresAt) {
		return nil, newErr(ErrInvalidGrant, "refresh token is invalid or expired").withReason("refresh_expired")
	}
	if rt.JKT != "" && (tr.proof == nil || tr.proof.JKT != rt.JKT) {
		// Generic to the client: "bound to another key" would tell a
		// thief the stolen token is live. The audit log has the reason.
		return nil, newErr(ErrInvalidGrant, "refresh token is invalid or expired").withReason("refresh_key_mismatch")
	}
	scope := rt.Scope
	if s := tr.get("scope"); s != "" {
		narrowed, ok := subsetScope(s, rt.Scope)
		if !ok {
			return nil, newErr(ErrInvalidScope, "requested scope exceeds the original grant")
		}
		scope = narrowed
	}
	if e := p.checkLive(rg.Session, rg.User); e != nil {
		if de := p.deviceEnded(ctx, tr); de != nil {
			return nil, de
		}
		return nil, e
	}
	sess, u := rg.Session, rg.User
	g := grant{flow: policy.FlowRefresh, client: c, user: u, sess: sess, scope: rt.Scope, atScope: scope, authTime: rt.AuthTime, amr: rt.AMR, acr: rt.ACR}
	return p.issue(tr, g, model.EventTokenRefreshed, rt)
}

// refreshReused handles presentation of an already-rotated refresh token:
// the whole session is revoked and the theft signal recorded, once per
// session however many requests present the token (session.Service). The
// answer is invalid_grant whatever the revocation does; its failure is
// logged.
func (p *Provider) refreshReused(tr *tokenRequest, rt *model.RefreshToken) *Error {
	ctx := tr.r.Context()
	var jkt string
	if tr.proof != nil {
		jkt = tr.proof.JKT
	}
	if revoked, err := p.c.Sessions.RefreshTokenReused(ctx, tr.client.ID, rt, jkt); err != nil && !revoked && !errors.Is(err, store.ErrNotFound) {
		p.c.Log.ErrorContext(ctx, "refresh token reuse: revoking the session failed", "correlation_id", tr.ri.CorrID,
			"client_id", tr.client.ID, "session_id", rt.SessionID, "err", err)
	}
	return newErr(ErrInvalidGrant, "refresh token is invalid or expired").withReason("refresh_reused")
}

// refreshUnknown is the answer to a refresh token Ward does not know (any
// more): the device-ended error when the request comes from a device whose
// sessions ended, invalid_grant otherwise.
func (p *Provider) refreshUnknown(ctx context.Context, tr *tokenRequest) *Error {
	if e := p.deviceEnded(ctx, tr); e != nil {
		return e
	}
	return newErr(ErrInvalidGrant, "refresh token is invalid or expired").withReason("refresh_unknown")
}

// grantClientCredentials issues a token to the client itself (RFC 6749 §4.4).
func (p *Provider) grantClientCredentials(tr *tokenRequest) (*tokenResponse, *Error) {
	c := tr.client
	if c.Public() || !c.AllowsGrant(model.GrantClientCredentials) {
		return nil, newErr(ErrUnauthorizedClient, "client may not use the client credentials grant")
	}
	scope, e := p.checkScope(c, tr.get("scope"))
	if e != nil {
		return nil, e
	}
	for _, s := range strings.Fields(scope) {
		if s == "openid" || s == "offline_access" {
			return nil, newErr(ErrInvalidScope, "scope "+s+" is not available to the client credentials grant")
		}
	}
	return p.issue(tr, grant{flow: policy.FlowClientCredentials, client: c, scope: scope}, model.EventTokenIssued, nil)
}

// liveSession loads a session and its user and checks both may still get
// tokens.
func (p *Provider) liveSession(ctx context.Context, sid, uid string) (*model.Session, *model.User, *Error) {
	sess, err := p.c.Store.GetSession(ctx, sid)
	if errors.Is(err, store.ErrNotFound) {
		sess = nil
	} else if err != nil {
		return nil, nil, serverError(err)
	}
	if sess == nil || !sess.Active(p.c.Now()) {
		return nil, nil, p.checkLive(sess, nil)
	}
	u, err := p.c.Store.GetUser(ctx, uid)
	if errors.Is(err, store.ErrNotFound) {
		u = nil
	} else if err != nil {
		return nil, nil, serverError(err)
	}
	if e := p.checkLive(sess, u); e != nil {
		return nil, nil, e
	}
	return sess, u, nil
}

// checkLive checks that a session and its user (nil: not found) may
// still get tokens.
func (p *Provider) checkLive(sess *model.Session, u *model.User) *Error {
	switch {
	case sess == nil:
		return newErr(ErrInvalidGrant, "the sign-in session has ended").withReason("session_unknown")
	case !sess.Active(p.c.Now()):
		return newErr(ErrInvalidGrant, "the sign-in session has ended").withReason("session_inactive")
	case u == nil:
		return newErr(ErrInvalidGrant, "the user no longer exists").withReason("user_unknown")
	case u.Disabled:
		return newErr(ErrInvalidGrant, "the user is disabled").withReason("user_disabled")
	}
	return nil
}

// grant is what a successful grant decided to issue.
type grant struct {
	flow     string // Conditional Access flow (policy.Flow…)
	client   *model.Client
	user     *model.User    // nil for client_credentials
	sess     *model.Session // nil for client_credentials
	scope    string         // the grant's scope (kept in the refresh token)
	atScope  string         // the access token's scope when narrowed ("" = scope)
	authTime time.Time
	amr      []string
	acr      string
	nonce    string
}

// issue mints the access token and, where due, the refresh and ID tokens,
// rotating prev when it is a refresh, and records the event.
func (p *Provider) issue(tr *tokenRequest, g grant, evType model.EventType, prev *model.RefreshToken) (*tokenResponse, *Error) {
	ctx := tr.r.Context()
	c := g.client
	now := p.c.Now()
	atScope := g.atScope
	if atScope == "" {
		atScope = g.scope
	}
	var uid string
	if g.user != nil {
		uid = g.user.ID
	}
	protection, why, dev, e := p.protection(ctx, tr, g.user != nil || c.RequireProtectedSessions, uid)
	if e != nil {
		return nil, e
	}
	if e := requireProtection(c, protection, why); e != nil {
		return nil, e
	}
	ca, e := p.tokenAccess(tr, g, dev, protection)
	if e != nil {
		return nil, e
	}
	if e := p.checkClaims(tr, g); e != nil {
		return nil, e
	}
	ttl := p.c.Lifetimes.AccessToken
	if c.AccessTokenTTL > 0 {
		ttl = c.AccessTokenTTL
	}
	// A client that follows claims challenges gets long-lived tokens:
	// resources revoke them through continuous access evaluation.
	cae := c.CAECapable && tr.claims.wantsCAE()
	if cae && p.c.Lifetimes.CAEAccessToken > ttl {
		ttl = p.c.Lifetimes.CAEAccessToken
	}
	if ca != nil && ca.Session.AccessTokenLifetime > 0 && ca.Session.AccessTokenLifetime < ttl {
		ttl = ca.Session.AccessTokenLifetime
	}
	if cae && g.sess != nil && now.Add(ttl).After(g.sess.ExpiresAt) {
		// A long-lived token does not outlive its session.
		ttl = max(g.sess.ExpiresAt.Sub(now), time.Second)
	}
	aud := c.Audience
	if len(aud) == 0 {
		aud = []string{p.issuer}
	} else if g.user != nil && slices.Contains(strings.Fields(atScope), "openid") && !slices.Contains(aud, p.issuer) {
		// An OIDC token is also for Ward's own userinfo endpoint.
		aud = append(slices.Clone(aud), p.issuer)
	}
	claims := &tokens.AccessClaims{
		Issuer: p.issuer, Audience: tokens.Audience(aud), IssuedAt: now.Unix(), ExpiresAt: now.Add(ttl).Unix(),
		JTI: newID(), ClientID: c.ID, Scope: atScope,
	}
	if cae {
		claims.Capabilities = []string{CapabilityCAE}
	}
	if ca != nil && len(ca.AllowedRanges) > 0 && g.user != nil {
		claims.AllowedIPs = ca.AllowedRanges
	}
	if nb := tr.claims; nb != nil && nb.NotBefore >= claims.IssuedAt {
		// A resource revoked tokens issued up to nb.NotBefore (a second
		// resolution): a token minted in that same second must say it is
		// newer.
		claims.NotBefore = nb.NotBefore + 1
	}
	resp := &tokenResponse{TokenType: "Bearer", ExpiresIn: int(ttl / time.Second), Scope: atScope}
	ev := tr.ri.event(evType)
	ev.Actor, ev.ClientID, ev.TokenID = c.ID, c.ID, claims.JTI
	ev.Data = map[string]string{"grant_type": tr.get("grant_type"), "scope": atScope}
	if g.user != nil {
		claims.Subject, claims.SID = g.user.ID, g.sess.ID
		claims.AuthTime, claims.AMR, claims.ACR = g.authTime.Unix(), g.amr, g.acr
		ev.UserID, ev.SessionID, ev.Actor = g.user.ID, g.sess.ID, g.user.ID
	} else {
		claims.Subject = c.ID
	}
	if ca != nil {
		ca.EventData(ev.Data)
	}
	if cae {
		ev.Data["cae"] = "true"
	}
	if len(claims.AllowedIPs) > 0 {
		ev.Data["strict_location"] = "true"
	}
	ev.Data["token_protection"] = protection
	if why != "" {
		ev.Data["token_protection_reason"] = why
	}
	if tr.proof != nil {
		claims.Cnf = &tokens.Confirmation{JKT: tr.proof.JKT}
		resp.TokenType = "DPoP"
		ev.Binding = model.BindingDPoP
		ev.Data["jkt"] = tr.proof.JKT
	} else {
		ev.Binding, ev.BindingReason = model.BindingUnbound, model.UnboundNoProof
	}
	if dev != nil {
		claims.DeviceID, ev.DeviceID = dev.ID, dev.ID
	}
	at, err := p.c.Keys.MintAccessToken(claims)
	if err != nil {
		return nil, serverError(err)
	}
	resp.AccessToken = at

	// Refresh token: for user grants of clients allowed to refresh. A
	// public client's refresh token must be bound to its DPoP key (RFC 9449
	// §5), so a public client without DPoP gets none.
	if g.user != nil && c.AllowsGrant(model.GrantRefreshToken) && (!c.Public() || tr.proof != nil) {
		raw := secret.RandomToken()
		next := &model.RefreshToken{
			Hash: p.c.TokenHasher.Sum(raw), SessionID: g.sess.ID, ClientID: c.ID, UserID: g.user.ID, Scope: g.scope,
			AuthTime: g.authTime, AMR: g.amr, ACR: g.acr, CreatedAt: now, ExpiresAt: now.Add(p.c.Lifetimes.RefreshToken),
		}
		if next.ExpiresAt.After(g.sess.ExpiresAt) {
			next.ExpiresAt = g.sess.ExpiresAt
		}
		switch {
		case dev != nil:
			// A protected session: bound to the registered device's key,
			// whatever the client type, so only that device can refresh it.
			next.JKT, next.DeviceID = tr.proof.JKT, dev.ID
		case c.Public():
			next.JKT = tr.proof.JKT
		case prev != nil:
			next.JKT = prev.JKT
		}
		if prev != nil {
			old, err := p.c.Store.RotateRefreshToken(ctx, prev.Hash, now, next)
			switch {
			case errors.Is(err, store.ErrAlreadyUsed):
				// Rotated since it was read: a concurrent request won.
				if old == nil {
					old = prev
				}
				return nil, p.refreshReused(tr, old)
			case errors.Is(err, store.ErrNotFound):
				// Gone since it was read: its session was revoked
				// meanwhile (by the reuse a concurrent request found, or
				// otherwise). Unknown now, as it would be if read now.
				return nil, p.refreshUnknown(ctx, tr)
			case err != nil:
				return nil, serverError(err)
			}
		} else if err := p.c.Store.CreateRefreshToken(ctx, next); err != nil {
			return nil, serverError(err)
		}
		resp.RefreshToken = raw
		if next.JKT != "" {
			ev.Data["refresh_bound"] = "true"
		}
	} else if prev != nil {
		// A refresh that may not yield a new refresh token still uses up the old one.
		return nil, newErr(ErrInvalidGrant, "refresh token is invalid or expired").withReason("refresh_not_renewable")
	}
	// The idle lifetime is counted in hours: touching the session at most
	// once a minute saves a database write on almost every refresh.
	if g.sess != nil && now.Sub(g.sess.LastSeen) >= time.Minute {
		_ = p.c.Store.TouchSession(ctx, g.sess.ID, now)
	}
	if g.user != nil && slices.Contains(strings.Fields(g.scope), "openid") {
		idc := &tokens.IDClaims{
			Issuer: p.issuer, Subject: g.user.ID, Audience: tokens.Audience{c.ID}, IssuedAt: now.Unix(),
			ExpiresAt: now.Add(p.c.Lifetimes.IDToken).Unix(), AuthTime: g.authTime.Unix(), Nonce: g.nonce,
			ACR: g.acr, AMR: g.amr, AZP: c.ID, SID: g.sess.ID, AtHash: tokens.AtHash(at),
		}
		fillProfile(idc, g.user, g.scope)
		idt, err := p.c.Keys.MintIDToken(idc)
		if err != nil {
			return nil, serverError(err)
		}
		resp.IDToken = idt
	}
	if err := p.events.Emit(ctx, ev); err != nil {
		return nil, serverError(err)
	}
	return resp, nil
}

func fillProfile(idc *tokens.IDClaims, u *model.User, scope string) {
	sc := strings.Fields(scope)
	if slices.Contains(sc, "profile") {
		idc.Name, idc.PreferredUsername = u.DisplayName, u.Username
	}
	if slices.Contains(sc, "email") {
		idc.Email = u.Email
	}
}

// subsetScope reports whether every scope in req is in granted and returns
// req normalised.
func subsetScope(req, granted string) (string, bool) {
	g := strings.Fields(granted)
	var out []string
	for _, s := range strings.Fields(req) {
		if !slices.Contains(g, s) {
			return "", false
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, " "), true
}

// checkClaims applies the claims request parameter of a token request: a
// not-before time the new token cannot meet is invalid; an acr the session
// does not reach sends the client back to sign in (a resource's step-up
// challenge).
func (p *Provider) checkClaims(tr *tokenRequest, g grant) *Error {
	cr := tr.claims
	if cr == nil {
		return nil
	}
	if !cr.notBeforeOK(p.c.Now()) {
		return newErr(ErrInvalidRequest, "claims: the requested nbf is in the future").withReason("claims_nbf_future")
	}
	if g.user != nil && !cr.acrMet(g.acr) {
		return newErr(ErrInvalidGrant, "claims: the session does not meet the requested acr; sign in again with the claims parameter").withReason("claims_acr_unmet")
	}
	return nil
}
