package model

import (
	"encoding/json"
	"time"
)

// Device trust types.
const (
	TrustRegistered = "registered" // registered by its user
	TrustManaged    = "managed"    // registered and managed by the organisation
)

// ScopeDevice is the scope a user's access token needs to register a
// device (POST /devices): an administrator grants it to the device agent's
// client only, so that no other application the user signs in to can
// register its own key as the user's device.
const ScopeDevice = "ward:device"

// Device statuses.
const (
	DeviceActive   = "active"
	DeviceDisabled = "disabled"
	DeviceLost     = "lost"
)

// Compliance states.
const (
	Compliant         = "compliant"
	NonCompliant      = "noncompliant"
	ComplianceUnknown = "unknown"
)

// Device is a registered device. Its key (the one that signs its DPoP
// proofs and posture reports) is identified by the RFC 7638 thumbprint JKT,
// unique across all devices.
type Device struct {
	ID         string
	UserID     string
	JKT        string
	PublicJWK  json.RawMessage
	KeyStorage string // "file", "tpm" (as the agent reported it)
	// KeyAttested: Ward verified that the key was created in a TPM and
	// cannot leave it (TPM 2.0 key attestation). Without it KeyStorage is
	// only the agent's claim, and nothing may rely on it.
	KeyAttested bool
	// KeyAttestation is what the attestation established (JSON: method,
	// time, the TPM's endorsement key and whether it chains to a trusted
	// vendor); empty when the key is not attested.
	KeyAttestation json.RawMessage
	Platform       string // linux, darwin, windows
	OSName         string
	OSVersion      string
	Hostname       string
	AgentVersion   string
	TrustType      string
	Status         string
	// Compliance is the latest evaluation; ComplianceFailures names every
	// failing rule (JSON list of {rule, detail}).
	Compliance         string
	ComplianceFailures json.RawMessage
	ComplianceAt       time.Time
	// Posture is the latest verified posture report's content (JSON), with
	// the time it was collected.
	Posture   json.RawMessage
	PostureAt time.Time
	CreatedAt time.Time
	LastSeen  time.Time
	UpdatedAt time.Time
}

// Device authorization (RFC 8628) request states.
const (
	DeviceCodePending  = "pending"
	DeviceCodeApproved = "approved"
	DeviceCodeDenied   = "denied"
)

// DeviceCode is a pending RFC 8628 device authorization. The device code
// is stored as a keyed hash; the user code is short and typed by a person,
// so it is stored normalised (upper case, no separator) and must be
// unique while pending.
type DeviceCode struct {
	Hash      []byte
	UserCode  string
	ClientID  string
	Scope     string
	DPoPJKT   string // key the client committed to, if any
	Status    string
	UserID    string // set on approval
	SessionID string // the approving sign-in session
	AuthTime  time.Time
	AMR       []string
	ACR       string
	CreatedAt time.Time
	ExpiresAt time.Time
	Interval  time.Duration // minimum polling interval
	LastPoll  time.Time
	UsedAt    time.Time // set when the device code was redeemed
	// Claims is the claims request parameter (JSON) of the device
	// authorization request, as validated; "" when none was sent. An acr
	// it asks for must be met by the approving sign-in.
	Claims string
	// DenyReason is why a request was denied when Conditional Access, not
	// the user, refused it at approval (the audit reason: ca_block,
	// ca_controls_unmet); DenyDescription is what the device's poll is
	// told. Both are empty for a request the user denied.
	DenyReason      string
	DenyDescription string
}

// CompliancePolicy is an admin-defined compliance policy for one platform
// ("*" for all). Rules is the JSON rule set evaluated by the device service.
type CompliancePolicy struct {
	ID        string
	Name      string
	Platform  string
	Rules     json.RawMessage
	CreatedAt time.Time
	UpdatedAt time.Time
}
