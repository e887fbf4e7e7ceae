package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/posture"
)

var update = flag.Bool("update", false, "rewrite testdata/evaluate.golden")

// fixture loads testdata/healthy-linux.json.
func fixture(t testing.TB) *posture.Posture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "healthy-linux.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p posture.Posture
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return &p
}

func strictRules(t testing.TB) *Rules {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "strict-linux-rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRules(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func intp(n int) *int { return &n }

// TestEvaluate covers every rule with a passing, a failing and an
// undecided input, and the way results combine. The full output (details
// and fix texts) is compared with testdata/evaluate.golden (-update
// rewrites it).
func TestEvaluate(t *testing.T) {
	collected := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := collected.Add(time.Hour)
	base := fixture(t)
	with := func(f func(p *posture.Posture)) *posture.Posture {
		p := *base
		p.Evidence = nil
		f(&p)
		return &p
	}
	sec := func(d time.Duration) *posture.Seconds { return posture.SecondsOf(d) }
	day := 24 * time.Hour
	type tc struct {
		name      string
		rules     Rules
		p         *posture.Posture
		postureAt time.Time // zero: collected
		state     string
		failing   []string // rules failing, in order
		undecided []string
	}
	cases := []tc{
		{name: "no rules", rules: Rules{}, p: base, state: model.Compliant},
		{name: "strict rules, healthy", rules: *strictRules(t), p: base, state: model.Compliant},

		{name: "disk encryption yes", rules: Rules{RequireDiskEncryption: true}, p: base, state: model.Compliant},
		{name: "disk encryption no", rules: Rules{RequireDiskEncryption: true}, p: with(func(p *posture.Posture) { p.DiskEncrypted = posture.No }),
			state: model.NonCompliant, failing: []string{RuleDiskEncryption}},
		{name: "disk encryption unknown", rules: Rules{RequireDiskEncryption: true}, p: with(func(p *posture.Posture) { p.DiskEncrypted = posture.Unknown }),
			state: model.ComplianceUnknown, undecided: []string{RuleDiskEncryption}},
		{name: "disk encryption empty state counts as unknown", rules: Rules{RequireDiskEncryption: true}, p: with(func(p *posture.Posture) { p.DiskEncrypted = "" }),
			state: model.ComplianceUnknown, undecided: []string{RuleDiskEncryption}},

		{name: "standard user", rules: Rules{RequireStandardUser: true}, p: base, state: model.Compliant},
		{name: "user is admin", rules: Rules{RequireStandardUser: true}, p: with(func(p *posture.Posture) { p.UserIsAdmin = posture.Yes }),
			state: model.NonCompliant, failing: []string{RuleStandardUser}},
		{name: "admin unknown", rules: Rules{RequireStandardUser: true}, p: with(func(p *posture.Posture) { p.UserIsAdmin = posture.Unknown }),
			state: model.ComplianceUnknown, undecided: []string{RuleStandardUser}},

		{name: "antimalware yes", rules: Rules{RequireAntimalware: true}, p: base, state: model.Compliant},
		{name: "antimalware no", rules: Rules{RequireAntimalware: true}, p: with(func(p *posture.Posture) { p.AntiMalwarePresent = posture.No }),
			state: model.NonCompliant, failing: []string{RuleAntimalware}},
		{name: "antimalware unknown", rules: Rules{RequireAntimalware: true}, p: with(func(p *posture.Posture) { p.AntiMalwarePresent = posture.Unknown }),
			state: model.ComplianceUnknown, undecided: []string{RuleAntimalware}},

		{name: "signatures 2h old, limit 0 days", rules: Rules{MaxAntimalwareSignatureAgeDays: intp(0)}, p: base, state: model.Compliant},
		{name: "signatures 3d23h old, limit 3 days", rules: Rules{MaxAntimalwareSignatureAgeDays: intp(3)},
			p: with(func(p *posture.Posture) { p.AntiMalwareSignatureAge = sec(4*day - time.Hour) }), state: model.Compliant},
		{name: "signatures 4d old, limit 3 days", rules: Rules{MaxAntimalwareSignatureAgeDays: intp(3)},
			p: with(func(p *posture.Posture) { p.AntiMalwareSignatureAge = sec(4 * day) }), state: model.NonCompliant, failing: []string{RuleAntimalwareSigAge}},
		{name: "signature age unknown", rules: Rules{MaxAntimalwareSignatureAgeDays: intp(3)},
			p: with(func(p *posture.Posture) { p.AntiMalwareSignatureAge = nil }), state: model.ComplianceUnknown, undecided: []string{RuleAntimalwareSigAge}},
		{name: "signature age without antimalware", rules: Rules{MaxAntimalwareSignatureAgeDays: intp(3)},
			p:     with(func(p *posture.Posture) { p.AntiMalwarePresent, p.AntiMalwareSignatureAge = posture.No, nil }),
			state: model.NonCompliant, failing: []string{RuleAntimalwareSigAge}},

		{name: "firewall yes", rules: Rules{RequireFirewall: true}, p: base, state: model.Compliant},
		{name: "firewall no", rules: Rules{RequireFirewall: true}, p: with(func(p *posture.Posture) { p.FirewallEnabled = posture.No }),
			state: model.NonCompliant, failing: []string{RuleFirewall}},
		{name: "firewall unknown", rules: Rules{RequireFirewall: true}, p: with(func(p *posture.Posture) { p.FirewallEnabled = posture.Unknown }),
			state: model.ComplianceUnknown, undecided: []string{RuleFirewall}},

		{name: "os 12 >= 12", rules: Rules{MinOSVersion: "12"}, p: base, state: model.Compliant},
		{name: "os 12 >= 11.9", rules: Rules{MinOSVersion: "11.9"}, p: base, state: model.Compliant},
		{name: "os 12 < 12.1", rules: Rules{MinOSVersion: "12.1"}, p: base, state: model.NonCompliant, failing: []string{RuleMinOSVersion}},
		{name: "os 22.04.3 LTS >= 22.04", rules: Rules{MinOSVersion: "22.04"},
			p: with(func(p *posture.Posture) { p.OSVersion = "22.04.3 LTS (Jammy Jellyfish)" }), state: model.Compliant},
		{name: "os 9.10 < 10 (numeric, not lexical)", rules: Rules{MinOSVersion: "10"},
			p: with(func(p *posture.Posture) { p.OSVersion = "9.10" }), state: model.NonCompliant, failing: []string{RuleMinOSVersion}},
		{name: "os version not numeric", rules: Rules{MinOSVersion: "12"},
			p: with(func(p *posture.Posture) { p.OSVersion = "trixie/sid" }), state: model.ComplianceUnknown, undecided: []string{RuleMinOSVersion}},
		{name: "os version missing", rules: Rules{MinOSVersion: "12"},
			p: with(func(p *posture.Posture) { p.OSVersion = "" }), state: model.ComplianceUnknown, undecided: []string{RuleMinOSVersion}},

		{name: "secure boot yes", rules: Rules{RequireSecureBoot: true}, p: base, state: model.Compliant},
		{name: "secure boot no", rules: Rules{RequireSecureBoot: true}, p: with(func(p *posture.Posture) { p.SecureBoot = posture.No }),
			state: model.NonCompliant, failing: []string{RuleSecureBoot}},
		{name: "secure boot unknown", rules: Rules{RequireSecureBoot: true}, p: with(func(p *posture.Posture) { p.SecureBoot = posture.Unknown }),
			state: model.ComplianceUnknown, undecided: []string{RuleSecureBoot}},

		{name: "not rooted", rules: Rules{RequireNotRooted: true}, p: base, state: model.Compliant},
		{name: "rooted", rules: Rules{RequireNotRooted: true}, p: with(func(p *posture.Posture) { p.Rooted = posture.Yes }),
			state: model.NonCompliant, failing: []string{RuleNotRooted}},
		{name: "rooted unknown", rules: Rules{RequireNotRooted: true}, p: with(func(p *posture.Posture) { p.Rooted = posture.Unknown }),
			state: model.ComplianceUnknown, undecided: []string{RuleNotRooted}},

		{name: "posture 1h old, limit 24h", rules: Rules{MaxPostureAgeHours: intp(24)}, p: base, state: model.Compliant},
		{name: "posture exactly 24h old, limit 24h", rules: Rules{MaxPostureAgeHours: intp(24)}, p: base, postureAt: now.Add(-24 * time.Hour), state: model.Compliant},
		{name: "posture 25h old, limit 24h", rules: Rules{MaxPostureAgeHours: intp(24)}, p: base, postureAt: now.Add(-25 * time.Hour),
			state: model.NonCompliant, failing: []string{RuleMaxPostureAge}},

		{name: "no posture yet", rules: Rules{RequireDiskEncryption: true, MaxPostureAgeHours: intp(1)}, p: nil,
			state: model.ComplianceUnknown, undecided: []string{RuleDiskEncryption, RuleMaxPostureAge}},
		{name: "a failure wins over unknowns", rules: *strictRules(t),
			p: with(func(p *posture.Posture) {
				p.DiskEncrypted, p.FirewallEnabled, p.SecureBoot = posture.No, posture.Unknown, posture.No
			}),
			state: model.NonCompliant, failing: []string{RuleDiskEncryption, RuleSecureBoot}, undecided: []string{RuleFirewall}},
		{name: "everything wrong", rules: *strictRules(t), postureAt: now.Add(-48 * time.Hour),
			p: with(func(p *posture.Posture) {
				p.DiskEncrypted, p.UserIsAdmin, p.AntiMalwarePresent, p.AntiMalwareSignatureAge = posture.No, posture.Yes, posture.No, nil
				p.FirewallEnabled, p.OSVersion, p.SecureBoot, p.Rooted = posture.No, "11", posture.No, posture.Yes
			}),
			state: model.NonCompliant, failing: []string{RuleDiskEncryption, RuleStandardUser, RuleAntimalware, RuleAntimalwareSigAge,
				RuleFirewall, RuleMinOSVersion, RuleSecureBoot, RuleNotRooted, RuleMaxPostureAge}},
	}
	var golden bytes.Buffer
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			at := c.postureAt
			if at.IsZero() {
				at = collected
			}
			rules := c.rules
			state, fs := Evaluate(&rules, c.p, at, now)
			var failing, undecided []string
			for _, f := range fs {
				if f.Rule == "" || f.Detail == "" || f.Fix == "" {
					t.Errorf("incomplete failure %+v", f)
				}
				if f.Unknown {
					undecided = append(undecided, f.Rule)
				} else {
					failing = append(failing, f.Rule)
				}
			}
			if state != c.state || !slices.Equal(failing, c.failing) || !slices.Equal(undecided, c.undecided) {
				t.Errorf("state %s, failing %v, undecided %v; want %s, %v, %v", state, failing, undecided, c.state, c.failing, c.undecided)
			}
			out, _ := json.MarshalIndent(fs, "  ", "  ")
			fmt.Fprintf(&golden, "== %s\n  state: %s\n  %s\n", c.name, state, out)
		})
	}
	path := filepath.Join("testdata", "evaluate.golden")
	if *update {
		if err := os.WriteFile(path, golden.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, golden.Bytes()) {
		t.Errorf("output differs from %s; run `go test ./internal/device -run TestEvaluate -update` and review the diff", path)
	}
}

