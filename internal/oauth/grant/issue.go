package grant

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/explain"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/oauth/protection"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
)

// decision is what a grant decided to issue.
type decision struct {
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
	// keyDevice is the registered device holding the proof's key when
	// the grant already read it (keyRead) with its own read: bind then
	// uses it instead of reading it again.
	keyDevice *model.Device
	keyRead   bool
}

// issuance is one token response in the making: the request, what the
// grant decided, and what each step of the pipeline adds.
type issuance struct {
	req     *Request
	d       decision
	evType  model.EventType
	prev    *model.RefreshToken // the refresh token being rotated; nil for other grants
	now     time.Time
	atScope string

	// bind
	protection, why string
	dev             *model.Device // the registered device holding the proof key
	// checkAccess
	ca *access.Result
	// mint
	claims *tokens.AccessClaims
	resp   *Response
	ev     *model.Event
	// rotate: the context carrying ev to the store write that commits it
	// with the refresh token (nil: ev is recorded on its own)
	evCtx context.Context
	// redeem, for a code grant, spends the code, stores the refresh token
	// (nil: none) and commits ctx's pending event in one store write;
	// redeemed is set once it was called.
	redeem   func(ctx context.Context, rt *model.RefreshToken) *oautherr.Error
	redeemed bool
}

// issue is the issuing pipeline: bind -> checkAccess -> mint -> rotate
// -> record. Each step may refuse; nothing is written before rotate, so
// a refusal by bind or checkAccess leaves every token as it was.
func (e *env) issue(ctx context.Context, req *Request, d decision, evType model.EventType, prev *model.RefreshToken) (*Response, *oautherr.Error) {
	resp, err, _ := e.issueWith(ctx, req, d, evType, prev, nil)
	return resp, err
}

// issueCode is issue for a one-time code: redeem (see issuance.redeem)
// is the write that stores what is issued, and redeemed reports whether
// the pipeline got as far as calling it (a refusal before it left the
// code unspent).
func (e *env) issueCode(ctx context.Context, req *Request, d decision, redeem func(context.Context, *model.RefreshToken) *oautherr.Error) (resp *Response, err *oautherr.Error, redeemed bool) {
	return e.issueWith(ctx, req, d, model.EventTokenIssued, nil, redeem)
}

func (e *env) issueWith(ctx context.Context, req *Request, d decision, evType model.EventType, prev *model.RefreshToken, redeem func(context.Context, *model.RefreshToken) *oautherr.Error) (*Response, *oautherr.Error, bool) {
	is := &issuance{req: req, d: d, evType: evType, prev: prev, now: e.Now(), atScope: d.atScope, redeem: redeem}
	if is.atScope == "" {
		is.atScope = d.scope
	}
	if err := e.pipeline(ctx, is); err != nil {
		return nil, attribute(err, req, is.credential()), is.redeemed
	}
	return is.resp, nil, is.redeemed
}

func (e *env) pipeline(ctx context.Context, is *issuance) *oautherr.Error {
	if err := e.bind(ctx, is); err != nil {
		return err
	}
	if err := e.checkAccess(ctx, is); err != nil {
		return err
	}
	if err := e.mint(is); err != nil {
		return err
	}
	if err := e.rotate(ctx, is); err != nil {
		return err
	}
	return e.record(ctx, is)
}

// credential is what the request presented, for a refusal's record: the
// session's user and session, the device of the proof key, and the
// refresh token's binding and generation.
func (is *issuance) credential() credential {
	var c credential
	if is.d.user != nil {
		c.userID, c.sessionID = is.d.user.ID, is.d.sess.ID
	}
	if is.dev != nil {
		c.deviceID = is.dev.ID
	}
	if p := is.prev; p != nil {
		c.boundJKT, c.gen = p.JKT, p.Generation
		if c.deviceID == "" {
			c.deviceID = p.DeviceID
		}
	}
	return c
}

// bind decides the token protection of the request (which registered
// device, if any, holds the proof key) and enforces the client's
// requirement of it.
func (e *env) bind(ctx context.Context, is *issuance) *oautherr.Error {
	var uid string
	if is.d.user != nil {
		uid = is.d.user.ID
	}
	status, why, dev, err := e.protection(ctx, is.req, is.d.user != nil || is.d.client.RequireProtectedSessions, uid, is.d.keyDevice, is.d.keyRead)
	if err != nil {
		return err
	}
	if err := requireProtection(is.d.client, status, why); err != nil {
		return err
	}
	is.protection, is.why, is.dev = status, why, dev
	return nil
}

