package config

import (
	"fmt"
	"regexp"
	"time"

	"github.com/ward-idp/ward/internal/risk/detect"
)

// RiskDetection configures the token-theft detectors (docs/risk.md).
// Zero numbers and durations take the detectors' defaults.
type RiskDetection struct {
	// Enabled runs the detectors over every activity (online) and at
	// every sign-in.
	Enabled bool `koanf:"enabled"`

	// IP list files: one address or CIDR prefix per line, # comments.
	// Anonymous: Tor exits, anonymisers; malicious: deny lists, threat
	// feeds; corporate: the organisation's networks and VPN egress
	// (familiar for every user).
	AnonymousIPsFile string `koanf:"anonymous_ips_file"`
	MaliciousIPsFile string `koanf:"malicious_ips_file"`
	CorporateIPsFile string `koanf:"corporate_ips_file"`
	// CorporateASNs are the organisation's own autonomous systems;
	// ExemptASNs are networks whose addresses say nothing of where the
	// user is (mobile carriers, in-flight wifi, relays).
	CorporateASNs []int64 `koanf:"corporate_asns"`
	ExemptASNs    []int64 `koanf:"exempt_asns"`

	ConcurrentWindow   time.Duration `koanf:"concurrent_window"`
	RefreshGrace       time.Duration `koanf:"refresh_grace"`
	Suppress           time.Duration `koanf:"suppress"`
	FamiliarAfter      time.Duration `koanf:"familiar_after"`
	ProfileRetention   time.Duration `koanf:"profile_retention"`
	MinHistory         int           `koanf:"min_history"`
	MaxSpeedKmh        float64       `koanf:"max_speed_kmh"`
	MinTravelKm        float64       `koanf:"min_travel_km"`
	OrgNetworkUsers    int           `koanf:"org_network_users"`
	SprayUsers         int           `koanf:"spray_users"`
	SprayWindow        time.Duration `koanf:"spray_window"`
	BruteForceFailures int           `koanf:"brute_force_failures"`
	BruteForceWindow   time.Duration `koanf:"brute_force_window"`
	MFAFailures        int           `koanf:"mfa_failures"`

	// Bounds of the detectors' memory.
	MaxSessions int `koanf:"max_sessions"`
	MaxUsers    int `koanf:"max_users"`
	MaxTokens   int `koanf:"max_tokens"`
	MaxSources  int `koanf:"max_sources"`

	// Signals map external signals (SSF event types) to detections, in
	// addition to (or instead of) the defaults.
	Signals []SignalMapping `koanf:"signals"`
}

// SignalMapping maps one external event type to a detection; an empty
// Type unmaps a default.
type SignalMapping struct {
	EventType  string  `koanf:"event_type"`
	Type       string  `koanf:"type"`
	Severity   string  `koanf:"severity"`
	Confidence float64 `koanf:"confidence"`
	Technique  string  `koanf:"technique"`
}

func defaultRiskDetection() RiskDetection {
	d := detect.DefaultConfig()
	return RiskDetection{
		Enabled: true, ConcurrentWindow: d.ConcurrentWindow, RefreshGrace: d.RefreshGrace, Suppress: d.Suppress,
		FamiliarAfter: d.FamiliarAfter, ProfileRetention: d.ProfileRetention, MinHistory: d.MinHistory,
		MaxSpeedKmh: d.MaxSpeedKmh, MinTravelKm: d.MinTravelKm, OrgNetworkUsers: d.OrgNetworkUsers,
		SprayUsers: d.SprayUsers, SprayWindow: d.SprayWindow, BruteForceFailures: d.BruteForceFailures,
		BruteForceWindow: d.BruteForceWindow, MFAFailures: d.MFAFailures,
		MaxSessions: d.MaxSessions, MaxUsers: d.MaxUsers, MaxTokens: d.MaxTokens, MaxSources: d.MaxSources,
	}
}

var (
	detectionTypePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)
	techniquePattern     = regexp.MustCompile(`^T[0-9]{4}(\.[0-9]{3})?$`)
)

