package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/posture"
)

// Rule names. They are the JSON members of a policy's rule set and the
// "rule" of a Failure; never rename one, only add.
const (
	RuleDiskEncryption      = "require_disk_encryption"
	RuleStandardUser        = "require_standard_user"
	RuleAntimalware         = "require_antimalware"
	RuleAntimalwareSigAge   = "max_antimalware_signature_age_days"
	RuleFirewall            = "require_firewall"
	RuleMinOSVersion        = "min_os_version"
	RuleSecureBoot          = "require_secure_boot"
	RuleNotRooted           = "require_not_rooted"
	RuleMaxPostureAge       = "max_posture_age_hours"
	RuleHardwareKey         = "require_hardware_key" // the device key is attested as held in a TPM
	RulePostureStale        = "posture_stale"        // no posture within the grace period (not configurable)
	RuleNoPolicy            = "no_policy"            // no policy applies to the platform (not configurable)
	RuleNoPosture           = "no_posture"           // the device never reported its posture (not configurable)
	RuleDeviceStatus        = "device_status"        // the device is disabled or lost (not configurable)
	maxSignatureAgeDays     = 3650
	maxPostureAgeHoursLimit = 24 * 365
)

// Rules is a compliance policy's rule set. Zero values do not apply.
type Rules struct {
	RequireDiskEncryption bool `json:"require_disk_encryption,omitempty"`
	// RequireStandardUser: the signed-in user must not be a local
	// administrator.
	RequireStandardUser bool `json:"require_standard_user,omitempty"`
	RequireAntimalware  bool `json:"require_antimalware,omitempty"`
	// MaxAntimalwareSignatureAgeDays bounds the age of the anti-malware
	// signatures (nil: no bound; 0: updated within the last day).
	MaxAntimalwareSignatureAgeDays *int `json:"max_antimalware_signature_age_days,omitempty"`
	RequireFirewall                bool `json:"require_firewall,omitempty"`
	// MinOSVersion is a dotted numeric version ("22.04", "14.5",
	// "10.0.22631"); the OS version must be at least that.
	MinOSVersion      string `json:"min_os_version,omitempty"`
	RequireSecureBoot bool   `json:"require_secure_boot,omitempty"`
	RequireNotRooted  bool   `json:"require_not_rooted,omitempty"`
	// MaxPostureAgeHours bounds how old the latest posture may be (nil: no
	// bound beyond the service's posture grace period).
	MaxPostureAgeHours *int `json:"max_posture_age_hours,omitempty"`
	// RequireHardwareKey: the device key must be attested as generated in
	// a TPM that it cannot leave (TPM 2.0 key attestation at
	// registration), not merely reported so by the agent.
	RequireHardwareKey bool `json:"require_hardware_key,omitempty"`
}

// Failure is a rule a device does not satisfy, or (Unknown) could not be
// decided for lack of information, with what to do about it.
type Failure struct {
	Rule    string `json:"rule"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix"`
	Unknown bool   `json:"unknown,omitempty"`
}

