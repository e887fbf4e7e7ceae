// Package posture is the wire format of a device's security posture (its
// health: disk encryption, admin rights, anti-malware, firewall, Secure
// Boot, screen lock …) and of the signed report that carries it from the
// device agent to the server.
//
// Every health fact is a tri-state [State]: [Yes], [No] or [Unknown].
// Collectors (package github.com/ward-idp/ward/agent/posture) answer Yes
// or No only from evidence they actually read and never guess Yes;
// whatever they cannot establish is Unknown, with a short reason in
// [Posture.Evidence]. Compliance policies on the server decide what
// Unknown means for them.
//
// The agent signs a [Posture] with the device key and a server nonce
// using [SignReport]; the server checks the report with [ParseReport]
// against the thumbprint of the key it registered for the device. Reports
// are compact JWSs read and written with package jws, their claims with
// package jsonobj; the package depends on nothing else of Ward's.
package posture

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// State is a tri-state health fact.
type State string

// The three states. The zero State ("") is not valid in a report; it is
// treated as Unknown when signing and when decoding a report that omits
// the field.
const (
	Yes     State = "yes"
	No      State = "no"
	Unknown State = "unknown"
)

// Valid reports whether s is Yes, No or Unknown.
func (s State) Valid() bool { return s == Yes || s == No || s == Unknown }

// UnmarshalJSON accepts exactly "yes", "no" and "unknown".
func (s *State) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return errInvalidState
	}
	if !State(v).Valid() {
		return errInvalidState
	}
	*s = State(v)
	return nil
}

var errInvalidState = fmt.Errorf("posture: state must be %q, %q or %q", Yes, No, Unknown)

// Seconds is a duration in whole seconds, as it appears in reports.
type Seconds int64

// Duration converts s to a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(s) * time.Second }

// SecondsOf returns d rounded down to whole seconds, as a pointer for
// the optional fields of Posture.
func SecondsOf(d time.Duration) *Seconds {
	s := Seconds(d / time.Second)
	return &s
}

// Posture is one snapshot of a device's health. The JSON field names are
// the report format (see SignReport); Evidence is keyed by the same
// names.
type Posture struct {
	// Platform is the operating system family: "linux", "darwin", "windows".
	Platform string `json:"platform"`
	// OSName and OSVersion identify the distribution or product
	// ("Debian GNU/Linux", "12").
	OSName    string `json:"os_name,omitempty"`
	OSVersion string `json:"os_version,omitempty"`
	// Kernel is the kernel release ("6.1.0-18-amd64").
	Kernel string `json:"kernel,omitempty"`
	// Hostname is the device's host name.
	Hostname string `json:"hostname,omitempty"`

	// DiskEncrypted: the system volume is encrypted at rest.
	DiskEncrypted State `json:"disk_encrypted"`
	// UserIsAdmin: the signed-in user is, or can become, an administrator.
	UserIsAdmin State `json:"user_is_admin"`
	// AntiMalwarePresent: an anti-malware product is installed.
	AntiMalwarePresent State `json:"anti_malware_present"`
	// AntiMalwareSignatureAge is how old its signatures are; nil if
	// unknown.
	AntiMalwareSignatureAge *Seconds `json:"anti_malware_signature_age,omitempty"`
	// FirewallEnabled: a host firewall filters inbound traffic.
	FirewallEnabled State `json:"firewall_enabled"`
	// SecureBoot: the firmware enforces Secure Boot.
	SecureBoot State `json:"secure_boot"`
	// ScreenLock: the session locks automatically when idle.
	ScreenLock State `json:"screen_lock"`
	// Rooted: the device is jailbroken or rooted (mobile concept).
	Rooted State `json:"rooted"`

	// CollectedAt is when the snapshot was taken.
	CollectedAt time.Time `json:"collected_at"`
	// Evidence holds short human-readable reasons per field, keyed by the
	// field's JSON name ("disk_encrypted": "root on /dev/dm-0 (crypt …)").
	Evidence map[string]string `json:"evidence,omitempty"`
}

