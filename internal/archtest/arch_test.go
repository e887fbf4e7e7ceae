// Package archtest enforces Ward's one-way data flow (DESIGN.md): handlers
// -> services -> store/bus interfaces, with domain packages meeting only
// through small leaf packages.
package archtest

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/ward-idp/ward/"

// allowed lists, for each package, the Ward packages it may import.
// Packages not listed (wiring: app, server, cmd, tests) may import anything.
var allowed = map[string][]string{
	// leaves
	"internal/model":     {},
	"internal/secret":    {},
	"dpop":               {"internal/jsonobj"},
	"internal/jsonobj":   {},
	"agent/posture":      {"dpop", "internal/jsonobj"},
	"internal/bus":       {"internal/model", "internal/store"}, // the relay reads the outbox (events table)
	"internal/store":     {"internal/model"},
	"internal/tokens":    {"internal/model", "internal/secret", "internal/bus", "internal/store"},
	"internal/web":       {},
	"internal/ratelimit": {},
	// Conditional Access: pure evaluation over model types
	"internal/policy": {"internal/model"},
	// services: leaves only
	"internal/identity": {"internal/model", "internal/secret", "internal/bus", "internal/store", "internal/ratelimit"},
	"internal/clients":  {"internal/model", "internal/secret", "internal/bus", "internal/store"},
	// The device service also verifies DPoP thumbprints and agent posture
	// reports (agent/posture: a library without Ward dependencies but dpop
	// and the strict JSON reader).
	"internal/device": {"internal/model", "internal/bus", "internal/store", "dpop", "agent/posture"},
	// The gateway is a resource server: it uses only the public packages
	// (as any other resource server would) and the TLS loader.
	"internal/gateway": {"dpop", "rs", "rs/caenats", "internal/tlsutil"},
	// Public resource-server packages: nothing of Ward's internals, and rs
	// itself not even the NATS client (its sub-package caenats has it).
	"rs":         {"dpop", "internal/jsonobj"},
	"rs/caenats": {"rs"},
	// Conditional Access service: stored policy versions, the engine.
	"internal/access": {"internal/model", "internal/bus", "internal/store", "internal/policy"},
	// handlers: services and leaves, never a store implementation
	"internal/oauth": {"internal/model", "internal/secret", "internal/bus", "internal/store", "internal/tokens", "dpop", "internal/ratelimit",
		"internal/web", "internal/identity", "internal/clients", "internal/access", "internal/policy"},
	"internal/admin": {"internal/model", "internal/secret", "internal/bus", "internal/store", "internal/tokens", "dpop",
		"internal/identity", "internal/clients", "internal/device", "internal/oauth", "internal/app", "internal/access", "internal/policy"},
	"internal/deviceapi": {"internal/model", "dpop", "internal/device", "internal/oauth"},
	// Shared Signals transmitter: a service over leaves (it signs with a
	// tokens.KeyManager through a one-method interface and never imports
	// another service); its HTTP layer authenticates through oauth.
	"internal/cae": {"internal/model", "internal/secret", "internal/store"},
	"internal/ssf": {"internal/model", "dpop", "internal/cae", "internal/oauth"},
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for pkg, ok := range allowed {
		dir := filepath.Join(root, pkg)
		entries, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if !strings.HasPrefix(path, module) {
					continue
				}
				dep := strings.TrimPrefix(path, module)
				if !permitted(dep, ok) {
					t.Errorf("%s/%s imports %s: not allowed by the one-way data flow", pkg, name, dep)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d files checked: the test is not looking at the tree", checked)
	}
}

func permitted(dep string, ok []string) bool {
	for _, a := range ok {
		if dep == a {
			return true
		}
	}
	return false
}