// protection decides the token-protection status of a request: which
// device (if any) holds the proof key. A key of a disabled or lost device
// is refused outright: that device's sessions were revoked, and its key
// must not start new ones.
//
// Token protection is about user sessions: a client_credentials grant
// (lookup false) skips the device read on the hottest path, unless the
// client itself requires protected sessions. A device counts only for
// its own user (protection.DeviceOf). A device the grant read with its
// own read (read true; d nil when there is none) is not read again.
func (e *env) protection(ctx context.Context, req *Request, lookup bool, userID string, d *model.Device, read bool) (status, reason string, dev *model.Device, err *oautherr.Error) {
	if req.Proof == nil {
		return protection.Unbound, model.UnboundNoProof, nil, nil
	}
	if !lookup {
		return protection.UnregisteredKey, "no_user_session", nil, nil
	}
	if e.Devices == nil {
		return protection.UnregisteredKey, "device_registry_disabled", nil, nil
	}
	var lerr error
	switch {
	case !read:
		d, lerr = e.Devices.LookupByJKT(ctx, req.Proof.JKT)
	case d == nil:
		lerr = store.ErrNotFound
	}
	switch {
	case errors.Is(lerr, store.ErrNotFound):
		return protection.UnregisteredKey, "no_device_for_key", nil, nil
	case lerr != nil:
		return "", "", nil, oautherr.Server(lerr)
	case d.Status != model.DeviceActive:
		return "", "", d, deviceInactive(d)
	case !protection.DeviceOf(d, userID):
		return protection.UnregisteredKey, protection.ReasonDeviceOfAnotherUser, nil, nil
	}
	return protection.RegisteredDevice, "", d, nil
}

// requireProtection enforces a client's token-protection setting.
func requireProtection(c *model.Client, status, reason string) *oautherr.Error {
	if !c.RequireProtectedSessions || status == protection.RegisteredDevice {
		return nil
	}
	return oautherr.New(oautherr.InvalidGrant, "this application requires token protection: sign in from a registered device whose key signs the DPoP proof ("+reason+")").WithReason("token_protection_required")
}

// checkAccess applies Conditional Access, after the grant is otherwise
// valid and before anything is issued or rotated, and then the claims
// request parameter. The result's session controls shape what mint
// issues.
func (e *env) checkAccess(ctx context.Context, is *issuance) *oautherr.Error {
	ca, err := e.conditionalAccess(ctx, is)
	if err != nil {
		return err
	}
	is.ca = ca
	return checkClaims(is)
}

func (e *env) conditionalAccess(ctx context.Context, is *issuance) (*access.Result, *oautherr.Error) {
	if e.Access == nil {
		return nil, nil
	}
	d := is.d
	res, err := e.Access.Evaluate(ctx, access.Request{
		Flow: d.flow, User: d.user, Client: d.client, Device: is.dev, IP: is.req.Origin.IP,
		AuthTime: d.authTime, AMR: d.amr, TokenProtected: is.protection == protection.RegisteredDevice,
	})
	if err != nil {
		return nil, oautherr.Server(err) // fail closed
	}
	ref := " (reference " + is.req.Origin.CorrID + ")"
	var refused *oautherr.Error
	switch {
	case res.Outcome == policy.OutcomeBlock:
		refused = accessErr(d.flow, "access is blocked by a Conditional Access policy"+ref).WithReason("ca_block")
	case res.Outcome == policy.OutcomeAllowWithControls:
		refused = accessErr(d.flow, "Conditional Access requires "+explain.Controls(res.Controls)+"; sign in again to satisfy it"+ref).WithReason("ca_controls_unmet")
	case d.user != nil && d.flow != policy.FlowInteractive && res.Session.SignInFrequency > 0 && is.now.Sub(d.authTime) > res.Session.SignInFrequency:
		refused = accessErr(d.flow, "the sign-in is older than the Conditional Access sign-in frequency; sign in again"+ref).WithReason("ca_sign_in_frequency")
	}
	if refused != nil {
		refused.Data = map[string]string{}
		res.EventData(refused.Data)
		return nil, refused
	}
	return res, nil
}

// accessErr is the token error for a Conditional Access refusal: the
// device grant's access_denied (RFC 8628 §3.5), unauthorized_client for a
// client's own grant, invalid_grant for a user's code or refresh token.
func accessErr(flow, desc string) *oautherr.Error {
	switch flow {
	case policy.FlowDeviceCode:
		return oautherr.TokenAccessDenied(desc)
	case policy.FlowClientCredentials:
		return oautherr.New(oautherr.UnauthorizedClient, desc)
	}
	return oautherr.New(oautherr.InvalidGrant, desc)
}

