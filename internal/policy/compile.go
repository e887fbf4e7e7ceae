package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// CELCostLimit bounds the runtime cost of one device filter evaluation
// (cel.CostLimit). A rule that exceeds it stops at once and fails closed
// (the policy applies), so one policy cannot stall sign-ins.
const CELCostLimit = 1000

// platforms are the known device platforms (model.Device.Platform values
// plus mobile ones).
var platforms = []string{"linux", "darwin", "windows", "ios", "android"}

var (
	riskLevels = []string{RiskNone, RiskLow, RiskMedium, RiskHigh}
	flowNames  = []string{FlowInteractive, FlowRefresh, FlowDeviceCode, FlowClientCredentials}
	controls   = []string{ControlMFA, ControlRegisteredDevice, ControlCompliantDevice, ControlTokenProtection, ControlPasswordChange}
	strengths  = []string{StrengthPassword, StrengthPasswordTOTP, StrengthPhishingResistant}
)

// Set is a compiled, validated set of policies. It is immutable and safe for
// concurrent use.
type Set struct {
	policies  []compiled
	locations []location
	programs  []rule
}

// Len returns the number of policies in the set.
func (s *Set) Len() int { return len(s.policies) }

// ids is a small include or exclude list; linear scans beat maps at the
// sizes policies have.
type ids struct {
	all bool
	v   []string
}

func (x ids) has(s string) bool {
	return x.all || (s != "" && slices.Contains(x.v, s))
}

func (x ids) hasAny(ss []string) bool {
	if x.all {
		return true
	}
	for _, s := range ss {
		if slices.Contains(x.v, s) {
			return true
		}
	}
	return false
}

type locCond struct {
	inclAll, inclTrusted, exclTrusted bool
	incl, excl                        []int // indexes into Set.locations
}

type devStateCond struct {
	inclAll, inclRegistered, inclCompliant bool
	exclRegistered, exclCompliant          bool
}

type control uint8

const (
	ctlMFA control = iota
	ctlRegistered
	ctlCompliant
	ctlTokenProtection
	ctlPasswordChange
	ctlStrength
)

type compiled struct {
	id    string
	state State

	users, groups         ids
	usersExcl, groupsExcl ids
	apps, appsExcl        ids
	public, confidential  bool // allowed client types

	flows      uint8 // bit per flowNames index; 0 = any
	signInRisk uint8 // bit per riskLevels index; 0 = any
	userRisk   uint8

	platforms  *ids
	platExcl   ids
	devState   *devStateCond
	loc        *locCond
	filter     int // index into Set.programs, -1 = none
	filterExcl bool

	block    bool
	any      bool
	controls []control
	strength int    // rank of required strength
	strName  string // its name

	// Precomputed at Compile time for Evaluate: for each entry of controls,
	// its name index (see ctlNames), and the bitset of all of them.
	ctlIdx  []uint8
	ctlMask uint8

	everyTime bool
	freq, atl time.Duration
	strict    bool
}

// errs collects validation problems with their field paths.
type errs []error

func (e *errs) add(path, format string, a ...any) {
	*e = append(*e, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
}

// Compile validates policies and named locations and compiles them into a
// Set. It reports every problem found, joined with errors.Join, each
// prefixed by its field path (e.g. "policies[2].conditions.locations.include[0]").
// CEL device filters are compiled here, once.
func Compile(policies []Policy, locations []NamedLocation) (*Set, error) {
	var e errs
	s := &Set{}
	locIdx := map[string]int{}
	for i, l := range locations {
		path := fmt.Sprintf("locations[%d]", i)
		cl := location{id: l.ID, trusted: l.Trusted}
		switch {
		case l.ID == "":
			e.add(path+".id", "required")
		case l.ID == All || l.ID == Trusted:
			e.add(path+".id", "%q is reserved", l.ID)
		default:
			if _, dup := locIdx[l.ID]; dup {
				e.add(path+".id", "duplicate location id %q", l.ID)
			}
		}
		if (len(l.IPRanges) == 0) == (len(l.Countries) == 0) {
			e.add(path, "exactly one of ip_ranges and countries must be set")
		}
		for j, r := range l.IPRanges {
			p, err := netip.ParsePrefix(r)
			if err != nil {
				e.add(fmt.Sprintf("%s.ip_ranges[%d]", path, j), "invalid CIDR %q", r)
				continue
			}
			cl.prefixes = append(cl.prefixes, p.Masked())
		}
		for j, c := range l.Countries {
			if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
				e.add(fmt.Sprintf("%s.countries[%d]", path, j), "invalid ISO 3166-1 alpha-2 code %q", c)
				continue
			}
			cl.countries = append(cl.countries, c)
		}
		if l.ID != "" {
			if _, dup := locIdx[l.ID]; !dup {
				locIdx[l.ID] = len(s.locations)
			}
		}
		s.locations = append(s.locations, cl)
	}

	env, err := newCELEnv()
	if err != nil {
		return nil, err
	}
	progIdx := map[string]int{}
	seen := map[string]bool{}
	for i := range policies {
		p := &policies[i]
		path := fmt.Sprintf("policies[%d]", i)
		if p.ID == "" {
			e.add(path+".id", "required")
		} else if seen[p.ID] {
			e.add(path+".id", "duplicate policy id %q", p.ID)
		}
		seen[p.ID] = true
		c := compilePolicy(p, path, locIdx, &e)
		if f := p.Conditions.DeviceFilter; f != nil {
			fp := path + ".conditions.device_filter"
			switch f.Mode {
			case FilterInclude, FilterExclude:
				c.filterExcl = f.Mode == FilterExclude
			default:
				e.add(fp+".mode", "must be %q or %q, got %q", FilterInclude, FilterExclude, f.Mode)
			}
			if idx, ok := progIdx[f.Rule]; ok {
				c.filter = idx
			} else if prg, err := compileRule(env, f.Rule); err != nil {
				e.add(fp+".rule", "%v", err)
			} else {
				c.filter = len(s.programs)
				progIdx[f.Rule] = c.filter
				s.programs = append(s.programs, prg)
			}
		}
		s.policies = append(s.policies, c)
	}
	if len(e) > 0 {
		return nil, errors.Join(e...)
	}
	return s, nil
}

