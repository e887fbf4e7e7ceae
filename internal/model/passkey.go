package model

import "time"

// WebAuthnCredential is one WebAuthn public key credential of a user: a
// passkey (a discoverable credential, usable without a username) or a
// security key used as a second factor. Only the public key is stored.
type WebAuthnCredential struct {
	// ID is Ward's id of the credential (what the user, the CLI and the
	// admin API name it by); CredentialID is the authenticator's id.
	ID           string
	UserID       string
	CredentialID []byte
	Name         string
	// PublicKey is the COSE_Key from the attested credential data.
	PublicKey []byte
	// AAGUID identifies the authenticator model (16 bytes; all zero when
	// the authenticator does not say, as with attestation "none").
	AAGUID []byte
	// SignCount is the last signature counter seen (0: the authenticator
	// does not keep one, as synced passkeys do not).
	SignCount uint32
	// Transports as reported at registration (usb, nfc, ble, internal,
	// hybrid).
	Transports []string
	// Attachment is platform or cross-platform ("" when not reported).
	Attachment        string
	AttestationFormat string // none, packed, tpm, ...
	AttestationType   string // none, self, basic_full, attca, ...
	// Discoverable: registered as a passkey (resident key), so it signs
	// in without a username.
	Discoverable bool
	// BackupEligible and BackupState are the BE and BS flags: the key may
	// be (and is) synced to other devices of the user.
	BackupEligible bool
	BackupState    bool
	CreatedAt      time.Time
	LastUsedAt     time.Time
}

// WebAuthnChallenge is one WebAuthn ceremony begun by the server: the
// challenge and options it sent, kept server-side until the browser's
// answer takes it (once) or it expires.
type WebAuthnChallenge struct {
	ID      string // random handle the page carries (not the challenge)
	Purpose string // register, login (passkey sign-in), mfa (second factor)
	UserID  string // "" for a usernameless passkey sign-in
	// Session is the ceremony's state (the library's SessionData as JSON:
	// challenge, rp id, allowed credentials, user verification).
	Session   []byte
	CreatedAt time.Time
	ExpiresAt time.Time
}
