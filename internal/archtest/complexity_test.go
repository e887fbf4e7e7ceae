package archtest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"testing"
)

// The authorization server's packages were split so that each function
// can be read, and tested, on its own: the token grants, the steps of
// the issuing pipeline, the protocol endpoints and the sign-in pages. No
// function of theirs may grow beyond maxComplexity (cyclomatic
// complexity as gocyclo counts it).
var complexityLimited = []string{"internal/oauth/...", "internal/signin"}

const maxComplexity = 25

func TestComplexity(t *testing.T) {
	g := moduleGraph(t)
	ward := g.ward()
	checked := 0
	for _, name := range sortedKeys(ward) {
		if _, ok := matchAny(complexityLimited, name); !ok {
			continue
		}
		p := ward[name]
		for _, f := range p.GoFiles {
			fs, err := funcComplexities(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			for _, fc := range fs {
				checked++
				if fc.n > maxComplexity {
					t.Errorf("%s: %s has cyclomatic complexity %d, more than %d: split it into named steps", name, fc.name, fc.n, maxComplexity)
				}
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d functions checked: the test is not looking at the packages", checked)
	}
}

type funcComplexity struct {
	name string // "Recv.Name" or "Name", with file:line
	n    int
}

// funcComplexities returns the cyclomatic complexity of each function
// declared in a Go file: 1, plus 1 for each if, for, range, case and
// select case (not default), && and || (function literals count for the
// function that contains them).
func funcComplexities(path string) ([]funcComplexity, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []funcComplexity
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		name := fd.Name.Name
		if fd.Recv != nil && len(fd.Recv.List) > 0 {
			name = recvName(fd.Recv.List[0].Type) + "." + name
		}
		pos := fset.Position(fd.Pos())
		out = append(out, funcComplexity{name: fmt.Sprintf("%s (%s:%d)", name, filepath.Base(pos.Filename), pos.Line), n: complexity(fd.Body)})
	}
	return out, nil
}

func complexity(n ast.Node) int {
	c := 1
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.IfStmt, *ast.ForStmt, *ast.RangeStmt:
			c++
		case *ast.CaseClause:
			if n.List != nil {
				c++
			}
		case *ast.CommClause:
			if n.Comm != nil {
				c++
			}
		case *ast.BinaryExpr:
			if n.Op == token.LAND || n.Op == token.LOR {
				c++
			}
		}
		return true
	})
	return c
}

func recvName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recvName(t.X)
	case *ast.IndexExpr:
		return recvName(t.X)
	case *ast.Ident:
		return t.Name
	}
	return "?"
}

// The counter itself: a function of known complexity.
func TestComplexityCount(t *testing.T) {
	const src = `package p

func f(a, b bool, xs []int, ch chan int) int {
	if a && b || !a { // if, &&, ||
		return 1
	}
	for _, x := range xs { // range
		switch x { // two cases, not default
		case 1:
		case 2, 3:
		default:
		}
	}
	for i := 0; i < 3; i++ { // for
		go func() {
			if i > 0 { // inside a literal: still f's
			}
		}()
	}
	select {
	case <-ch: // a select case
	default:
	}
	return 0
}
`
	path := filepath.Join(t.TempDir(), "p.go")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := funcComplexities(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].n != 10 {
		t.Fatalf("got %+v, want f with complexity 10", fs)
	}
}
