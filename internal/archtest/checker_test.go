package archtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The checker's own tests: it must fail on a graph that breaks a rule,
// or the rules above prove nothing.

// synthetic is a small module example.com/m: a imports b, b imports c
// and the third-party example.org/lib, which imports net/http. d has no
// doc comment.
func synthetic() *graph {
	const m = "example.com/m"
	g := &graph{module: m, pkgs: map[string]*goPackage{}}
	add := func(p goPackage, module string) {
		if module != "" {
			p.Module = &moduleRef{Path: module}
		}
		g.pkgs[p.ImportPath] = &p
	}
	add(goPackage{ImportPath: m + "/a", Doc: "Package a.", GoFiles: []string{"a.go"}, Imports: []string{m + "/b", "fmt"},
		Deps:        []string{m + "/b", m + "/c", "example.org/lib", "fmt", "net/http"},
		TestImports: []string{m + "/c", m + "/a"}}, m)
	add(goPackage{ImportPath: m + "/b", Doc: "Package b.", GoFiles: []string{"b.go"}, Imports: []string{m + "/c", "example.org/lib"},
		Deps: []string{m + "/c", "example.org/lib", "net/http"}}, m)
	add(goPackage{ImportPath: m + "/c", Doc: "Package c.", GoFiles: []string{"c.go"}}, m)
	add(goPackage{ImportPath: m + "/d", GoFiles: []string{"d.go"}, Imports: []string{m + "/c"}, Deps: []string{m + "/c"}}, m)
	add(goPackage{ImportPath: "example.org/lib", Imports: []string{"net/http"}, Deps: []string{"net/http"}}, "example.org/lib")
	add(goPackage{ImportPath: "fmt", Standard: true}, "")
	add(goPackage{ImportPath: "net/http", Standard: true}, "")
	return g
}

func messages(ps []problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.msg)
	}
	return out
}

// wantReported fails unless some message contains all of parts.
func wantReported(t *testing.T, msgs []string, parts ...string) {
	t.Helper()
	for _, m := range msgs {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(m, p) }) {
			return
		}
	}
	t.Errorf("no message with %q among:\n%s", parts, strings.Join(msgs, "\n"))
}

func TestCheckerPassesATrueRuleSet(t *testing.T) {
	rules := map[string]rule{
		"a": {imports: []string{"b"}, never: []string{"d"}, modules: []string{"example.org/lib"}, testsNever: []string{"b"}},
		// b depends on net/http through lib but does not import it.
		"b": {imports: []string{"c"}, never: []string{"a"}, modules: []string{"example.org/lib"}, noStdImports: []string{"net/http"}},
		"c": {never: []string{"..."}, modules: stdOnly},
		"d": {imports: []string{"c"}},
	}
	if ps := check(synthetic(), rules); len(ps) > 0 {
		t.Errorf("a true rule set fails:\n%s", strings.Join(messages(ps), "\n"))
	}
}

