package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// exprGen generates device filter expressions from a byte string (so the
// fuzzer can steer it): mostly the natively compiled subset, sometimes CEL
// beyond it.
type exprGen struct {
	b []byte
	i int
}

func (g *exprGen) pick(n int) int {
	if g.i >= len(g.b) {
		return 0
	}
	v := int(g.b[g.i]) % n
	g.i++
	return v
}

var (
	genStrings = []string{"", "linux", "lin", "ux", "windows", "10.", "10.0.19045", "11.0", "ws-", "ws-17", "WS-17",
		"adm-7", "managed", "active", "compliant", "é", "日本", `a"b`, "a'b", `\`, "-", " "}
	genPatterns = []string{`^ws-[0-9]+$`, `linux|darwin`, ``, `.*`, `^$`, `(?i)ws`, `é+`, `\d`, `^10\.`, `[`, `a{2,}`}
	genVars     = []string{varPlatform, varOSVersion, varTrustType, varCompliance, varStatus, varHostname}
)

// celQuote quotes s as a CEL string literal.
func celQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (g *exprGen) str() string {
	if g.pick(3) == 0 {
		return celQuote(genStrings[g.pick(len(genStrings))])
	}
	return genVars[g.pick(len(genVars))]
}

func (g *exprGen) boolean(depth int) string {
	n := 16
	if depth <= 0 {
		n = 2
	}
	switch g.pick(n) {
	case 0:
		return []string{varRegistered, varKeyAttested}[g.pick(2)]
	case 1:
		return []string{"true", "false"}[g.pick(2)]
	case 2:
		return g.str() + " == " + g.str()
	case 3:
		return g.str() + " != " + g.str()
	case 4:
		var el []string
		for range g.pick(4) {
			el = append(el, celQuote(genStrings[g.pick(len(genStrings))]))
		}
		return g.str() + " in [" + strings.Join(el, ", ") + "]"
	case 5:
		return g.str() + ".startsWith(" + g.str() + ")"
	case 6:
		return g.str() + ".endsWith(" + g.str() + ")"
	case 7:
		return g.str() + ".contains(" + g.str() + ")"
	case 8:
		p := celQuote(genPatterns[g.pick(len(genPatterns))])
		if g.pick(2) == 0 {
			return "matches(" + g.str() + ", " + p + ")"
		}
		return g.str() + ".matches(" + p + ")"
	case 9:
		return "(" + g.boolean(depth-1) + " && " + g.boolean(depth-1) + ")"
	case 10:
		return "(" + g.boolean(depth-1) + " || " + g.boolean(depth-1) + ")"
	case 11:
		return "!" + g.boolean(depth-1)
	case 12:
		return "(" + g.boolean(depth-1) + " ? " + g.boolean(depth-1) + " : " + g.boolean(depth-1) + ")"
	case 13:
		return "(" + g.boolean(depth-1) + " == " + g.boolean(depth-1) + ")"
	case 14:
		// Outside the subset: these run on cel-go.
		switch g.pick(4) {
		case 0:
			return fmt.Sprintf("size(%s) > %d", g.str(), g.pick(8))
		case 1:
			return g.str() + " + " + g.str() + " == " + g.str()
		case 2:
			return g.str() + " in [" + g.str() + "]"
		default:
			return g.str() + ".matches(" + g.str() + ")"
		}
	default:
		return "(" + g.boolean(depth-1) + " && " + g.str() + " == " + g.str() + ")"
	}
}

// genDevice builds a device from a byte string.
func genDevice(g *exprGen) *DeviceInput {
	s := func() string { return genStrings[g.pick(len(genStrings))] }
	return &DeviceInput{Platform: s(), OSVersion: s(), TrustType: s(), Compliance: s(), Status: s(), Hostname: s(), Registered: g.pick(2) == 1,
		KeyAttested: g.pick(2) == 1}
}

// checkNative compares the native form of rule (if any) with both cel-go
// programs on d. It reports whether the rule compiled natively.
func checkNative(t testing.TB, rule string, d *DeviceInput) bool {
	t.Helper()
	env, err := newCELEnv()
	if err != nil {
		t.Fatal(err)
	}
	r, err := compileRule(env, rule)
	if err != nil {
		return false // invalid rules are rejected before either path runs
	}
	if r.native == nil {
		return false
	}
	if r.fast != nil || r.tracked != nil || r.lazy == nil {
		t.Fatalf("%s: native rule keeps cel-go programs", rule)
	}
	// The reference: the programs a rule without a native form would
	// have.
	ast, iss := env.Compile(rule)
	if iss.Err() != nil {
		t.Fatal(iss.Err())
	}
	fast, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		t.Fatal(err)
	}
	tracked, _, err := r.program(true)
	if err != nil {
		t.Fatal(err)
	}
	want := r.native(d)
	for _, p := range []struct {
		name string
		prg  cel.Program
	}{{"fast", fast}, {"tracked", tracked}} {
		v, _, err := p.prg.Eval(newCELVars(d))
		if err != nil {
			t.Fatalf("%s: cel-go (%s) failed where the native form cannot: %v", rule, p.name, err)
		}
		if got := v == types.True; got != want || (v != types.True && v != types.False) {
			t.Fatalf("%s on %+v: native %v, cel-go (%s) %v", rule, *d, want, p.name, v)
		}
	}
	return true
}

// TestNativeMatchesCEL compares the native form of generated rules with
// cel-go on generated devices.
func TestNativeMatchesCEL(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	native, total := 0, 0
	for range 3000 {
		b := make([]byte, 64)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		g := &exprGen{b: b}
		rule := g.boolean(4)
		dg := &exprGen{b: b[len(b)/2:]}
		total++
		for _, d := range []*DeviceInput{genDevice(dg), genDevice(&exprGen{b: b[8:]}), &noDevice} {
			if !checkNative(t, rule, d) {
				break
			}
			if d == &noDevice {
				native++
			}
		}
	}
	if native < total/2 {
		t.Errorf("only %d of %d generated rules compiled natively", native, total)
	}
	t.Logf("%d of %d rules native", native, total)
}

func FuzzNativeMatchesCEL(f *testing.F) {
	f.Add([]byte{9, 2, 0, 1, 5, 1, 2}, "linux", "10.0", "ws-17", true)
	f.Add([]byte{8, 1, 0, 5}, "windows", "10.0.19045", "adm-7", false)
	f.Add([]byte{12, 4, 1, 3, 0, 7, 11, 0}, "", "", "", false)
	f.Fuzz(func(t *testing.T, expr []byte, platform, osVersion, hostname string, registered bool) {
		g := &exprGen{b: expr}
		rule := g.boolean(5)
		d := &DeviceInput{Platform: platform, OSVersion: osVersion, Hostname: hostname, Registered: registered,
			TrustType: "managed", Status: "active", KeyAttested: !registered || len(hostname)%2 == 1}
		if longAttrs(d) {
			return // the cost-tracked program runs then
		}
		checkNative(t, rule, d)
	})
}

// TestNativeSubset pins which rules are compiled natively.
func TestNativeSubset(t *testing.T) {
	env, err := newCELEnv()
	if err != nil {
		t.Fatal(err)
	}
	for rule, want := range map[string]bool{
		`device.platform == 'linux' && device.os_version != '7' && device.hostname.startsWith('ws-')`:         true,
		`device.trust_type == 'managed' && device.hostname.matches('^adm-[0-9]+$')`:                           true,
		`device.platform in ['ios', 'android'] || !device.registered`:                                         true,
		`matches(device.hostname, 'x') ? device.status == 'active' : false`:                                   true,
		`'linux' == device.platform && device.hostname.endsWith('.corp') && device.os_version.contains('10')`: true,
		`device.registered == true`:                          true,
		`device.key_attested && device.platform == 'linux'`:  true,
		`size(device.hostname) > 3`:                          false,
		`device.hostname.matches(device.platform)`:           false,
		`device.platform in [device.os_version]`:             false,
		`[1, 2].all(x, x > 0) && device.platform == 'linux'`: false,
		`device.platform + 'x' == 'linuxx'`:                  false,
		`device.os_version.startsWith('10') || 1 == 1`:       false,
	} {
		r, err := compileRule(env, rule)
		if err != nil {
			t.Fatalf("%s: %v", rule, err)
		}
		if got := r.native != nil; got != want {
			t.Errorf("%s: native %v, want %v", rule, got, want)
		}
	}
}

// withoutNative returns a copy of s whose device filters all run on cel-go.
func withoutNative(s *Set) *Set {
	c := *s
	c.programs = make([]rule, len(s.programs))
	for i, r := range s.programs {
		r.native = nil
		c.programs[i] = r
	}
	return &c
}

// TestNativeEvaluate evaluates the golden-style filters through Evaluate
// with and without native forms, including devices with attributes too
// long for the untracked program.
func TestNativeEvaluate(t *testing.T) {
	rules := []string{
		`device.platform == 'windows' && device.os_version.startsWith('10.')`,
		`device.trust_type == 'managed' && device.hostname.matches('^adm-[0-9]+$')`,
		`device.hostname.contains('-') || device.registered`,
		`!(device.platform in ['linux', 'darwin'])`,
	}
	var pols []Policy
	for i, r := range rules {
		for _, mode := range []string{FilterInclude, FilterExclude} {
			pols = append(pols, Policy{ID: fmt.Sprintf("r%d-%s", i, mode), State: StateEnabled, Assignments: allUsers(),
				Conditions: Conditions{DeviceFilter: &DeviceFilter{Mode: mode, Rule: r}},
				Grant:      GrantControls{Controls: []string{ControlMFA}}})
		}
	}
	set, err := Compile(pols, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range set.programs {
		if r.native == nil {
			t.Fatal("rule not compiled natively")
		}
	}
	ref := withoutNative(set)
	long := strings.Repeat("x", maxAttrLen+1)
	devices := []*DeviceInput{nil,
		{Platform: "windows", OSVersion: "10.0.1"},
		{Platform: "linux", TrustType: "managed", Hostname: "adm-12", Registered: true},
		{Platform: "darwin", Hostname: "laptop"},
		{Platform: "windows", OSVersion: "10." + long, Hostname: "adm-" + long},
	}
	for _, d := range devices {
		in := Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Device: d, IP: netip.MustParseAddr("192.0.2.1")}
		got, want := set.Evaluate(in), ref.Evaluate(in)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("device %+v:\nnative %+v\ncel-go %+v", d, got, want)
		}
	}
}

// TestConcurrentEvaluate: a Set is safe for concurrent use, including the
// first use of a native rule's lazily built cost-tracked program (run with
// -race).
func TestConcurrentEvaluate(t *testing.T) {
	pols := []Policy{
		{ID: "a", State: StateEnabled, Assignments: allUsers(),
			Conditions: Conditions{DeviceFilter: &DeviceFilter{Mode: FilterInclude, Rule: `device.hostname.startsWith('ws-')`}},
			Grant:      GrantControls{Block: true}},
		{ID: "b", State: StateEnabled, Assignments: allUsers(),
			Conditions: Conditions{DeviceFilter: &DeviceFilter{Mode: FilterExclude, Rule: `size(device.hostname) > 300`}},
			Grant:      GrantControls{Controls: []string{ControlMFA}}},
	}
	inputs := []Input{
		{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Device: &DeviceInput{Hostname: "ws-" + strings.Repeat("x", 400)}},
		{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Device: &DeviceInput{Hostname: "laptop"}},
	}
	ref, err := Compile(pols, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Decision{ref.Evaluate(inputs[0]), ref.Evaluate(inputs[1])}
	if want[0].Outcome != OutcomeBlock || want[1].Outcome != OutcomeAllowWithControls {
		t.Fatalf("decisions %s, %s", want[0].Outcome, want[1].Outcome)
	}
	set, err := Compile(pols, nil) // a fresh set: its lazy programs are not built yet
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 50 {
				k := (g + i) % 2
				if d := set.Evaluate(inputs[k]); !reflect.DeepEqual(d, want[k]) {
					done <- fmt.Errorf("input %d: %+v, want %+v", k, d, want[k])
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