// Evaluate is pure: the posture and the rules are not modified.
func TestEvaluateDoesNotModifyInput(t *testing.T) {
	p := fixture(t)
	before, _ := json.Marshal(p)
	r := strictRules(t)
	rb := r.JSON()
	Evaluate(r, p, p.CollectedAt, p.CollectedAt.Add(100*time.Hour))
	after, _ := json.Marshal(p)
	if !bytes.Equal(before, after) || !bytes.Equal(rb, r.JSON()) {
		t.Fatal("Evaluate modified its input")
	}
}

func TestParseRules(t *testing.T) {
	r, err := ParseRules([]byte(`{"require_disk_encryption": true, "min_os_version": "10.0.22631", "max_posture_age_hours": 12, "require_firewall": false}`))
	if err != nil {
		t.Fatal(err)
	}
	if !r.RequireDiskEncryption || r.MinOSVersion != "10.0.22631" || *r.MaxPostureAgeHours != 12 || r.RequireFirewall {
		t.Fatalf("%+v", r)
	}
	if got := string(r.JSON()); got != `{"require_disk_encryption":true,"min_os_version":"10.0.22631","max_posture_age_hours":12}` {
		t.Errorf("canonical %s", got)
	}
	if r, err := ParseRules([]byte(`{}`)); err != nil || *r != (Rules{}) {
		t.Errorf("empty rules: %+v %v", r, err)
	}

	// Every problem is reported at once.
	_, err = ParseRules([]byte(`{"require_disk_encryption": "yes", "require_bitlocker": true, "min_os_version": "ten",
		"max_posture_age_hours": 0, "max_antimalware_signature_age_days": 1.5, "require_firewall": null}`))
	var re *RulesError
	if !errors.As(err, &re) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v, want *RulesError wrapping ErrInvalid", err)
	}
	want := []string{
		"max_antimalware_signature_age_days must be a whole number from 0 to 3650",
		"max_posture_age_hours must be a whole number from 1 to 8760",
		`min_os_version must be a dotted numeric version such as "22.04" or "10.0.22631"`,
		`unknown rule "require_bitlocker"`,
		"require_disk_encryption must be true or false",
		"require_firewall must be true or false",
	}
	if !slices.Equal(re.Problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(re.Problems, "\n"), strings.Join(want, "\n"))
	}
	for _, bad := range []string{``, `[]`, `null`, `"x"`, `{} {}`, `{"require_firewall": true`} {
		if _, err := ParseRules([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRules(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"12", "12", 0}, {"12", "12.0", 0}, {"12.0.0", "12", 0}, {"12.1", "12", 1}, {"9.10", "10", -1},
		{"10.0.22631", "10.0.19045", 1}, {"22.04.3 LTS", "22.04", 1}, {"6.8.0-45-generic", "6.8", 0}, {"14.5", "14.10", -1},
	} {
		a, ok1 := parseVersion(c.a, false)
		b, ok2 := parseVersion(c.b, false)
		if !ok1 || !ok2 {
			t.Fatalf("parse %q %q", c.a, c.b)
		}
		if got := compareVersions(a, b); got != c.want {
			t.Errorf("compare(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	for _, bad := range []string{"", "v12", "ten", "12.a", ".", "1.2.3.4.5.6.7.8.9", "99999999999"} {
		if _, ok := parseVersion(bad, true); ok {
			t.Errorf("parseVersion(%q, strict) accepted", bad)
		}
	}
}
