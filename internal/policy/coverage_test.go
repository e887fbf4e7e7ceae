package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"
)

// TestGoldenCoverage checks that the golden cases (testdata/cases) use every
// condition, grant control and session control, and that their requests
// exercise every reason a policy can fail to apply, every unmet control, a
// failing (fail-closed) device filter, IPv4, IPv6 and country locations and
// every kind of client and flow.
func TestGoldenCoverage(t *testing.T) {
	have := map[string]bool{}
	for _, f := range goldenFiles(t) {
		gf := loadGolden(t, f)
		set, err := Compile(gf.Policies, gf.Locations)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, l := range gf.Locations {
			have["location.trusted"] = have["location.trusted"] || l.Trusted
			have["location.countries"] = have["location.countries"] || len(l.Countries) > 0
			for _, r := range l.IPRanges {
				if netip.MustParsePrefix(r).Addr().Is4() {
					have["location.ipv4"] = true
				} else {
					have["location.ipv6"] = true
				}
			}
		}
		for _, p := range gf.Policies {
			policyFeatures(&p, have)
		}
		for _, c := range gf.Cases {
			in := c.Input
			d := set.Evaluate(in)
			have["outcome."+string(d.Outcome)] = true
			have["flow."+in.Flow] = true
			have[fmt.Sprintf("client.public=%t,native=%t", in.App.Public, in.App.Native)] = true
			ss := d.Session
			have["merged.sign_in_every_time"] = have["merged.sign_in_every_time"] || ss.SignInEveryTime
			have["merged.sign_in_frequency"] = have["merged.sign_in_frequency"] || ss.SignInFrequency > 0
			have["merged.access_token_lifetime"] = have["merged.access_token_lifetime"] || ss.AccessTokenLifetime > 0
			have["merged.strict_location"] = have["merged.strict_location"] || ss.StrictLocation
			for _, r := range d.Policies {
				have["result."+string(r.Result)] = true
				if r.Reason != "" {
					have["reason."+r.Reason] = true
				}
				if r.Error != "" && r.Result != ResultNotApplied {
					have["filter.fail_closed"] = true
				}
				for _, u := range r.Unmet {
					have["unmet."+u] = true
				}
			}
			// Locations of include and exclude lists matched by the
			// request's IPv4 or IPv6 address or its country.
			family := "ipv6"
			if in.IP.Unmap().Is4() {
				family = "ipv4"
			}
			for _, p := range gf.Policies {
				lc := p.Conditions.Locations
				if lc == nil {
					continue
				}
				for _, list := range []struct {
					name string
					v    []string
				}{{"include", lc.Include}, {"exclude", lc.Exclude}} {
					for _, v := range list.v {
						for i, l := range gf.Locations {
							if v != l.ID && !(v == Trusted && l.Trusted) {
								continue
							}
							if in.IP.IsValid() && set.locations[i].contains(in.IP, "") {
								have["locations."+list.name+".matched."+family] = true
							}
							if in.Country != "" && set.locations[i].contains(netip.Addr{}, in.Country) {
								have["locations."+list.name+".matched.country"] = true
							}
						}
					}
				}
			}
		}
	}

	want := []string{
		"users.include.all", "users.include.id", "users.exclude.id", "groups.include", "groups.exclude",
		"applications.include.all", "applications.include.id", "applications.exclude",
		"locations.include.all", "locations.include.trusted", "locations.include.id",
		"locations.exclude.trusted", "locations.exclude.id",
		"location.ipv4", "location.ipv6", "location.countries", "location.trusted",
		"device_platforms.include.all", "device_platforms.include.id", "device_platforms.exclude",
		"device_state.include.all", "device_state.include.registered", "device_state.include.compliant",
		"device_state.exclude.registered", "device_state.exclude.compliant",
		"device_filter.include", "device_filter.exclude", "filter.fail_closed",
		"sign_in_risk", "user_risk",
		"grant.block", "operator.any", "operator.all",
		"session.sign_in_frequency", "session.every_time", "session.access_token_lifetime", "session.strict_location",
		"merged.sign_in_every_time", "merged.sign_in_frequency", "merged.access_token_lifetime", "merged.strict_location",
		"state.enabled", "state.report_only", "state.disabled", "result.applied", "result.not_applied", "result.report_only",
		"outcome.allow", "outcome.block", "outcome.allow_with_controls",
		"locations.include.matched.ipv4", "locations.include.matched.ipv6", "locations.include.matched.country",
		"locations.exclude.matched.ipv4", "locations.exclude.matched.ipv6", "locations.exclude.matched.country",
	}
	for _, v := range clientTypes {
		want = append(want, "client_types."+v)
	}
	for _, pub := range []bool{false, true} {
		for _, nat := range []bool{false, true} {
			want = append(want, fmt.Sprintf("client.public=%t,native=%t", pub, nat))
		}
	}
	for _, v := range flowNames {
		want = append(want, "flows."+v, "flow."+v)
	}
	for _, v := range controls {
		want = append(want, "controls."+v)
	}
	for _, v := range strengths[1:] {
		want = append(want, "strength."+v)
	}
	for _, v := range ctlNames {
		want = append(want, "unmet."+v)
	}
	for _, r := range []string{ReasonDisabled, ReasonFlow, ReasonAppNotIncluded, ReasonAppExcluded, ReasonClientType,
		ReasonUserNotIncluded, ReasonUserExcluded, ReasonUserRisk, ReasonSignInRisk, ReasonPlatformNotIncluded,
		ReasonPlatformExcluded, ReasonDeviceStateNotIncl, ReasonDeviceStateExcluded, ReasonLocationNotIncluded,
		ReasonLocationExcluded, ReasonFilterNotMatched, ReasonFilterExcluded} {
		want = append(want, "reason."+r)
	}
	var missing []string
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("golden cases do not cover:\n%v", missing)
	}
}

