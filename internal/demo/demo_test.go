package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// stepsByID indexes a report's steps.
func stepsByID(r *Report) map[string]Step {
	m := map[string]Step{}
	for _, s := range r.Steps {
		m[s.ID] = s
	}
	return m
}

// checkStep asserts a step's outcome and that its by/detail contain each
// of want.
func checkStep(t *testing.T, steps map[string]Step, id, outcome string, want ...string) {
	t.Helper()
	s, ok := steps[id]
	if !ok {
		t.Errorf("step %s missing", id)
		return
	}
	if s.Outcome != outcome {
		t.Errorf("step %s (%s): outcome %s, want %s; %s", id, s.Title, s.Outcome, outcome, s.Detail)
	}
	text := s.Title + " | " + s.By + " | " + s.Detail
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("step %s: %q does not say %q", id, text, w)
		}
	}
}

// TestDemoEndToEnd plays the whole demo, both runs, against the embedded
// deployment and checks every refusal, detection, the risk level, the
// CAE time, and that nothing is left behind.
func TestDemoEndToEnd(t *testing.T) {
	if !canBind(attackerIP) {
		t.Skip("this machine cannot send from " + attackerIP)
	}
	goroutines := runtime.NumGoroutine()
	tmp := t.TempDir()
	var out bytes.Buffer
	rep, err := Run(context.Background(), Options{Printer: &Printer{W: &out}, TempDir: tmp, Console: true})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	(&Printer{W: &out}).Summary(rep)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the demo's output:\n%s", out.String())
		}
	})
	if f := rep.Failed(); len(f) > 0 {
		t.Errorf("%d step(s) did not go as expected: %s", len(f), stepIDs(f))
	}
	steps := stepsByID(rep)

	// Run 1: every replay works, nothing is seen.
	r1 := rep.Run(1)
	if r1 == nil || r1.StolenDocs != len(documents) || r1.Refusals != 0 || r1.Replays != 3 || len(r1.Detections) != 0 || r1.UserRisk != "none" {
		t.Errorf("run 1: %+v", r1)
	}
	checkStep(t, steps, "1.1", OutcomeOK, "token type Bearer", "4 of 4")
	checkStep(t, steps, "1.3", OutcomeStolen, "downloaded 4 of 4 documents")
	checkStep(t, steps, "1.4", OutcomeStolen, "HTTP 200")
	checkStep(t, steps, "1.5", OutcomeStolen, "without a password or a second factor")
	checkStep(t, steps, "1.6", OutcomeInfo, "risk is none")

	// Run 2: each replay refused, by what the story says.
	r2 := rep.Run(2)
	if r2 == nil {
		t.Fatal("no run 2")
	}
	if r2.StolenDocs != 0 || r2.Replays != 6 || r2.Refusals != 6 {
		t.Errorf("run 2: %d documents stolen, %d of %d replays refused", r2.StolenDocs, r2.Refusals, r2.Replays)
	}
	checkStep(t, steps, "2.2", OutcomeOK, "token type DPoP", "4 of 4 documents")
	checkStep(t, steps, "2.4", OutcomeRefused, "strict location", "HTTP 401 insufficient_claims", "network location")
	checkStep(t, steps, "2.5", OutcomeRefused, "refresh-trusted-networks-only", "HTTP 400 invalid_grant", "Conditional Access")
	checkStep(t, steps, "2.6", OutcomeRefused, "HTTP 403", "registered device")
	checkStep(t, steps, "2.7", OutcomeRefused, "token protection at the gateway", "HTTP 401 invalid_dpop_proof", "does not match the bound key")
	checkStep(t, steps, "2.8", OutcomeRefused, "HTTP 401")
	checkStep(t, steps, "2.9", OutcomeRefused, "token protection at Ward", "HTTP 400 invalid_grant")
	checkStep(t, steps, "2.10", OutcomeDetected, "Continuous Access Evaluation", "HTTP 401 insufficient_claims")
	// The CAE time as the demo reports it: from Ward's decision (the
	// risk change in the audit log) to the gateway's refusal.
	if r2.CAEMillis <= 0 || r2.CAEMillis >= 1000 || r2.ReplayToRefusalMillis < r2.CAEMillis {
		t.Errorf("CAE revocation: %.1f ms after the decision, %.1f ms after the replay; want under a second", r2.CAEMillis, r2.ReplayToRefusalMillis)
	}
	checkStep(t, steps, "2.10", OutcomeDetected, fmt.Sprintf("%.0f ms after Ward's decision", r2.CAEMillis))
	var replay bool
	for _, d := range r2.Detections {
		if d.Type == "token_replay_wrong_key" && d.Severity == "high" && d.Technique == "T1550.001" && d.Source == "online" {
			replay = true
		}
	}
	if !replay {
		t.Errorf("detections: %+v, want token_replay_wrong_key (high, T1550.001, online)", r2.Detections)
	}
	checkStep(t, steps, "2.11", OutcomeDetected, "token_replay_wrong_key")
	if r2.UserRisk != "high" {
		t.Errorf("user risk %q, want high", r2.UserRisk)
	}
	checkStep(t, steps, "2.12", OutcomeDetected, "risk is high")
	switch s := steps["2.13"]; s.Outcome {
	case OutcomeSkipped: // a Ward without the incidents API
		if r2.IncidentSkip == "" || !strings.Contains(s.Detail, "T1550.001") {
			t.Errorf("incident step: %+v", s)
		}
	default:
		checkStep(t, steps, "2.13", OutcomeDetected, "INC-", "(high, ", "T1550.001 Use Alternate Authentication Material", "Lateral Movement", "127.0.0.66")
		if !strings.Contains(r2.Incident, "T1550.001") || r2.IncidentName == "" {
			t.Errorf("incident without its MITRE technique: %q", r2.Incident)
		}
	}
	checkStep(t, steps, "2.14", OutcomeInfo, "insufficient_claims", "invalid_grant")
	checkStep(t, steps, "2.15", OutcomeOK, "password + second factor + new password", "4 of 4 documents", "now none")
	if !r2.UserBackIn {
		t.Error("the user did not get back in")
	}

	// Other routes.
	checkStep(t, steps, "3.1", OutcomeRefused, "already been used", "htu does not match")
	checkStep(t, steps, "3.2", OutcomeOK)
	if len(r2.LogChecks) != 4 {
		t.Errorf("log checks: %+v", r2.LogChecks)
	}
	for _, c := range r2.LogChecks {
		if c.Found != 0 || c.Bytes == 0 || c.Secrets < 8 {
			t.Errorf("log check %+v", c)
		}
	}
	checkStep(t, steps, "3.3", OutcomeRefused, "prompt=none answers login_required", "attacker's key: HTTP 401")
	checkStep(t, steps, "2.15", OutcomeOK, "bound the new SSO session to its own key (DBSC)")
	checkStep(t, steps, "3.4", OutcomeInfo, "0600", "-rw-------")
	checkStep(t, steps, "3.5", OutcomeDetected, "CAE (device revoked)", "insufficient_claims")
	checkStep(t, steps, "3.6", OutcomeInfo, "/console/users/", "/console/devices/", "/console/logs?user=alice")
	if len(rep.Console) != 3 {
		t.Errorf("console URLs: %q", rep.Console)
	}

	if rep.DurationMS <= 0 || rep.DurationMS > 60000 {
		t.Errorf("duration %.0f ms", rep.DurationMS)
	}
	text := out.String()
	for _, w := range []string{"== Run 1: Ward's defences off", "== Run 2: Ward's defences on", "== Summary", "Total: "} {
		if !strings.Contains(text, w) {
			t.Errorf("the output lacks %q", w)
		}
	}
	if strings.Contains(text, "\033[") {
		t.Error("colour codes in an output that is not a terminal")
	}

	// Nothing left behind: the directories, the goroutines.
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
		t.Errorf("left in the temp dir: %v %v", ents, err)
	}
	checkGoroutines(t, goroutines)
}

