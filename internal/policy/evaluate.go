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

// request holds the facts of one request that policies are matched on,
// computed once per evaluation.
type request struct {
	flow, userRisk, signInRisk uint8
	client                     uint8 // bit of the client kind
	plat                       uint8 // bit of the device platform; 0 = none or unknown
	dev                        uint8 // device class bit
	trusted                    bool  // the request comes from a trusted location
	// Bitsets over policies: the user is included (by id or group) or
	// excluded by name, the application is included or excluded by name.
	userIn, userEx, appIn, appEx []uint64
	locs                         []uint64 // bitset of the named locations the request is in
}

func bit(set []uint64, k int) bool { return set[k>>6]&(1<<(k&63)) != 0 }

// evalState holds the device filter results of one evaluation, computed
// lazily and shared by all policies. It holds no pointer to the caller's
// stack, so that it stays on the stack itself.
type evalState struct {
	dev      *DeviceInput // the request's device, or the empty device
	longDone bool
	long     bool // a device attribute exceeds maxAttrLen
	// Per program: 0 not evaluated, 1 true, 2 false, 3 error; the first
	// programs in memo, the others in more.
	memo  [128]int8
	more  []int8
	errs  []string  // per program, for results 3
	celSt *celState // built on first use of cel-go
}

// celState is what cel-go evaluations of one request share.
type celState struct {
	vars  *celVars                    // CEL activation over the device
	frame *interpreter.ExecutionFrame // over vars, for untracked programs
}

func (st *evalState) result(k int) *int8 {
	if k < len(st.memo) {
		return &st.memo[k]
	}
	return &st.more[k-len(st.memo)]
}

// filter evaluates device filter k once per evaluation and memoises the
// result for every other policy using the same rule.
func (st *evalState) filter(s *Set, k int) (bool, string) {
	if k >= len(st.memo) && st.more == nil {
		st.more = make([]int8, len(s.programs)-len(st.memo))
	}
	res := st.result(k)
	switch *res {
	case 1:
		return true, ""
	case 2:
		return false, ""
	case 3:
		return false, st.errs[k]
	}
	if !st.longDone {
		st.longDone = true
		st.long = longAttrs(st.dev)
	}
	r := &s.programs[k]
	var ok bool
	if r.native != nil && !st.long {
		ok = r.native(st.dev)
	} else {
		if st.celSt == nil {
			st.celSt = newCELState(st.dev)
		}
		var err error
		if ok, err = st.celSt.eval(r, st.long); err != nil {
			if st.errs == nil {
				st.errs = make([]string, len(s.programs))
			}
			*res, st.errs[k] = 3, err.Error()
			return false, st.errs[k]
		}
	}
	if ok {
		*res = 1
	} else {
		*res = 2
	}
	return ok, ""
}

func newCELState(d *DeviceInput) *celState {
	cs := &celState{vars: newCELVars(d)}
	// One execution frame for every untracked program of this
	// evaluation (cel.Program.Eval accepts a frame); tracked programs
	// get the activation and a frame of their own.
	if f, err := interpreter.NewExecutionFrame(cs.vars); err == nil {
		cs.frame = f
	}
	return cs
}

func (cs *celState) close() {
	if cs != nil && cs.frame != nil {
		cs.frame.Close()
	}
}

