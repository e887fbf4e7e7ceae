package policy

import (
	"regexp"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/overloads"
	"cel.dev/cel-go/common/types"
)

// Native device filters.
//
// Most device filters use a small subset of CEL: the device.* variables,
// string and bool literals, ==, !=, `in` over a list of string literals,
// startsWith, endsWith, contains, matches with a literal pattern, &&, ||, !
// and ?:. compileNative translates a type-checked rule in that subset into
// Go closures over DeviceInput, evaluated without the CEL interpreter. Rules
// using anything else run on cel-go.
//
// Within the subset no sub-expression can produce a CEL error (every
// variable is bound, both operands of an operator have the same type and
// patterns are compiled up front), so CEL's commutative, error-absorbing &&
// and || reduce to Go's short-circuit operators and both paths give the
// same result; TestNativeMatchesCEL and FuzzNativeMatchesCEL check it. The
// cost limit is honoured by using the native form only where the untracked
// CEL program would run (static cost within CELCostLimit, attributes within
// maxAttrLen); otherwise the cost-tracked program runs.

// boolFn and strFn are compiled boolean and string sub-expressions.
type (
	boolFn func(*DeviceInput) bool
	strFn  func(*DeviceInput) string
)

// String variables, as field numbers for field.
var strVars = map[string]int{
	varPlatform:   vPlatform,
	varOSVersion:  vOSVersion,
	varTrustType:  vTrustType,
	varCompliance: vCompliance,
	varStatus:     vStatus,
	varHostname:   vHostname,
}

// field returns string field f (a celVars index) of d.
func field(d *DeviceInput, f int) string {
	switch f {
	case vPlatform:
		return d.Platform
	case vOSVersion:
		return d.OSVersion
	case vTrustType:
		return d.TrustType
	case vCompliance:
		return d.Compliance
	case vStatus:
		return d.Status
	}
	return d.Hostname
}

// strRef is a compiled string operand: a literal or a device field.
type strRef struct {
	lit   bool
	s     string // the literal
	field int    // the field, if not lit
}

func (r strRef) get(d *DeviceInput) string {
	if r.lit {
		return r.s
	}
	return field(d, r.field)
}

// compileNative returns the native form of a checked rule, or nil when the
// rule uses anything outside the subset.
func compileNative(a *cel.Ast) boolFn {
	n := a.NativeRep()
	c := nativeCompiler{refs: n.ReferenceMap()}
	f, ok := c.boolean(n.Expr())
	if !ok {
		return nil
	}
	return f
}

type nativeCompiler struct {
	refs map[int64]*ast.ReferenceInfo
}

// overload reports whether call e was resolved by the checker to exactly
// the overload id.
func (c nativeCompiler) overload(e ast.Expr, id string) bool {
	r := c.refs[e.ID()]
	return r != nil && len(r.OverloadIDs) == 1 && r.OverloadIDs[0] == id
}

// variable returns the declared variable name e refers to.
func (c nativeCompiler) variable(e ast.Expr) (string, bool) {
	if e.Kind() != ast.IdentKind {
		return "", false
	}
	name := strings.TrimPrefix(e.AsIdent(), ".")
	if r := c.refs[e.ID()]; r == nil || strings.TrimPrefix(r.Name, ".") != name || r.Value != nil {
		return "", false
	}
	return name, true
}

// str compiles a string-valued expression: a string variable or literal.
func (c nativeCompiler) str(e ast.Expr) (strRef, bool) {
	switch e.Kind() {
	case ast.LiteralKind:
		v, isStr := e.AsLiteral().(types.String)
		return strRef{lit: true, s: string(v)}, isStr
	case ast.IdentKind:
		name, ok := c.variable(e)
		if !ok {
			return strRef{}, false
		}
		f, ok := strVars[name]
		return strRef{field: f}, ok
	}
	return strRef{}, false
}

