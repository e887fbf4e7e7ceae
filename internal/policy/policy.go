// Package policy is Ward's Conditional Access engine: a policy model, its
// validation (Compile, Load) and a pure evaluation function (Set.Evaluate)
// that turns the facts of one sign-in or token request into a Decision,
// plus test cases for policy sets (DecodeCases, Set.RunCases).
//
// The package has no I/O on the evaluation path. Country resolution from an
// MMDB file is done beforehand by the caller, so Evaluate stays a pure,
// allocation-light function that is safe for concurrent use. CEL device
// filters are compiled once, by Compile; the common ones are compiled to Go
// and run without the CEL interpreter.
//
// This package is the engine only: building an Input from a request and
// enforcing the Decision are the callers' job; see
// docs/conditional-access.md.
package policy

// State is the enforcement state of a policy.
type State string

// Policy states.
const (
	// StateEnabled policies are evaluated and enforced.
	StateEnabled State = "enabled"
	// StateReportOnly policies are evaluated and reported, never enforced.
	StateReportOnly State = "report_only"
	// StateDisabled policies are not evaluated.
	StateDisabled State = "disabled"
)

// Special values of include/exclude lists.
const (
	// All matches every user, group, application, location or platform.
	All = "all"
	// Trusted (locations only) matches every named location marked trusted.
	Trusted = "trusted"
)

// Client types (assignments.client_types). They form two independent
// dimensions: public or confidential (AppInput.Public), and browser or
// native (AppInput.Native).
const (
	ClientPublic       = "public"
	ClientConfidential = "confidential"
	ClientBrowser      = "browser"
	ClientNative       = "native"
)

// Risk levels (sign-in risk and user risk). An empty level is treated as
// RiskNone.
const (
	RiskNone   = "none"
	RiskLow    = "low"
	RiskMedium = "medium"
	RiskHigh   = "high"
)

// Flows a policy can target.
const (
	FlowInteractive       = "interactive"        // browser sign-in (authorization code)
	FlowRefresh           = "refresh"            // refresh_token grant
	FlowDeviceCode        = "device_code"        // RFC 8628 device authorization grant
	FlowClientCredentials = "client_credentials" // workload, no user
)

// Device states (device_state condition values).
const (
	DeviceRegistered = "registered" // a registered, active device
	DeviceCompliant  = "compliant"  // registered, active and compliant
)

// Device filter modes.
const (
	FilterInclude = "include" // the policy applies to devices matching the rule
	FilterExclude = "exclude" // the policy applies to devices not matching the rule
)

// Grant control names.
const (
	ControlMFA              = "mfa"
	ControlRegisteredDevice = "registered_device"
	ControlCompliantDevice  = "compliant_device"
	ControlTokenProtection  = "token_protection"
	ControlPasswordChange   = "password_change"
	// ControlAuthStrengthPrefix prefixes an authentication strength
	// requirement in unmet-control lists, e.g.
	// "authentication_strength:phishing_resistant".
	ControlAuthStrengthPrefix = "authentication_strength:"
)

// Authentication strengths, weakest first.
const (
	StrengthPassword          = "password"
	StrengthPasswordTOTP      = "password_totp"
	StrengthPhishingResistant = "phishing_resistant"
)

// Grant operators.
const (
	OperatorAll = "all" // every listed control must be satisfied (default)
	OperatorAny = "any" // one listed control is enough
)

// SignInEveryTime is the sign_in_frequency value that requires a fresh
// authentication on every evaluation.
const SignInEveryTime = "every_time"

// Policy is one Conditional Access policy. A policy applies to a request when
// every assignment and condition matches; it then either blocks the request
// or requires grant controls, and contributes session controls.
type Policy struct {
	// ID identifies the policy; it must be unique within a set.
	ID string `json:"id" yaml:"id"`
	// Name is a human-readable label.
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// State is enabled, report_only or disabled.
	State State `json:"state" yaml:"state"`
	// Assignments select users, groups, applications and client types.
	Assignments Assignments `json:"assignments" yaml:"assignments"`
	// Conditions narrow the policy to locations, devices, risk and flows.
	Conditions Conditions `json:"conditions,omitempty" yaml:"conditions,omitempty"`
	// Grant is what the policy requires (or blocks).
	Grant GrantControls `json:"grant,omitempty" yaml:"grant,omitempty"`
	// Session shapes the session and tokens issued when the policy applies.
	Session SessionControls `json:"session,omitempty" yaml:"session,omitempty"`
}

// IncludeExclude is a pair of lists: a value is selected when it is included
// (directly or through "all") and not excluded. Exclusions always win.
type IncludeExclude struct {
	Include []string `json:"include,omitempty" yaml:"include,omitempty"`
	Exclude []string `json:"exclude,omitempty" yaml:"exclude,omitempty"`
}