// checkList validates that every value of list is one of allowed, and
// returns a bitmask of the values (bit i for allowed[i]).
func checkList(path string, list, allowed []string, e *errs) uint8 {
	var m uint8
	for j, v := range list {
		k := slices.Index(allowed, v)
		if k < 0 {
			e.add(fmt.Sprintf("%s[%d]", path, j), "unknown value %q (want one of %s)", v, strings.Join(allowed, ", "))
			continue
		}
		m |= 1 << k
	}
	return m
}

// idList converts an include or exclude list of ids, rejecting empty ids.
func idList(path string, list []string, allowAll bool, e *errs) ids {
	var x ids
	for j, v := range list {
		switch {
		case v == "":
			e.add(fmt.Sprintf("%s[%d]", path, j), "empty id")
		case v == All && allowAll:
			x.all = true
		case v == All:
			e.add(fmt.Sprintf("%s[%d]", path, j), "%q is not allowed here", All)
		default:
			x.v = append(x.v, v)
		}
	}
	return x
}

// covered reports whether every value of incl is also in excl (so the pair
// selects nothing).
func covered(incl, excl ids) bool {
	if excl.all {
		return true
	}
	if incl.all {
		return false
	}
	for _, v := range incl.v {
		if !slices.Contains(excl.v, v) {
			return false
		}
	}
	return true
}