// boolean compiles a bool-valued expression.
func (c nativeCompiler) boolean(e ast.Expr) (boolFn, bool) {
	switch e.Kind() {
	case ast.LiteralKind:
		v, ok := e.AsLiteral().(types.Bool)
		if !ok {
			return nil, false
		}
		b := bool(v)
		return func(*DeviceInput) bool { return b }, true
	case ast.IdentKind:
		name, ok := c.variable(e)
		switch {
		case ok && name == varRegistered:
			return func(d *DeviceInput) bool { return d.Registered }, true
		case ok && name == varKeyAttested:
			return func(d *DeviceInput) bool { return d.KeyAttested }, true
		}
		return nil, false
	case ast.CallKind:
		return c.call(e)
	}
	return nil, false
}

func (c nativeCompiler) call(e ast.Expr) (boolFn, bool) {
	call := e.AsCall()
	args := call.Args()
	fn := call.FunctionName()
	switch {
	case fn == operators.LogicalAnd && len(args) == 2 && c.overload(e, overloads.LogicalAnd),
		fn == operators.LogicalOr && len(args) == 2 && c.overload(e, overloads.LogicalOr):
		// Flatten a chain of the same operator into one loop.
		var terms []boolFn
		if !c.chain(e, fn, &terms) {
			return nil, false
		}
		if fn == operators.LogicalAnd {
			return func(d *DeviceInput) bool {
				for _, t := range terms {
					if !t(d) {
						return false
					}
				}
				return true
			}, true
		}
		return func(d *DeviceInput) bool {
			for _, t := range terms {
				if t(d) {
					return true
				}
			}
			return false
		}, true
	case fn == operators.LogicalNot && len(args) == 1 && c.overload(e, overloads.LogicalNot):
		x, ok := c.boolean(args[0])
		if !ok {
			return nil, false
		}
		return func(d *DeviceInput) bool { return !x(d) }, true
	case fn == operators.Conditional && len(args) == 3 && c.overload(e, overloads.Conditional):
		var f [3]boolFn
		for i, a := range args {
			var ok bool
			if f[i], ok = c.boolean(a); !ok {
				return nil, false
			}
		}
		cond, t, el := f[0], f[1], f[2]
		return func(d *DeviceInput) bool {
			if cond(d) {
				return t(d)
			}
			return el(d)
		}, true
	case (fn == operators.Equals && c.overload(e, overloads.Equals) ||
		fn == operators.NotEquals && c.overload(e, overloads.NotEquals)) && len(args) == 2:
		eq, ok := c.equal(args[0], args[1])
		if !ok {
			return nil, false
		}
		if fn == operators.NotEquals {
			return func(d *DeviceInput) bool { return !eq(d) }, true
		}
		return eq, true
	case fn == operators.In && len(args) == 2 && c.overload(e, overloads.InList):
		return c.in(args[0], args[1])
	case call.IsMemberFunction() && len(args) == 1:
		var op int
		switch {
		case fn == overloads.StartsWith && c.overload(e, overloads.StartsWithString):
			op = opStartsWith
		case fn == overloads.EndsWith && c.overload(e, overloads.EndsWithString):
			op = opEndsWith
		case fn == overloads.Contains && c.overload(e, overloads.ContainsString):
			op = opContains
		case fn == overloads.Matches && c.overload(e, overloads.MatchesString):
			return c.matches(call.Target(), args[0])
		default:
			return nil, false
		}
		return c.strOp(call.Target(), args[0], op)
	case fn == overloads.Matches && !call.IsMemberFunction() && len(args) == 2 && c.overload(e, overloads.Matches):
		return c.matches(args[0], args[1])
	}
	return nil, false
}

// chain compiles the operands of a chain of calls to the logical operator
// fn (&& or ||), in order, into terms.
func (c nativeCompiler) chain(e ast.Expr, fn string, terms *[]boolFn) bool {
	id := overloads.LogicalAnd
	if fn == operators.LogicalOr {
		id = overloads.LogicalOr
	}
	if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == fn && len(e.AsCall().Args()) == 2 && c.overload(e, id) {
		args := e.AsCall().Args()
		return c.chain(args[0], fn, terms) && c.chain(args[1], fn, terms)
	}
	t, ok := c.boolean(e)
	*terms = append(*terms, t)
	return ok
}