// checkClaims applies the claims request parameter of a token request: a
// not-before time the new token cannot meet is invalid; an acr the session
// does not reach sends the client back to sign in (a resource's step-up
// challenge).
func checkClaims(is *issuance) *oautherr.Error {
	cr := is.req.Claims
	if cr == nil {
		return nil
	}
	if !cr.NotBeforeOK(is.now) {
		return oautherr.New(oautherr.InvalidRequest, "claims: the requested nbf is in the future").WithReason("claims_nbf_future")
	}
	if is.d.user != nil && !cr.ACRMet(is.d.acr) {
		return oautherr.New(oautherr.InvalidGrant, "claims: the session does not meet the requested acr; sign in again with the claims parameter").WithReason("claims_acr_unmet")
	}
	return nil
}

// mint signs the access token and, for an OpenID grant, the ID token, and
// prepares the response and its event.
func (e *env) mint(is *issuance) *oautherr.Error {
	ttl, cae := e.accessTTL(is)
	is.claims = e.accessClaims(is, ttl, cae)
	is.resp = &Response{TokenType: "Bearer", ExpiresIn: int(ttl / time.Second), Scope: is.atScope}
	if is.req.Proof != nil {
		is.resp.TokenType = "DPoP"
	}
	is.ev = tokenEvent(is, cae)
	at, err := e.Keys.MintAccessToken(is.claims)
	if err != nil {
		return oautherr.Server(err)
	}
	is.resp.AccessToken = at
	d := is.d
	if d.user == nil || !slices.Contains(strings.Fields(d.scope), "openid") {
		return nil
	}
	idc := &tokens.IDClaims{
		Issuer: e.Issuer, Subject: d.user.ID, Audience: tokens.Audience{d.client.ID}, IssuedAt: is.now.Unix(),
		ExpiresAt: is.now.Add(e.Lifetimes.IDToken).Unix(), AuthTime: d.authTime.Unix(), Nonce: d.nonce,
		ACR: d.acr, AMR: d.amr, AZP: d.client.ID, SID: d.sess.ID, AtHash: tokens.AtHash(at),
	}
	fillProfile(idc, d.user, d.scope)
	if is.resp.IDToken, err = e.Keys.MintIDToken(idc); err != nil {
		return oautherr.Server(err)
	}
	return nil
}

// accessTTL is the access token's lifetime: the client's or the default,
// long for a client that follows claims challenges (cae: resources revoke
// its tokens through continuous access evaluation), shortened by a
// Conditional Access session control, and a long-lived token does not
// outlive its session.
func (e *env) accessTTL(is *issuance) (ttl time.Duration, cae bool) {
	c := is.d.client
	ttl = e.Lifetimes.AccessToken
	if c.AccessTokenTTL > 0 {
		ttl = c.AccessTokenTTL
	}
	cae = c.CAECapable && is.req.Claims.WantsCAE()
	if cae && e.Lifetimes.CAEAccessToken > ttl {
		ttl = e.Lifetimes.CAEAccessToken
	}
	if ca := is.ca; ca != nil && ca.Session.AccessTokenLifetime > 0 && ca.Session.AccessTokenLifetime < ttl {
		ttl = ca.Session.AccessTokenLifetime
	}
	if sess := is.d.sess; cae && sess != nil && is.now.Add(ttl).After(sess.ExpiresAt) {
		ttl = max(sess.ExpiresAt.Sub(is.now), time.Second)
	}
	return ttl, cae
}

// accessClaims are the access token's claims (RFC 9068).
func (e *env) accessClaims(is *issuance, ttl time.Duration, cae bool) *tokens.AccessClaims {
	d, c := is.d, is.d.client
	aud := c.Audience
	if len(aud) == 0 {
		aud = []string{e.Issuer}
	} else if d.user != nil && slices.Contains(strings.Fields(is.atScope), "openid") && !slices.Contains(aud, e.Issuer) {
		// An OIDC token is also for Ward's own userinfo endpoint.
		aud = append(slices.Clone(aud), e.Issuer)
	}
	claims := &tokens.AccessClaims{
		Issuer: e.Issuer, Audience: tokens.Audience(aud), IssuedAt: is.now.Unix(), ExpiresAt: is.now.Add(ttl).Unix(),
		JTI: secret.RandomString(16), ClientID: c.ID, Scope: is.atScope, Subject: c.ID,
	}
	if cae {
		claims.Capabilities = []string{authz.CapabilityCAE}
	}
	if is.ca != nil && len(is.ca.AllowedRanges) > 0 && d.user != nil {
		claims.AllowedIPs = is.ca.AllowedRanges
	}
	if nb := is.req.Claims; nb != nil && nb.NotBefore >= claims.IssuedAt {
		// A resource revoked tokens issued up to nb.NotBefore (a second
		// resolution): a token minted in that same second must say it is
		// newer.
		claims.NotBefore = nb.NotBefore + 1
	}
	if d.user != nil {
		claims.Subject, claims.SID = d.user.ID, d.sess.ID
		claims.AuthTime, claims.AMR, claims.ACR = d.authTime.Unix(), d.amr, d.acr
	}
	if is.req.Proof != nil {
		claims.Cnf = &tokens.Confirmation{JKT: is.req.Proof.JKT}
	}
	if is.dev != nil {
		claims.DeviceID = is.dev.ID
	}
	return claims
}