// Field names (the JSON names), also the keys of Posture.Evidence.
const (
	FieldPlatform                = "platform"
	FieldOSName                  = "os_name"
	FieldOSVersion               = "os_version"
	FieldKernel                  = "kernel"
	FieldHostname                = "hostname"
	FieldDiskEncrypted           = "disk_encrypted"
	FieldUserIsAdmin             = "user_is_admin"
	FieldAntiMalwarePresent      = "anti_malware_present"
	FieldAntiMalwareSignatureAge = "anti_malware_signature_age"
	FieldFirewallEnabled         = "firewall_enabled"
	FieldSecureBoot              = "secure_boot"
	FieldScreenLock              = "screen_lock"
	FieldRooted                  = "rooted"
	FieldCollectedAt             = "collected_at"
)

var knownFields = map[string]bool{
	FieldPlatform: true, FieldOSName: true, FieldOSVersion: true, FieldKernel: true, FieldHostname: true,
	FieldDiskEncrypted: true, FieldUserIsAdmin: true, FieldAntiMalwarePresent: true,
	FieldAntiMalwareSignatureAge: true, FieldFirewallEnabled: true, FieldSecureBoot: true,
	FieldScreenLock: true, FieldRooted: true, FieldCollectedAt: true,
}

// Limits on report content, enforced by Validate.
const (
	MaxStringLen   = 256 // platform, OS, kernel, host name
	MaxEvidenceLen = 512 // one evidence value
)

// StateFields are the JSON names of the tri-state fields, in report
// order.
func StateFields() []string {
	return []string{FieldDiskEncrypted, FieldUserIsAdmin, FieldAntiMalwarePresent, FieldFirewallEnabled,
		FieldSecureBoot, FieldScreenLock, FieldRooted}
}

// states returns pointers to the tri-state fields with their names.
func (p *Posture) states() []struct {
	name string
	s    *State
} {
	return []struct {
		name string
		s    *State
	}{
		{FieldDiskEncrypted, &p.DiskEncrypted}, {FieldUserIsAdmin, &p.UserIsAdmin},
		{FieldAntiMalwarePresent, &p.AntiMalwarePresent}, {FieldFirewallEnabled, &p.FirewallEnabled},
		{FieldSecureBoot, &p.SecureBoot}, {FieldScreenLock, &p.ScreenLock}, {FieldRooted, &p.Rooted},
	}
}

// Normalize sets every empty State to Unknown.
func (p *Posture) Normalize() {
	for _, f := range p.states() {
		if *f.s == "" {
			*f.s = Unknown
		}
	}
}

// Validate checks that p can be reported: valid states (empty counts as
// Unknown), a platform, bounded valid UTF-8 strings, a non-negative
// signature age, a collection time, and evidence only for known fields.
func (p *Posture) Validate() error {
	if p == nil {
		return fmt.Errorf("posture: nil posture")
	}
	for _, f := range p.states() {
		if *f.s != "" && !f.s.Valid() {
			return fmt.Errorf("posture: %s: invalid state", f.name)
		}
	}
	if p.Platform == "" {
		return fmt.Errorf("posture: platform is empty")
	}
	for name, v := range map[string]string{FieldPlatform: p.Platform, FieldOSName: p.OSName, FieldOSVersion: p.OSVersion, FieldKernel: p.Kernel, FieldHostname: p.Hostname} {
		if len(v) > MaxStringLen || !utf8.ValidString(v) {
			return fmt.Errorf("posture: %s is too long or not UTF-8", name)
		}
	}
	if p.AntiMalwareSignatureAge != nil && *p.AntiMalwareSignatureAge < 0 {
		return fmt.Errorf("posture: negative signature age")
	}
	if p.CollectedAt.IsZero() {
		return fmt.Errorf("posture: collected_at is missing")
	}
	if len(p.Evidence) > len(knownFields) {
		return fmt.Errorf("posture: too much evidence")
	}
	for k, v := range p.Evidence {
		if !knownFields[k] {
			return fmt.Errorf("posture: evidence for unknown field")
		}
		if len(v) > MaxEvidenceLen || !utf8.ValidString(v) {
			return fmt.Errorf("posture: evidence for %s is too long or not UTF-8", k)
		}
	}
	return nil
}
