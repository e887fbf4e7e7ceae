package oauth

import (
	"context"
	"errors"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// DeviceLookup finds the registered device a DPoP key belongs to
// (store.ErrNotFound when none does). The device service implements it.
type DeviceLookup interface {
	LookupByJKT(ctx context.Context, jkt string) (*model.Device, error)
}

// Token-protection status of a token request, recorded on every token
// event (Data "token_protection") with a reason when not protected.
const (
	ProtectionRegisteredDevice = "registered_device" // bound to the key of a registered, active device
	ProtectionUnregisteredKey  = "unregistered_key"  // bound to a key no registered device holds
	ProtectionUnbound          = "unbound"           // no DPoP proof: a bearer token
)

// protection decides the token-protection status of a request: which
// device (if any) holds the proof key. A key of a disabled or lost device
// is refused outright: that device's sessions were revoked, and its key
// must not start new ones.
//
// Token protection is about user sessions: a client_credentials grant
// (lookup false) skips the device read on the hottest path, unless the
// client itself requires protected sessions.
//
// A device counts only for its own user: the key of alice's device in a
// session of bob's (bob approved a device code that alice's machine, or an
// attacker's registered device, started: device-code phishing) is just a
// key, not a registered device, so it satisfies no device requirement
// and puts no device id in bob's tokens.
func (p *Provider) protection(ctx context.Context, tr *tokenRequest, lookup bool, userID string) (status, reason string, dev *model.Device, e *Error) {
	if tr.proof == nil {
		return ProtectionUnbound, model.UnboundNoProof, nil, nil
	}
	if !lookup {
		return ProtectionUnregisteredKey, "no_user_session", nil, nil
	}
	if p.c.Devices == nil {
		return ProtectionUnregisteredKey, "device_registry_disabled", nil, nil
	}
	d, err := p.c.Devices.LookupByJKT(ctx, tr.proof.JKT)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ProtectionUnregisteredKey, "no_device_for_key", nil, nil
	case err != nil:
		return "", "", nil, serverError(err)
	case d.Status != model.DeviceActive:
		return "", "", d, newErr(ErrInvalidGrant, "the device this key belongs to is "+d.Status+"; it can no longer obtain tokens").withReason("device_" + d.Status)
	case !deviceOf(d, userID):
		return ProtectionUnregisteredKey, ReasonDeviceOfAnotherUser, nil, nil
	}
	return ProtectionRegisteredDevice, "", d, nil
}

// ReasonDeviceOfAnotherUser is why a registered device's key did not
// protect a session of another user.
const ReasonDeviceOfAnotherUser = "device_of_another_user"

// deviceOf reports whether d may count as userID's device: a device of
// that user, or no user to compare (a client's own session).
func deviceOf(d *model.Device, userID string) bool {
	return d == nil || userID == "" || d.UserID == "" || d.UserID == userID
}

// requireProtection enforces a client's token-protection setting.
func requireProtection(c *model.Client, status, reason string) *Error {
	if !c.RequireProtectedSessions || status == ProtectionRegisteredDevice {
		return nil
	}
	return newErr(ErrInvalidGrant, "this application requires token protection: sign in from a registered device whose key signs the DPoP proof ("+reason+")").withReason("token_protection_required")
}

// deviceEnded explains a refused refresh to the device itself: when the
// request's DPoP key belongs to a disabled or lost device, the session
// ended because of that, and the device (which just proved it holds the
// key) is told so instead of "invalid or expired", so that its agent does
// not ask the user to sign in again in vain. Only refused refreshes pay
// for the lookup.
func (p *Provider) deviceEnded(ctx context.Context, tr *tokenRequest) *Error {
	if tr.proof == nil || p.c.Devices == nil {
		return nil
	}
	d, err := p.c.Devices.LookupByJKT(ctx, tr.proof.JKT)
	if err != nil || d.Status == model.DeviceActive {
		return nil
	}
	return newErr(ErrInvalidGrant, "the device this key belongs to is "+d.Status+"; it can no longer obtain tokens").withReason("device_" + d.Status)
}
