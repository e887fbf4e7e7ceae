package grant

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"regexp"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
)

var pkceVerifierRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`) // RFC 7636 §4.1

// authorizationCode redeems a code (RFC 6749 §4.1.3, RFC 7636 §4.6,
// RFC 9449 §10).
type authorizationCode struct{ *env }

func (g authorizationCode) Grant(ctx context.Context, req *Request) (*Response, *oautherr.Error) {
	resp, ac, e := g.grant(ctx, req)
	if e != nil && ac != nil {
		// The code was found: the refusal names its session and the key
		// the authorization request committed to.
		attribute(e, req, credential{userID: ac.UserID, sessionID: ac.SessionID, boundJKT: ac.DPoPJKT})
	}
	return resp, e
}

// grant answers the request; ac is the code presented when Ward found it.
func (g authorizationCode) grant(ctx context.Context, req *Request) (*Response, *model.AuthCode, *oautherr.Error) {
	c := req.Client
	if !c.AllowsGrant(model.GrantAuthorizationCode) {
		return nil, nil, oautherr.New(oautherr.UnauthorizedClient, "client may not use the authorization code grant")
	}
	code, verifier, redirectURI := req.Get("code"), req.Get("code_verifier"), req.Get("redirect_uri")
	if code == "" || redirectURI == "" {
		return nil, nil, oautherr.New(oautherr.InvalidRequest, "code and redirect_uri are required")
	}
	if verifier == "" {
		return nil, nil, oautherr.New(oautherr.InvalidRequest, "code_verifier is required (PKCE)").WithReason("pkce_missing")
	}
	now := g.Now()
	hash := g.TokenHasher.Sum(code)
	// The request is checked against the code before the code is used:
	// someone who only saw a public client's code must not be able to
	// burn it with a wrong verifier (and make the legitimate redemption
	// look like a theft). Reuse is theft only after a redemption that
	// passed every check.
	ac, err := g.Store.GetAuthCode(ctx, hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, codeInvalid("code_unknown")
	case err != nil:
		return nil, nil, oautherr.Server(err)
	case !ac.UsedAt.IsZero() && refusedRetry(req, ac, redirectURI, verifier):
		return nil, ac, codeInvalid("code_refused_before")
	case !ac.UsedAt.IsZero():
		return nil, ac, g.codeReused(ctx, req, ac)
	}
	if e := checkCode(req, ac, now, redirectURI, verifier); e != nil {
		return nil, ac, e
	}
	// The code is spent by the write that commits what it yields: the
	// refresh token and token.issued together (redeem, in the issuing
	// pipeline), or a refusal's audit event (spend, called by the
	// endpoint with that event). A concurrent redemption that passed the
	// same checks finds it used there, as reuse.
	redeem := func(evCtx context.Context, rt *model.RefreshToken) *oautherr.Error {
		used, err := g.Store.RedeemAuthCode(evCtx, hash, now, rt)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return codeInvalid("code_unknown")
		case errors.Is(err, store.ErrAlreadyUsed):
			if used == nil {
				used = ac
			}
			if refusedRetry(req, used, redirectURI, verifier) {
				return codeInvalid("code_refused_before")
			}
			return g.codeReused(ctx, req, used)
		case err != nil:
			return oautherr.Server(err)
		}
		return nil
	}
	sess, u, e := LiveSession(ctx, g.Store, now, ac.SessionID, ac.UserID)
	if e != nil {
		return nil, ac, g.spendOnRefusal(e, req, hash, now)
	}
	d := decision{flow: policy.FlowInteractive, client: c, user: u, sess: sess, scope: ac.Scope, authTime: ac.AuthTime, amr: ac.AMR, acr: ac.ACR, nonce: ac.Nonce}
	resp, e, redeemed := g.issueCode(ctx, req, d, redeem)
	if e != nil && !redeemed {
		e = g.spendOnRefusal(e, req, hash, now)
	}
	return resp, ac, e
}

// spendOnRefusal makes refusal e of a code that passed checkCode spend
// the code with the refusal's audit event (oautherr.Error.Commit): a
// refused code (Conditional Access, an ended session, token protection)
// cannot be presented again for another try. A server error spends
// nothing: nothing was issued, and the client may retry.
func (g authorizationCode) spendOnRefusal(e *oautherr.Error, req *Request, hash []byte, now time.Time) *oautherr.Error {
	if e.Code == oautherr.ServerError {
		return e
	}
	jkt := req.jkt()
	e.Commit = func(ctx context.Context) error {
		_, err := g.Store.RefuseAuthCode(ctx, hash, now, jkt)
		return err
	}
	return e
}

// refusedRetry reports whether a code presented after it was used is the
// retry of a refused redemption by the client that made it (a lost
// response, a reloaded callback page): the code was spent by a refusal,
// which issued nothing, and this request passes every check of the code
// with the DPoP key of the refused one. Such a retry is refused again
// (code_refused_before) but is not a reuse: there is nothing to revoke,
// and a reuse would make the risk response end the user's sessions.
// Without a DPoP key on both requests nothing tells the client from a
// thief holding its code, so it stays a reuse.
// The code's checks are made as of the refusal (UsedAt), so a retry after
// the code's short lifetime is still recognised.
func refusedRetry(req *Request, ac *model.AuthCode, redirectURI, verifier string) bool {
	return ac.Refused && ac.RefusedJKT != "" && req.jkt() == ac.RefusedJKT &&
		checkCode(req, ac, ac.UsedAt, redirectURI, verifier) == nil
}

// codeInvalid is the answer to a code that cannot be redeemed: the same
// to the client whatever the reason, which only the audit log has.
func codeInvalid(reason string) *oautherr.Error {
	return oautherr.New(oautherr.InvalidGrant, "code is invalid or expired").WithReason(reason)
}

// checkCode checks a token request against the authorization code it
// presents: the same client, unexpired, the same redirect URI, the PKCE
// verifier, and the DPoP key the authorization request named.
func checkCode(req *Request, ac *model.AuthCode, now time.Time, redirectURI, verifier string) *oautherr.Error {
	if ac.ClientID != req.Client.ID {
		return codeInvalid("code_client_mismatch")
	}
	if !now.Before(ac.ExpiresAt) {
		return codeInvalid("code_expired")
	}
	if redirectURI != ac.RedirectURI {
		return oautherr.New(oautherr.InvalidGrant, "redirect_uri does not match the authorization request").WithReason("redirect_uri_mismatch")
	}
	if !pkceVerifierRE.MatchString(verifier) {
		return oautherr.New(oautherr.InvalidGrant, "code_verifier is malformed").WithReason("pkce_malformed")
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(ac.CodeChallenge)) != 1 {
		return oautherr.New(oautherr.InvalidGrant, "code_verifier does not match code_challenge").WithReason("pkce_mismatch")
	}
	if ac.DPoPJKT != "" && req.jkt() != ac.DPoPJKT {
		// Generic to the client: a thief learns nothing of the binding.
		return codeInvalid("dpop_jkt_mismatch")
	}
	return nil
}

// codeReused answers a code presented after a successful redemption: RFC
// 6749 §4.1.2, the session it issued is revoked. The answer is
// invalid_grant whatever the revocation does; its failure is logged.
func (g authorizationCode) codeReused(ctx context.Context, req *Request, ac *model.AuthCode) *oautherr.Error {
	if ac != nil && ac.ClientID == req.Client.ID {
		if revoked, err := g.Sessions.CodeReused(ctx, req.Client.ID, ac); err != nil && !revoked && !errors.Is(err, store.ErrNotFound) {
			g.Log.ErrorContext(ctx, "code reuse: revoking the session failed", "correlation_id", req.Origin.CorrID,
				"client_id", req.Client.ID, "session_id", ac.SessionID, "err", err)
		}
	}
	return codeInvalid("code_reused")
}
