package model

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// constsOfType returns the string constants of the named type declared in
// this package's source (name -> value), read with go/parser so that a
// constant added without a registry entry cannot go unnoticed.
func constsOfType(t *testing.T, typ string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				id, ok := vs.Type.(*ast.Ident)
				if !ok || id.Name != typ {
					continue
				}
				for i, n := range vs.Names {
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: constant %s of type %s is not a string literal", name, n.Name, typ)
					}
					v, _ := strconv.Unquote(lit.Value)
					out[n.Name] = v
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no constants of type %s found: the test is not reading the package", typ)
	}
	return out
}

// Every EventType constant has exactly one code, no code is used twice,
// and the registry holds nothing else.
func TestEventCodesComplete(t *testing.T) {
	consts := constsOfType(t, "EventType")
	codeRE := regexp.MustCompile(`^W[0-9]{4}[IWE]$`)
	byValue := map[string]string{}
	for name, v := range consts {
		if other, dup := byValue[v]; dup {
			t.Errorf("%s and %s are both %q", name, other, v)
		}
		byValue[v] = name
		code, ok := EventCodes[EventType(v)]
		if !ok {
			t.Errorf("%s (%q) has no code in EventCodes", name, v)
			continue
		}
		if !codeRE.MatchString(code) {
			t.Errorf("%s: code %q is not W<4 digits><I|W|E>", name, code)
		}
	}
	seen := map[string]EventType{}
	for typ, code := range EventCodes {
		if _, ok := byValue[string(typ)]; !ok {
			t.Errorf("EventCodes has %q, which is no EventType constant", typ)
		}
		// The number alone identifies an event: W1004I and W1004W would
		// be one code to a SIEM rule that ignores the severity letter.
		num := strings.TrimRight(code, "IWE")
		if other, dup := seen[num]; dup {
			t.Errorf("code number %s is used by %s and %s", num, typ, other)
		}
		seen[num] = typ
	}
}

// RevocationCauses lists every RevocationCause constant once.
func TestRevocationCausesComplete(t *testing.T) {
	consts := constsOfType(t, "RevocationCause")
	listed := map[RevocationCause]int{}
	for _, c := range RevocationCauses {
		listed[c]++
	}
	for name, v := range consts {
		if listed[RevocationCause(v)] != 1 {
			t.Errorf("%s (%q) is listed %d times in RevocationCauses, want once", name, v, listed[RevocationCause(v)])
		}
	}
	if len(RevocationCauses) != len(consts) {
		t.Errorf("RevocationCauses has %d entries for %d constants", len(RevocationCauses), len(consts))
	}
}
