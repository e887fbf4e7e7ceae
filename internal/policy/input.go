package policy

import (
	"net/netip"
	"time"
)

// Input is everything Evaluate knows about one request. It is built by the
// caller (sign-in, token endpoint, continuous evaluation) from the user,
// client, device and the authentication already performed.
type Input struct {
	User   UserInput    `json:"user" yaml:"user"`
	App    AppInput     `json:"app" yaml:"app"`
	Device *DeviceInput `json:"device,omitempty" yaml:"device,omitempty"`
	// IP is the client address; the zero Addr matches no IP range.
	IP netip.Addr `json:"ip" yaml:"ip"`
	// Country is the ISO 3166-1 alpha-2 code resolved for IP (see
	// internal/geo, from the operator's MMDB file); empty when unknown.
	Country string `json:"country,omitempty" yaml:"country,omitempty"`
	// SignInRisk is none, low, medium or high (empty: none).
	SignInRisk string `json:"sign_in_risk,omitempty" yaml:"sign_in_risk,omitempty"`
	// Flow is interactive, refresh, device_code or client_credentials.
	Flow string `json:"flow" yaml:"flow"`
	// Auth is what the request has already proved.
	Auth AuthInput `json:"auth" yaml:"auth"`
}

// UserInput describes the signed-in user.
type UserInput struct {
	ID string `json:"id" yaml:"id"`
	// Username, when set, also matches user include/exclude lists, so
	// policies can name people (emergency accounts) by username.
	Username string   `json:"username,omitempty" yaml:"username,omitempty"`
	Groups   []string `json:"groups,omitempty" yaml:"groups,omitempty"`
	// Risk is the user risk level: none, low, medium or high (empty: none).
	Risk string `json:"risk,omitempty" yaml:"risk,omitempty"`
}

// AppInput describes the client the token is for.
type AppInput struct {
	ClientID string `json:"client_id" yaml:"client_id"`
	// Public reports a public client (no client authentication); false
	// is a confidential client.
	Public bool `json:"public,omitempty" yaml:"public,omitempty"`
	// Native reports a native (installed desktop or mobile) application;
	// false is a browser-based one (a web application or single-page app).
	Native bool `json:"native,omitempty" yaml:"native,omitempty"`
}

// DeviceInput describes the device the request comes from (model.Device
// fields). Registered means the request proved possession of the registered
// device's key.
type DeviceInput struct {
	ID         string `json:"id,omitempty" yaml:"id,omitempty"`
	Registered bool   `json:"registered,omitempty" yaml:"registered,omitempty"`
	// Compliance is compliant, noncompliant or unknown; anything but
	// "compliant" is treated as not compliant.
	Compliance string `json:"compliance,omitempty" yaml:"compliance,omitempty"`
	Platform   string `json:"platform,omitempty" yaml:"platform,omitempty"`
	OSVersion  string `json:"os_version,omitempty" yaml:"os_version,omitempty"`
	TrustType  string `json:"trust_type,omitempty" yaml:"trust_type,omitempty"`
	// Status is active, disabled or lost; only active devices satisfy
	// device controls.
	Status   string `json:"status,omitempty" yaml:"status,omitempty"`
	Hostname string `json:"hostname,omitempty" yaml:"hostname,omitempty"`
	// KeyAttested reports that the device key is attested as held in a
	// TPM (not merely reported so by the agent).
	KeyAttested bool `json:"key_attested,omitempty" yaml:"key_attested,omitempty"`
}

// AuthInput is the authentication already performed in this session.
type AuthInput struct {
	// Methods are the amr values (RFC 8176), informational.
	Methods []string `json:"methods,omitempty" yaml:"methods,omitempty"`
	// Strength is the strongest authentication strength achieved:
	// password, password_totp or phishing_resistant.
	Strength string `json:"strength,omitempty" yaml:"strength,omitempty"`
	// MFA reports a completed multi-factor authentication; a strength of
	// password_totp or stronger implies it.
	MFA bool `json:"mfa,omitempty" yaml:"mfa,omitempty"`
	// TokenProtected reports that the session is bound to the device key.
	TokenProtected bool `json:"token_protected,omitempty" yaml:"token_protected,omitempty"`
	// PasswordChanged reports a password change after the risk was raised.
	PasswordChanged bool `json:"password_changed,omitempty" yaml:"password_changed,omitempty"`
}

// Outcome is the overall result of an evaluation.
type Outcome string

// Outcomes.
const (
	OutcomeAllow             Outcome = "allow"
	OutcomeBlock             Outcome = "block"
	OutcomeAllowWithControls Outcome = "allow_with_controls"
)

// Result says what one policy did.
type Result string

// Per-policy results.
const (
	ResultApplied    Result = "applied"
	ResultNotApplied Result = "not_applied"
	// ResultReportOnly: a report-only policy whose conditions matched; its
	// Outcome says what it would have done.
	ResultReportOnly Result = "report_only"
)

// Decision is the result of Evaluate.
type Decision struct {
	Outcome Outcome `json:"outcome"`
	// BlockedBy lists the enforced policies that block.
	BlockedBy []string `json:"blocked_by,omitempty"`
	// Requirements are the unmet grant controls of each enforced policy,
	// all of which must be satisfied (each one per its operator) before the
	// request is allowed. Empty when the outcome is block.
	Requirements []Requirement `json:"requirements,omitempty"`
	// Controls is the sorted union of every unmet control name.
	Controls []string `json:"controls,omitempty"`
	// Session is the merge of the session controls of enforced policies.
	Session Session `json:"session"`
	// Policies has one entry per policy, in set order.
	Policies []PolicyResult `json:"policies"`
}

// Requirement is one policy's unmet grant controls.
type Requirement struct {
	Policy string `json:"policy"`
	// Operator is "all" (satisfy every control) or "any" (satisfy one).
	Operator string   `json:"operator"`
	Controls []string `json:"controls"`
}

// Session is the merged session controls.
type Session struct {
	// SignInEveryTime requires a fresh authentication for this request.
	SignInEveryTime bool `json:"sign_in_every_time,omitempty"`
	// SignInFrequency is the shortest maximum authentication age (0: none).
	SignInFrequency time.Duration `json:"sign_in_frequency,omitempty"`
	// AccessTokenLifetime is the shortest lifetime required (0: default).
	AccessTokenLifetime time.Duration `json:"access_token_lifetime,omitempty"`
	StrictLocation      bool          `json:"strict_location,omitempty"`
}

// PolicyResult is what one policy did for the request.
type PolicyResult struct {
	ID     string `json:"id"`
	State  State  `json:"state"`
	Result Result `json:"result"`
	// Reason explains not_applied ("user excluded", "location not
	// included", …).
	Reason string `json:"reason,omitempty"`
	// Outcome is what the policy did (applied) or would have done
	// (report_only).
	Outcome Outcome `json:"outcome,omitempty"`
	// Unmet lists the policy's unsatisfied controls.
	Unmet []string `json:"unmet,omitempty"`
	// Error reports a device filter evaluation failure (the policy then
	// applies: filters fail closed).
	Error string `json:"error,omitempty"`
}
