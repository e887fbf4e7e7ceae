package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// A rule says what one Ward package may depend on. Ward packages are
// named relative to the module ("internal/store"); in never and
// testsNever, "x/..." is x and every package below it and "..." is every
// Ward package.
type rule struct {
	// imports is exactly the set of Ward packages it imports directly: an
	// import not listed fails, and so does a listed one it no longer
	// makes, so the table stays the true graph.
	imports []string
	// never lists Ward packages it must not depend on, directly or
	// through anything else.
	never []string
	// modules, when not nil, is exactly the set of third-party modules
	// its dependencies come from, transitively (stdOnly: none at all).
	// nil leaves them unchecked.
	modules []string
	// noStd lists standard-library packages it must not depend on,
	// directly or not.
	noStd []string
	// noStdImports lists standard-library packages its own code must not
	// import (what it depends on may).
	noStdImports []string
	// testsNever lists Ward packages its tests (in-package and _test
	// package) must not import.
	testsNever []string
	// testsMay names Ward packages its tests may import although
	// testsNever covers them (exact names; each must be imported).
	testsMay []string
}

// stdOnly as rule.modules: no third-party module at all.
var stdOnly = []string{}

// pendingRule is a stricter rule Ward is moving to but does not meet yet.
// Each field that is set replaces the field of the package's rule; known
// is exactly what breaks the stricter rule today (Ward packages,
// modules or standard packages).
type pendingRule struct {
	rule
	known []string
}

// graph is the module's package graph as `go list -deps` reports it:
// the module's packages and everything they depend on.
type graph struct {
	module string                // module path
	pkgs   map[string]*goPackage // by import path: Ward, third-party, standard
}

// goPackage holds the fields of `go list -json` the checks read.
type goPackage struct {
	ImportPath   string
	Dir          string
	Doc          string
	Standard     bool
	Module       *moduleRef
	GoFiles      []string
	CgoFiles     []string
	Imports      []string
	Deps         []string // transitive, sorted
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

type moduleRef struct{ Path string }

var listFields = "ImportPath,Dir,Doc,Standard,Module,GoFiles,CgoFiles,Imports,Deps,TestImports,XTestImports,Error"

// loadGraph runs `go list -deps` over every package of the module in dir.
func loadGraph(dir, module string, env ...string) (*graph, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go command is needed to list packages: %w", err)
	}
	cmd := exec.Command(goCmd, "list", "-deps", "-json="+listFields, "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %v\n%s", dir, err, stderr.Bytes())
	}
	g := &graph{module: module, pkgs: map[string]*goPackage{}}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(goPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		g.pkgs[p.ImportPath] = p
	}
	return g, nil
}

// rel returns the module-relative name of a Ward package.
func (g *graph) rel(importPath string) (string, bool) {
	return strings.CutPrefix(importPath, g.module+"/")
}

// ward returns the module's packages by relative name.
func (g *graph) ward() map[string]*goPackage {
	out := map[string]*goPackage{}
	for path, p := range g.pkgs {
		if name, ok := g.rel(path); ok && p.Module != nil && p.Module.Path == g.module {
			out[name] = p
		}
	}
	return out
}

// via explains how from reaches the import path to: the shortest import
// chain, with Ward packages by relative name.
func (g *graph) via(from *goPackage, to string) string {
	prev := map[string]string{from.ImportPath: ""}
	queue := []string{from.ImportPath}
	for len(queue) > 0 && prev[to] == "" {
		p := g.pkgs[queue[0]]
		queue = queue[1:]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if _, seen := prev[imp]; !seen {
				prev[imp] = p.ImportPath
				queue = append(queue, imp)
			}
		}
	}
	var chain []string
	for at := to; at != ""; at = prev[at] {
		name, ok := g.rel(at)
		if !ok {
			name = at
		}
		chain = append(chain, name)
	}
	slices.Reverse(chain)
	return strings.Join(chain, " -> ")
}

// match reports whether the Ward package name matches pattern.
func match(pattern, name string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return name == base || strings.HasPrefix(name, base+"/")
	}
	return name == pattern
}

func matchAny(patterns []string, name string) (string, bool) {
	for _, p := range patterns {
		if match(p, name) {
			return p, true
		}
	}
	return "", false
}

// problem is one finding of the checker. dep is what breaks the rule (a
// Ward package, a module or a standard package); stale findings are rule
// entries that no longer describe the graph.
type problem struct {
	pkg, dep string
	stale    bool
	msg      string
}