func compilePolicy(p *Policy, path string, locIdx map[string]int, e *errs) compiled {
	c := compiled{id: p.ID, state: p.State, filter: -1}
	switch p.State {
	case StateEnabled, StateReportOnly, StateDisabled:
	default:
		e.add(path+".state", "must be enabled, report_only or disabled, got %q", p.State)
	}

	// Assignments.
	a := &p.Assignments
	ap := path + ".assignments"
	c.users = idList(ap+".users.include", a.Users.Include, true, e)
	c.usersExcl = idList(ap+".users.exclude", a.Users.Exclude, true, e)
	c.groups = idList(ap+".groups.include", a.Groups.Include, false, e)
	c.groupsExcl = idList(ap+".groups.exclude", a.Groups.Exclude, false, e)
	switch {
	case len(a.Users.Include) == 0 && len(a.Groups.Include) == 0:
		e.add(ap+".users", "no users or groups included (use %q for everyone)", All)
	case c.usersExcl.all:
		e.add(ap+".users.exclude", "excluding %q leaves nobody", All)
	case covered(c.users, c.usersExcl) && covered(c.groups, c.groupsExcl):
		e.add(ap+".users", "include and exclude leave nobody")
	}
	c.apps = idList(ap+".applications.include", a.Applications.Include, true, e)
	c.appsExcl = idList(ap+".applications.exclude", a.Applications.Exclude, true, e)
	switch {
	case len(a.Applications.Include) == 0:
		e.add(ap+".applications.include", "required (use %q for every application)", All)
	case covered(c.apps, c.appsExcl):
		e.add(ap+".applications", "include and exclude leave no application")
	}
	ct := checkList(ap+".client_types", a.ClientTypes, []string{ClientPublic, ClientConfidential}, e)
	c.public = ct == 0 || ct&1 != 0
	c.confidential = ct == 0 || ct&2 != 0

	// Conditions.
	cd := &p.Conditions
	cp := path + ".conditions"
	c.flows = checkList(cp+".flows", cd.Flows, flowNames, e)
	c.signInRisk = checkList(cp+".sign_in_risk", cd.SignInRisk, riskLevels, e)
	c.userRisk = checkList(cp+".user_risk", cd.UserRisk, riskLevels, e)
	if pl := cd.DevicePlatforms; pl != nil {
		pp := cp + ".device_platforms"
		checkList(pp+".include", slices.DeleteFunc(slices.Clone(pl.Include), func(s string) bool { return s == All }), platforms, e)
		checkList(pp+".exclude", pl.Exclude, platforms, e)
		inc := idList(pp+".include", pl.Include, true, e)
		c.platExcl = ids{v: pl.Exclude}
		c.platforms = &inc
		if len(pl.Include) == 0 {
			e.add(pp+".include", "required")
		} else if covered(inc, c.platExcl) {
			e.add(pp, "include and exclude leave no platform")
		}
	}
	if ds := cd.DeviceState; ds != nil {
		dp := cp + ".device_state"
		d := &devStateCond{}
		for j, v := range ds.Include {
			switch v {
			case All:
				d.inclAll = true
			case DeviceRegistered:
				d.inclRegistered = true
			case DeviceCompliant:
				d.inclCompliant = true
			default:
				e.add(fmt.Sprintf("%s.include[%d]", dp, j), "unknown device state %q", v)
			}
		}
		for j, v := range ds.Exclude {
			switch v {
			case DeviceRegistered:
				d.exclRegistered = true
			case DeviceCompliant:
				d.exclCompliant = true
			default:
				e.add(fmt.Sprintf("%s.exclude[%d]", dp, j), "unknown device state %q", v)
			}
		}
		if len(ds.Include) == 0 {
			e.add(dp+".include", "required")
		}
		c.devState = d
	}
	if l := cd.Locations; l != nil {
		lp := cp + ".locations"
		lc := &locCond{}
		for j, v := range l.Include {
			switch v {
			case All:
				lc.inclAll = true
			case Trusted:
				lc.inclTrusted = true
			default:
				if k, ok := locIdx[v]; ok {
					lc.incl = append(lc.incl, k)
				} else {
					e.add(fmt.Sprintf("%s.include[%d]", lp, j), "unknown location %q", v)
				}
			}
		}
		for j, v := range l.Exclude {
			switch v {
			case All:
				e.add(fmt.Sprintf("%s.exclude[%d]", lp, j), "excluding %q leaves no location", All)
			case Trusted:
				lc.exclTrusted = true
			default:
				if k, ok := locIdx[v]; ok {
					lc.excl = append(lc.excl, k)
				} else {
					e.add(fmt.Sprintf("%s.exclude[%d]", lp, j), "unknown location %q", v)
				}
			}
		}
		if len(l.Include) == 0 {
			e.add(lp+".include", "required")
		}
		c.loc = lc
	}

	// Grant controls.
	g := &p.Grant
	gp := path + ".grant"
	c.block = g.Block
	switch g.Operator {
	case "", OperatorAll:
	case OperatorAny:
		c.any = true
	default:
		e.add(gp+".operator", "must be %q or %q, got %q", OperatorAll, OperatorAny, g.Operator)
	}
	for j, v := range g.Controls {
		k := slices.Index(controls, v)
		switch {
		case k < 0:
			e.add(fmt.Sprintf("%s.controls[%d]", gp, j), "unknown control %q (want one of %s)", v, strings.Join(controls, ", "))
		case slices.Contains(c.controls, control(k)):
			e.add(fmt.Sprintf("%s.controls[%d]", gp, j), "duplicate control %q", v)
		default:
			c.controls = append(c.controls, control(k))
		}
	}
	if g.AuthenticationStrength != "" {
		k := slices.Index(strengths, g.AuthenticationStrength)
		if k < 1 { // "password" alone is not a strength worth requiring
			e.add(gp+".authentication_strength", "must be %q or %q, got %q", StrengthPasswordTOTP, StrengthPhishingResistant, g.AuthenticationStrength)
		} else {
			c.strength, c.strName = k, g.AuthenticationStrength
			c.controls = append(c.controls, ctlStrength)
		}
	}
	for _, k := range c.controls {
		n := nameIndex(k, c.strength)
		c.ctlIdx = append(c.ctlIdx, n)
		c.ctlMask |= 1 << n
	}
	if c.block && (len(g.Controls) > 0 || g.AuthenticationStrength != "") {
		e.add(gp, "block cannot be combined with controls")
	}

	// Session controls.
	ss := &p.Session
	sp := path + ".session"
	if f := ss.SignInFrequency; f == SignInEveryTime {
		c.everyTime = true
	} else if f != "" {
		c.freq = positiveDuration(sp+".sign_in_frequency", f, e)
	}
	if ss.AccessTokenLifetime != "" {
		c.atl = positiveDuration(sp+".access_token_lifetime", ss.AccessTokenLifetime, e)
	}
	c.strict = ss.StrictLocation
	if !g.Block && len(g.Controls) == 0 && g.AuthenticationStrength == "" && *ss == (SessionControls{}) {
		e.add(path, "no grant or session controls")
	}
	return c
}

func positiveDuration(path, s string, e *errs) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		e.add(path, "invalid duration %q (want e.g. \"1h\")", s)
		return 0
	}
	return d
}
