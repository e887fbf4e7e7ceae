// Package mitre is the part of MITRE ATT&CK (Enterprise, v17) that Ward's
// detections and incidents name: techniques and sub-techniques with their
// names and the tactics they serve, and the technique Ward assumes for a
// detection type that names none. It is data only; docs/secops.md has the
// same table.
package mitre

import (
	"regexp"
	"slices"
	"sort"
)

// Version is the ATT&CK release the table follows.
const Version = "17"

// Tactic is an ATT&CK tactic (the adversary's goal).
type Tactic struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Technique is an ATT&CK technique or sub-technique and the tactics it
// serves.
type Technique struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Tactics []Tactic `json:"tactics"`
}

// Tactics by id.
var tactics = map[string]string{
	"TA0001": "Initial Access",
	"TA0003": "Persistence",
	"TA0004": "Privilege Escalation",
	"TA0005": "Defense Evasion",
	"TA0006": "Credential Access",
	"TA0008": "Lateral Movement",
	"TA0009": "Collection",
	"TA0011": "Command and Control",
	"TA0040": "Impact",
}

// techniques: id -> name and tactic ids (ATT&CK's own order of tactics).
var techniques = map[string]struct {
	name    string
	tactics []string
}{
	"T1078":     {"Valid Accounts", []string{"TA0005", "TA0003", "TA0004", "TA0001"}},
	"T1078.004": {"Valid Accounts: Cloud Accounts", []string{"TA0005", "TA0003", "TA0004", "TA0001"}},
	"T1098":     {"Account Manipulation", []string{"TA0003", "TA0004"}},
	"T1098.005": {"Account Manipulation: Device Registration", []string{"TA0003", "TA0004"}},
	"T1090":     {"Proxy", []string{"TA0011"}},
	"T1090.003": {"Proxy: Multi-hop Proxy", []string{"TA0011"}},
	"T1110":     {"Brute Force", []string{"TA0006"}},
	"T1110.001": {"Brute Force: Password Guessing", []string{"TA0006"}},
	"T1110.003": {"Brute Force: Password Spraying", []string{"TA0006"}},
	"T1110.004": {"Brute Force: Credential Stuffing", []string{"TA0006"}},
	"T1111":     {"Multi-Factor Authentication Interception", []string{"TA0006"}},
	"T1133":     {"External Remote Services", []string{"TA0003", "TA0001"}},
	"T1185":     {"Browser Session Hijacking", []string{"TA0009"}},
	"T1199":     {"Trusted Relationship", []string{"TA0001"}},
	"T1528":     {"Steal Application Access Token", []string{"TA0006"}},
	"T1531":     {"Account Access Removal", []string{"TA0040"}},
	"T1539":     {"Steal Web Session Cookie", []string{"TA0006"}},
	"T1550":     {"Use Alternate Authentication Material", []string{"TA0005", "TA0008"}},
	"T1550.001": {"Use Alternate Authentication Material: Application Access Token", []string{"TA0005", "TA0008"}},
	"T1550.004": {"Use Alternate Authentication Material: Web Session Cookie", []string{"TA0005", "TA0008"}},
	"T1552":     {"Unsecured Credentials", []string{"TA0006"}},
	"T1552.001": {"Unsecured Credentials: Credentials In Files", []string{"TA0006"}},
	"T1556":     {"Modify Authentication Process", []string{"TA0006", "TA0005", "TA0003"}},
	"T1556.006": {"Modify Authentication Process: Multi-Factor Authentication", []string{"TA0006", "TA0005", "TA0003"}},
	"T1557":     {"Adversary-in-the-Middle", []string{"TA0006", "TA0009"}},
	"T1566":     {"Phishing", []string{"TA0001"}},
	"T1566.002": {"Phishing: Spearphishing Link", []string{"TA0001"}},
	"T1606":     {"Forge Web Credentials", []string{"TA0006"}},
	"T1606.001": {"Forge Web Credentials: Web Cookies", []string{"TA0006"}},
	"T1621":     {"Multi-Factor Authentication Request Generation", []string{"TA0006"}},
}

// ByType is the technique Ward assumes for a detection of a type whose
// risk.detected names no technique (a technique in the event wins).
var ByType = map[string]string{
	"token_replay_wrong_key":      "T1550.001",
	"token_replay":                "T1550.001",
	"refresh_token_reuse":         "T1550.001",
	"code_reuse":                  "T1528",
	"sso_cookie_anomaly":          "T1550.004",
	"sso_cookie_replay":           "T1550.004",
	"impossible_travel":           "T1078",
	"unfamiliar_location":         "T1078",
	"anonymous_ip":                "T1090.003",
	"password_spray":              "T1110.003",
	"brute_force":                 "T1110",
	"credential_stuffing":         "T1110.004",
	"mfa_fatigue":                 "T1621",
	"admin_confirmed_compromised": "T1078",
	"admin_set_level":             "T1078",
}

var idPattern = regexp.MustCompile(`^T[0-9]{4}(\.[0-9]{3})?$`)

// ValidID reports whether id has the form of a technique id (T1234 or
// T1234.567), known to this table or not.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Lookup returns the technique id names; ok is false for an id this
// table does not know (a Technique with the id alone and no tactics).
func Lookup(id string) (t Technique, ok bool) {
	e, ok := techniques[id]
	if !ok {
		return Technique{ID: id}, false
	}
	t = Technique{ID: id, Name: e.name}
	for _, ta := range e.tactics {
		t.Tactics = append(t.Tactics, Tactic{ID: ta, Name: tactics[ta]})
	}
	return t, true
}

// TacticName returns the name of tactic id ("" for an unknown one).
func TacticName(id string) string { return tactics[id] }

// TacticsOf returns the tactics of techniques ids, each once, sorted by
// tactic id.
func TacticsOf(ids []string) []Tactic {
	var out []Tactic
	for _, id := range ids {
		t, _ := Lookup(id)
		for _, ta := range t.Tactics {
			if !slices.ContainsFunc(out, func(x Tactic) bool { return x.ID == ta.ID }) {
				out = append(out, ta)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// All returns every technique of the table, sorted by id.
func All() []Technique {
	ids := make([]string, 0, len(techniques))
	for id := range techniques {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]Technique, len(ids))
	for i, id := range ids {
		out[i], _ = Lookup(id)
	}
	return out
}
