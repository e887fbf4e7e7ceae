package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ward risk generate | backtest | score end to end: labelled traffic,
// one JSON line per detection, bad lines named and counted without
// stopping the run, and the scores.
func TestRiskBacktestCommands(t *testing.T) {
	h := newHarness(t, "")
	dir := t.TempDir()
	ev, labels := filepath.Join(dir, "ev.jsonl"), filepath.Join(dir, "labels.jsonl")
	_, errs, code := h.run("", "risk", "generate", "--users", "40", "--days", "3", "--history-days", "1", "--attacks", "1",
		"--kinds", "bound_refresh_wrong_key,sso_cookie_theft,tor_signin", "--seed", "5", "--out", ev, "--labels", labels, "--ip-lists", dir)
	if code != 0 || !strings.Contains(errs, "ward risk score --events "+ev) {
		t.Fatalf("generate: %d %s", code, errs)
	}
	// A hostile line in the middle: named by number, counted, skipped.
	b, err := os.ReadFile(ev)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines = append(lines[:10], append([]string{"{\"t\":\"2026-03-02T09:00:00Z\",\"id\":\"x\",\"kind\":\"signin\",\"password\":\"hunter2\"}\n", "garbage\n"}, lines[10:]...)...)
	if err := os.WriteFile(ev, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := h.run("", "risk", "backtest", "--events", ev, "--history-until", "2026-03-03T00:00:00Z",
		"--anonymous-ips", filepath.Join(dir, "anonymous-ips.txt"), "--max-token-lifetime", "1h", "--stats")
	if code != 0 {
		t.Fatalf("backtest: %d %s", code, errs)
	}
	if !strings.Contains(errs, "line 11 refused: not an activity line: unknown field \"password\"") || !strings.Contains(errs, "line 12 refused") ||
		!regexp.MustCompile(`\d+ lines read \(\d+ history\), 2 refused, \d+ detections`).MatchString(errs) || strings.Contains(errs, "hunter2") ||
		!strings.Contains(errs, "peak RSS") {
		t.Errorf("backtest stderr:\n%s", errs)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var f map[string]any
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		for _, k := range []string{"t", "type", "severity", "user", "ip", "evidence", "technique", "confidence", "id"} {
			if _, ok := f[k]; !ok && !(k == "ip" && f["type"] == "external_credential_compromise") {
				t.Errorf("line lacks %s: %s", k, l)
			}
		}
		if f["t"].(string) < "2026-03-03" {
			t.Errorf("a detection from the history period: %s", l)
		}
		seen[f["type"].(string)] = true
	}
	for _, want := range []string{"token_replay_wrong_key", "sso_cookie_anomaly", "anonymous_ip"} {
		if !seen[want] {
			t.Errorf("no %s detection in:\n%s", want, out)
		}
	}
	out = h.ok("", "risk", "score", "--events", ev, "--labels", labels, "--history-until", "2026-03-03T00:00:00Z",
		"--anonymous-ips", filepath.Join(dir, "anonymous-ips.txt"), "--max-token-lifetime", "1h")
	for _, want := range []string{"| bound_refresh_wrong_key ", "recall 100.00%", "time to detect median 0s", "flagged 0 (0.000%)"} {
		if !strings.Contains(out, want) {
			t.Errorf("score lacks %q:\n%s", want, out)
		}
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(h.ok("", "risk", "score", "--events", ev, "--labels", labels, "--json")), &rep); err != nil || rep["Kinds"] == nil {
		t.Errorf("score --json: %v %v", err, rep)
	}
	// Usage errors.
	for _, args := range [][]string{{"risk", "backtest"}, {"risk", "backtest", "--events", ev, "--history-until", "yesterday"},
		{"risk", "backtest", "--events", filepath.Join(dir, "missing")}, {"risk", "backtest", "--events", ev, "--malicious-ips", ev},
		{"risk", "score", "--events", ev}, {"risk", "generate", "--out", ev}} {
		if _, _, code := h.run("", args...); code == 0 {
			t.Errorf("ward %s succeeded", strings.Join(args, " "))
		}
	}
}
