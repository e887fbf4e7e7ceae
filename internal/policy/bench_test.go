package policy

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkEvaluate200Policies evaluates a realistic request against 200
// enabled policies: every fourth has a (distinct) CEL device filter, others
// use locations, groups, risk and flows. CEL is compiled once, in Compile.
func BenchmarkEvaluate200Policies(b *testing.B) {
	locs := []NamedLocation{
		{ID: "hq", Trusted: true, IPRanges: []string{"10.0.0.0/8", "2001:db8::/32"}},
		{ID: "blocked", Countries: []string{"KP", "IR", "SY"}},
	}
	var pols []Policy
	for i := range 200 {
		p := Policy{ID: fmt.Sprintf("p%03d", i), State: StateEnabled,
			Assignments: Assignments{
				Users:        IncludeExclude{Include: []string{All}, Exclude: []string{"breakglass"}},
				Groups:       IncludeExclude{Exclude: []string{fmt.Sprintf("g%d", i)}},
				Applications: IncludeExclude{Include: []string{All}},
			},
			Grant: GrantControls{Operator: OperatorAny, Controls: []string{ControlMFA, ControlCompliantDevice}},
		}
		switch i % 4 {
		case 0:
			p.Conditions.DeviceFilter = &DeviceFilter{Mode: FilterInclude,
				Rule: fmt.Sprintf("device.platform == 'linux' && device.os_version != '%d' && device.hostname.startsWith('ws-')", i)}
		case 1:
			p.Conditions.Locations = &IncludeExclude{Include: []string{All}, Exclude: []string{Trusted}}
		case 2:
			p.Conditions.SignInRisk = []string{RiskLow, RiskMedium, RiskHigh}
			p.Session.SignInFrequency = "8h"
		case 3:
			p.Conditions.Flows = []string{FlowInteractive, FlowRefresh}
			p.Conditions.DeviceState = &IncludeExclude{Include: []string{All}, Exclude: []string{DeviceCompliant}}
		}
		pols = append(pols, p)
	}
	set, err := Compile(pols, locs)
	if err != nil {
		b.Fatal(err)
	}
	in := Input{
		User:       UserInput{ID: "alice", Groups: []string{"staff", "eng", "g-other"}, Risk: RiskLow},
		App:        AppInput{ClientID: "docs"},
		Device:     &DeviceInput{ID: "d1", Registered: true, Status: "active", Compliance: "noncompliant", Platform: "linux", OSVersion: "6.8", Hostname: "ws-17"},
		IP:         netip.MustParseAddr("192.0.2.44"),
		Country:    "DE",
		SignInRisk: RiskMedium,
		Flow:       FlowRefresh,
		Auth:       AuthInput{Strength: StrengthPassword},
	}
	if d := set.Evaluate(in); d.Outcome != OutcomeAllowWithControls || len(d.Requirements) < 150 {
		b.Fatalf("unexpected decision %s with %d requirements", d.Outcome, len(d.Requirements))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		set.Evaluate(in)
	}
}
