package config

import (
	"strings"
	"testing"
	"time"
)

// TestRiskConfig: the defaults, the file and the environment, and the
// values refused.
func TestRiskConfig(t *testing.T) {
	cfg, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Risk; r.AutoRevokeLevel != "high" || r.MFARemediates != "medium" || r.LowLifetime != 7*24*time.Hour ||
		r.MediumLifetime != 30*24*time.Hour || r.Retention != 90*24*time.Hour {
		t.Errorf("defaults %+v", r)
	}
	cfg, err = load(t, "risk: {auto_revoke_level: \"off\", low_lifetime: 1h}\n", "WARD_RISK__MFA_REMEDIATES=low")
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Risk; r.AutoRevokeLevel != "off" || r.LowLifetime != time.Hour || r.MFARemediates != "low" {
		t.Errorf("from file and environment: %+v", r)
	}
	for _, bad := range []string{"risk: {auto_revoke_level: none}", "risk: {auto_revoke_level: critical}", "risk: {mfa_remediates: yes}",
		"risk: {medium_lifetime: 0s}", "risk: {retention: -1h}"} {
		cfg, err := load(t, bad+"\n")
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "risk.") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}