// check checks every Ward package of g against its rule and reports,
// besides broken rules, packages without a rule, rules without a package
// and patterns that match nothing.
func check(g *graph, rules map[string]rule) []problem {
	var out []problem
	ward := g.ward()
	for _, name := range sortedKeys(ward) {
		r, ok := rules[name]
		if !ok {
			out = append(out, problem{pkg: name, msg: suggest(g, name, ward[name])})
			continue
		}
		out = append(out, checkPackage(g, name, r)...)
	}
	usedBy := map[string][]string{} // pattern -> rules using it
	for _, name := range sortedKeys(rules) {
		if ward[name] == nil {
			out = append(out, problem{pkg: name, stale: true,
				msg: fmt.Sprintf("rules[%q]: no such package in the module: remove the rule or correct the name", name)})
		}
		for _, pat := range slices.Concat(rules[name].never, rules[name].testsNever) {
			if !slices.Contains(usedBy[pat], name) {
				usedBy[pat] = append(usedBy[pat], name)
			}
		}
	}
	for _, pat := range sortedKeys(usedBy) {
		if !matchesSome(pat, ward) {
			out = append(out, problem{stale: true, msg: fmt.Sprintf("pattern %q (in the rules of %s) matches no package of the module: remove or correct it",
				pat, strings.Join(usedBy[pat], ", "))})
		}
	}
	return out
}

func matchesSome(pattern string, ward map[string]*goPackage) bool {
	for name := range ward {
		if match(pattern, name) {
			return true
		}
	}
	return false
}

// checkPackage checks one package against r.
func checkPackage(g *graph, name string, r rule) []problem {
	p := g.pkgs[g.module+"/"+name]
	var out []problem
	bad := func(dep, format string, args ...any) {
		out = append(out, problem{pkg: name, dep: dep, msg: fmt.Sprintf(format, args...)})
	}
	stale := func(format string, args ...any) {
		out = append(out, problem{pkg: name, stale: true, msg: fmt.Sprintf(format, args...)})
	}

	// Direct imports: exactly the listed ones.
	imported := g.wardImports(p)
	for _, dep := range imported {
		if !slices.Contains(r.imports, dep) {
			bad(dep, "%s imports %s, which its rule does not allow: if this arrow is intended (docs/architecture.md), add %q to rules[%q].imports",
				name, dep, dep, name)
		}
	}
	for _, dep := range r.imports {
		if !slices.Contains(imported, dep) {
			stale("rules[%q].imports lists %s, which %s does not import: remove it", name, dep, name)
		}
	}
	for _, imp := range p.Imports {
		if d := g.pkgs[imp]; d != nil && d.Standard {
			if pat, hit := matchAny(r.noStdImports, imp); hit {
				bad(imp, "%s imports the standard package %s, which its rule forbids (noStdImports %q)", name, imp, pat)
			}
		}
	}

	// Transitive dependencies: Ward, third-party, standard.
	seenModules := map[string]bool{}
	for _, path := range p.Deps {
		d := g.pkgs[path]
		switch dep, isWard := g.rel(path); {
		case isWard:
			if pat, hit := matchAny(r.never, dep); hit {
				bad(dep, "%s depends on %s (%s), which its rule forbids (never %q)", name, dep, g.via(p, path), pat)
			}
		case d != nil && d.Standard:
			if pat, hit := matchAny(r.noStd, path); hit {
				bad(path, "%s depends on the standard package %s (%s), which its rule forbids (noStd %q)", name, path, g.via(p, path), pat)
			}
		case d != nil && d.Module != nil:
			m := d.Module.Path
			if seenModules[m] {
				continue
			}
			seenModules[m] = true
			if r.modules != nil && !slices.Contains(r.modules, m) {
				bad(m, "%s depends on module %s (%s), which its rule does not allow: if intended, add %q to rules[%q].modules",
					name, m, g.via(p, path), m, name)
			}
		}
	}
	for _, m := range r.modules {
		if !seenModules[m] {
			stale("rules[%q].modules lists %s, which %s does not depend on: remove it", name, m, name)
		}
	}

	// Tests: direct imports only.
	testImports := map[string]bool{}
	for _, imp := range slices.Concat(p.TestImports, p.XTestImports) {
		if dep, ok := g.rel(imp); ok && dep != name {
			testImports[dep] = true
			if pat, hit := matchAny(r.testsNever, dep); hit && !slices.Contains(r.testsMay, dep) {
				bad(dep, "tests of %s import %s, which its rule forbids (testsNever %q)", name, dep, pat)
			}
		}
	}
	for _, dep := range r.testsMay {
		if !testImports[dep] {
			stale("rules[%q].testsMay lists %s, which its tests do not import: remove it", name, dep)
		}
	}
	return out
}

