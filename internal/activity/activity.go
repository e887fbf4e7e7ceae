// Package activity is the record of how sessions and tokens are used:
// one line per sign-in, refresh, token grant, token use at a resource,
// device registration or external security signal, with who, from where,
// with which key and with what result.
//
// It is what the risk detectors read, online from the event bus and
// offline from a file (`ward logs export --format jsonl`, `ward risk
// backtest`). The line format is documented field by field in
// docs/activity.md; Parse refuses anything it does not describe, so a
// hostile or truncated line is an error, never a half-read record.
package activity

import (
	"time"
)

// Kind is what happened.
type Kind string

// Kinds of activity.
const (
	// KindSignIn is an interactive sign-in (password, second factor).
	KindSignIn Kind = "signin"
	// KindSSOSignIn is a sign-in by the SSO cookie of an existing
	// session: /authorize issued a code without asking for credentials.
	KindSSOSignIn Kind = "sso_signin"
	// KindRefresh is a refresh-token grant, successful or not.
	KindRefresh Kind = "refresh"
	// KindToken is any other token grant (authorization code, device
	// code, client credentials; Grant says which).
	KindToken Kind = "token"
	// KindTokenUse is an access token presented to a resource, as the
	// resource reported it (Count uses of one token from one context).
	KindTokenUse Kind = "token_use"
	// KindDeviceRegistration is a device registration.
	KindDeviceRegistration Kind = "device_registration"
	// KindSignal is a security signal from another system (an SSF
	// transmitter, an EDR): Signal names it.
	KindSignal Kind = "signal"
)

// Kinds lists every kind, for validation and documentation.
var Kinds = []Kind{KindSignIn, KindSSOSignIn, KindRefresh, KindToken, KindTokenUse, KindDeviceRegistration, KindSignal}

// Proof is the status of the proof of possession that came with a bound
// credential.
type Proof string

// Proof statuses.
const (
	// ProofOK: a valid DPoP proof with the key the credential is bound to.
	ProofOK Proof = "ok"
	// ProofMissing: the credential is bound but no proof came with it.
	ProofMissing Proof = "missing"
	// ProofWrongKey: a valid proof, but made with another key than the
	// one the credential is bound to.
	ProofWrongKey Proof = "wrong_key"
	// ProofInvalid: a proof came but was refused (bad signature, replayed
	// jti, wrong htm/htu, stale iat).
	ProofInvalid Proof = "invalid"
	// ProofNone: the credential is not bound, so no proof was needed.
	ProofNone Proof = "none"
)

// Proofs lists every proof status.
var Proofs = []Proof{ProofOK, ProofMissing, ProofWrongKey, ProofInvalid, ProofNone}

// Results.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

// Activity is one use of a session or token. It names subjects by id and
// never holds a token, secret or password. Zero values mean "not known"
// (or, for Count, one).
type Activity struct {
	// Time is when it happened (the detectors' clock).
	Time time.Time
	// ID is the id of the event it comes from (unique; the evidence a
	// detection cites and the key that makes processing idempotent).
	ID   string
	Kind Kind

	UserID    string
	SessionID string
	ClientID  string
	DeviceID  string
	// TokenID is the access token's jti (token uses, grants).
	TokenID string
	// Grant is the OAuth grant type of a token grant or refresh.
	Grant string
	// RefreshGenPresented is the generation of the refresh token
	// presented (1 = the first one issued in the session's grant) and
	// RefreshGenIssued that of its successor; 0: none.
	RefreshGenPresented int
	RefreshGenIssued    int

	// JKT is the RFC 7638 thumbprint of the key that made the proof
	// (which, for a wrong-key proof, is not the bound key: BoundJKT is).
	JKT      string
	BoundJKT string
	Proof    Proof

	Result string // ResultSuccess or ResultFailure
	// Reason is the machine-readable failure reason (an OAuth error code
	// or a Ward reason code).
	Reason string
	// MFA: a second factor was performed in this sign-in (or, for SSO
	// sign-ins and grants, the session's authentication included one).
	MFA bool
	// Resource is the audience a token was used at or requested for.
	Resource string
	// Signal is the type of an external signal (an event type URI such
	// as https://schemas.openid.net/secevent/caep/event-type/session-revoked).
	Signal string
	// Count is how many uses one token-use line stands for (the same
	// token, context and result within the reporter's window); 0 means 1.
	Count int

	IP        string
	UserAgent string
	// Location, precomputed when the line was written; empty fields are
	// looked up in the configured databases by whoever reads the line.
	ASN     uint32
	ASOrg   string
	Country string // ISO 3166-1 alpha-2
	City    string
	// Lat and Lon are set together (HasCoords).
	Lat, Lon  float64
	HasCoords bool
}

// Uses is Count with its default: the number of uses the line stands for.
func (a *Activity) Uses() int {
	if a.Count <= 0 {
		return 1
	}
	return a.Count
}
