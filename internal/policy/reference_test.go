package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// This file checks Evaluate against refEvaluate, a direct, unoptimised
// reading of the documented semantics, on random policy sets and requests.

var refLocations = []NamedLocation{
	{ID: "office", Trusted: true, IPRanges: []string{"10.0.0.0/8", "2001:db8:1::/48"}},
	{ID: "lab", IPRanges: []string{"10.9.0.0/16"}},
	{ID: "partner6", IPRanges: []string{"2001:db8:2::/48"}},
	{ID: "eu", Countries: []string{"DE", "FR"}},
	{ID: "home", Trusted: true, Countries: []string{"JP"}},
}

var refRules = []string{
	`device.platform == 'linux'`,
	`device.hostname.startsWith('ws-') && device.registered`,
	`device.os_version.matches('^1[0-9]\\.') || device.trust_type in ['managed', 'hybrid']`,
	`!(device.compliance == 'compliant') ? device.status != 'active' : device.hostname.contains('x')`,
	`size(device.hostname) > 3`,         // cel-go
	`int(device.os_version) >= 11`,      // cel-go, fails on most versions: fail closed
	`device.hostname.endsWith('.corp')`, //
	`device.key_attested || device.platform == 'ios'`,
}

type refGen struct{ r *rand.Rand }

func (g refGen) pick(list []string) string { return list[g.r.IntN(len(list))] }

