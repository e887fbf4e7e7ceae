package cae

import "testing"

// The CAEP credential_type of each second-factor method Ward records in
// mfa.enrolled / mfa.removed (passkeys: platform; security keys: roaming).
func TestCredentialType(t *testing.T) {
	for method, want := range map[string]string{"totp": "app", "": "app", "passkey": "fido2-platform", "security_key": "fido2-roaming"} {
		if got := credentialType(method); got != want {
			t.Errorf("credentialType(%q) = %q, want %q", method, got, want)
		}
	}
}