// policyFeatures records the features a policy uses.
func policyFeatures(p *Policy, have map[string]bool) {
	have["state."+string(p.State)] = true
	ie := func(prefix string, x *IncludeExclude, special ...string) {
		if x == nil {
			return
		}
		for _, list := range []struct {
			name string
			v    []string
		}{{"include", x.Include}, {"exclude", x.Exclude}} {
			for _, v := range list.v {
				if slices.Contains(special, v) {
					have[prefix+"."+list.name+"."+v] = true
				} else {
					have[prefix+"."+list.name+".id"] = true
				}
			}
		}
	}
	a := &p.Assignments
	ie("users", &a.Users, All)
	if len(a.Groups.Include) > 0 {
		have["groups.include"] = true
	}
	if len(a.Groups.Exclude) > 0 {
		have["groups.exclude"] = true
	}
	ie("applications", &a.Applications, All)
	if len(a.Applications.Exclude) > 0 {
		have["applications.exclude"] = true
	}
	for _, v := range a.ClientTypes {
		have["client_types."+v] = true
	}
	cd := &p.Conditions
	ie("locations", cd.Locations, All, Trusted)
	ie("device_platforms", cd.DevicePlatforms, All)
	if pl := cd.DevicePlatforms; pl != nil && len(pl.Exclude) > 0 {
		have["device_platforms.exclude"] = true
	}
	ie("device_state", cd.DeviceState, All, DeviceRegistered, DeviceCompliant)
	if f := cd.DeviceFilter; f != nil {
		have["device_filter."+f.Mode] = true
	}
	have["sign_in_risk"] = have["sign_in_risk"] || len(cd.SignInRisk) > 0
	have["user_risk"] = have["user_risk"] || len(cd.UserRisk) > 0
	for _, v := range cd.Flows {
		have["flows."+v] = true
	}
	g := &p.Grant
	have["grant.block"] = have["grant.block"] || g.Block
	for _, v := range g.Controls {
		have["controls."+v] = true
	}
	if g.AuthenticationStrength != "" {
		have["strength."+g.AuthenticationStrength] = true
	}
	if n := len(g.Controls) + boolInt(g.AuthenticationStrength != ""); n > 1 {
		if g.Operator == OperatorAny {
			have["operator.any"] = true
		} else {
			have["operator.all"] = true
		}
	}
	ss := &p.Session
	switch ss.SignInFrequency {
	case "":
	case SignInEveryTime:
		have["session.every_time"] = true
	default:
		have["session.sign_in_frequency"] = true
	}
	have["session.access_token_lifetime"] = have["session.access_token_lifetime"] || ss.AccessTokenLifetime != ""
	have["session.strict_location"] = have["session.strict_location"] || ss.StrictLocation
}
