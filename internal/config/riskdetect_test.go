package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRiskDetectionConfig: defaults, file and environment, the values
// refused, and the detectors' configuration with its IP lists.
func TestRiskDetectionConfig(t *testing.T) {
	cfg, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.RiskDetection
	if !r.Enabled || r.ConcurrentWindow != 10*time.Minute || r.MaxSpeedKmh != 1000 || r.SprayUsers != 10 || r.MaxSessions != 200_000 {
		t.Errorf("defaults %+v", r)
	}
	d, err := cfg.DetectConfig()
	if err != nil {
		t.Fatal(err)
	}
	if d.MaxTokenLifetime != 24*time.Hour || d.AnonymousIPs != nil || d.Signals["https://schemas.openid.net/secevent/risc/event-type/credential-compromise"].Type == "" {
		t.Errorf("detect config %+v", d)
	}

	dir := t.TempDir()
	tor := filepath.Join(dir, "tor.txt")
	if err := os.WriteFile(tor, []byte("# exits\n192.0.2.7\n2001:db8::/32 # a range\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := `risk_detection:
  enabled: false
  anonymous_ips_file: ` + tor + `
  exempt_asns: [64512, 4200000000]
  spray_users: 25
  signals:
    - {event_type: "https://edr.example/secevent/stolen-cookie", type: external_stolen_cookie, severity: high, confidence: 0.9, technique: T1539}
    - {event_type: "https://schemas.openid.net/secevent/caep/event-type/session-revoked", type: ""}
`
	cfg, err = load(t, yaml, "WARD_RISK_DETECTION__MAX_SPEED_KMH=900")
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.RiskDetection; r.Enabled || r.SprayUsers != 25 || r.MaxSpeedKmh != 900 || len(r.ExemptASNs) != 2 {
		t.Errorf("from file and environment: %+v", r)
	}
	d, err = cfg.DetectConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !d.AnonymousIPs.Contains(netip.MustParseAddr("192.0.2.7")) || !d.AnonymousIPs.Contains(netip.MustParseAddr("2001:db8::1")) ||
		d.AnonymousIPs.Contains(netip.MustParseAddr("192.0.2.8")) {
		t.Error("anonymous list not loaded as written")
	}
	if d.ExemptASNs[1] != 4200000000 || d.SprayUsers != 25 || d.Signals["https://edr.example/secevent/stolen-cookie"].Type != "external_stolen_cookie" {
		t.Errorf("detect config %+v", d)
	}
	if _, ok := d.Signals["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]; ok {
		t.Error("an empty type should unmap a default signal")
	}

	// A malformed list is an error naming the file and the line.
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("192.0.2.1\nnot-an-address\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = load(t, "risk_detection: {malicious_ips_file: "+bad+"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.DetectConfig(); err == nil || !strings.Contains(err.Error(), "bad.txt") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad list: %v", err)
	}

	for _, bad := range []string{"risk_detection: {concurrent_window: 0s}", "risk_detection: {spray_users: 0}", "risk_detection: {max_speed_kmh: 5}",
		"risk_detection: {exempt_asns: [0]}", "risk_detection: {max_sessions: 1}", "risk_detection: {min_travel_km: -1}",
		"risk_detection: {signals: [{event_type: x, type: Bad Type, severity: high, confidence: 0.5}]}",
		"risk_detection: {signals: [{event_type: x, type: ok, severity: critical, confidence: 0.5}]}",
		"risk_detection: {signals: [{event_type: x, type: ok, severity: high, confidence: 2}]}",
		"risk_detection: {signals: [{event_type: x, type: ok, severity: high, confidence: 0.5, technique: X1}]}",
		"risk_detection: {signals: [{type: ok, severity: high, confidence: 0.5}]}"} {
		cfg, err := load(t, bad+"\n")
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "risk_detection.") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}
