package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoCommand runs `ward demo --json FILE --step` as a user would
// (Enter pressed at every pause) and reads what it printed and wrote.
func TestDemoCommand(t *testing.T) {
	report := filepath.Join(t.TempDir(), "demo.json")
	var out, errb strings.Builder
	e := &cliEnv{stdin: strings.NewReader(strings.Repeat("\n", 20)), stdout: &out, stderr: &errb, environ: []string{"NO_COLOR=1"}}
	code := run(context.Background(), []string{"demo", "--json", report, "--step", "--open"}, e)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"== Run 1: Ward's defences off", "STOLEN", "REFUSED", "DETECTED", "== Summary", "Total: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "\033[") {
		t.Error("colours with NO_COLOR and no terminal")
	}
	if n := strings.Count(errb.String(), "press Enter]"); n < 5 {
		t.Errorf("%d pauses with --step:\n%s", n, errb.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Mode string `json:"mode"`
		Runs []struct {
			Run       int     `json:"run"`
			CAEMillis float64 `json:"cae_revocation_ms"`
			Stolen    int     `json:"documents_stolen"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Mode != "embedded" || len(r.Runs) != 2 || r.Runs[0].Stolen != 4 || r.Runs[1].Stolen != 0 ||
		r.Runs[1].CAEMillis <= 0 || r.Runs[1].CAEMillis >= 1000 {
		t.Errorf("report %s: %+v %v", b, r, err)
	}
}

func TestDemoCommandUsage(t *testing.T) {
	target := filepath.Join(t.TempDir(), "target.json")
	if err := os.WriteFile(target, []byte(`{"issuer": "x", "unknown": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"demo", "--server", "http://127.0.0.1:1"},
		{"demo", "--target", target},
		{"demo", "--server", "http://127.0.0.1:1", "--target", target},
		{"demo", "--server", "http://127.0.0.1:1", "--target", filepath.Join(t.TempDir(), "missing.json")},
		{"demo", "extra"},
	} {
		var out, errb strings.Builder
		if code := run(context.Background(), args, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: []string{}}); code != exitUsage {
			t.Errorf("%q: exit %d, want %d; %s", args, code, exitUsage, errb.String())
		}
	}
}