// checkGoroutines waits for the goroutines the demo started to end.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+3 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines after the demo, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDemoInterrupted cancels the demo in the middle (Ctrl-C) and checks
// that it stops and removes what it made.
func TestDemoInterrupted(t *testing.T) {
	if !canBind(attackerIP) {
		t.Skip("this machine cannot send from " + attackerIP)
	}
	goroutines := runtime.NumGoroutine()
	tmp := t.TempDir()
	for _, after := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		var out bytes.Buffer
		rep, err := Run(ctx, Options{Printer: &Printer{W: &out}, TempDir: tmp})
		cancel()
		if err == nil || rep == nil || rep.Incomplete != "interrupted" {
			t.Fatalf("interrupted after %v: %v, report %+v\n%s", after, err, rep, out.String())
		}
		if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
			t.Errorf("interrupted after %v: left in the temp dir: %v %v", after, ents, err)
		}
	}
	checkGoroutines(t, goroutines)
}

// TestDemoAgainstServer plays run 2 with --server against a Ward started
// on its own (the demo's embedded one, as a running server).
func TestDemoAgainstServer(t *testing.T) {
	if !canBind(attackerIP) {
		t.Skip("this machine cannot send from " + attackerIP)
	}
	ctx := context.Background()
	dir := t.TempDir()
	w, err := startWard(ctx, dir, defences{on: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	target := w.target // as read from --target: no log access
	target.logs = nil
	var out bytes.Buffer
	rep, err := Run(ctx, Options{Printer: &Printer{W: &out}, Target: &target, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if f := rep.Failed(); len(f) > 0 {
		t.Errorf("%d step(s) did not go as expected: %s\n%s", len(f), stepIDs(f), out.String())
	}
	if rep.Mode != "server" || rep.Run(1) != nil || rep.Run(2) == nil {
		t.Fatalf("report: mode %s, runs %+v", rep.Mode, rep.Runs)
	}
	steps := stepsByID(rep)
	checkStep(t, steps, "2.4", OutcomeSkipped, "--server")
	checkStep(t, steps, "2.9", OutcomeRefused, "invalid_grant")
	checkStep(t, steps, "3.2", OutcomeOK)
	checkStep(t, steps, "3.7", OutcomeInfo, "HTTP 200")
	if r2 := rep.Run(2); r2.UserRisk != "high" || r2.CAEMillis <= 0 || r2.CAEMillis >= 1000 || len(r2.LogChecks) != 3 {
		t.Errorf("run 2: %+v", r2)
	}
	if !strings.Contains(steps["3.2"].DoesNotShow, "--server") {
		t.Errorf("3.2 does not say what it could not check: %+v", steps["3.2"])
	}
	// The server is left as the target file says: alice's password set
	// back, the demo's CAE stream deleted.
	b := newBrowser(target.Issuer, victimIP, victimUA)
	_, challenge := pkce()
	resp, body, err := b.do(ctx, "GET", authorizeURL(target.Issuer, target.DocsClient, target.DocsRedirectURI, "openid", challenge, nil), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("authorize: %v %v", resp, err)
	}
	action, form := formOf(body)
	form.Set("username", target.User)
	form.Set("password", target.UserPassword)
	if _, body, err = b.do(ctx, "POST", target.Issuer+action, form); err != nil || !strings.Contains(body, `name="otp"`) {
		t.Errorf("the target's password no longer works: %v %.300s", err, body)
	}
	rk, _ := newSigner()
	tk, err := tokenRequest(ctx, tokenClient(victimIP, rk), target.Issuer, map[string][]string{"grant_type": {"client_credentials"}, "scope": {"ssf.manage"}}, target.ReceiverClient, target.ReceiverSecret)
	if err != nil || tk.AccessToken == "" {
		t.Fatalf("receiver token: %+v %v", tk, err)
	}
	res, err := newAPI(victimIP, tk.AccessToken, rk).get(ctx, target.Issuer+"/ssf/stream")
	if err != nil || res.Status != 200 || strings.Contains(res.Body, "stream_id") {
		t.Errorf("the demo's stream is still there: %+v %v", res, err)
	}
}
