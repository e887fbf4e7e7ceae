package policy

import (
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// maxAttrLen bounds device string attributes for static cost estimation.
// Requests with a longer attribute are evaluated with runtime cost tracking.
const maxAttrLen = 256

// rule is a compiled device filter. fast is set when the static worst-case
// cost (with attributes of at most maxAttrLen bytes) is within CELCostLimit:
// it then runs without the runtime cost tracker, which is the costliest part
// of evaluating a small rule. tracked always enforces cel.CostLimit.
//
// native is the rule compiled to Go (see compileNative), set only where
// fast would be. It then replaces fast, and tracked (needed only for
// devices with longer attributes) is built on first use: a Set keeps no
// cel-go program for such rules, which keeps the live heap the garbage
// collector scans small.
type rule struct {
	native        boolFn
	fast, tracked cel.Program
	lazy          *lazyProgram // tracked program of a native rule
}

// lazyProgram builds a rule's cost-tracked program on first use.
type lazyProgram struct {
	env  *cel.Env
	src  string
	once sync.Once
	prg  cel.Program
	err  error
}

func (l *lazyProgram) program() (cel.Program, error) {
	l.once.Do(func() {
		ast, iss := l.env.Compile(l.src)
		if iss.Err() != nil {
			l.err = iss.Err()
			return
		}
		l.prg, l.err = trackedProgram(l.env, ast)
	})
	return l.prg, l.err
}

func trackedProgram(env *cel.Env, ast *cel.Ast) (cel.Program, error) {
	return env.Program(ast, cel.CostLimit(CELCostLimit), cel.EvalOptions(cel.OptOptimize))
}

type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	if n.Path() != nil {
		return &cost.SizeEstimate{Min: 0, Max: maxAttrLen}
	}
	return nil
}

func (sizeEstimator) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// CEL variable names available to device filters.
const (
	varPlatform   = "device.platform"
	varOSVersion  = "device.os_version"
	varTrustType  = "device.trust_type"
	varCompliance = "device.compliance"
	varStatus     = "device.status"
	varHostname   = "device.hostname"
	varRegistered = "device.registered"
	// varKeyAttested: the device key is attested as held in a TPM (TPM
	// 2.0 key attestation); the key storage the agent reports is not
	// exposed, since nothing should rely on it.
	varKeyAttested = "device.key_attested"
)

func newCELEnv() (*cel.Env, error) {
	env, err := cel.NewEnv(
		cel.Variable(varPlatform, cel.StringType),
		cel.Variable(varOSVersion, cel.StringType),
		cel.Variable(varTrustType, cel.StringType),
		cel.Variable(varCompliance, cel.StringType),
		cel.Variable(varStatus, cel.StringType),
		cel.Variable(varHostname, cel.StringType),
		cel.Variable(varRegistered, cel.BoolType),
		cel.Variable(varKeyAttested, cel.BoolType),
	)
	if err != nil {
		return nil, fmt.Errorf("policy: cel environment: %w", err)
	}
	return env, nil
}

// compileRule compiles and type-checks a device filter rule; it must be a
// boolean expression.
func compileRule(env *cel.Env, src string) (rule, error) {
	var r rule
	if src == "" {
		return r, fmt.Errorf("empty rule")
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return r, fmt.Errorf("invalid CEL: %v", iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return r, fmt.Errorf("rule must be boolean, is %v", ast.OutputType())
	}
	var err error
	r.tracked, err = trackedProgram(env, ast)
	if err != nil {
		return r, fmt.Errorf("invalid CEL: %v", err)
	}
	if est, err := env.EstimateCost(ast, sizeEstimator{}); err == nil && est.Max <= CELCostLimit {
		if r.native = compileNative(ast); r.native != nil {
			r.tracked, r.lazy = nil, &lazyProgram{env: env, src: src}
			return r, nil
		}
		r.fast, err = env.Program(ast, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			return r, fmt.Errorf("invalid CEL: %v", err)
		}
	}
	return r, nil
}

// longAttrs reports whether one of d's string attributes is longer than the
// static cost estimate assumed.
func longAttrs(d *DeviceInput) bool {
	return d != nil && (len(d.Platform) > maxAttrLen || len(d.OSVersion) > maxAttrLen || len(d.TrustType) > maxAttrLen ||
		len(d.Compliance) > maxAttrLen || len(d.Status) > maxAttrLen || len(d.Hostname) > maxAttrLen)
}

// program returns the cel-go program to run: the untracked one only when
// the device's attributes are within the sizes the static estimate assumed
// (long reports they are not, see longAttrs). tracked reports that the
// cost-tracked program was chosen. Rules with a native form have no
// untracked program; their tracked one is built here on first use.
func (r *rule) program(long bool) (prg cel.Program, tracked bool, err error) {
	switch {
	case r.fast != nil && !long:
		return r.fast, false, nil
	case r.lazy != nil:
		prg, err = r.lazy.program()
		return prg, true, err
	}
	return r.tracked, true, nil
}

// celVars exposes a device to CEL without building a map. It is built once
// per evaluation and shared by every device filter; each attribute is
// converted to a CEL value on first use and then reused, so rules do not
// allocate to read variables.
type celVars struct {
	d    *DeviceInput
	vals [numVars]ref.Val
}

// Indexes of celVars.vals.
const (
	vPlatform = iota
	vOSVersion
	vTrustType
	vCompliance
	vStatus
	vHostname
	numVars
)

var noDevice DeviceInput

func newCELVars(d *DeviceInput) *celVars {
	if d == nil {
		d = &noDevice
	}
	return &celVars{d: d}
}

func (a *celVars) str(i int, s string) ref.Val {
	v := a.vals[i]
	if v == nil {
		v = types.String(s)
		a.vals[i] = v
	}
	return v
}

// ResolveName implements interpreter.Activation.
func (a *celVars) ResolveName(name string) (any, bool) {
	d := a.d
	switch name {
	case varPlatform:
		return a.str(vPlatform, d.Platform), true
	case varOSVersion:
		return a.str(vOSVersion, d.OSVersion), true
	case varTrustType:
		return a.str(vTrustType, d.TrustType), true
	case varCompliance:
		return a.str(vCompliance, d.Compliance), true
	case varStatus:
		return a.str(vStatus, d.Status), true
	case varHostname:
		return a.str(vHostname, d.Hostname), true
	case varRegistered:
		return types.Bool(d.Registered), true
	case varKeyAttested:
		return types.Bool(d.KeyAttested), true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (*celVars) Parent() interpreter.Activation { return nil }