func TestCheckerReportsViolations(t *testing.T) {
	rules := map[string]rule{
		// a reaches c only through b: a transitive violation; its tests
		// import c; its rule lists an import it does not make; it imports
		// fmt itself.
		"a": {imports: []string{"b", "d"}, never: []string{"c"}, testsNever: []string{"c"}, noStdImports: []string{"fmt"}},
		// b imports c unlisted; its module list misses example.org/lib
		// and lists one it does not use; net/http comes through lib.
		"b": {modules: []string{"example.org/gone"}, noStd: []string{"net/http"}},
		"c": {never: []string{"..."}},
		// d has no rule; e has no package; f's pattern matches nothing.
		"e": {},
		"f": {never: []string{"nothing/..."}},
	}
	msgs := messages(check(synthetic(), rules))
	wantReported(t, msgs, "a depends on c (a -> b -> c)", `never "c"`)
	wantReported(t, msgs, "tests of a import c")
	wantReported(t, msgs, "a imports the standard package fmt", `noStdImports "fmt"`)
	wantReported(t, msgs, `rules["a"].imports lists d, which a does not import`)
	wantReported(t, msgs, "b imports c, which its rule does not allow", `add "c" to rules["b"].imports`)
	wantReported(t, msgs, "b depends on module example.org/lib (b -> example.org/lib)", `rules["b"].modules`)
	wantReported(t, msgs, `rules["b"].modules lists example.org/gone`)
	wantReported(t, msgs, "b depends on the standard package net/http (b -> example.org/lib -> net/http)")
	wantReported(t, msgs, "no rule for package d", `"d": {imports: []string{"c"}, never:`)
	wantReported(t, msgs, `rules["e"]: no such package`)
	wantReported(t, msgs, `pattern "nothing/..." (in the rules of f) matches no package`)
	if len(msgs) != 11+1 { // f has no package either
		t.Errorf("%d messages, want 12:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
}

func TestCheckerPending(t *testing.T) {
	g := synthetic()
	rules := map[string]rule{"a": {imports: []string{"b"}}, "b": {imports: []string{"c"}}, "c": {}, "d": {imports: []string{"c"}}}
	cases := []struct {
		name    string
		pending pendingRule
		want    string // "" for no message
	}{
		{"known exactly", pendingRule{rule{never: []string{"c"}}, []string{"c"}}, ""},
		{"new violation", pendingRule{rule{never: []string{"c"}, modules: stdOnly}, []string{"c"}},
			`add "example.org/lib" to pending["a"].known`},
		{"known one gone", pendingRule{rule{never: []string{"c"}}, []string{"c", "d"}}, `remove "d" from pending["a"].known`},
		{"met", pendingRule{rule{never: []string{"d"}}, []string{"c"}}, `the pending rule for a holds now`},
	}
	for _, c := range cases {
		msgs := checkPending(g, rules, map[string]pendingRule{"a": c.pending})
		if c.want == "" {
			if len(msgs) > 0 {
				t.Errorf("%s: %q", c.name, msgs)
			}
			continue
		}
		if len(msgs) != 1 || !strings.Contains(msgs[0], c.want) {
			t.Errorf("%s: got %q, want one message with %q", c.name, msgs, c.want)
		}
	}
	if msgs := checkPending(g, rules, map[string]pendingRule{"x": {}}); len(msgs) != 1 {
		t.Errorf("pending rule for a missing package: %q", msgs)
	}
}

func TestCheckerDocs(t *testing.T) {
	msgs := checkDocs(synthetic())
	if len(msgs) != 1 || !strings.Contains(msgs[0], "package d has no package doc comment") {
		t.Errorf("got %q, want d reported", msgs)
	}
}

// TestCheckerOnGoList runs the checker on a module written to a
// temporary directory, through go list itself: the graph it loads must
// carry the transitive dependencies.
func TestCheckerOnGoList(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":      "module example.com/m\n\ngo 1.21\n",
		"a/a.go":      "// Package a uses b.\npackage a\n\nimport _ \"example.com/m/b\"\n",
		"b/b.go":      "// Package b uses c.\npackage b\n\nimport _ \"example.com/m/c\"\n",
		"c/c.go":      "// Package c is a leaf.\npackage c\n",
		"d/d.go":      "package d\n",
		"e/e.go":      "// Package e is another leaf.\npackage e\n",
		"t/t_test.go": "package t\n",
	}
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, err := loadGraph(dir, "example.com/m", "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]rule{
		"a": {imports: []string{"b"}, never: []string{"c"}},
		"b": {imports: []string{"c"}},
		"c": {never: []string{"..."}, modules: stdOnly},
		"e": {},
		"t": {},
		"x": {},
	}
	msgs := messages(check(g, rules))
	wantReported(t, msgs, "a depends on c (a -> b -> c)")
	wantReported(t, msgs, "no rule for package d", `"d": {never: anything, modules: stdOnly}`)
	wantReported(t, msgs, `rules["x"]: no such package`)
	if len(msgs) != 3 {
		t.Errorf("%d messages, want 3:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
	docs := checkDocs(g)
	if len(docs) != 1 || !strings.Contains(docs[0], "package d has") {
		t.Errorf("docs: got %q, want d only (t has tests only)", docs)
	}
}