// eval evaluates r with cel-go.
func (cs *celState) eval(r *rule, long bool) (bool, error) {
	prg, tracked, err := r.program(long)
	if err != nil {
		return false, err
	}
	var in any = cs.vars
	if !tracked && cs.frame != nil {
		in = cs.frame
	}
	out, _, err := prg.Eval(in)
	if err != nil {
		return false, err
	}
	return out == types.True, nil
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
	// Constants, so that the names copied into every Decision are not heap
	// pointers.
	ctlNames[nameStrength+1] = ControlAuthStrengthPrefix + StrengthPasswordTOTP
	ctlNames[nameStrength+2] = ControlAuthStrengthPrefix + StrengthPhishingResistant
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
//
// The slices of the returned Decision may share backing arrays (a
// policy's Unmet list is also its Requirement's Controls, and equal lists
// are shared); treat them as read-only.
func (s *Set) Evaluate(in Input) Decision {
	st := evalState{dev: in.Device}
	if st.dev == nil {
		st.dev = &noDevice
	}
	var scratch [4*4 + 2]uint64
	q := s.request(&in, scratch[:0])
	n := len(s.policies)
	d := Decision{Outcome: OutcomeAllow, Policies: make([]PolicyResult, n)}
	sat := satisfiedMask(&in)

	// Pass 1: match every policy and record its unmet controls as a
	// bitset (in pend); names are materialised once the sizes are known.
	// Equal unmet lists (same controls in the same order) are materialised
	// once.
	var pendBuf [256]pending
	pend := pendBuf[:0]
	if n > len(pendBuf) {
		pend = make([]pending, 0, n)
	}
	var lists listCache
	var names, reqs, blocks int // unmet names to allocate; enforced requirements; enforced blocks
	var union uint8             // unmet controls of enforced policies
	for i := range s.policies {
		c := &s.policies[i]
		r := &d.Policies[i]
		r.ID, r.State = c.id, c.state
		reason, ferr := s.match(i, &q, &st)
		if ferr != "" { // the result is fresh, zeroed memory
			r.Error = ferr
		}
		if reason != "" {
			r.Result, r.Reason = ResultNotApplied, reason
			continue
		}
		enforced := !c.reportOnly
		var m uint8
		if c.block {
			r.Outcome = OutcomeBlock
		} else if m = c.unmetMask(sat); m != 0 {
			slot, isNew := lists.add(c.ctlSig, m)
			if isNew {
				names += bits.OnesCount8(m)
			}
			pend = append(pend, pending{policy: int32(i), unmet: m, slot: slot, enforced: enforced})
			r.Outcome = OutcomeAllowWithControls
		} else {
			r.Outcome = OutcomeAllow
		}
		if !enforced {
			r.Result = ResultReportOnly
			continue
		}
		r.Result = ResultApplied
		if c.block {
			blocks++
		} else if m != 0 {
			reqs++
			union |= m
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

	st.celSt.close()

	// Pass 2: the blocking policies, and the unmet lists (in each
	// policy's control order) from one backing array with the
	// requirements of enforced policies.
	blocked := blocks > 0
	if blocked {
		d.BlockedBy = make([]string, 0, blocks)
		for i := range s.policies {
			if c := &s.policies[i]; c.block && d.Policies[i].Result == ResultApplied {
				d.BlockedBy = append(d.BlockedBy, c.id)
			}
		}
	}
	if len(pend) > 0 {
		arena := make([]string, names)
		if !blocked && reqs > 0 {
			d.Requirements = make([]Requirement, reqs)
		}
		j := 0
		for _, p := range pend {
			c := &s.policies[p.policy]
			var l []string
			if p.slot >= 0 {
				l = lists.vals[p.slot]
			}
			if l == nil {
				k := 0
				for _, x := range c.ctlIdx {
					if p.unmet&(1<<x) != 0 {
						arena[k] = ctlNames[x]
						k++
					}
				}
				l, arena = arena[:k:k], arena[k:]
				if p.slot >= 0 {
					lists.vals[p.slot] = l
				}
			}
			d.Policies[p.policy].Unmet = l
			if !blocked && p.enforced {
				op := OperatorAll
				if c.any {
					op = OperatorAny
				}
				rq := &d.Requirements[j]
				rq.Policy, rq.Operator, rq.Controls = c.id, op, l
				j++
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

// pending is a policy with unmet controls, recorded in pass 1 of Evaluate.
type pending struct {
	policy   int32
	slot     int8 // listCache slot, -1 for none
	unmet    uint8
	enforced bool
}

// listCache remembers the unmet lists of one evaluation by control
// signature and unmet bitset, so that equal lists are materialised once.
// Past its capacity, lists are simply not shared.
type listCache struct {
	n    int
	last int // slot of the last key added or found
	keys [32]uint64
	vals [32][]string
}

// add records a key and returns its slot (-1 when the cache is full); isNew
// reports that its list must be allocated (a new key, or no slot).
func (lc *listCache) add(sig uint32, m uint8) (slot int8, isNew bool) {
	k := uint64(sig)<<8 | uint64(m)
	if lc.n > 0 && lc.keys[lc.last] == k {
		return int8(lc.last), false
	}
	for i, x := range lc.keys[:lc.n] {
		if x == k {
			lc.last = i
			return int8(i), false
		}
	}
	if lc.n == len(lc.keys) {
		return -1, true
	}
	lc.keys[lc.n] = k
	lc.last = lc.n
	lc.n++
	return int8(lc.last), true
}

// request computes the facts policies are matched on; buf is scratch
// space for its bitsets.
func (s *Set) request(in *Input, buf []uint64) request {
	q := request{
		userRisk:   level(riskLevels, in.User.Risk),
		signInRisk: level(riskLevels, in.SignInRisk),
		client:     1 << clientKind(&in.App),
		dev:        devUnregistered,
	}
	if k := slices.Index(flowNames, in.Flow); k >= 0 {
		q.flow = 1 << k
	}
	if d := in.Device; d != nil {
		if k := slices.Index(platforms, d.Platform); k >= 0 {
			q.plat = 1 << k
		}
		switch {
		case deviceCompliant(d):
			q.dev = devCompliant
		case deviceRegistered(d):
			q.dev = devRegistered
		}
	}
	w := (len(s.policies) + 63) / 64
	nl := 0
	if s.hasLocCond {
		nl = (len(s.locations) + 63) / 64
	}
	if 4*w+nl > cap(buf) {
		buf = make([]uint64, 0, 4*w+nl)
	}
	buf = buf[:4*w+nl]
	q.userIn, q.userEx, q.appIn, q.appEx, q.locs = buf[:w], buf[w:2*w], buf[2*w:3*w], buf[3*w:4*w], buf[4*w:]
	if p, ok := s.users[in.User.ID]; ok && in.User.ID != "" {
		setBits(q.userIn, p.incl)
		setBits(q.userEx, p.excl)
	}
	if u := in.User.Username; u != "" && u != in.User.ID {
		if p, ok := s.users[u]; ok {
			setBits(q.userIn, p.incl)
			setBits(q.userEx, p.excl)
		}
	}
	for _, g := range in.User.Groups {
		if p, ok := s.groups[g]; ok {
			setBits(q.userIn, p.incl)
			setBits(q.userEx, p.excl)
		}
	}
	if p, ok := s.apps[in.App.ClientID]; ok {
		setBits(q.appIn, p.incl)
		setBits(q.appEx, p.excl)
	}
	if s.hasLocCond {
		for i := range s.locations {
			if l := &s.locations[i]; l.contains(in.IP, in.Country) {
				q.locs[i>>6] |= 1 << (i & 63)
				q.trusted = q.trusted || l.trusted
			}
		}
	}
	return q
}

func setBits(set []uint64, idx []int32) {
	for _, i := range idx {
		set[i>>6] |= 1 << (i & 63)
	}
}

// match returns "" when policy c applies to the request, otherwise the
// reason it does not; the second result reports a device filter error.
func (s *Set) match(i int, q *request, st *evalState) (string, string) {
	c := &s.policies[i]
	if c.disabled {
		return ReasonDisabled, ""
	}
	if c.flows != 0 && c.flows&q.flow == 0 {
		return ReasonFlow, ""
	}
	if !c.appsAll && !bit(q.appIn, i) {
		return ReasonAppNotIncluded, ""
	}
	if c.appsExclAll || bit(q.appEx, i) {
		return ReasonAppExcluded, ""
	}
	if c.clients&q.client == 0 {
		return ReasonClientType, ""
	}
	if !c.usersAll && !bit(q.userIn, i) {
		return ReasonUserNotIncluded, ""
	}
	if c.usersExclAll || bit(q.userEx, i) {
		return ReasonUserExcluded, ""
	}
	if c.userRisk != 0 && c.userRisk&q.userRisk == 0 {
		return ReasonUserRisk, ""
	}
	if c.signInRisk != 0 && c.signInRisk&q.signInRisk == 0 {
		return ReasonSignInRisk, ""
	}
	if c.platforms != 0 {
		if c.platforms&(platAll|q.plat) == 0 {
			return ReasonPlatformNotIncluded, ""
		}
		if c.platExcl&q.plat != 0 {
			return ReasonPlatformExcluded, ""
		}
	}
	if c.devIncl != 0 {
		if c.devIncl&q.dev == 0 {
			return ReasonDeviceStateNotIncl, ""
		}
		if c.devExcl&q.dev != 0 {
			return ReasonDeviceStateExcluded, ""
		}
	}
	if lc := c.loc; lc != nil {
		in := lc.inclAll || lc.inclTrusted && q.trusted
		for _, k := range lc.incl {
			in = in || bit(q.locs, k)
		}
		if !in {
			return ReasonLocationNotIncluded, ""
		}
		out := lc.exclTrusted && q.trusted
		for _, k := range lc.excl {
			out = out || bit(q.locs, k)
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
