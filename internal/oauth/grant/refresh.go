package grant

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
)

// refreshToken rotates a refresh token (RFC 6749 §6, RFC 9700 §4.14.2,
// RFC 9449 §5).
type refreshToken struct{ *env }

func (g refreshToken) Grant(ctx context.Context, req *Request) (*Response, *oautherr.Error) {
	resp, rt, e := g.grant(ctx, req)
	if e != nil && rt != nil {
		// The token was found: the refusal names its session.
		attribute(e, req, refreshCredential(rt))
	}
	return resp, e
}

// grant answers the request; rt is the refresh token presented when Ward
// found it (for the refusal's record).
func (g refreshToken) grant(ctx context.Context, req *Request) (*Response, *model.RefreshToken, *oautherr.Error) {
	c := req.Client
	if !c.AllowsGrant(model.GrantRefreshToken) {
		return nil, nil, oautherr.New(oautherr.UnauthorizedClient, "client may not use the refresh token grant")
	}
	raw := req.Get("refresh_token")
	if raw == "" {
		return nil, nil, oautherr.New(oautherr.InvalidRequest, "refresh_token is required")
	}
	now := g.Now()
	// One read for the token, its session, its user and the device
	// holding the proof's key (token protection, bind).
	var jkt string
	if g.Devices != nil {
		jkt = req.jkt()
	}
	rg, err := g.Store.GetRefreshGrant(ctx, g.TokenHasher.Sum(raw), jkt)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, g.refreshUnknown(ctx, req)
	} else if err != nil {
		return nil, nil, oautherr.Server(err)
	}
	rt := rg.Token
	if rt.ClientID != c.ID {
		return nil, rt, refreshInvalid("refresh_client_mismatch")
	}
	if !rt.RotatedAt.IsZero() {
		return nil, rt, g.refreshReused(ctx, req, rt)
	}
	if !now.Before(rt.ExpiresAt) {
		return nil, rt, refreshInvalid("refresh_expired")
	}
	if rt.JKT != "" && req.jkt() != rt.JKT {
		// Generic to the client: "bound to another key" would tell a
		// thief the stolen token is live. The audit log has the reason.
		return nil, rt, refreshInvalid("refresh_key_mismatch")
	}
	scope := rt.Scope
	if s := req.Get("scope"); s != "" {
		narrowed, ok := subsetScope(s, rt.Scope)
		if !ok {
			return nil, rt, oautherr.New(oautherr.InvalidScope, "requested scope exceeds the original grant")
		}
		scope = narrowed
	}
	if e := checkLive(rg.Session, rg.User, now); e != nil {
		if de := g.deviceEnded(ctx, req); de != nil {
			return nil, rt, de
		}
		return nil, rt, e
	}
	d := decision{flow: policy.FlowRefresh, client: c, user: rg.User, sess: rg.Session, scope: rt.Scope, atScope: scope, authTime: rt.AuthTime, amr: rt.AMR, acr: rt.ACR,
		keyDevice: rg.Device, keyRead: jkt != ""}
	resp, e := g.issue(ctx, req, d, model.EventTokenRefreshed, rt)
	return resp, rt, e
}

// refreshInvalid is the answer to a refresh token that cannot be used:
// the same to the client whatever the reason, which only the audit log
// has.
func refreshInvalid(reason string) *oautherr.Error {
	return oautherr.New(oautherr.InvalidGrant, "refresh token is invalid or expired").WithReason(reason)
}

// refreshReused handles presentation of an already-rotated refresh token:
// the whole session is revoked and the theft signal recorded, once per
// session however many requests present the token (session.Service). The
// answer is invalid_grant whatever the revocation does; its failure is
// logged.
func (e *env) refreshReused(ctx context.Context, req *Request, rt *model.RefreshToken) *oautherr.Error {
	if revoked, err := e.Sessions.RefreshTokenReused(ctx, req.Client.ID, rt, req.jkt()); err != nil && !revoked && !errors.Is(err, store.ErrNotFound) {
		e.Log.ErrorContext(ctx, "refresh token reuse: revoking the session failed", "correlation_id", req.Origin.CorrID,
			"client_id", req.Client.ID, "session_id", rt.SessionID, "err", err)
	}
	return refreshInvalid("refresh_reused")
}

// refreshUnknown is the answer to a refresh token Ward does not know (any
// more): the device-ended error when the request comes from a device whose
// sessions ended, invalid_grant otherwise.
func (e *env) refreshUnknown(ctx context.Context, req *Request) *oautherr.Error {
	if de := e.deviceEnded(ctx, req); de != nil {
		return de
	}
	return refreshInvalid("refresh_unknown")
}

// deviceEnded explains a refused refresh to the device itself: when the
// request's DPoP key belongs to a disabled or lost device, the session
// ended because of that, and the device (which just proved it holds the
// key) is told so instead of "invalid or expired", so that its agent does
// not ask the user to sign in again in vain. Only refused refreshes pay
// for the lookup.
func (e *env) deviceEnded(ctx context.Context, req *Request) *oautherr.Error {
	if req.Proof == nil || e.Devices == nil {
		return nil
	}
	d, err := e.Devices.LookupByJKT(ctx, req.Proof.JKT)
	if err != nil || d.Status == model.DeviceActive {
		return nil
	}
	return deviceInactive(d)
}

// deviceInactive refuses the key of a disabled or lost device.
func deviceInactive(d *model.Device) *oautherr.Error {
	return oautherr.New(oautherr.InvalidGrant, "the device this key belongs to is "+d.Status+"; it can no longer obtain tokens").WithReason("device_" + d.Status)
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
