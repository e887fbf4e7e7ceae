package policy

import (
	"fmt"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/interpreter"
)

// maxAttrLen bounds device string attributes for static cost estimation.
// Requests with a longer attribute are evaluated with runtime cost tracking.
const maxAttrLen = 256

// rule is a compiled device filter. fast is set when the static worst-case
// cost (with attributes of at most maxAttrLen bytes) is within CELCostLimit:
// it then runs without the runtime cost tracker, which is the costliest part
// of evaluating a small rule. tracked always enforces cel.CostLimit.
type rule struct {
	fast, tracked cel.Program
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
	r.tracked, err = env.Program(ast, cel.CostLimit(CELCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return r, fmt.Errorf("invalid CEL: %v", err)
	}
	if est, err := env.EstimateCost(ast, sizeEstimator{}); err == nil && est.Max <= CELCostLimit {
		r.fast, err = env.Program(ast, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			return r, fmt.Errorf("invalid CEL: %v", err)
		}
	}
	return r, nil
}

// program returns the program to run for device d: the untracked one only
// when d's attributes are within the sizes the static estimate assumed.
func (r *rule) program(d *DeviceInput) cel.Program {
	if r.fast == nil {
		return r.tracked
	}
	if d != nil && (len(d.Platform) > maxAttrLen || len(d.OSVersion) > maxAttrLen || len(d.TrustType) > maxAttrLen ||
		len(d.Compliance) > maxAttrLen || len(d.Status) > maxAttrLen || len(d.Hostname) > maxAttrLen) {
		return r.tracked
	}
	return r.fast
}

// deviceActivation exposes a device to CEL without building a map.
type deviceActivation struct{ d *DeviceInput }

var noDevice DeviceInput

// ResolveName implements interpreter.Activation.
func (a deviceActivation) ResolveName(name string) (any, bool) {
	d := a.d
	if d == nil {
		d = &noDevice
	}
	switch name {
	case varPlatform:
		return d.Platform, true
	case varOSVersion:
		return d.OSVersion, true
	case varTrustType:
		return d.TrustType, true
	case varCompliance:
		return d.Compliance, true
	case varStatus:
		return d.Status, true
	case varHostname:
		return d.Hostname, true
	case varRegistered:
		return d.Registered, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (deviceActivation) Parent() interpreter.Activation { return nil }
