package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Some concerns have exactly one owner (docs/architecture.md, "Owners"),
// and import rules alone cannot say so: any package holding a store can
// call its revocation methods, and any package can import crypto/ecdsa.
// owners lists, for each such concern, what only its owner may call and
// which packages own it. Production code only: tests exercise the
// primitives directly.
var owners = []owner{
	{
		concern: "session revocation (internal/session owns it)",
		calls:   []string{".RevokeSession", ".RevokeUserSessions", ".RevokeDeviceSessions"},
		allowed: []string{"internal/session", "internal/store/...", "rs", "rs/..."}, // rs: RevocationState, a resource's own
	},
	{
		concern: "verifying signatures (package jws owns it for JWS)",
		calls:   []string{"ecdsa.Verify", "ecdsa.VerifyASN1", "ed25519.Verify", "rsa.VerifyPKCS1v15", "rsa.VerifyPSS"},
		allowed: []string{"jws", "internal/tpmattest"}, // tpmattest: TPM2_Certify structures, not JWS
	},
	{
		concern: "the client-IP rule (rs.ClientIP owns it)",
		strings: []string{"X-Forwarded-For"},
		allowed: []string{"rs", "internal/gateway"}, // the gateway writes the header upstream
	},
	{
		concern: "parsing WWW-Authenticate challenges (package httpauth owns it)",
		calls:   []string{".Values", ".Get"},
		args:    []string{`"WWW-Authenticate"`, `"Www-Authenticate"`},
		allowed: []string{"httpauth", "rs"}, // rs.ParseChallenges wraps httpauth for resource servers
	},
}

type owner struct {
	concern string
	calls   []string // "pkg.Func" or ".Method" selectors that only the owner calls
	args    []string // with this first argument only (empty: any)
	strings []string // string literals only the owner uses
	allowed []string // package patterns (module-relative)
}

// violations returns "file:line: what" for each use of an owned
// primitive in the Go source src of package pkg, outside its owners.
func (o owner) violations(pkg, file string, src any) ([]string, error) {
	if _, ok := matchAny(o.allowed, pkg); ok {
		return nil, nil
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []string
	report := func(n ast.Node, what string) {
		out = append(out, fset.Position(n.Pos()).String()+": "+what+" ("+o.concern+")")
	}
	// Reading the header to hand it to the owner's parser is no parsing.
	handed := map[ast.Node]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok {
			if sel, ok := c.Fun.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "httpauth" {
					for _, a := range c.Args {
						handed[a] = true
					}
				}
			}
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		if handed[n] {
			return false
		}
		switch n := n.(type) {
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := "." + sel.Sel.Name
			if id, ok := sel.X.(*ast.Ident); ok {
				if full := id.Name + name; contains(o.calls, full) {
					report(n, full)
					return true
				}
			}
			if !contains(o.calls, name) {
				return true
			}
			if len(o.args) > 0 {
				if len(n.Args) == 0 {
					return true
				}
				lit, ok := n.Args[0].(*ast.BasicLit)
				if !ok || !contains(o.args, lit.Value) {
					return true
				}
			}
			report(n, name)
		case *ast.BasicLit:
			if n.Kind == token.STRING && len(o.strings) > 0 {
				if v, err := strconv.Unquote(n.Value); err == nil && contains(o.strings, v) {
					report(n, strconv.Quote(v))
				}
			}
		}
		return true
	})
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOwners: each owned primitive is used by its owner only.
func TestOwners(t *testing.T) {
	g := moduleGraph(t)
	ward := g.ward()
	files := 0
	for _, name := range sortedKeys(ward) {
		p := ward[name]
		for _, f := range p.GoFiles {
			files++
			for _, o := range owners {
				vs, err := o.violations(name, filepath.Join(p.Dir, f), nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range vs {
					t.Errorf("%s: only its owner may do this; call the owner instead", v)
				}
			}
		}
	}
	if files < 200 {
		t.Fatalf("only %d files checked: the test is not looking at the tree", files)
	}
}

// TestOwnersCheckerFails: the checker finds each kind of use outside the
// owner, and none inside it.
func TestOwnersCheckerFails(t *testing.T) {
	src := `package p
import ("crypto/ecdsa"; "net/http")
func f(s store, r *http.Request, k *ecdsa.PublicKey, h []byte, sig []byte) {
	s.RevokeSession(nil, "sid", 0, "")
	_ = ecdsa.VerifyASN1(k, h, sig)
	_ = r.Header.Get("X-Forwarded-For")
	_ = r.Header.Values("WWW-Authenticate")
	_ = r.Header.Values("Accept")
	_, _ = httpauth.Parse(r.Header.Values("WWW-Authenticate")...)
}`
	want := map[string]bool{".RevokeSession": true, "ecdsa.VerifyASN1": true, `"X-Forwarded-For"`: true, ".Values": true}
	got := map[string]bool{}
	for _, o := range owners {
		vs, err := o.violations("internal/somewhere", "p.go", src)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			what := strings.TrimSpace(strings.SplitN(strings.SplitN(v, ": ", 2)[1], " (", 2)[0])
			if got[what] {
				t.Errorf("reported twice: %s", v)
			}
			got[what] = true
		}
	}
	for w := range want {
		if !got[w] {
			t.Errorf("the checker missed %s", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("reported %v, want %v (Values(\"Accept\") is no challenge parsing)", got, want)
	}
	for _, o := range owners {
		if vs, _ := o.violations(o.allowed[0], "p.go", src); len(vs) != 0 {
			t.Errorf("the owner %s was reported: %v", o.allowed[0], vs)
		}
	}
}