// tokenEvent is the event of the issuance (recorded last).
func tokenEvent(is *issuance, cae bool) *model.Event {
	d, c := is.d, is.d.client
	ev := is.req.Origin.Event(is.evType)
	ev.Actor, ev.ClientID, ev.TokenID = c.ID, c.ID, is.claims.JTI
	ev.Data = map[string]string{activity.DataGrant: is.req.GrantType, "scope": is.atScope, "token_protection": is.protection}
	if len(is.claims.Audience) > 0 {
		// The audiences the token was issued for: a use elsewhere is a
		// token not as issued (docs/risk.md, anomalous token).
		ev.Data[activity.DataResource] = strings.Join(is.claims.Audience, " ")
	}
	if d.user != nil {
		ev.UserID, ev.SessionID, ev.Actor = d.user.ID, d.sess.ID, d.user.ID
		// How the session signed in: whether it performed a second factor.
		ev.Data[activity.DataAMR] = strings.Join(d.amr, " ")
	}
	if is.ca != nil {
		is.ca.EventData(ev.Data)
	}
	if cae {
		ev.Data["cae"] = "true"
	}
	if len(is.claims.AllowedIPs) > 0 {
		ev.Data["strict_location"] = "true"
	}
	if is.why != "" {
		ev.Data["token_protection_reason"] = is.why
	}
	if is.req.Proof != nil {
		ev.Binding = model.BindingDPoP
		ev.Data[activity.DataJKT] = is.req.Proof.JKT
	} else {
		ev.Binding, ev.BindingReason = model.BindingUnbound, model.UnboundNoProof
	}
	var bound string
	if p := is.prev; p != nil {
		bound = p.JKT
		if p.JKT != "" {
			ev.Data[activity.DataBoundJKT] = p.JKT
		}
		if p.Generation > 0 {
			ev.Data[activity.DataRTGenIn] = strconv.Itoa(p.Generation)
		}
	}
	ev.Data[activity.DataProof] = string(ProofStatus(is.req, bound))
	if is.dev != nil {
		ev.DeviceID = is.dev.ID
	}
	return ev
}

