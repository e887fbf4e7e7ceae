package oauth

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/browser"
	"github.com/ward-idp/ward/internal/oauth/grant"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
	"github.com/ward-idp/ward/internal/web"
)

// Caller is an authenticated caller of a Ward-protected resource (userinfo,
// the admin API).
type Caller struct {
	Claims *tokens.AccessClaims
	User   *model.User // nil for client tokens
	// Session is the live session the token belongs to, as read for the
	// check (nil for client tokens): a caller that needs more of it (the
	// console: its browser binding) does not read it again.
	Session *model.Session
	Scheme  string // "DPoP" or "Bearer"
}

// AuthenticateResource checks the access token of a request to one of
// Ward's own resources, including the DPoP proof of a bound token (RFC 9449
// §7) and that its session and user are still valid. On failure it returns
// the scheme to challenge with.
func (p *Provider) AuthenticateResource(r *http.Request) (*Caller, string, *Error) {
	ctx := r.Context()
	if len(r.Header.Values("Authorization")) > 1 {
		// Which one would count? A proxy and the application may not agree.
		return nil, "", newErr(ErrInvalidRequest, "exactly one Authorization header is allowed").WithReason("multiple_authorization_headers")
	}
	authz := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(authz, " ")
	if !ok || tok == "" {
		return nil, "", newErr(ErrInvalidToken, "").WithReason("no_token")
	}
	switch {
	case strings.EqualFold(scheme, "DPoP"):
		scheme = "DPoP"
	case strings.EqualFold(scheme, "Bearer"):
		scheme = "Bearer"
	default:
		return nil, "", newErr(ErrInvalidRequest, "unsupported authorization scheme")
	}
	now := p.c.Now()
	cl, err := p.c.Keys.ParseAccessToken(tok, p.issuer, now)
	if err != nil {
		return nil, scheme, newErr(ErrInvalidToken, "the access token is invalid or expired").WithReason("token_invalid")
	}
	h, herr := proofHeader(r)
	switch {
	case cl.Cnf != nil && cl.Cnf.JKT != "":
		if scheme != "DPoP" {
			// RFC 9449 §7.2: a bound token presented as a bearer token.
			return nil, "DPoP", newErr(ErrInvalidToken, "DPoP-bound token must use the DPoP scheme").WithReason("bound_token_as_bearer")
		}
		if herr != nil || h == "" {
			e := newErr(ErrInvalidDPoPProof, "DPoP proof required").WithReason("dpop_missing")
			e.Status = http.StatusUnauthorized
			return nil, "DPoP", e
		}
		if _, perr := p.c.DPoP.Verify(ctx, h, dpop.Check{Method: r.Method, URL: p.url(r.URL.EscapedPath()), AccessToken: tok, JKT: cl.Cnf.JKT}); perr != nil {
			var de *dpop.Error
			if !errors.As(perr, &de) {
				return nil, "DPoP", serverError(perr)
			}
			// At a resource every DPoP challenge is a 401 (RFC 9449 §7.1),
			// and a nonce request carries a fresh nonce (§9) so clients that
			// reuse the token endpoint's nonce can recover when it expires.
			e := newErr(de.Code, de.Description).WithReason("dpop_" + string(de.Reason))
			e.Status = http.StatusUnauthorized
			if de.Code == ErrUseDPoPNonce && p.c.DPoP.Nonces != nil {
				e.DPoPNonce = p.c.DPoP.Nonces.Nonce()
			}
			return nil, "DPoP", e
		}
	case scheme == "DPoP":
		return nil, "DPoP", newErr(ErrInvalidToken, "token is not DPoP-bound").WithReason("unbound_token_as_dpop")
	}
	// Strict location (Conditional Access): the token names the networks it
	// may be used from, as at any resource that follows Ward's rules.
	if cl.AllowedIPs != nil && !ipAllowed(p.clientIP(r), cl.AllowedIPs) {
		return nil, scheme, newErr(ErrInvalidToken, "the access token may not be used from this network location").WithReason("strict_location")
	}
	c := &Caller{Claims: cl, Scheme: scheme}
	if cl.SID != "" {
		// Revoked by its client (RFC 7009): refused until it expires.
		if revoked, err := p.c.Store.HasJTI(ctx, model.RevokedAccessTokenKey(cl.JTI)); err != nil {
			return nil, scheme, serverError(err)
		} else if revoked {
			return nil, scheme, newErr(ErrInvalidToken, "the access token has been revoked").WithReason("token_revoked")
		}
		sess, u, e := grant.LiveSession(ctx, p.c.Store, p.c.Now(), cl.SID, cl.Subject)
		if e != nil || sess.UserID != cl.Subject {
			return nil, scheme, newErr(ErrInvalidToken, "the access token has been revoked").WithReason("session_ended")
		}
		c.User, c.Session = u, sess
	}
	return c, scheme, nil
}

