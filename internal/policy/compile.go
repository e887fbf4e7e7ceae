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

	// Every user, group and application id named by a policy, with the
	// policies that include and exclude it (see postings).
	users, groups, apps map[string]postings
	// hasLocCond reports that a policy has a locations condition.
	hasLocCond bool
}

// Len returns the number of policies in the set.
func (s *Set) Len() int { return len(s.policies) }

// idSet is an include or exclude list of interned ids, used to validate
// assignments.
type idSet struct {
	all bool
	v   []uint32 // sorted, without duplicates
}

func (x *idSet) has(id uint32) bool {
	_, ok := slices.BinarySearch(x.v, id)
	return x.all || ok
}

// interner numbers strings from 1.
type interner map[string]uint32

func (m interner) id(s string) uint32 {
	if k, ok := m[s]; ok {
		return k
	}
	k := uint32(len(m) + 1)
	m[s] = k
	return k
}

// postings are the indexes of the policies whose include list and whose
// exclude list name one user, group or application. Evaluate turns the
// postings of the request's user, groups and application into per-policy
// bitsets, so matching a policy costs a bit test, not a list scan.
type postings struct {
	incl, excl []int32
}

// postingsOf builds the postings of every id of in from the per-policy
// lists (policy index, include or exclude, ids).
func postingsOf(in interner, lists []postList) map[string]postings {
	byID := make([]postings, len(in)+1)
	for _, l := range lists {
		for _, id := range l.ids {
			p := &byID[id]
			if l.excl {
				p.excl = append(p.excl, l.policy)
			} else {
				p.incl = append(p.incl, l.policy)
			}
		}
	}
	m := make(map[string]postings, len(in))
	for name, id := range in {
		m[name] = byID[id]
	}
	return m
}

type postList struct {
	policy int32
	excl   bool
	ids    []uint32
}