func (c *Config) validateRiskDetection(v *validator) {
	r := &c.RiskDetection
	const p = "risk_detection."
	for name, d := range map[string]time.Duration{"concurrent_window": r.ConcurrentWindow, "refresh_grace": r.RefreshGrace,
		"suppress": r.Suppress, "familiar_after": r.FamiliarAfter, "profile_retention": r.ProfileRetention,
		"spray_window": r.SprayWindow, "brute_force_window": r.BruteForceWindow} {
		v.positive(p+name, d)
	}
	for name, n := range map[string]int{"min_history": r.MinHistory, "org_network_users": r.OrgNetworkUsers, "spray_users": r.SprayUsers,
		"brute_force_failures": r.BruteForceFailures, "mfa_failures": r.MFAFailures} {
		if n < 1 || n > 10000 {
			v.add(p+name, "must be 1..10000 (got %d)", n)
		}
	}
	for name, n := range map[string]int{"max_sessions": r.MaxSessions, "max_users": r.MaxUsers, "max_tokens": r.MaxTokens, "max_sources": r.MaxSources} {
		if n < 100 || n > 100_000_000 {
			v.add(p+name, "must be 100..100000000 (got %d)", n)
		}
	}
	if r.MaxSpeedKmh < 100 || r.MaxSpeedKmh > 100000 {
		v.add(p+"max_speed_kmh", "must be 100..100000 (got %g)", r.MaxSpeedKmh)
	}
	if r.MinTravelKm < 0 || r.MinTravelKm > 20000 {
		v.add(p+"min_travel_km", "must be 0..20000 (got %g)", r.MinTravelKm)
	}
	for name, l := range map[string][]int64{"corporate_asns": r.CorporateASNs, "exempt_asns": r.ExemptASNs} {
		for i, a := range l {
			if a < 1 || a > 1<<32-1 {
				v.add(fmt.Sprintf("%s%s[%d]", p, name, i), "must be an AS number 1..4294967295 (got %d)", a)
			}
		}
	}
	for i, s := range r.Signals {
		path := fmt.Sprintf("%ssignals[%d]", p, i)
		if s.EventType == "" || len(s.EventType) > 512 {
			v.add(path+".event_type", "must be an event type URI (or the last segment of one) of at most 512 bytes")
		}
		if s.Type == "" {
			continue
		}
		if !detectionTypePattern.MatchString(s.Type) {
			v.add(path+".type", "must match [a-z0-9][a-z0-9_.:-]{0,63}")
		}
		switch s.Severity {
		case "low", "medium", "high":
		default:
			v.add(path+".severity", "must be low, medium or high")
		}
		if s.Confidence <= 0 || s.Confidence > 1 {
			v.add(path+".confidence", "must be more than 0 and at most 1")
		}
		if s.Technique != "" && !techniquePattern.MatchString(s.Technique) {
			v.add(path+".technique", "must be a MITRE ATT&CK technique id such as T1528 or T1550.001")
		}
	}
}

// DetectConfig is the detectors' configuration: risk_detection with its
// IP list files loaded, and the longest access-token lifetime Ward gives
// (tokens.access_token_ttl, tokens.cae_access_token_ttl). An unreadable
// or malformed list file is an error naming the file and the line.
func (c *Config) DetectConfig() (detect.Config, error) {
	r := &c.RiskDetection
	d := detect.DefaultConfig()
	d.ConcurrentWindow, d.RefreshGrace, d.Suppress = r.ConcurrentWindow, r.RefreshGrace, r.Suppress
	d.FamiliarAfter, d.ProfileRetention, d.MinHistory = r.FamiliarAfter, r.ProfileRetention, r.MinHistory
	d.MaxSpeedKmh, d.MinTravelKm, d.OrgNetworkUsers = r.MaxSpeedKmh, r.MinTravelKm, r.OrgNetworkUsers
	d.SprayUsers, d.SprayWindow = r.SprayUsers, r.SprayWindow
	d.BruteForceFailures, d.BruteForceWindow, d.MFAFailures = r.BruteForceFailures, r.BruteForceWindow, r.MFAFailures
	d.MaxSessions, d.MaxUsers, d.MaxTokens, d.MaxSources = r.MaxSessions, r.MaxUsers, r.MaxTokens, r.MaxSources
	d.MaxTokenLifetime = max(c.Tokens.AccessTokenTTL, c.Tokens.CAEAccessTokenTTL)
	for _, a := range r.CorporateASNs {
		d.CorporateASNs = append(d.CorporateASNs, uint32(a))
	}
	for _, a := range r.ExemptASNs {
		d.ExemptASNs = append(d.ExemptASNs, uint32(a))
	}
	for _, s := range r.Signals {
		if s.Type == "" {
			delete(d.Signals, s.EventType)
			continue
		}
		d.Signals[s.EventType] = detect.SignalRule{Type: s.Type, Severity: s.Severity, Confidence: s.Confidence, Technique: s.Technique}
	}
	for _, l := range []struct {
		path string
		into **detect.IPList
	}{{r.AnonymousIPsFile, &d.AnonymousIPs}, {r.MaliciousIPsFile, &d.MaliciousIPs}, {r.CorporateIPsFile, &d.CorporateIPs}} {
		if l.path == "" {
			continue
		}
		list, err := detect.LoadIPList(l.path)
		if err != nil {
			return detect.Config{}, err
		}
		*l.into = list
	}
	return d, nil
}