// ipAllowed reports whether ip is in one of the token's ipr ranges; a
// range that does not parse allows nothing (fail closed).
func ipAllowed(ip netip.Addr, ranges []string) bool {
	if !ip.IsValid() {
		return false
	}
	for _, s := range ranges {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

func (p *Provider) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	c, scheme, e := p.AuthenticateResource(r)
	if e == nil && !slices.Contains([]string(c.Claims.Audience), p.issuer) {
		// RFC 9068 §4: a token for another resource is not for us.
		e = newErr(ErrInvalidToken, "the access token is not intended for this server").WithReason("wrong_audience")
	}
	if e == nil && (c.User == nil || !slices.Contains(strings.Fields(c.Claims.Scope), "openid")) {
		e = newErr(ErrInsufficientScope, "the openid scope is required")
	}
	if e != nil {
		writeResourceError(w, e, scheme, p.dpopAlgs)
		return
	}
	u := c.User
	out := map[string]any{"sub": u.ID}
	sc := strings.Fields(c.Claims.Scope)
	if slices.Contains(sc, "profile") {
		out["name"], out["preferred_username"] = u.DisplayName, u.Username
	}
	if slices.Contains(sc, "email") && u.Email != "" {
		out["email"] = u.Email
	}
	writeJSON(w, http.StatusOK, out)
}

// handleIntrospect implements RFC 7662 for access and refresh tokens. Only
// confidential clients may introspect; a refresh token is reported active
// only to the client it was issued to.
func (p *Provider) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	form, c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	if c.Public() {
		e := newErr(ErrInvalidClient, "public clients may not introspect tokens").WithReason("public_client_introspection")
		p.tokenFailed(r, c.ID, e)
		writeTokenError(w, e)
		return
	}
	tok := form.Get("token")
	if tok == "" {
		writeTokenError(w, newErr(ErrInvalidRequest, "token is required"))
		return
	}
	inactive := map[string]any{"active": false}
	ctx := r.Context()
	now := p.c.Now()
	if strings.Count(tok, ".") == 2 {
		cl, err := p.c.Keys.ParseAccessToken(tok, p.issuer, now)
		if err != nil {
			writeJSON(w, http.StatusOK, inactive)
			return
		}
		out := map[string]any{
			"active": true, "iss": cl.Issuer, "sub": cl.Subject, "aud": cl.Audience, "exp": cl.ExpiresAt, "iat": cl.IssuedAt,
			"jti": cl.JTI, "client_id": cl.ClientID, "token_type": "Bearer",
		}
		if cl.Scope != "" {
			out["scope"] = cl.Scope
		}
		if cl.Cnf != nil {
			out["cnf"] = cl.Cnf
			out["token_type"] = "DPoP"
		}
		if cl.SID != "" {
			sess, u, e := grant.LiveSession(ctx, p.c.Store, p.c.Now(), cl.SID, cl.Subject)
			if e != nil || sess.UserID != cl.Subject {
				writeJSON(w, http.StatusOK, inactive)
				return
			}
			if revoked, err := p.c.Store.HasJTI(ctx, model.RevokedAccessTokenKey(cl.JTI)); err != nil {
				writeTokenError(w, serverError(err))
				return
			} else if revoked {
				writeJSON(w, http.StatusOK, inactive)
				return
			}
			out["sid"], out["username"] = cl.SID, u.Username
			if cl.AuthTime != 0 {
				out["auth_time"] = cl.AuthTime
			}
			if cl.ACR != "" {
				out["acr"] = cl.ACR
			}
		}
		if cl.DeviceID != "" {
			out["did"] = cl.DeviceID
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	rt, err := p.c.Store.GetRefreshToken(ctx, p.c.TokenHasher.Sum(tok))
	if err != nil || rt.ClientID != c.ID || !rt.RotatedAt.IsZero() || !now.Before(rt.ExpiresAt) {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			writeTokenError(w, serverError(err))
			return
		}
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	if _, _, e := grant.LiveSession(ctx, p.c.Store, p.c.Now(), rt.SessionID, rt.UserID); e != nil {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	out := map[string]any{"active": true, "token_type": "refresh_token", "client_id": rt.ClientID, "sub": rt.UserID,
		"scope": rt.Scope, "exp": rt.ExpiresAt.Unix(), "iat": rt.CreatedAt.Unix(), "sid": rt.SessionID, "iss": p.issuer}
	if rt.JKT != "" {
		out["cnf"] = tokens.Confirmation{JKT: rt.JKT}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRevoke implements RFC 7009. Revoking a refresh token deletes it;
// revoking a user access token revokes its session (JWT access tokens
// cannot be recalled one by one; the session check at introspection,
// userinfo and CAE-aware resources makes that effective).
func (p *Provider) handleRevoke(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	form, c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	tok := form.Get("token")
	if tok == "" {
		writeTokenError(w, newErr(ErrInvalidRequest, "token is required"))
		return
	}
	ctx := r.Context()
	ri := p.info(r)
	now := p.c.Now()
	if strings.Count(tok, ".") == 2 {
		cl, err := p.c.Keys.ParseAccessToken(tok, p.issuer, now)
		if err != nil || cl.ClientID != c.ID {
			w.WriteHeader(http.StatusOK) // RFC 7009 §2.2: invalid tokens are not an error
			return
		}
		if cl.SID == "" {
			writeTokenError(w, newErr(ErrUnsupportedTokenType, "client credentials access tokens expire on their own and cannot be revoked"))
			return
		}
		// A DPoP-bound token is revoked by the holder of its key: a copy of
		// the token alone (a public client needs no credential here) must
		// not be enough to end anyone's grant.
		if cl.Cnf != nil && cl.Cnf.JKT != "" {
			if e := p.revocationProof(r, cl.Cnf.JKT); e != nil {
				writeTokenError(w, e)
				return
			}
		}
		// A session that is gone or ended already is no error (RFC 7009
		// §2.2); neither is an event committed with the revocation that a
		// subscriber failed to take (logged by the session service).
		exp := time.Unix(cl.ExpiresAt, 0)
		if revoked, err := p.c.Sessions.AccessTokenRevoked(ctx, c.ID, cl.Subject, cl.SID, cl.JTI, exp); err != nil && !revoked && !errors.Is(err, store.ErrNotFound) {
			writeTokenError(w, serverError(err))
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	hash := p.c.TokenHasher.Sum(tok)
	rt, err := p.c.Store.GetRefreshToken(ctx, hash)
	if err != nil || rt.ClientID != c.ID {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			writeTokenError(w, serverError(err))
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	// The deletion and its token.revoked commit together; a token deleted
	// meanwhile (by a concurrent revocation, which recorded it) is no
	// error and records nothing more.
	ev := ri.Event(model.EventTokenRevoked)
	ev.Actor, ev.ClientID, ev.UserID, ev.SessionID, ev.Reason = c.ID, c.ID, rt.UserID, rt.SessionID, model.ReasonClientRevokedRefreshToken
	ectx := p.events.Pending(ctx, ev, nil)
	switch err := p.c.Store.DeleteRefreshToken(ectx, hash); {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		writeTokenError(w, serverError(err))
		return
	default:
		_ = p.events.Emit(ectx, ev)
	}
	w.WriteHeader(http.StatusOK)
}

// revocationProof checks that a request to revoke a DPoP-bound access
// token carries a DPoP proof for /revoke made with the token's key jkt.
func (p *Provider) revocationProof(r *http.Request, jkt string) *Error {
	h, e := proofHeader(r)
	if e != nil {
		return e
	}
	if h == "" {
		return newErr(ErrInvalidDPoPProof, "revoking a DPoP-bound access token needs a DPoP proof made with its key").WithReason("dpop_missing")
	}
	proof, e := p.checkProof(r, h, "")
	if e != nil {
		return e
	}
	if proof.JKT != jkt {
		return newErr(ErrInvalidDPoPProof, "the DPoP proof is not made with the key the access token is bound to").WithReason("dpop_key_mismatch")
	}
	return nil
}

// handleLogout implements RP-initiated logout (OIDC RP-Initiated Logout
// 1.0). Without a valid id_token_hint the user confirms with a form, so a
// third-party page cannot sign users out.
func (p *Provider) handleLogout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	if err := r.ParseForm(); err != nil {
		p.c.Pages.Error(w, http.StatusBadRequest, "Invalid request", "The sign-out request could not be read.", ri.CorrID)
		return
	}
	hint, clientID := r.Form.Get("id_token_hint"), r.Form.Get("client_id")
	postLogout, state := r.Form.Get("post_logout_redirect_uri"), r.Form.Get("state")
	hintedSID, clientID := p.logoutHint(hint, clientID)
	if postLogout != "" {
		c, err := p.client(ctx, clientID)
		if err != nil || !slices.Contains(c.PostLogoutRedirectURIs, postLogout) {
			p.c.Pages.Error(w, http.StatusBadRequest, "Sign-out request rejected", "post_logout_redirect_uri is not registered for this client.", ri.CorrID)
			return
		}
	}
	sid := p.browser.Session(r)
	confirmed := false
	if r.Method == http.MethodPost && r.PostForm.Get("confirm") == "yes" {
		_, confirmed = p.browser.CheckCSRF(r)
	}
	if sid != "" && hintedSID == sid {
		confirmed = true
	}
	if sid == "" {
		confirmed = true // nothing to end; go straight to the result
	}
	if !confirmed {
		hidden := map[string]string{}
		for k, v := range map[string]string{"client_id": clientID, "post_logout_redirect_uri": postLogout, "state": state} {
			if v != "" {
				hidden[k] = v
			}
		}
		p.c.Pages.Render(w, http.StatusOK, "logout.html", webLogout(p.browser.CSRFToken(w, r), hidden, false), browser.OriginOf(postLogout))
		return
	}
	if sid != "" {
		if ended, err := p.c.Sessions.Logout(ctx, sid, clientID); err != nil && !ended && !errors.Is(err, store.ErrNotFound) {
			p.c.Log.ErrorContext(ctx, "logout: ending the session failed", "correlation_id", ri.CorrID, "err", err)
			p.c.Pages.Error(w, http.StatusInternalServerError, "Sign-out failed", "Something went wrong on our side.", ri.CorrID)
			return
		}
	}
	p.browser.ClearSession(w)
	if postLogout != "" {
		http.Redirect(w, r, withState(postLogout, state), http.StatusSeeOther)
		return
	}
	p.c.Pages.Render(w, http.StatusOK, "logout.html", webLogout("", nil, true))
}

// logoutHint verifies an id_token_hint: it returns the session id of a
// valid hint Ward issued ("" otherwise) and the client the logout is for
// (the hint's audience when none was named; a hint for another client
// than the one named does not count).
func (p *Provider) logoutHint(hint, clientID string) (sid, client string) {
	var hinted tokens.IDClaims
	if hint == "" || p.c.Keys.Verify(hint, tokens.TypeIDToken, &hinted) != nil || hinted.Issuer != p.issuer || len(hinted.Audience) == 0 {
		return "", clientID
	}
	if clientID == "" {
		return hinted.SID, hinted.Audience[0]
	}
	if !slices.Contains([]string(hinted.Audience), clientID) {
		return "", clientID
	}
	return hinted.SID, clientID
}

// withState adds state to a post-logout redirect URI.
func withState(target, state string) string {
	if state == "" {
		return target
	}
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	return target + sep + "state=" + url.QueryEscape(state)
}

func webLogout(csrf string, hidden map[string]string, done bool) web.LogoutData {
	return web.LogoutData{CSRF: csrf, Action: PathLogout, Hidden: hidden, SignedOut: done}
}