// ProofReplayed is the refusal of a request whose DPoP proof's jti was
// recorded before (by another instance, or before a restart), found when
// the jti was recorded with the request's event.
func ProofReplayed() *oautherr.Error {
	e := oautherr.New(oautherr.InvalidDPoPProof, "DPoP proof has already been used").WithReason("dpop_replay")
	e.Data = map[string]string{activity.DataProof: string(activity.ProofInvalid)}
	return e
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

// rotate stores the grant's refresh token: for user grants of clients
// allowed to refresh, rotating the one presented. A public client's
// refresh token must be bound to its DPoP key (RFC 9449 §5), so a public
// client without DPoP gets none.
func (e *env) rotate(ctx context.Context, is *issuance) *oautherr.Error {
	d, c := is.d, is.d.client
	if d.user == nil || !c.AllowsGrant(model.GrantRefreshToken) || (c.Public() && is.req.Proof == nil) {
		if is.prev != nil {
			// A refresh yields a new refresh token (the presented one is
			// used up), so one that may not is refused.
			return refreshInvalid("refresh_not_renewable")
		}
		if is.redeem != nil {
			// No refresh token: the code is spent with the event alone.
			return e.storeRefreshToken(ctx, is, nil)
		}
		return nil
	}
	raw := secret.RandomToken()
	next := &model.RefreshToken{
		Hash: e.TokenHasher.Sum(raw), SessionID: d.sess.ID, ClientID: c.ID, UserID: d.user.ID, Scope: d.scope,
		AuthTime: d.authTime, AMR: d.amr, ACR: d.acr, CreatedAt: is.now, ExpiresAt: is.now.Add(e.Lifetimes.RefreshToken),
		Generation: nextGeneration(is.prev),
	}
	if next.ExpiresAt.After(d.sess.ExpiresAt) {
		next.ExpiresAt = d.sess.ExpiresAt
	}
	switch {
	case is.dev != nil:
		// A protected session: bound to the registered device's key,
		// whatever the client type, so only that device can refresh it.
		next.JKT, next.DeviceID = is.req.Proof.JKT, is.dev.ID
	case c.Public():
		next.JKT = is.req.Proof.JKT
	case is.prev != nil:
		next.JKT = is.prev.JKT
	}
	// The event is complete before the write that commits it.
	if next.JKT != "" {
		is.ev.Data["refresh_bound"] = "true"
	}
	if next.Generation > 0 {
		is.ev.Data[activity.DataRTGenOut] = strconv.Itoa(next.Generation)
	}
	if err := e.storeRefreshToken(ctx, is, next); err != nil {
		return err
	}
	is.resp.RefreshToken = raw
	return nil
}

// nextGeneration is the generation of the refresh token that follows
// prev: 1 for the first of a grant, prev's + 1 after it, and 0 (unknown)
// after a token stored before generations were recorded.
func nextGeneration(prev *model.RefreshToken) int {
	switch {
	case prev == nil:
		return 1
	case prev.Generation > 0:
		return prev.Generation + 1
	}
	return 0
}

// storeRefreshToken creates next (nil: none, for a code grant), or
// rotates the presented token into it, or spends the presented code
// (issuance.redeem) and stores next, in one store operation that also commits the issuance's event
// (token.issued, token.refreshed): the refresh token and its audit record
// are stored together or not at all, so a failure between the two (a
// database cut, a refused insert) cannot leave a usable token, or a used
// one, that the audit log does not show. A token rotated by a concurrent
// request since it was read is reuse, one gone since (its session was
// revoked meanwhile) is unknown, as it would be if read now; neither
// records the issuance's event.
func (e *env) storeRefreshToken(ctx context.Context, is *issuance, next *model.RefreshToken) *oautherr.Error {
	is.evCtx = e.Events.Pending(ctx, is.ev, nil)
	if is.redeem != nil {
		is.redeemed = true
		return is.redeem(is.evCtx, next)
	}
	if is.prev == nil {
		if err := e.Store.CreateRefreshToken(is.evCtx, next); err != nil {
			return oautherr.Server(err)
		}
		return nil
	}
	old, err := e.Store.RotateRefreshToken(is.evCtx, is.prev.Hash, is.now, next)
	switch {
	case errors.Is(err, store.ErrAlreadyUsed):
		if old == nil {
			old = is.prev
		}
		return e.refreshReused(ctx, is.req, old)
	case errors.Is(err, store.ErrNotFound):
		return e.refreshUnknown(ctx, is.req)
	case err != nil:
		return oautherr.Server(err)
	}
	return nil
}

// record touches the session (its idle lifetime is counted in hours:
// touching it at most once a minute saves a database write on almost
// every refresh) and records the issuance: it publishes the event, which
// the audit persister appends unless rotate's write committed it already.
// Once that write committed the refresh token and its event, a subscriber
// that fails does not fail the response: the token the client would lose
// is the only live one of its grant.
func (e *env) record(ctx context.Context, is *issuance) *oautherr.Error {
	if s := is.d.sess; s != nil && is.now.Sub(s.LastSeen) >= time.Minute {
		_ = e.Store.TouchSession(ctx, s.ID, is.now)
	}
	ectx := ctx
	if is.evCtx != nil {
		ectx = is.evCtx
	} else if key, exp, ok := store.DeferredJTIOf(ctx).Take(); ok {
		// The proof's jti waited for this event (store.DeferredJTI): both
		// commit in one write, or neither for a replayed proof, which is
		// refused with nothing issued.
		ectx = e.Events.Pending(ctx, is.ev, nil)
		if err := e.Store.RecordJTI(ectx, key, exp); errors.Is(err, store.ErrReplay) {
			return ProofReplayed()
		} else if err != nil {
			return oautherr.Server(err)
		}
	}
	if err := e.Events.Emit(ectx, is.ev); err != nil {
		if store.EventStored(ectx, is.ev) {
			e.Log.ErrorContext(ctx, "token event committed, but a subscriber failed", "type", string(is.ev.Type),
				"event_id", is.ev.ID, "correlation_id", is.req.Origin.CorrID, "err", err)
			return nil
		}
		return oautherr.Server(err)
	}
	return nil
}
