package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

const examplePolicies = "../../examples/policies/policies.yaml"
const exampleCases = "../../examples/policies/cases.yaml"

// The example policies pass their own cases (CI also runs this command).
func TestPolicyTestExamples(t *testing.T) {
	h := newHarness(t, "")
	out := h.ok("", "policy", "test", "--policies", examplePolicies, "-f", exampleCases, "-v")
	if !strings.Contains(out, "0 failed") || strings.Contains(out, "FAIL") {
		t.Fatalf("example cases:\n%s", out)
	}
}

// A wrong expectation fails with the mismatch named and exit code 1; a
// malformed case file is a usage error (2).
func TestPolicyTestMismatch(t *testing.T) {
	h := newHarness(t, "")
	dir := t.TempDir()
	cases := filepath.Join(dir, "cases.yaml")
	os.WriteFile(cases, []byte(`
- name: refresh outside is allowed (wrong on purpose)
  input: {user: {id: bob}, app: {client_id: wiki}, ip: 198.51.100.7, flow: refresh}
  expect: {outcome: allow}
- name: refresh inside
  input: {user: {id: bob}, app: {client_id: wiki}, ip: 203.0.113.9, flow: refresh}
  expect: {outcome: allow}
`), 0o600)
	out, _, code := h.run("", "policy", "test", "--policies", examplePolicies, "-f", cases)
	if code != 1 || !strings.Contains(out, "FAIL refresh outside is allowed") || !strings.Contains(out, "outcome: want allow, got block") || !strings.Contains(out, "1 failed") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	os.WriteFile(cases, []byte("- name: x\n  input: {nosuchfield: 1}\n"), 0o600)
	if _, errs, code := h.run("", "policy", "test", "--policies", examplePolicies, "-f", cases); code != 2 || !strings.Contains(errs, "nosuchfield") {
		t.Fatalf("malformed cases: exit %d, %s", code, errs)
	}
}

// apply validates and stores, is idempotent, export gives the document
// back, versions lists the history, whatif explains, and the stored
// policies are what `policy test` checks without --policies.
func TestPolicyApplyExportWhatIf(t *testing.T) {
	h := newHarness(t, "")
	dir := t.TempDir()

	// An invalid document: every problem, exit 2, nothing stored.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`
locations: [{id: corp, ip_ranges: [10.0.0.0/33]}]
policies:
  - id: a
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {locations: {include: [mars]}}
    grant: {block: true}
  - id: b
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {device_filter: {mode: include, rule: "device.platform =="}}
    grant: {block: true}
`), 0o600)
	_, errs, code := h.run("", "policy", "apply", "-f", bad)
	if code != 2 || !strings.Contains(errs, "10.0.0.0/33") || !strings.Contains(errs, "mars") || !strings.Contains(errs, "device_filter") {
		t.Fatalf("invalid apply: exit %d\n%s", code, errs)
	}
	if out := h.ok("", "policy", "versions"); strings.Count(out, "\n") != 1 {
		t.Fatalf("versions after a refused apply:\n%s", out)
	}

	out := h.ok("", "policy", "apply", "-f", examplePolicies, "--comment", "first")
	if !strings.Contains(out, "applied version 1") || !strings.Contains(out, "added") {
		t.Fatalf("apply: %s", out)
	}
	if out := h.ok("", "policy", "apply", "-f", examplePolicies); !strings.Contains(out, "unchanged: version 1") {
		t.Fatalf("second apply: %s", out)
	}
	if _, errs, code := h.run("", "policy", "apply", "-f", examplePolicies, "--expect-version", "7"); code == 0 || !strings.Contains(errs, "conflict") {
		t.Fatalf("apply with a stale version: exit %d %s", code, errs)
	}
	exported := h.ok("", "policy", "export")
	if !strings.Contains(exported, "version 1") || !strings.Contains(exported, "docs-token-protection") {
		t.Fatalf("export:\n%s", exported)
	}
	// The export applies back unchanged.
	exp := filepath.Join(dir, "exported.yaml")
	os.WriteFile(exp, []byte(exported), 0o600)
	if out := h.ok("", "policy", "apply", "-f", exp); !strings.Contains(out, "unchanged") {
		t.Fatalf("re-applying the export: %s", out)
	}
	if out := h.ok("", "policy", "versions"); !strings.Contains(out, "first") || !strings.Contains(out, "cli") {
		t.Fatalf("versions:\n%s", out)
	}
	h.ok("", "policy", "test", "-f", exampleCases)

	// What-If against the stored policies with a real user and client.
	h.ok("correct horse battery\n", "user", "add", "alice", "--password-stdin")
	h.ok("", "client", "add", "wiki", "--auth-method", "none", "--redirect-uri", "https://wiki.example/cb")
	out = h.ok("", "policy", "whatif", "--user", "alice", "--app", "wiki", "--ip", "198.51.100.7", "--flow", "refresh")
	if !strings.Contains(out, "outcome: block") || !strings.Contains(out, "refresh-trusted-networks-only") || !strings.Contains(out, "application not included") {
		t.Fatalf("whatif:\n%s", out)
	}
	if _, errs, code := h.run("", "policy", "whatif", "--user", "nobody", "--app", "wiki", "--ip", "x"); code != 2 || !strings.Contains(errs, "nobody") || !strings.Contains(errs, "ip") {
		t.Fatalf("whatif with bad input: exit %d %s", code, errs)
	}
	h.ok("", "user", "risk", "alice", "high", "--reason", "test")
	if _, _, code := h.run("", "user", "risk", "alice", "extreme"); code != 2 {
		t.Fatalf("invalid risk level: exit %d", code)
	}
	a := h.openApp()
	evs, err := a.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventAccessPolicyChanged, model.EventUserRiskChanged}})
	if err != nil || len(evs) != 2 {
		t.Fatalf("events: %d %v", len(evs), err)
	}
}
