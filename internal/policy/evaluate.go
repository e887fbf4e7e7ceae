package policy

import (
	"math/bits"
	"slices"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// Reasons a policy did not apply.
const (
	ReasonDisabled            = "policy disabled"
	ReasonFlow                = "flow not included"
	ReasonAppNotIncluded      = "application not included"
	ReasonAppExcluded         = "application excluded"
	ReasonClientType          = "client type not included"
	ReasonUserNotIncluded     = "user not included"
	ReasonUserExcluded        = "user excluded"
	ReasonUserRisk            = "user risk not included"
	ReasonSignInRisk          = "sign-in risk not included"
	ReasonPlatformNotIncluded = "device platform not included"
	ReasonPlatformExcluded    = "device platform excluded"
	ReasonDeviceStateNotIncl  = "device state not included"
	ReasonDeviceStateExcluded = "device state excluded"
	ReasonLocationNotIncluded = "location not included"
	ReasonLocationExcluded    = "location excluded"
	ReasonFilterNotMatched    = "device filter not matched"
	ReasonFilterExcluded      = "device excluded by filter"
)

// evalState holds the per-request facts computed lazily and shared by all
// policies of one evaluation.
type evalState struct {
	in         *Input
	locDone    bool
	locMatched []bool
	trusted    bool
	filters    []int8 // per program: 0 not evaluated, 1 true, 2 false, 3 error
	filterErrs []string
	vars       *celVars                    // CEL activation over in.Device, built once
	frame      *interpreter.ExecutionFrame // over vars, for untracked programs
	long       bool                        // a device attribute exceeds maxAttrLen
}

func (st *evalState) locations(s *Set) {
	if st.locDone {
		return
	}
	st.locDone = true
	st.locMatched = make([]bool, len(s.locations))
	for i := range s.locations {
		if s.locations[i].contains(st.in.IP, st.in.Country) {
			st.locMatched[i] = true
			if s.locations[i].trusted {
				st.trusted = true
			}
		}
	}
}

// filter evaluates device filter k once per evaluation and memoises the
// result for every other policy using the same rule.
func (st *evalState) filter(s *Set, k int) (bool, string) {
	if st.filters == nil {
		st.filters = make([]int8, len(s.programs))
		st.vars = newCELVars(st.in.Device)
		st.long = longAttrs(st.in.Device)
		// One execution frame for every untracked program of this
		// evaluation (cel.Program.Eval accepts a frame); tracked programs
		// get the activation and a frame of their own.
		if f, err := interpreter.NewExecutionFrame(st.vars); err == nil {
			st.frame = f
		}
	}
	switch st.filters[k] {
	case 1:
		return true, ""
	case 2:
		return false, ""
	case 3:
		return false, st.filterErrs[k]
	}
	prg, tracked := s.programs[k].program(st.long)
	var in any = st.vars
	if !tracked && st.frame != nil {
		in = st.frame
	}
	out, _, err := prg.Eval(in)
	if err != nil {
		if st.filterErrs == nil {
			st.filterErrs = make([]string, len(s.programs))
		}
		st.filters[k], st.filterErrs[k] = 3, err.Error()
		return false, st.filterErrs[k]
	}
	if out == types.True {
		st.filters[k] = 1
		return true, ""
	}
	st.filters[k] = 2
	return false, ""
}

// Control name indexes: 0..4 are the controls entries; nameStrength+r is the
// authentication strength of rank r (1 password_totp, 2 phishing_resistant).
const (
	nameStrength = int(ctlStrength) - 1
	numNames     = nameStrength + 3
)

var (
	// ctlNames maps a name index to its unmet-control name.
	ctlNames [numNames]string
	// ctlSorted lists the name indexes in ascending name order.
	ctlSorted [numNames]uint8
)

func init() {
	copy(ctlNames[:], controls)
	for r := 1; r < len(strengths); r++ {
		ctlNames[nameStrength+r] = ControlAuthStrengthPrefix + strengths[r]
	}
	for i := range ctlSorted {
		ctlSorted[i] = uint8(i)
	}
	slices.SortFunc(ctlSorted[:], func(a, b uint8) int { return strings.Compare(ctlNames[a], ctlNames[b]) })
}

// nameIndex returns the name index of control k of a policy requiring
// authentication strength rank strength.
func nameIndex(k control, strength int) uint8 {
	if k == ctlStrength {
		return uint8(nameStrength + strength)
	}
	return uint8(k)
}

// satisfiedMask returns the bitset (over name indexes) of the controls the
// request satisfies.
func satisfiedMask(in *Input) uint8 {
	a := &in.Auth
	r := strengthRank(a.Strength)
	totp := strengthRank(StrengthPasswordTOTP)
	var m uint8
	set := func(i int, ok bool) {
		if ok {
			m |= 1 << i
		}
	}
	set(int(ctlMFA), a.MFA || r >= totp)
	set(int(ctlRegistered), deviceRegistered(in.Device))
	set(int(ctlCompliant), deviceCompliant(in.Device))
	set(int(ctlTokenProtection), a.TokenProtected)
	set(int(ctlPasswordChange), a.PasswordChanged)
	for k := 1; k < len(strengths); k++ {
		set(nameStrength+k, r >= k || a.MFA && k == totp)
	}
	return m
}

// unmetMask returns the bitset of c's unmet controls given the satisfied
// ones, honouring the any/all operator; 0 when satisfied.
func (c *compiled) unmetMask(sat uint8) uint8 {
	if c.any {
		if c.ctlMask&sat != 0 {
			return 0
		}
		return c.ctlMask
	}
	return c.ctlMask &^ sat
}

func level(levels []string, v string) uint8 {
	if v == "" {
		return 1 // none
	}
	k := slices.Index(levels, v)
	if k < 0 {
		return 0 // unknown value: matches only "any"
	}
	return 1 << k
}

func deviceRegistered(d *DeviceInput) bool {
	return d != nil && d.Registered && d.Status == "active"
}

func deviceCompliant(d *DeviceInput) bool {
	return deviceRegistered(d) && d.Compliance == "compliant"
}

func strengthRank(s string) int {
	return slices.Index(strengths, s) // -1 for none
}

// Evaluate decides the request described by in. It is a pure function of the
// set and the input: no I/O, no clock, no randomness. Enforced policies that
// block win over everything; otherwise every enforced, applying policy's
// unmet grant controls are returned as requirements. Report-only policies
// are evaluated and reported in Decision.Policies but never change the
// outcome or the session controls.
func (s *Set) Evaluate(in Input) Decision {
	st := evalState{in: &in}
	n := len(s.policies)
	d := Decision{Outcome: OutcomeAllow, Policies: make([]PolicyResult, n)}
	flow := uint8(0)
	if k := slices.Index(flowNames, in.Flow); k >= 0 {
		flow = 1 << k
	}
	userRisk := level(riskLevels, in.User.Risk)
	signInRisk := level(riskLevels, in.SignInRisk)
	sat := satisfiedMask(&in)

	// Pass 1: match every policy and record its unmet controls as a
	// bitset; names are materialised once the sizes are known.
	var buf [256]uint8
	unmet := buf[:0]
	if n <= len(buf) {
		unmet = buf[:n]
	} else {
		unmet = make([]uint8, n)
	}
	var names, reqs int // total unmet names; enforced requirements
	var union uint8     // unmet controls of enforced policies
	for i := range s.policies {
		c := &s.policies[i]
		r := &d.Policies[i]
		r.ID, r.State = c.id, c.state
		reason, ferr := s.match(c, &in, &st, flow, userRisk, signInRisk)
		r.Error = ferr
		if reason != "" {
			r.Result, r.Reason = ResultNotApplied, reason
			continue
		}
		if c.block {
			r.Outcome = OutcomeBlock
		} else {
			m := c.unmetMask(sat)
			unmet[i] = m
			names += bits.OnesCount8(m)
			r.Outcome = OutcomeAllow
			if m != 0 {
				r.Outcome = OutcomeAllowWithControls
			}
		}
		if c.state == StateReportOnly {
			r.Result = ResultReportOnly
			continue
		}
		r.Result = ResultApplied
		if c.block {
			d.BlockedBy = append(d.BlockedBy, c.id)
		} else if unmet[i] != 0 {
			reqs++
			union |= unmet[i]
		}
		ss := &d.Session
		ss.SignInEveryTime = ss.SignInEveryTime || c.everyTime
		if c.freq > 0 && (ss.SignInFrequency == 0 || c.freq < ss.SignInFrequency) {
			ss.SignInFrequency = c.freq
		}
		if c.atl > 0 && (ss.AccessTokenLifetime == 0 || c.atl < ss.AccessTokenLifetime) {
			ss.AccessTokenLifetime = c.atl
		}
		ss.StrictLocation = ss.StrictLocation || c.strict
	}

	if st.frame != nil {
		st.frame.Close()
	}

	// Pass 2: materialise the unmet lists (in each policy's control order)
	// from one backing array, and the requirements of enforced policies.
	blocked := len(d.BlockedBy) > 0
	if names > 0 {
		arena := make([]string, names)
		if !blocked && reqs > 0 {
			d.Requirements = make([]Requirement, 0, reqs)
		}
		for i, m := range unmet {
			if m == 0 {
				continue
			}
			c := &s.policies[i]
			k := 0
			for _, x := range c.ctlIdx {
				if m&(1<<x) != 0 {
					arena[k] = ctlNames[x]
					k++
				}
			}
			r := &d.Policies[i]
			r.Unmet, arena = arena[:k:k], arena[k:]
			if !blocked && r.Result == ResultApplied {
				op := OperatorAll
				if c.any {
					op = OperatorAny
				}
				d.Requirements = append(d.Requirements, Requirement{Policy: c.id, Operator: op, Controls: r.Unmet})
			}
		}
	}
	switch {
	case blocked:
		// Block wins: no control can lift it, so none is asked for (each
		// policy's unmet controls remain in Policies).
		d.Outcome = OutcomeBlock
	case reqs > 0:
		d.Outcome = OutcomeAllowWithControls
		d.Controls = make([]string, 0, bits.OnesCount8(union))
		for _, x := range ctlSorted {
			if union&(1<<x) != 0 {
				d.Controls = append(d.Controls, ctlNames[x])
			}
		}
	}
	return d
}

// match returns "" when policy c applies to the request, otherwise the
// reason it does not; the second result reports a device filter error.
func (s *Set) match(c *compiled, in *Input, st *evalState, flow, userRisk, signInRisk uint8) (string, string) {
	if c.state == StateDisabled {
		return ReasonDisabled, ""
	}
	if c.flows != 0 && c.flows&flow == 0 {
		return ReasonFlow, ""
	}
	if !c.apps.has(in.App.ClientID) {
		return ReasonAppNotIncluded, ""
	}
	if c.appsExcl.has(in.App.ClientID) {
		return ReasonAppExcluded, ""
	}
	if (in.App.Public && !c.public) || (!in.App.Public && !c.confidential) {
		return ReasonClientType, ""
	}
	u := &in.User
	if !c.users.has(u.ID) && !c.groups.hasAny(u.Groups) {
		return ReasonUserNotIncluded, ""
	}
	if c.usersExcl.has(u.ID) || c.groupsExcl.hasAny(u.Groups) {
		return ReasonUserExcluded, ""
	}
	if c.userRisk != 0 && c.userRisk&userRisk == 0 {
		return ReasonUserRisk, ""
	}
	if c.signInRisk != 0 && c.signInRisk&signInRisk == 0 {
		return ReasonSignInRisk, ""
	}
	dev := in.Device
	if c.platforms != nil {
		p := ""
		if dev != nil {
			p = dev.Platform
		}
		if !c.platforms.has(p) {
			return ReasonPlatformNotIncluded, ""
		}
		if c.platExcl.has(p) {
			return ReasonPlatformExcluded, ""
		}
	}
	if ds := c.devState; ds != nil {
		reg, comp := deviceRegistered(dev), deviceCompliant(dev)
		if !(ds.inclAll || ds.inclRegistered && reg || ds.inclCompliant && comp) {
			return ReasonDeviceStateNotIncl, ""
		}
		if ds.exclRegistered && reg || ds.exclCompliant && comp {
			return ReasonDeviceStateExcluded, ""
		}
	}
	if lc := c.loc; lc != nil {
		st.locations(s)
		in := lc.inclAll || lc.inclTrusted && st.trusted
		for _, k := range lc.incl {
			in = in || st.locMatched[k]
		}
		if !in {
			return ReasonLocationNotIncluded, ""
		}
		out := lc.exclTrusted && st.trusted
		for _, k := range lc.excl {
			out = out || st.locMatched[k]
		}
		if out {
			return ReasonLocationExcluded, ""
		}
	}
	if c.filter >= 0 {
		ok, ferr := st.filter(s, c.filter)
		if ferr != "" {
			return "", ferr // fail closed: the policy applies
		}
		if !c.filterExcl && !ok {
			return ReasonFilterNotMatched, ""
		}
		if c.filterExcl && ok {
			return ReasonFilterExcluded, ""
		}
	}
	return "", ""
}
