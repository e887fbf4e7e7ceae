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
func (p *Provider) protection(ctx context.Context, tr *tokenRequest, lookup bool) (status, reason string, dev *model.Device, e *Error) {
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
	}
	return ProtectionRegisteredDevice, "", d, nil
}

// requireProtection enforces a client's token-protection setting.
func requireProtection(c *model.Client, status, reason string) *Error {
	if !c.RequireProtectedSessions || status == ProtectionRegisteredDevice {
		return nil
	}
	return newErr(ErrInvalidGrant, "this application requires token protection: sign in from a registered device whose key signs the DPoP proof ("+reason+")").withReason("token_protection_required")
}