// Assignments select who and what a policy targets. A user is in scope when
// included through Users or Groups and excluded through neither.
type Assignments struct {
	// Users are user ids or "all".
	Users IncludeExclude `json:"users,omitempty" yaml:"users,omitempty"`
	// Groups are group ids.
	Groups IncludeExclude `json:"groups,omitempty" yaml:"groups,omitempty"`
	// Applications are client ids or "all"; the include list is required.
	Applications IncludeExclude `json:"applications" yaml:"applications"`
	// ClientTypes limits the policy by client type: public and/or
	// confidential, and browser and/or native. The two dimensions are
	// independent: when the list names any of public and confidential the
	// client must be one of those named, when it names any of browser and
	// native likewise; a dimension with no value listed (and an empty
	// list) matches every client.
	ClientTypes []string `json:"client_types,omitempty" yaml:"client_types,omitempty"`
}

// Conditions narrow a policy. An absent (nil or empty) condition matches
// every request.
type Conditions struct {
	// Locations are named location ids, "trusted" or "all".
	Locations *IncludeExclude `json:"locations,omitempty" yaml:"locations,omitempty"`
	// DevicePlatforms are linux, darwin, windows, ios, android or "all".
	// A specific platform never matches a request without a device.
	DevicePlatforms *IncludeExclude `json:"device_platforms,omitempty" yaml:"device_platforms,omitempty"`
	// DeviceState values are "all", "registered" and "compliant".
	DeviceState *IncludeExclude `json:"device_state,omitempty" yaml:"device_state,omitempty"`
	// DeviceFilter is a CEL rule over device attributes.
	DeviceFilter *DeviceFilter `json:"device_filter,omitempty" yaml:"device_filter,omitempty"`
	// SignInRisk lists the sign-in risk levels the policy applies to.
	SignInRisk []string `json:"sign_in_risk,omitempty" yaml:"sign_in_risk,omitempty"`
	// UserRisk lists the user risk levels the policy applies to.
	UserRisk []string `json:"user_risk,omitempty" yaml:"user_risk,omitempty"`
	// Flows lists the flows the policy applies to.
	Flows []string `json:"flows,omitempty" yaml:"flows,omitempty"`
}

// DeviceFilter selects devices with a boolean CEL expression over the
// variables device.platform, device.os_version, device.trust_type,
// device.compliance, device.status, device.hostname (strings),
// device.registered and device.key_attested (bool). A request without a
// device is evaluated with empty strings and false.
type DeviceFilter struct {
	// Mode is "include" (apply to matching devices) or "exclude" (apply to
	// the others).
	Mode string `json:"mode" yaml:"mode"`
	// Rule is the CEL expression.
	Rule string `json:"rule" yaml:"rule"`
}

// GrantControls is what an applying policy demands: Block, or a set of
// controls combined with Operator.
type GrantControls struct {
	// Block denies the request; it cannot be combined with controls.
	Block bool `json:"block,omitempty" yaml:"block,omitempty"`
	// Operator is "all" (default) or "any".
	Operator string `json:"operator,omitempty" yaml:"operator,omitempty"`
	// Controls are mfa, registered_device, compliant_device,
	// token_protection and password_change.
	Controls []string `json:"controls,omitempty" yaml:"controls,omitempty"`
	// AuthenticationStrength is password_totp or phishing_resistant; it
	// counts as one more control.
	AuthenticationStrength string `json:"authentication_strength,omitempty" yaml:"authentication_strength,omitempty"`
}

// SessionControls shape what is issued when a policy applies. Across
// applying policies the strictest value of each wins.
type SessionControls struct {
	// SignInFrequency is a Go duration ("8h") or "every_time".
	SignInFrequency string `json:"sign_in_frequency,omitempty" yaml:"sign_in_frequency,omitempty"`
	// AccessTokenLifetime is a Go duration ("10m").
	AccessTokenLifetime string `json:"access_token_lifetime,omitempty" yaml:"access_token_lifetime,omitempty"`
	// StrictLocation asks continuous evaluation to enforce location
	// policies on every token use, not only at issuance.
	StrictLocation bool `json:"strict_location,omitempty" yaml:"strict_location,omitempty"`
}

// NamedLocation is a set of IP ranges or a set of countries.
type NamedLocation struct {
	// ID identifies the location in policies; "all" and "trusted" are
	// reserved.
	ID   string `json:"id" yaml:"id"`
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// Trusted locations are matched by the "trusted" keyword.
	Trusted bool `json:"trusted,omitempty" yaml:"trusted,omitempty"`
	// IPRanges are IPv4 or IPv6 CIDRs.
	IPRanges []string `json:"ip_ranges,omitempty" yaml:"ip_ranges,omitempty"`
	// Countries are ISO 3166-1 alpha-2 codes (upper case), matched against
	// the country resolved for the request IP.
	Countries []string `json:"countries,omitempty" yaml:"countries,omitempty"`
}

// Document is the on-disk form of a policy configuration.
type Document struct {
	Locations []NamedLocation `json:"locations,omitempty" yaml:"locations,omitempty"`
	Policies  []Policy        `json:"policies" yaml:"policies"`
}
