package grant

import (
	"context"
	"errors"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
)

const (
	// DeviceInterval is the minimum polling interval given to clients;
	// each slow_down adds deviceSlowDown to the stored interval (RFC 8628
	// §3.5).
	DeviceInterval = 5 * time.Second
	deviceSlowDown = 5 * time.Second
)

// deviceCode is the device access token request (RFC 8628 §3.4, §3.5).
// A poll's state changes atomically in one store update (the poll time
// and interval while pending); the redemption of an approved request
// commits with what it issues (RedeemDeviceCode).
type deviceCode struct{ *env }

func (g deviceCode) Grant(ctx context.Context, req *Request) (*Response, *oautherr.Error) {
	c := req.Client
	if !c.AllowsGrant(model.GrantDeviceCode) {
		return nil, oautherr.New(oautherr.UnauthorizedClient, "client may not use the device authorization grant")
	}
	raw := req.Get("device_code")
	if raw == "" {
		return nil, oautherr.New(oautherr.InvalidRequest, "device_code is required")
	}
	now := g.Now()
	// pollErr is the answer to a poll that is saved (pending, slow_down);
	// errors returned from the update leave the request untouched.
	var pollErr *oautherr.Error
	var found credential // the approval's user, for a refusal's record
	dc, err := g.Store.UpdateDeviceCode(ctx, g.TokenHasher.Sum(raw), func(d *model.DeviceCode) error {
		found = credential{userID: d.UserID, sessionID: d.SessionID, boundJKT: d.DPoPJKT}
		var e *oautherr.Error
		pollErr, e = redeemDeviceCode(d, req, now)
		if e != nil {
			return e
		}
		return nil
	})
	var e *oautherr.Error
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, deviceCodeInvalid("device_code_unknown")
	case errors.As(err, &e):
		return nil, attribute(e, req, found)
	case err != nil:
		return nil, oautherr.Server(err)
	case pollErr != nil:
		return nil, pollErr
	}
	// Approved and checked, but not yet spent: the request is used up by
	// the write that commits what it yields, the refresh token and
	// token.issued together (redeem), or a refusal's audit event
	// (spendOnRefusal). Of concurrent polls that got here, one redeems;
	// the others find it used.
	hash := dc.Hash
	redeem := func(evCtx context.Context, rt *model.RefreshToken) *oautherr.Error {
		_, err := g.Store.RedeemDeviceCode(evCtx, hash, now, rt)
		switch {
		case errors.Is(err, store.ErrAlreadyUsed):
			return deviceCodeInvalid("device_code_reused")
		case errors.Is(err, store.ErrNotFound):
			return deviceCodeInvalid("device_code_unknown")
		case err != nil:
			return oautherr.Server(err)
		}
		return nil
	}
	sess, u, e := LiveSession(ctx, g.Store, now, dc.SessionID, dc.UserID)
	if e != nil {
		return nil, g.spendOnRefusal(e, hash, now)
	}
	d := decision{flow: policy.FlowDeviceCode, client: c, user: u, sess: sess, scope: dc.Scope, authTime: dc.AuthTime, amr: dc.AMR, acr: dc.ACR}
	resp, e, redeemed := g.issueCode(ctx, req, d, redeem)
	if e != nil && !redeemed {
		e = g.spendOnRefusal(e, hash, now)
	}
	return resp, e
}

// spendOnRefusal is authorizationCode.spendOnRefusal for an approved
// device request: refused after approval (Conditional Access, an ended
// session), it is used up with the refusal's record.
func (g deviceCode) spendOnRefusal(e *oautherr.Error, hash []byte, now time.Time) *oautherr.Error {
	if e.Code == oautherr.ServerError {
		return e
	}
	e.Commit = func(ctx context.Context) error {
		_, err := g.Store.RedeemDeviceCode(ctx, hash, now, nil)
		return err
	}
	return e
}

func deviceCodeInvalid(reason string) *oautherr.Error {
	return oautherr.New(oautherr.InvalidGrant, "device_code is invalid").WithReason(reason)
}

// redeemDeviceCode applies one poll to the stored request d (inside the
// store's update). A pending request records the poll and answers with
// poll (authorization_pending or slow_down), saved; an approved one is
// used up; refused is the answer to a request that cannot be redeemed,
// which leaves it untouched.
func redeemDeviceCode(d *model.DeviceCode, req *Request, now time.Time) (poll, refused *oautherr.Error) {
	switch {
	case d.ClientID != req.Client.ID:
		return nil, deviceCodeInvalid("device_code_client_mismatch")
	case !d.UsedAt.IsZero():
		return nil, deviceCodeInvalid("device_code_reused")
	case !now.Before(d.ExpiresAt):
		return nil, oautherr.New(oautherr.ExpiredToken, "device_code has expired").WithReason("device_code_expired")
	}
	switch d.Status {
	case model.DeviceCodePending:
		interval := d.Interval
		if interval <= 0 {
			interval = DeviceInterval
		}
		if !d.LastPoll.IsZero() && now.Sub(d.LastPoll) < interval {
			d.Interval = interval + deviceSlowDown
			poll = oautherr.New(oautherr.SlowDown, "polling too fast; wait at least the interval, now increased by 5 seconds").WithReason("device_slow_down")
		} else {
			poll = oautherr.New(oautherr.AuthorizationPending, "the user has not yet approved the request")
		}
		d.LastPoll = now
		return poll, nil
	case model.DeviceCodeDenied:
		// A token error response (RFC 8628 §3.5). Conditional Access may
		// have denied it at approval: the device is told why.
		if d.DenyReason != "" {
			return nil, oautherr.TokenAccessDenied(d.DenyDescription).WithReason(d.DenyReason)
		}
		return nil, oautherr.TokenAccessDenied("the user denied the request").WithReason("device_denied")
	case model.DeviceCodeApproved:
		if d.DPoPJKT != "" && req.jkt() != d.DPoPJKT {
			// Not used up: whoever holds the right key may still redeem it.
			return nil, oautherr.New(oautherr.InvalidGrant, "DPoP key does not match the key of the device authorization request").WithReason("dpop_jkt_mismatch")
		}
		// Used up by the write that commits the issuance (RedeemDeviceCode).
		return nil, nil
	default:
		return nil, oautherr.Server(errors.New("device code in unknown state " + d.Status))
	}
}