// some returns a random subset of list (possibly empty).
func (g refGen) some(list []string, max int) []string {
	var out []string
	for range g.r.IntN(max + 1) {
		v := g.pick(list)
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func (g refGen) chance(n int) bool { return g.r.IntN(n) == 0 }

func (g refGen) policy(id string) Policy {
	p := Policy{ID: id, State: State(g.pick([]string{"enabled", "enabled", "enabled", "enabled", "report_only", "disabled"}))}
	a := &p.Assignments
	a.Users.Include = []string{All}
	if g.chance(3) {
		a.Users.Include = g.some([]string{"u1", "u2", "u3"}, 2)
		a.Groups.Include = g.some([]string{"g1", "g2", "g3"}, 2)
	}
	if g.chance(2) {
		a.Users.Exclude = g.some([]string{"u1", "u2", "u3"}, 1)
		a.Groups.Exclude = g.some([]string{"g1", "g2", "g3"}, 1)
	}
	a.Applications.Include = []string{All}
	if g.chance(3) {
		a.Applications.Include = g.some([]string{All, "a1", "a2"}, 2)
		a.Applications.Include = append(a.Applications.Include, g.pick([]string{"a1", "a2", "a3"}))
	}
	if g.chance(3) {
		a.Applications.Exclude = g.some([]string{"a1", "a2", "a3"}, 1)
	}
	if g.chance(3) {
		a.ClientTypes = g.some(clientTypes, 2)
	}
	cd := &p.Conditions
	if g.chance(3) {
		cd.Locations = &IncludeExclude{Include: append(g.some([]string{All, Trusted, "office", "lab", "partner6", "eu", "home"}, 2), g.pick([]string{All, Trusted, "lab", "eu"})),
			Exclude: g.some([]string{Trusted, "office", "lab", "partner6", "eu", "home"}, 2)}
	}
	if g.chance(4) {
		cd.DevicePlatforms = &IncludeExclude{Include: []string{g.pick([]string{All, All, "linux", "windows", "ios"})}, Exclude: g.some([]string{"linux", "darwin", "windows"}, 2)}
	}
	if g.chance(3) {
		cd.DeviceState = &IncludeExclude{Include: []string{g.pick([]string{All, All, DeviceRegistered, DeviceCompliant})}, Exclude: g.some([]string{DeviceRegistered, DeviceCompliant}, 1)}
	}
	if g.chance(2) {
		cd.DeviceFilter = &DeviceFilter{Mode: g.pick([]string{FilterInclude, FilterExclude}), Rule: g.pick(refRules)}
	}
	if g.chance(4) {
		cd.SignInRisk = g.some(riskLevels, 2)
	}
	if g.chance(4) {
		cd.UserRisk = g.some(riskLevels, 2)
	}
	if g.chance(4) {
		cd.Flows = g.some(flowNames, 2)
	}
	gr := &p.Grant
	if g.chance(4) {
		gr.Block = true
	} else {
		gr.Controls = g.some(controls, 3)
		if g.chance(3) {
			gr.AuthenticationStrength = g.pick(strengths[1:])
		}
		gr.Operator = g.pick([]string{"", OperatorAll, OperatorAny})
	}
	ss := &p.Session
	if g.chance(3) {
		ss.SignInFrequency = g.pick([]string{"1h", "8h", SignInEveryTime})
	}
	if g.chance(3) {
		ss.AccessTokenLifetime = g.pick([]string{"10m", "1h"})
	}
	ss.StrictLocation = g.chance(4)
	if !gr.Block && len(gr.Controls) == 0 && gr.AuthenticationStrength == "" && *ss == (SessionControls{}) {
		gr.Controls = []string{ControlMFA}
	}
	return p
}

func (g refGen) input() Input {
	in := Input{
		User:       UserInput{ID: g.pick([]string{"", "u1", "u2", "u4"}), Groups: g.some([]string{"g1", "g2", "g3", "g4"}, 3), Risk: g.pick([]string{"", RiskNone, RiskLow, RiskMedium, RiskHigh, "bogus"})},
		App:        AppInput{ClientID: g.pick([]string{"", "a1", "a2", "a3", "a4"}), Public: g.chance(2), Native: g.chance(2)},
		Country:    g.pick([]string{"", "DE", "JP", "US"}),
		SignInRisk: g.pick([]string{"", RiskNone, RiskLow, RiskMedium, RiskHigh}),
		Flow:       g.pick(append([]string{"", "bogus"}, flowNames...)),
		Auth: AuthInput{Strength: g.pick(append([]string{""}, strengths...)), MFA: g.chance(3),
			TokenProtected: g.chance(3), PasswordChanged: g.chance(3)},
	}
	if ip := g.pick([]string{"", "10.1.2.3", "10.9.1.1", "::ffff:10.9.1.1", "192.0.2.1", "2001:db8:1::5", "2001:db8:2::5", "2001:db8:3::5"}); ip != "" {
		in.IP = netip.MustParseAddr(ip)
	}
	if !g.chance(4) {
		in.Device = &DeviceInput{
			Registered: g.chance(2), KeyAttested: g.chance(2), Status: g.pick([]string{"", "active", "active", "lost"}),
			Compliance: g.pick([]string{"", "compliant", "noncompliant"}), Platform: g.pick([]string{"", "linux", "windows", "darwin", "ios", "beos"}),
			OSVersion: g.pick([]string{"", "10.1", "11", "12.0"}), TrustType: g.pick([]string{"", "managed", "byod"}),
			Hostname: g.pick([]string{"", "ws-1", "x.corp", "laptop", "ws-" + strings.Repeat("y", maxAttrLen)}),
		}
	}
	return in
}

// refEvaluate is Evaluate written directly from the documentation.
func refEvaluate(t *testing.T, pols []Policy, locs []NamedLocation, in Input) Decision {
	env, err := newCELEnv()
	if err != nil {
		t.Fatal(err)
	}
	dev := DeviceInput{}
	if in.Device != nil {
		dev = *in.Device
	}
	reg := in.Device != nil && dev.Registered && dev.Status == "active"
	comp := reg && dev.Compliance == "compliant"
	matched := map[string]bool{}
	trusted := false
	for _, l := range locs {
		m := false
		for _, r := range l.IPRanges {
			m = m || in.IP.IsValid() && netip.MustParsePrefix(r).Contains(in.IP.Unmap())
		}
		m = m || in.Country != "" && slices.Contains(l.Countries, in.Country)
		matched[l.ID] = m
		trusted = trusted || m && l.Trusted
	}
	rank := slices.Index(strengths, in.Auth.Strength)
	satisfied := func(ctl string) bool {
		switch ctl {
		case ControlMFA:
			return in.Auth.MFA || rank >= 1
		case ControlRegisteredDevice:
			return reg
		case ControlCompliantDevice:
			return comp
		case ControlTokenProtection:
			return in.Auth.TokenProtected
		case ControlPasswordChange:
			return in.Auth.PasswordChanged
		}
		k := slices.Index(strengths, strings.TrimPrefix(ctl, ControlAuthStrengthPrefix))
		return rank >= k || in.Auth.MFA && k == 1
	}
	level := func(v string) string {
		if v == "" {
			return RiskNone
		}
		return v
	}
	listed := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	has := func(list []string, v string, allowAll bool) bool {
		return allowAll && slices.Contains(list, All) || v != "" && slices.Contains(list, v)
	}
	anyOf := func(list, vs []string) bool {
		for _, v := range vs {
			if slices.Contains(list, v) {
				return true
			}
		}
		return false
	}

	d := Decision{Outcome: OutcomeAllow}
	union := map[string]bool{}
	for _, p := range pols {
		r := PolicyResult{ID: p.ID, State: p.State}
		a, cd := &p.Assignments, &p.Conditions
		reason := func() string {
			switch {
			case p.State == StateDisabled:
				return ReasonDisabled
			case !listed(cd.Flows, in.Flow):
				return ReasonFlow
			case !has(a.Applications.Include, in.App.ClientID, true):
				return ReasonAppNotIncluded
			case has(a.Applications.Exclude, in.App.ClientID, true):
				return ReasonAppExcluded
			}
			kind := map[bool]string{true: ClientPublic, false: ClientConfidential}[in.App.Public]
			form := map[bool]string{true: ClientNative, false: ClientBrowser}[in.App.Native]
			kinds := slices.DeleteFunc(slices.Clone(a.ClientTypes), func(s string) bool { return s == ClientBrowser || s == ClientNative })
			forms := slices.DeleteFunc(slices.Clone(a.ClientTypes), func(s string) bool { return s == ClientPublic || s == ClientConfidential })
			switch {
			case !listed(kinds, kind) || !listed(forms, form):
				return ReasonClientType
			case !has(a.Users.Include, in.User.ID, true) && !anyOf(a.Groups.Include, in.User.Groups):
				return ReasonUserNotIncluded
			case has(a.Users.Exclude, in.User.ID, true) || anyOf(a.Groups.Exclude, in.User.Groups):
				return ReasonUserExcluded
			case !listed(cd.UserRisk, level(in.User.Risk)):
				return ReasonUserRisk
			case !listed(cd.SignInRisk, level(in.SignInRisk)):
				return ReasonSignInRisk
			}
			if pl := cd.DevicePlatforms; pl != nil {
				if !has(pl.Include, dev.Platform, true) {
					return ReasonPlatformNotIncluded
				}
				if has(pl.Exclude, dev.Platform, false) {
					return ReasonPlatformExcluded
				}
			}
			if ds := cd.DeviceState; ds != nil {
				in := slices.Contains(ds.Include, All) || slices.Contains(ds.Include, DeviceRegistered) && reg || slices.Contains(ds.Include, DeviceCompliant) && comp
				if !in {
					return ReasonDeviceStateNotIncl
				}
				if slices.Contains(ds.Exclude, DeviceRegistered) && reg || slices.Contains(ds.Exclude, DeviceCompliant) && comp {
					return ReasonDeviceStateExcluded
				}
			}
			if l := cd.Locations; l != nil {
				hit := func(list []string) bool {
					for _, v := range list {
						if v == All || v == Trusted && trusted || matched[v] {
							return true
						}
					}
					return false
				}
				if !hit(l.Include) {
					return ReasonLocationNotIncluded
				}
				if hit(l.Exclude) {
					return ReasonLocationExcluded
				}
			}
			if f := cd.DeviceFilter; f != nil {
				ast, iss := env.Compile(f.Rule)
				if iss.Err() != nil {
					t.Fatal(iss.Err())
				}
				prg, err := env.Program(ast, cel.CostLimit(CELCostLimit), cel.EvalOptions(cel.OptOptimize))
				if err != nil {
					t.Fatal(err)
				}
				out, _, err := prg.Eval(map[string]any{varPlatform: dev.Platform, varOSVersion: dev.OSVersion, varTrustType: dev.TrustType,
					varCompliance: dev.Compliance, varStatus: dev.Status, varHostname: dev.Hostname, varRegistered: dev.Registered,
					varKeyAttested: dev.KeyAttested})
				switch {
				case err != nil:
					r.Error = err.Error()
				case f.Mode == FilterInclude && out != types.True:
					return ReasonFilterNotMatched
				case f.Mode == FilterExclude && out == types.True:
					return ReasonFilterExcluded
				}
			}
			return ""
		}()
		if reason != "" {
			r.Result, r.Reason = ResultNotApplied, reason
			d.Policies = append(d.Policies, r)
			continue
		}
		g := &p.Grant
		if g.Block {
			r.Outcome = OutcomeBlock
		} else {
			ctls := slices.Clone(g.Controls)
			if g.AuthenticationStrength != "" {
				ctls = append(ctls, ControlAuthStrengthPrefix+g.AuthenticationStrength)
			}
			var unmet []string
			for _, c := range ctls {
				if !satisfied(c) {
					unmet = append(unmet, c)
				}
			}
			if g.Operator == OperatorAny && len(unmet) < len(ctls) {
				unmet = nil
			}
			r.Unmet = unmet
			r.Outcome = OutcomeAllow
			if len(unmet) > 0 {
				r.Outcome = OutcomeAllowWithControls
			}
		}
		if p.State == StateReportOnly {
			r.Result = ResultReportOnly
			d.Policies = append(d.Policies, r)
			continue
		}
		r.Result = ResultApplied
		d.Policies = append(d.Policies, r)
		if g.Block {
			d.BlockedBy = append(d.BlockedBy, p.ID)
		} else if len(r.Unmet) > 0 {
			op := OperatorAll
			if g.Operator == OperatorAny {
				op = OperatorAny
			}
			d.Requirements = append(d.Requirements, Requirement{Policy: p.ID, Operator: op, Controls: r.Unmet})
			for _, u := range r.Unmet {
				union[u] = true
			}
		}
		ss, s := &p.Session, &d.Session
		if ss.SignInFrequency == SignInEveryTime {
			s.SignInEveryTime = true
		} else if f, _ := time.ParseDuration(ss.SignInFrequency); f > 0 && (s.SignInFrequency == 0 || f < s.SignInFrequency) {
			s.SignInFrequency = f
		}
		if l, _ := time.ParseDuration(ss.AccessTokenLifetime); l > 0 && (s.AccessTokenLifetime == 0 || l < s.AccessTokenLifetime) {
			s.AccessTokenLifetime = l
		}
		s.StrictLocation = s.StrictLocation || ss.StrictLocation
	}
	switch {
	case len(d.BlockedBy) > 0:
		d.Outcome, d.Requirements = OutcomeBlock, nil
	case len(d.Requirements) > 0:
		d.Outcome = OutcomeAllowWithControls
		for c := range union {
			d.Controls = append(d.Controls, c)
		}
		sort.Strings(d.Controls)
	}
	return d
}

func TestEvaluateMatchesReference(t *testing.T) {
	g := refGen{rand.New(rand.NewPCG(7, 11))}
	sets, checked, rejected := 0, 0, 0
	seen := map[string]int{}
	for sets < 150 {
		var pols []Policy
		for i := range 1 + g.r.IntN(12) {
			pols = append(pols, g.policy(fmt.Sprintf("p%d", i)))
		}
		set, err := Compile(pols, refLocations)
		if err != nil {
			rejected++
			continue // e.g. an include/exclude pair leaving nothing
		}
		sets++
		for range 40 {
			in := g.input()
			got, want := set.Evaluate(in), refEvaluate(t, pols, refLocations, in)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("policies %+v\ninput %+v\ngot  %+v\nwant %+v", pols, in, got, want)
			}
			checked++
			seen["outcome "+string(got.Outcome)]++
			for _, r := range got.Policies {
				seen[string(r.Result)+" "+r.Reason]++
				if r.Error != "" {
					seen["filter error"]++
				}
			}
		}
	}
	// The generator must reach every outcome and every reason.
	for _, k := range []string{"outcome allow", "outcome block", "outcome allow_with_controls", "applied ", "report_only ", "filter error",
		"not_applied " + ReasonDisabled, "not_applied " + ReasonFlow, "not_applied " + ReasonAppNotIncluded, "not_applied " + ReasonAppExcluded,
		"not_applied " + ReasonClientType, "not_applied " + ReasonUserNotIncluded, "not_applied " + ReasonUserExcluded,
		"not_applied " + ReasonUserRisk, "not_applied " + ReasonSignInRisk, "not_applied " + ReasonPlatformNotIncluded,
		"not_applied " + ReasonPlatformExcluded, "not_applied " + ReasonDeviceStateNotIncl, "not_applied " + ReasonDeviceStateExcluded,
		"not_applied " + ReasonLocationNotIncluded, "not_applied " + ReasonLocationExcluded, "not_applied " + ReasonFilterNotMatched,
		"not_applied " + ReasonFilterExcluded} {
		if seen[k] < 5 {
			t.Errorf("generator reached %q %d times", k, seen[k])
		}
	}
	t.Logf("%d sets (%d rejected), %d requests: %v", sets, rejected, checked, seen)
}

// TestEvaluateMatchesReferenceLarge: more policies, locations and groups
// than Evaluate's stack buffers hold.
func TestEvaluateMatchesReferenceLarge(t *testing.T) {
	g := refGen{rand.New(rand.NewPCG(3, 5))}
	locs := slices.Clone(refLocations)
	for i := range 70 {
		locs = append(locs, NamedLocation{ID: fmt.Sprintf("net%d", i), Trusted: i%7 == 0, IPRanges: []string{fmt.Sprintf("10.%d.0.0/16", i)}})
	}
	var pols []Policy
	for len(pols) < 300 {
		p := g.policy(fmt.Sprintf("p%d", len(pols)))
		if len(pols)%3 == 0 {
			p.Assignments.Groups.Exclude = append(p.Assignments.Groups.Exclude, fmt.Sprintf("big%d", len(pols)))
		}
		if len(pols)%5 == 0 {
			p.Conditions.Locations = &IncludeExclude{Include: []string{All}, Exclude: []string{fmt.Sprintf("net%d", len(pols)%70)}}
		}
		if _, err := Compile([]Policy{p}, locs); err == nil {
			pols = append(pols, p)
		}
	}
	set, err := Compile(pols, locs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		in := g.input()
		in.User.Groups = append(in.User.Groups, fmt.Sprintf("big%d", 3*(i%100)))
		if i%2 == 0 {
			in.IP = netip.MustParseAddr(fmt.Sprintf("10.%d.1.1", i%70))
		}
		got, want := set.Evaluate(in), refEvaluate(t, pols, locs, in)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("input %+v\ngot  %+v\nwant %+v", in, got, want)
		}
	}
}

// TestEvaluateManyUnmetLists: more distinct unmet lists than Evaluate
// shares (listCache), each in its policy's control order.
func TestEvaluateManyUnmetLists(t *testing.T) {
	var pols []Policy
	var perm func(prefix, rest []string)
	perm = func(prefix, rest []string) {
		if len(rest) == 0 {
			pols = append(pols, Policy{ID: fmt.Sprintf("p%d", len(pols)), State: StateEnabled, Assignments: allUsers(),
				Grant: GrantControls{Controls: slices.Clone(prefix), AuthenticationStrength: StrengthPhishingResistant}})
			return
		}
		for i := range rest {
			perm(append(slices.Clone(prefix), rest[i]), append(slices.Clone(rest[:i]), rest[i+1:]...))
		}
	}
	perm(nil, controls[:4]) // 24 orders
	perm(nil, []string{ControlMFA, ControlPasswordChange, ControlTokenProtection})
	perm(nil, []string{ControlCompliantDevice, ControlRegisteredDevice, ControlPasswordChange})
	set, err := Compile(pols, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []Input{
		{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}},
		{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Auth: AuthInput{MFA: true, PasswordChanged: true}},
	} {
		got, want := set.Evaluate(in), refEvaluate(t, pols, nil, in)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	}
}