// ParseRules decodes a rule set strictly: a JSON object whose members are
// rule names with values of the right type and range. The error (wrapping
// ErrInvalid) lists every problem.
func ParseRules(raw json.RawMessage) (*Rules, error) {
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: rules must be a JSON object", ErrInvalid)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%w: rules must be a single JSON object", ErrInvalid)
	}
	var r Rules
	var problems []string
	boolRule := func(dst *bool) func(string, json.RawMessage) {
		return func(k string, v json.RawMessage) {
			if err := json.Unmarshal(v, dst); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				problems = append(problems, fmt.Sprintf("%s must be true or false", k))
			}
		}
	}
	intRule := func(dst **int, lo, hi int) func(string, json.RawMessage) {
		return func(k string, v json.RawMessage) {
			var f float64
			if err := json.Unmarshal(v, &f); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) ||
				f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
				problems = append(problems, fmt.Sprintf("%s must be a whole number from %d to %d", k, lo, hi))
				return
			}
			n := int(f)
			*dst = &n
		}
	}
	rules := map[string]func(string, json.RawMessage){
		RuleDiskEncryption:    boolRule(&r.RequireDiskEncryption),
		RuleStandardUser:      boolRule(&r.RequireStandardUser),
		RuleAntimalware:       boolRule(&r.RequireAntimalware),
		RuleAntimalwareSigAge: intRule(&r.MaxAntimalwareSignatureAgeDays, 0, maxSignatureAgeDays),
		RuleFirewall:          boolRule(&r.RequireFirewall),
		RuleMinOSVersion: func(k string, v json.RawMessage) {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				problems = append(problems, fmt.Sprintf("%s must be a string", k))
				return
			}
			if _, ok := parseVersion(s, true); !ok {
				problems = append(problems, fmt.Sprintf("%s must be a dotted numeric version such as \"22.04\" or \"10.0.22631\"", k))
				return
			}
			r.MinOSVersion = s
		},
		RuleSecureBoot:    boolRule(&r.RequireSecureBoot),
		RuleNotRooted:     boolRule(&r.RequireNotRooted),
		RuleMaxPostureAge: intRule(&r.MaxPostureAgeHours, 1, maxPostureAgeHoursLimit),
		RuleHardwareKey:   boolRule(&r.RequireHardwareKey),
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f, ok := rules[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("unknown rule %q", k))
			continue
		}
		f(k, m[k])
	}
	if len(problems) > 0 {
		return nil, &RulesError{Problems: problems}
	}
	return &r, nil
}

// RulesError lists every problem of an invalid rule set. It wraps
// ErrInvalid.
type RulesError struct{ Problems []string }

func (e *RulesError) Error() string {
	return "invalid compliance rules: " + strings.Join(e.Problems, "; ")
}
func (e *RulesError) Unwrap() error { return ErrInvalid }

// JSON returns the canonical JSON of the rule set.
func (r *Rules) JSON() json.RawMessage {
	b, _ := json.Marshal(r)
	return b
}