// equal compiles l == r for two strings or two bools.
func (c nativeCompiler) equal(l, r ast.Expr) (boolFn, bool) {
	if ls, ok := c.str(l); ok {
		rs, ok := c.str(r)
		if !ok {
			return nil, false
		}
		if ls.lit && !rs.lit {
			ls, rs = rs, ls
		}
		switch {
		case ls.lit: // both
			b := ls.s == rs.s
			return func(*DeviceInput) bool { return b }, true
		case rs.lit:
			f, v := ls.field, rs.s
			return func(d *DeviceInput) bool { return field(d, f) == v }, true
		}
		return func(d *DeviceInput) bool { return ls.get(d) == rs.get(d) }, true
	}
	lf, ok := c.boolean(l)
	if !ok {
		return nil, false
	}
	rf, ok := c.boolean(r)
	if !ok {
		return nil, false
	}
	return func(d *DeviceInput) bool { return lf(d) == rf(d) }, true
}

// in compiles x in [literal strings].
func (c nativeCompiler) in(x, list ast.Expr) (boolFn, bool) {
	if list.Kind() != ast.ListKind || len(list.AsList().OptionalIndices()) > 0 {
		return nil, false
	}
	var vals []string
	for _, el := range list.AsList().Elements() {
		r, ok := c.str(el)
		if !ok || !r.lit {
			return nil, false
		}
		vals = append(vals, r.s)
	}
	xr, ok := c.str(x)
	if !ok {
		return nil, false
	}
	if xr.lit {
		b := slices.Contains(vals, xr.s)
		return func(*DeviceInput) bool { return b }, true
	}
	f := xr.field
	return func(d *DeviceInput) bool { return slices.Contains(vals, field(d, f)) }, true
}

// String predicates.
const (
	opStartsWith = iota
	opEndsWith
	opContains
)

// strOp compiles a string predicate such as startsWith.
func (c nativeCompiler) strOp(target, arg ast.Expr, op int) (boolFn, bool) {
	t, ok := c.str(target)
	if !ok {
		return nil, false
	}
	a, ok := c.str(arg)
	if !ok {
		return nil, false
	}
	switch {
	case t.lit && a.lit:
		b := strPred(op, t.s, a.s)
		return func(*DeviceInput) bool { return b }, true
	case a.lit: // the common case, specialised
		f, v := t.field, a.s
		switch op {
		case opStartsWith:
			return func(d *DeviceInput) bool { return strings.HasPrefix(field(d, f), v) }, true
		case opEndsWith:
			return func(d *DeviceInput) bool { return strings.HasSuffix(field(d, f), v) }, true
		}
		return func(d *DeviceInput) bool { return strings.Contains(field(d, f), v) }, true
	}
	return func(d *DeviceInput) bool { return strPred(op, t.get(d), a.get(d)) }, true
}

func strPred(op int, s, t string) bool {
	switch op {
	case opStartsWith:
		return strings.HasPrefix(s, t)
	case opEndsWith:
		return strings.HasSuffix(s, t)
	}
	return strings.Contains(s, t)
}

// matches compiles s.matches(literal pattern) with Go's regexp package, as
// cel-go does.
func (c nativeCompiler) matches(target, pattern ast.Expr) (boolFn, bool) {
	p, ok := c.str(pattern)
	if !ok || !p.lit {
		return nil, false
	}
	re, err := regexp.Compile(p.s)
	if err != nil {
		return nil, false // cel-go reports it
	}
	t, ok := c.str(target)
	if !ok {
		return nil, false
	}
	if t.lit {
		b := re.MatchString(t.s)
		return func(*DeviceInput) bool { return b }, true
	}
	f := t.field
	return func(d *DeviceInput) bool { return re.MatchString(field(d, f)) }, true
}