type locCond struct {
	inclAll, inclTrusted, exclTrusted bool
	incl, excl                        []int // indexes into Set.locations
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

// Device classes for the device_state condition, as bits.
const (
	devUnregistered = 1 << iota // no device, or not registered and active
	devRegistered               // registered and active, not compliant
	devCompliant                // registered, active and compliant
)

// platAll is the platform bit for "all" (bits 0..4 are platforms indexes).
const platAll = 1 << 7

// Client type bits (client_types values, in this order).
var clientTypes = []string{ClientPublic, ClientConfidential, ClientBrowser, ClientNative}

type compiled struct {
	id                   string
	state                State
	disabled, reportOnly bool // the state

	// "all" in users.include, users.exclude, applications.include and
	// applications.exclude; the ids are in Set.users, groups and apps.
	usersAll, usersExclAll, appsAll, appsExclAll bool
	clients                                      uint8 // bit per clientKind of the allowed clients

	flows      uint8 // bit per flowNames index; 0 = any
	signInRisk uint8 // bit per riskLevels index; 0 = any
	userRisk   uint8

	platforms, platExcl uint8 // bit per platforms index, platAll; 0 = no condition
	devIncl, devExcl    uint8 // device classes included and excluded; devIncl 0 = no condition
	loc                 *locCond
	filter              int // index into Set.programs, -1 = none
	filterExcl          bool

	block bool
	any   bool

	// Precomputed at Compile time for Evaluate: for each grant control (in
	// order, the authentication strength last), its name index (see
	// ctlNames), the bitset of all of them, and an id shared by every
	// policy with the same ctlIdx sequence (which share the slice too).
	ctlIdx  []uint8
	ctlMask uint8
	ctlSig  uint32

	everyTime bool
	freq, atl time.Duration
	strict    bool
}

// clientKind numbers the four kinds of client an application can be.
func clientKind(a *AppInput) uint8 {
	k := uint8(0)
	if a.Public {
		k |= 1
	}
	if a.Native {
		k |= 2
	}
	return k
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
	cc := compiler{set: s, locIdx: locIdx, e: &e,
		users: interner{}, groups: interner{}, apps: interner{}, sigs: map[string]uint32{}}
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
		c := cc.policy(p, path, int32(i))
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
	s.users = postingsOf(cc.users, cc.userLists)
	s.groups = postingsOf(cc.groups, cc.groupLists)
	s.apps = postingsOf(cc.apps, cc.appLists)
	// Policy ids share one backing array: Evaluate copies them into every
	// Decision, and pointers into one object are cheaper for the garbage
	// collector (write barriers, marking) than pointers into many.
	var ids strings.Builder
	for i := range s.policies {
		ids.WriteString(s.policies[i].id)
	}
	all, off := ids.String(), 0
	for i := range s.policies {
		c := &s.policies[i]
		c.id, off = all[off:off+len(c.id)], off+len(c.id)
	}
	return s, nil
}

// compiler holds the state shared by the policies of one Compile.
type compiler struct {
	set                             *Set
	locIdx                          map[string]int
	e                               *errs
	users, groups, apps             interner
	userLists, groupLists, appLists []postList
	sigs                            map[string]uint32 // control signatures (ctlSig)
	sigIdx                          [][]uint8         // ctlIdx by signature
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
func idList(path string, list []string, allowAll bool, in interner, e *errs) idSet {
	var x idSet
	for j, v := range list {
		switch {
		case v == "":
			e.add(fmt.Sprintf("%s[%d]", path, j), "empty id")
		case v == All && allowAll:
			x.all = true
		case v == All:
			e.add(fmt.Sprintf("%s[%d]", path, j), "%q is not allowed here", All)
		default:
			x.v = append(x.v, in.id(v))
		}
	}
	slices.Sort(x.v)
	x.v = slices.Compact(x.v)
	return x
}

// covered reports whether every value of incl is also in excl (so the pair
// selects nothing).
func covered(incl, excl idSet) bool {
	if excl.all {
		return true
	}
	if incl.all {
		return false
	}
	for _, v := range incl.v {
		if !excl.has(v) {
			return false
		}
	}
	return true
}

// platformBits validates a device_platforms list.
func platformBits(path string, list []string, allowAll bool, e *errs) uint8 {
	var m uint8
	for j, v := range list {
		if v == All && allowAll {
			m |= platAll
			continue
		}
		k := slices.Index(platforms, v)
		if k < 0 {
			e.add(fmt.Sprintf("%s[%d]", path, j), "unknown value %q (want one of %s)", v, strings.Join(platforms, ", "))
			continue
		}
		m |= 1 << k
	}
	return m
}

func (cc *compiler) policy(p *Policy, path string, idx int32) compiled {
	e := cc.e
	c := compiled{id: p.ID, state: p.State, filter: -1}
	switch p.State {
	case StateEnabled:
		c.state = StateEnabled // the constant, not the decoded string
	case StateReportOnly:
		c.state, c.reportOnly = StateReportOnly, true
	case StateDisabled:
		c.state, c.disabled = StateDisabled, true
	default:
		e.add(path+".state", "must be enabled, report_only or disabled, got %q", p.State)
	}

	// Assignments.
	a := &p.Assignments
	ap := path + ".assignments"
	users := idList(ap+".users.include", a.Users.Include, true, cc.users, e)
	usersExcl := idList(ap+".users.exclude", a.Users.Exclude, true, cc.users, e)
	groups := idList(ap+".groups.include", a.Groups.Include, false, cc.groups, e)
	groupsExcl := idList(ap+".groups.exclude", a.Groups.Exclude, false, cc.groups, e)
	switch {
	case len(a.Users.Include) == 0 && len(a.Groups.Include) == 0:
		e.add(ap+".users", "no users or groups included (use %q for everyone)", All)
	case usersExcl.all:
		e.add(ap+".users.exclude", "excluding %q leaves nobody", All)
	case covered(users, usersExcl) && covered(groups, groupsExcl):
		e.add(ap+".users", "include and exclude leave nobody")
	}
	apps := idList(ap+".applications.include", a.Applications.Include, true, cc.apps, e)
	appsExcl := idList(ap+".applications.exclude", a.Applications.Exclude, true, cc.apps, e)
	switch {
	case len(a.Applications.Include) == 0:
		e.add(ap+".applications.include", "required (use %q for every application)", All)
	case covered(apps, appsExcl):
		e.add(ap+".applications", "include and exclude leave no application")
	}
	c.usersAll, c.usersExclAll, c.appsAll, c.appsExclAll = users.all, usersExcl.all, apps.all, appsExcl.all
	cc.userLists = append(cc.userLists, postList{idx, false, users.v}, postList{idx, true, usersExcl.v})
	cc.groupLists = append(cc.groupLists, postList{idx, false, groups.v}, postList{idx, true, groupsExcl.v})
	cc.appLists = append(cc.appLists, postList{idx, false, apps.v}, postList{idx, true, appsExcl.v})
	// Client types: two independent dimensions, each unrestricted when
	// none of its values is listed.
	ct := checkList(ap+".client_types", a.ClientTypes, clientTypes, e)
	kinds, forms := ct&3, ct>>2&3 // bits: public, confidential; browser, native
	for k := range uint8(4) {     // clientKind: bit 0 public, bit 1 native
		kind, form := uint8(2), uint8(1) // confidential, browser
		if k&1 != 0 {
			kind = 1
		}
		if k&2 != 0 {
			form = 2
		}
		if (kinds == 0 || kinds&kind != 0) && (forms == 0 || forms&form != 0) {
			c.clients |= 1 << k
		}
	}

	// Conditions.
	cd := &p.Conditions
	cp := path + ".conditions"
	c.flows = checkList(cp+".flows", cd.Flows, flowNames, e)
	c.signInRisk = checkList(cp+".sign_in_risk", cd.SignInRisk, riskLevels, e)
	c.userRisk = checkList(cp+".user_risk", cd.UserRisk, riskLevels, e)
	if pl := cd.DevicePlatforms; pl != nil {
		pp := cp + ".device_platforms"
		c.platforms = platformBits(pp+".include", pl.Include, true, e)
		c.platExcl = platformBits(pp+".exclude", pl.Exclude, false, e)
		switch {
		case len(pl.Include) == 0:
			e.add(pp+".include", "required")
		case c.platforms != 0 && c.platforms&platAll == 0 && c.platforms&^c.platExcl == 0:
			e.add(pp, "include and exclude leave no platform")
		}
	}
	if ds := cd.DeviceState; ds != nil {
		dp := cp + ".device_state"
		for j, v := range ds.Include {
			switch v {
			case All:
				c.devIncl |= devUnregistered | devRegistered | devCompliant
			case DeviceRegistered:
				c.devIncl |= devRegistered | devCompliant
			case DeviceCompliant:
				c.devIncl |= devCompliant
			default:
				e.add(fmt.Sprintf("%s.include[%d]", dp, j), "unknown device state %q", v)
			}
		}
		for j, v := range ds.Exclude {
			switch v {
			case DeviceRegistered:
				c.devExcl |= devRegistered | devCompliant
			case DeviceCompliant:
				c.devExcl |= devCompliant
			default:
				e.add(fmt.Sprintf("%s.exclude[%d]", dp, j), "unknown device state %q", v)
			}
		}
		switch {
		case len(ds.Include) == 0:
			e.add(dp+".include", "required")
		case c.devIncl != 0 && c.devIncl&^c.devExcl == 0:
			e.add(dp, "include and exclude leave no device")
		}
	}
	if l := cd.Locations; l != nil {
		c.loc = cc.locations(cp+".locations", l)
		cc.set.hasLocCond = true
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
	var ctls []control
	strength := 0 // rank of the required authentication strength
	for j, v := range g.Controls {
		k := slices.Index(controls, v)
		switch {
		case k < 0:
			e.add(fmt.Sprintf("%s.controls[%d]", gp, j), "unknown control %q (want one of %s)", v, strings.Join(controls, ", "))
		case slices.Contains(ctls, control(k)):
			e.add(fmt.Sprintf("%s.controls[%d]", gp, j), "duplicate control %q", v)
		default:
			ctls = append(ctls, control(k))
		}
	}
	if g.AuthenticationStrength != "" {
		k := slices.Index(strengths, g.AuthenticationStrength)
		if k < 1 { // "password" alone is not a strength worth requiring
			e.add(gp+".authentication_strength", "must be %q or %q, got %q", StrengthPasswordTOTP, StrengthPhishingResistant, g.AuthenticationStrength)
		} else {
			strength = k
			ctls = append(ctls, ctlStrength)
		}
	}
	var names []uint8
	for _, k := range ctls {
		n := nameIndex(k, strength)
		names = append(names, n)
		c.ctlMask |= 1 << n
	}
	// Equal sequences share one id and one slice.
	sig := string(names)
	if _, ok := cc.sigs[sig]; !ok {
		cc.sigs[sig] = uint32(len(cc.sigs))
		cc.sigIdx = append(cc.sigIdx, names)
	}
	c.ctlSig = cc.sigs[sig]
	c.ctlIdx = cc.sigIdx[c.ctlSig]
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

// locations compiles a locations condition.
func (cc *compiler) locations(lp string, l *IncludeExclude) *locCond {
	e := cc.e
	lc := &locCond{}
	for j, v := range l.Include {
		switch v {
		case All:
			lc.inclAll = true
		case Trusted:
			lc.inclTrusted = true
		default:
			if k, ok := cc.locIdx[v]; ok {
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
			if k, ok := cc.locIdx[v]; ok {
				lc.excl = append(lc.excl, k)
			} else {
				e.add(fmt.Sprintf("%s.exclude[%d]", lp, j), "unknown location %q", v)
			}
		}
	}
	if len(l.Include) == 0 {
		e.add(lp+".include", "required")
		return lc
	}
	// Every included location excluded (directly, or as a trusted location
	// when "trusted" is excluded) leaves none.
	none := !lc.inclAll && (!lc.inclTrusted || lc.exclTrusted) && len(lc.incl)+boolInt(lc.inclTrusted) > 0
	for _, k := range lc.incl {
		none = none && (slices.Contains(lc.excl, k) || lc.exclTrusted && cc.set.locations[k].trusted)
	}
	if none {
		e.add(lp, "include and exclude leave no location")
	}
	return lc
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func positiveDuration(path, s string, e *errs) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		e.add(path, "invalid duration %q (want e.g. \"1h\")", s)
		return 0
	}
	return d
}