// checkPending checks the stricter rules: each must be broken by exactly
// its known dependencies, so that neither a new violation nor a fixed
// one goes unnoticed.
func checkPending(g *graph, rules map[string]rule, pending map[string]pendingRule) []string {
	var out []string
	ward := g.ward()
	for _, name := range sortedKeys(pending) {
		pr := pending[name]
		base, ok := rules[name]
		if !ok || ward[name] == nil {
			out = append(out, fmt.Sprintf("pending[%q]: no such package or no rule for it: remove the entry", name))
			continue
		}
		// What breaks the stricter rule but not the rule in force (which
		// TestRules reports).
		inForce := map[string]bool{}
		for _, pb := range checkPackage(g, name, base) {
			inForce[pb.dep] = true
		}
		got := map[string]string{}
		for _, pb := range checkPackage(g, name, merge(base, pr.rule)) {
			if _, dup := got[pb.dep]; !pb.stale && !dup && !inForce[pb.dep] {
				got[pb.dep] = pb.msg
			}
		}
		if len(got) == 0 {
			out = append(out, fmt.Sprintf("the pending rule for %s holds now: copy its fields into rules[%q] and delete pending[%q]", name, name, name))
			continue
		}
		for _, dep := range sortedKeys(got) {
			if !slices.Contains(pr.known, dep) {
				out = append(out, fmt.Sprintf("pending rule for %s: %s. This breaks the rule Ward is moving to: remove the dependency, or if it must stay for now add %q to pending[%q].known",
					name, got[dep], dep, name))
			}
		}
		for _, dep := range pr.known {
			if _, still := got[dep]; !still {
				out = append(out, fmt.Sprintf("%s no longer breaks its pending rule with %s: remove %q from pending[%q].known", name, dep, dep, name))
			}
		}
	}
	return out
}

func merge(base, stricter rule) rule {
	for _, f := range []struct{ dst, src *[]string }{
		{&base.imports, &stricter.imports}, {&base.never, &stricter.never}, {&base.modules, &stricter.modules},
		{&base.noStd, &stricter.noStd}, {&base.noStdImports, &stricter.noStdImports}, {&base.testsNever, &stricter.testsNever},
		{&base.testsMay, &stricter.testsMay},
	} {
		if *f.src != nil {
			*f.dst = *f.src
		}
	}
	return base
}

// checkDocs reports the Ward packages with Go files but no package doc
// comment (packages of tests only need none).
func checkDocs(g *graph) []string {
	var out []string
	ward := g.ward()
	for _, name := range sortedKeys(ward) {
		p := ward[name]
		if len(p.GoFiles)+len(p.CgoFiles) > 0 && strings.TrimSpace(p.Doc) == "" {
			out = append(out, fmt.Sprintf("package %s has no package doc comment: add one (\"// Package %s ...\") to one of its files",
				name, name[strings.LastIndex(name, "/")+1:]))
		}
	}
	return out
}

// suggest is the message for a package without a rule: the rule line
// that describes it today, with the strictest layer list it satisfies.
func suggest(g *graph, name string, p *goPackage) string {
	imported := g.wardImports(p)
	quoted := make([]string, len(imported))
	for i, dep := range imported {
		quoted[i] = fmt.Sprintf("%q", dep)
	}
	never := "nil"
	for _, l := range layers {
		if len(checkPackage(g, name, rule{imports: imported, never: l.never})) == 0 {
			never = l.name
			break
		}
	}
	modules := ", modules: stdOnly"
	for _, path := range p.Deps {
		if d := g.pkgs[path]; d != nil && !d.Standard && d.Module != nil && d.Module.Path != g.module {
			modules = ""
			break
		}
	}
	imports := ""
	if len(quoted) > 0 {
		imports = "imports: []string{" + strings.Join(quoted, ", ") + "}, "
	}
	return fmt.Sprintf("no rule for package %s: add it to rules in internal/archtest/arch_test.go, with a comment saying why; today it satisfies\n\t%q: {%snever: %s%s},",
		name, name, imports, never, modules)
}

// wardImports returns the Ward packages p imports directly.
func (g *graph) wardImports(p *goPackage) []string {
	var out []string
	for _, imp := range p.Imports {
		if dep, ok := g.rel(imp); ok {
			out = append(out, dep)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
