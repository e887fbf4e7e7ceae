// Package protection is token protection as the token endpoint and the
// sign-in pages both see it: the status a request's tokens get (bound to
// a registered device's key, to some other key, or not bound) and the
// one rule for whether a registered device counts for a user.
package protection

import "github.com/ward-idp/ward/internal/model"

// Token-protection status of a token request, recorded on every token
// and sign-in event (Data "token_protection") with a reason when not
// protected.
const (
	RegisteredDevice = "registered_device" // bound to the key of a registered, active device
	UnregisteredKey  = "unregistered_key"  // bound to a key no registered device holds
	Unbound          = "unbound"           // no DPoP proof: a bearer token
)

// ReasonDeviceOfAnotherUser is why a registered device's key did not
// protect a session of another user.
const ReasonDeviceOfAnotherUser = "device_of_another_user"

// DeviceOf reports whether d may count as userID's device: a device of
// that user, or no user to compare (a client's own session).
//
// A device counts only for its own user: the key of alice's device in a
// session of bob's (bob approved a device code that alice's machine, or an
// attacker's registered device, started: device-code phishing) is just a
// key, not a registered device, so it satisfies no device requirement
// and puts no device id in bob's tokens.
func DeviceOf(d *model.Device, userID string) bool {
	return d == nil || userID == "" || d.UserID == "" || d.UserID == userID
}
