package policy

import (
	"slices"

	"cel.dev/cel-go/common/types"
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

func (st *evalState) filter(s *Set, k int) (bool, string) {
	if st.filters == nil {
		st.filters = make([]int8, len(s.programs))
		st.filterErrs = make([]string, len(s.programs))
	}
	switch st.filters[k] {
	case 1:
		return true, ""
	case 2:
		return false, ""
	case 3:
		return false, st.filterErrs[k]
	}
	out, _, err := s.programs[k].program(st.in.Device).Eval(deviceActivation{st.in.Device})
	if err != nil {
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
	d := Decision{Outcome: OutcomeAllow, Policies: make([]PolicyResult, len(s.policies))}
	flow := uint8(0)
	if k := slices.Index(flowNames, in.Flow); k >= 0 {
		flow = 1 << k
	}
	userRisk := level(riskLevels, in.User.Risk)
	signInRisk := level(riskLevels, in.SignInRisk)
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
			r.Unmet = c.unmet(&in)
			r.Outcome = OutcomeAllow
			if len(r.Unmet) > 0 {
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
		} else if len(r.Unmet) > 0 {
			op := OperatorAll
			if c.any {
				op = OperatorAny
			}
			d.Requirements = append(d.Requirements, Requirement{Policy: c.id, Operator: op, Controls: r.Unmet})
			for _, u := range r.Unmet {
				if !slices.Contains(d.Controls, u) {
					d.Controls = append(d.Controls, u)
				}
			}
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
	switch {
	case len(d.BlockedBy) > 0:
		// Block wins: no control can lift it, so none is asked for (each
		// policy's unmet controls remain in Policies).
		d.Outcome = OutcomeBlock
		d.Requirements, d.Controls = nil, nil
	case len(d.Requirements) > 0:
		d.Outcome = OutcomeAllowWithControls
	}
	slices.Sort(d.Controls)
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

// unmet returns the names of c's grant controls the request has not
// satisfied, honouring the any/all operator; nil when satisfied.
func (c *compiled) unmet(in *Input) []string {
	var out []string
	for _, k := range c.controls {
		if c.satisfied(k, in) {
			if c.any {
				return nil
			}
			continue
		}
		out = append(out, c.controlName(k))
	}
	return out
}

func (c *compiled) controlName(k control) string {
	if k == ctlStrength {
		return ControlAuthStrengthPrefix + c.strName
	}
	return controls[k]
}

func (c *compiled) satisfied(k control, in *Input) bool {
	a := &in.Auth
	switch k {
	case ctlMFA:
		return a.MFA || strengthRank(a.Strength) >= strengthRank(StrengthPasswordTOTP)
	case ctlStrength:
		r := strengthRank(a.Strength)
		if a.MFA && c.strength == strengthRank(StrengthPasswordTOTP) {
			return true
		}
		return r >= c.strength
	case ctlRegistered:
		return deviceRegistered(in.Device)
	case ctlCompliant:
		return deviceCompliant(in.Device)
	case ctlTokenProtection:
		return a.TokenProtected
	case ctlPasswordChange:
		return a.PasswordChanged
	}
	return false
}