// parseVersion reads the leading dotted numeric part of v ("22.04.3 LTS"
// -> [22 4 3], "6.8.0-45-generic" -> [6 8 0]). strict requires v to be
// exactly a dotted numeric version.
func parseVersion(v string, strict bool) ([]int, bool) {
	v = strings.TrimSpace(v)
	end := 0
	for end < len(v) && (v[end] >= '0' && v[end] <= '9' || v[end] == '.') {
		end++
	}
	if strict && end != len(v) {
		return nil, false
	}
	num := strings.TrimRight(v[:end], ".")
	if num == "" || len(num) > 64 {
		return nil, false
	}
	parts := strings.Split(num, ".")
	if len(parts) > 8 {
		return nil, false
	}
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || len(p) > 9 {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// compareVersions compares dotted numeric versions; missing components
// count as 0 ("14" == "14.0").
func compareVersions(a, b []int) int {
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// Evaluate decides compliance of a posture (collected at postureAt;
// p == nil: none reported yet) against rules at now. It is a pure
// function. A rule whose input is "no" (or out of bounds) fails and makes
// the device noncompliant; a rule whose input is "unknown" is undecided and
// makes the result unknown unless another rule fails. Failures lists every
// failing and every undecided rule (Unknown set), in rule order, each with
// how to fix it. With no rules configured the device is compliant.
func Evaluate(rules *Rules, p *posture.Posture, postureAt, now time.Time) (string, []Failure) {
	var out []Failure
	if rules == nil {
		rules = &Rules{}
	}
	noPosture := func(rule, fix string) {
		out = append(out, Failure{Rule: rule, Unknown: true, Detail: "no posture report has been received from this device", Fix: fix})
	}
	// tri checks a yes/no/unknown fact; want is the passing value.
	tri := func(on bool, rule string, v posture.State, want posture.State, what, fix string) {
		if !on {
			return
		}
		if p == nil {
			noPosture(rule, fix)
			return
		}
		switch {
		case v == want:
		case v == posture.Yes || v == posture.No:
			out = append(out, Failure{Rule: rule, Detail: what + ": " + string(v) + evidence(p, rule), Fix: fix})
		default:
			out = append(out, Failure{Rule: rule, Unknown: true, Detail: what + ": could not be determined by the agent" + evidence(p, rule), Fix: fix + " " + fixUnknown})
		}
	}
	var pv posture.Posture
	if p != nil {
		pv = *p
	}
	tri(rules.RequireDiskEncryption, RuleDiskEncryption, pv.DiskEncrypted, posture.Yes, "disk encryption",
		"Turn on full-disk encryption for the system disk (LUKS on Linux, FileVault on macOS, BitLocker on Windows), then let the agent report again.")
	tri(rules.RequireStandardUser, RuleStandardUser, pv.UserIsAdmin, posture.No, "user is a local administrator",
		"Use a standard (non-administrator) account for daily work: remove it from the sudo/wheel group (Linux), the admin group (macOS) or the Administrators group (Windows).")
	tri(rules.RequireAntimalware, RuleAntimalware, pv.AntiMalwarePresent, posture.Yes, "anti-malware present",
		"Install and enable the organisation's anti-malware software (for example Microsoft Defender or ClamAV with on-access scanning).")
	if rules.MaxAntimalwareSignatureAgeDays != nil {
		maxDays := *rules.MaxAntimalwareSignatureAgeDays
		fix := fmt.Sprintf("Update the anti-malware signatures (they must be at most %d day(s) old) and make sure automatic updates are on.", maxDays)
		switch {
		case p == nil:
			noPosture(RuleAntimalwareSigAge, fix)
		case pv.AntiMalwarePresent == posture.No:
			out = append(out, Failure{Rule: RuleAntimalwareSigAge, Detail: "no anti-malware software, so no signatures", Fix: "Install the organisation's anti-malware software. " + fix})
		default:
			age, ok := signatureAge(&pv)
			switch {
			case !ok:
				out = append(out, Failure{Rule: RuleAntimalwareSigAge, Unknown: true, Detail: "anti-malware signature age could not be determined" + evidence(p, RuleAntimalwareSigAge), Fix: fix + " " + fixUnknown})
			case int(age/(24*time.Hour)) > maxDays:
				out = append(out, Failure{Rule: RuleAntimalwareSigAge,
					Detail: fmt.Sprintf("anti-malware signatures are %d day(s) old; the limit is %d", int(age/(24*time.Hour)), maxDays), Fix: fix})
			}
		}
	}
	tri(rules.RequireFirewall, RuleFirewall, pv.FirewallEnabled, posture.Yes, "firewall enabled",
		"Turn on the host firewall (ufw, firewalld or nftables on Linux; the application firewall on macOS; Windows Defender Firewall on Windows).")
	if rules.MinOSVersion != "" {
		fix := fmt.Sprintf("Update the operating system to version %s or later.", rules.MinOSVersion)
		minV, _ := parseVersion(rules.MinOSVersion, true)
		switch {
		case p == nil:
			noPosture(RuleMinOSVersion, fix)
		default:
			v, ok := parseVersion(pv.OSVersion, false)
			switch {
			case !ok:
				out = append(out, Failure{Rule: RuleMinOSVersion, Unknown: true,
					Detail: fmt.Sprintf("OS version %q is not a numeric version", truncate(pv.OSVersion, 64)), Fix: fix + " " + fixUnknown})
			case compareVersions(v, minV) < 0:
				out = append(out, Failure{Rule: RuleMinOSVersion,
					Detail: fmt.Sprintf("OS version %s is older than the required %s", truncate(pv.OSVersion, 64), rules.MinOSVersion), Fix: fix})
			}
		}
	}
	tri(rules.RequireSecureBoot, RuleSecureBoot, pv.SecureBoot, posture.Yes, "secure boot enabled",
		"Enable Secure Boot in the firmware (UEFI) settings.")
	tri(rules.RequireNotRooted, RuleNotRooted, pv.Rooted, posture.No, "device rooted or jailbroken",
		"Restore the device to its original, unmodified operating system (remove root or jailbreak tools), or use another device.")
	if rules.MaxPostureAgeHours != nil {
		h := *rules.MaxPostureAgeHours
		fix := fmt.Sprintf("Make sure the Ward agent is running and can reach Ward: it must report at least every %d hour(s).", h)
		switch {
		case p == nil || postureAt.IsZero():
			noPosture(RuleMaxPostureAge, fix)
		case now.Sub(postureAt) > time.Duration(h)*time.Hour:
			out = append(out, Failure{Rule: RuleMaxPostureAge,
				Detail: fmt.Sprintf("the latest posture is from %s, more than %d hour(s) ago", postureAt.UTC().Format(time.RFC3339), h), Fix: fix})
		}
	}
	return stateOf(out), out
}

// EvaluateKey decides the rules about the device key (require_hardware_key)
// from what Ward verified of it: keyAttested, and the key storage the
// agent reported (only to say what was claimed). It is a pure function; a
// failure here is never undecided, since the attestation either happened
// or not.
func EvaluateKey(rules *Rules, keyAttested bool, keyStorage string) []Failure {
	if rules == nil || !rules.RequireHardwareKey || keyAttested {
		return nil
	}
	detail := "the device key is not attested as held in a TPM"
	switch keyStorage {
	case "tpm":
		detail += ": the agent reports a TPM key, but it did not prove it with TPM key attestation at registration"
	case "":
	default:
		detail += fmt.Sprintf(" (the agent reports key storage %q)", truncate(keyStorage, 32))
	}
	return []Failure{{Rule: RuleHardwareKey, Detail: detail,
		Fix: "Enrol the device again on a machine with a TPM 2.0 (`ward device enroll --force --key-store tpm`): the agent then creates the key in the TPM and proves it to Ward. A device without a TPM cannot meet this rule."}}
}

const fixUnknown = "If it is already done, make sure the Ward agent runs with the rights it needs to check it."

func stateOf(fs []Failure) string {
	st := model.Compliant
	for _, f := range fs {
		if !f.Unknown {
			return model.NonCompliant
		}
		st = model.ComplianceUnknown
	}
	return st
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// DecodeFailures returns the failures stored on a device.
func DecodeFailures(d *model.Device) []Failure {
	var fs []Failure
	if len(d.ComplianceFailures) > 0 {
		if err := json.Unmarshal(d.ComplianceFailures, &fs); err != nil {
			return []Failure{{Rule: "unreadable", Detail: "the stored evaluation could not be read", Unknown: true}}
		}
	}
	if fs == nil {
		fs = []Failure{}
	}
	return fs
}

func encodeFailures(fs []Failure) json.RawMessage {
	if fs == nil {
		fs = []Failure{}
	}
	b, err := json.Marshal(fs)
	if err != nil {
		panic(errors.New("device: encode failures: " + err.Error()))
	}
	return b
}

// ruleNames returns the names of failing (unknown=false) or undecided
// (unknown=true) rules.
func ruleNames(fs []Failure, unknown bool) string {
	var names []string
	for _, f := range fs {
		if f.Unknown == unknown {
			names = append(names, f.Rule)
		}
	}
	return strings.Join(names, ",")
}

// ruleField maps a rule to the posture field it reads (the key of
// Posture.Evidence).
var ruleField = map[string]string{
	RuleDiskEncryption:    posture.FieldDiskEncrypted,
	RuleStandardUser:      posture.FieldUserIsAdmin,
	RuleAntimalware:       posture.FieldAntiMalwarePresent,
	RuleAntimalwareSigAge: posture.FieldAntiMalwareSignatureAge,
	RuleFirewall:          posture.FieldFirewallEnabled,
	RuleMinOSVersion:      posture.FieldOSVersion,
	RuleSecureBoot:        posture.FieldSecureBoot,
	RuleNotRooted:         posture.FieldRooted,
}

// evidence returns " (agent: <evidence>)" for the field a rule reads, if
// the agent gave any.
func evidence(p *posture.Posture, rule string) string {
	if p == nil {
		return ""
	}
	if e := p.Evidence[ruleField[rule]]; e != "" {
		return " (agent: " + truncate(e, 200) + ")"
	}
	return ""
}

func signatureAge(p *posture.Posture) (time.Duration, bool) {
	if p.AntiMalwareSignatureAge == nil || *p.AntiMalwareSignatureAge < 0 {
		return 0, false
	}
	return p.AntiMalwareSignatureAge.Duration(), true
}
