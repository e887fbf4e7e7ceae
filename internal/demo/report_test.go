package demo

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	return &Report{Mode: "embedded", StartedAt: time.Date(2026, 12, 6, 16, 0, 0, 0, time.UTC), DurationMS: 3210,
		Steps: []Step{
			{ID: "1.3", Run: 1, Actor: "attacker", Title: "replays the access token", Outcome: OutcomeStolen, Detail: "downloaded 4 of 4 documents"},
			{ID: "2.7", Run: 2, Actor: "attacker", Title: "replays the access token with their own DPoP key", Outcome: OutcomeRefused,
				By: "token protection at the gateway", Detail: "HTTP 401 invalid_dpop_proof", Shows: "a copied token is useless", DoesNotShow: "a TPM"},
			{ID: "2.13", Run: 2, Actor: "ward", Title: "the incident", Outcome: OutcomeSkipped, Detail: "no incidents API"},
		},
		Runs: []RunSummary{
			{Run: 1, Documents: 4, StolenDocs: 4, Replays: 3},
			{Run: 2, Defences: true, Documents: 4, Replays: 6, Refusals: 6, UserRisk: "high", CAEMillis: 12.5, ReplayToRefusalMillis: 30, UserBackIn: true,
				Detections:   []Detection{{Type: "token_replay_wrong_key", Severity: "high", Confidence: 0.95, Technique: "T1550.001", Source: "online"}},
				IncidentSkip: "no incidents API"},
		}}
}

func TestPrinterPlainAndColour(t *testing.T) {
	r := sampleReport()
	var plain, colour bytes.Buffer
	for _, c := range []struct {
		buf   *bytes.Buffer
		color bool
	}{{&plain, false}, {&colour, true}} {
		p := &Printer{W: c.buf, Color: c.color}
		p.Section("Run 2: Ward's defences on", "The same story.")
		for _, s := range r.Steps {
			p.Step(s)
		}
		p.Summary(r)
	}
	if strings.Contains(plain.String(), "\033[") {
		t.Errorf("colour codes without colour:\n%s", plain.String())
	}
	if !strings.Contains(colour.String(), ansiRed+ansiBold+"STOLEN") || !strings.Contains(colour.String(), ansiGreen+ansiBold+"REFUSED") {
		t.Errorf("no colours with colour:\n%q", colour.String())
	}
	out := plain.String()
	for _, want := range []string{
		"== Run 2: Ward's defences on", "The same story.",
		"2.7   REFUSED    attacker  replays the access token with their own DPoP key",
		"by: token protection at the gateway", "shows: a copied token is useless", "does not show: a TPM",
		"step  actor     outcome  what", // the summary table's header
		"Run 1, defences off: the attacker downloaded 4 of 4 documents; 0 of 3 replays refused",
		"Run 2, defences on: the attacker downloaded 0 of 4 documents; 6 of 6 replays refused.",
		"detections: token_replay_wrong_key (high, T1550.001)",
		"user risk: high; CAE revocation at the gateway: 12 ms after Ward's decision (30 ms after the replay)",
		"incident: skipped (no incidents API)",
		"Total: 3.2 s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "did not go as expected") {
		t.Error("failures reported in a report without any")
	}
}

func TestExpectMarksFailures(t *testing.T) {
	var out bytes.Buffer
	rec := &recorder{p: &Printer{W: &out}, rep: &Report{}, start: time.Now()}
	rec.expect(true, Step{ID: "a", Title: "works"}, OutcomeRefused, "refused")
	rec.expect(false, Step{ID: "b", Title: "does not", Detail: "HTTP 200"}, OutcomeRefused, "401")
	f := rec.rep.Failed()
	if len(f) != 1 || f[0].ID != "b" || f[0].Outcome != OutcomeFailed || f[0].Detail != "HTTP 200 — expected: 401" {
		t.Fatalf("failed: %+v", f)
	}
	if rec.rep.Steps[0].Outcome != OutcomeRefused || rec.rep.Steps[0].AtMS < 0 {
		t.Errorf("first step: %+v", rec.rep.Steps[0])
	}
	rec.p.Summary(rec.rep)
	if !strings.Contains(out.String(), "UNEXPECTED") || !strings.Contains(out.String(), "1 step(s) did not go as expected: b") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestReportJSON(t *testing.T) {
	r := sampleReport()
	path := filepath.Join(t.TempDir(), "report.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "started_at", "duration_ms", "steps", "runs"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	r2 := back.Run(2)
	if r2 == nil || r2.CAEMillis != 12.5 || r2.UserRisk != "high" || len(r2.Detections) != 1 || r2.Detections[0].Technique != "T1550.001" || !r2.UserBackIn {
		t.Errorf("run 2 after a round trip: %+v", r2)
	}
	if back.Run(3) != nil || len(back.Steps) != 3 || back.Steps[1].By != "token protection at the gateway" {
		t.Errorf("steps after a round trip: %+v", back.Steps)
	}
	if !strings.Contains(string(b), `"cae_revocation_ms": 12.5`) || !strings.Contains(string(b), `"outcome": "refused"`) {
		t.Errorf("field names:\n%s", b)
	}
}

func TestWrapAndClip(t *testing.T) {
	lines := wrap("one two three four five six seven", 10)
	for _, l := range lines {
		if len(l) > 10 {
			t.Errorf("line %q longer than 10", l)
		}
	}
	if strings.Join(lines, " ") != "one two three four five six seven" {
		t.Errorf("wrap lost words: %q", lines)
	}
	if got := wrap("", 10); got != nil {
		t.Errorf("wrap of nothing: %q", got)
	}
	if got := wrap("averyveryverylongword", 5); len(got) != 1 {
		t.Errorf("a word longer than the width: %q", got)
	}
	if clip("abcdef", 4) != "abc…" || clip("abc", 4) != "abc" {
		t.Errorf("clip: %q %q", clip("abcdef", 4), clip("abc", 4))
	}
}

func TestRefusalTexts(t *testing.T) {
	r := &result{Status: 401, Header: map[string][]string{"Www-Authenticate": {`DPoP algs="ES256", error="invalid_dpop_proof", error_description="DPoP proof has already been used"`}}}
	if got := refusal(r); got != "HTTP 401 invalid_dpop_proof: DPoP proof has already been used" {
		t.Errorf("refusal: %q", got)
	}
	if got := refusal(&result{Status: 401}); got != "HTTP 401" {
		t.Errorf("refusal without a challenge: %q", got)
	}
	if got := tokenRefusal(&tokens{Status: 400, Error: "invalid_grant"}); got != "HTTP 400 invalid_grant" {
		t.Errorf("token refusal: %q", got)
	}
	p := &page{Status: 403, Title: "Access requires more", Text: "Sign in on a registered device."}
	if got := pageRefusal(p); got != "HTTP 403 Access requires more: Sign in on a registered device." {
		t.Errorf("page refusal: %q", got)
	}
	if got := pageRefusal(&page{Error: "access_denied", ErrorDescription: "blocked"}); got != "redirected to the app with error=access_denied blocked" {
		t.Errorf("redirect refusal: %q", got)
	}
}

func TestPageParsing(t *testing.T) {
	body := `<h2>Access requires <b>more</b></h2><p>Your organisation&#39;s policies are not met.</p>
<ul class="problems"><li><strong>No registered device</strong><br>Enrol this device.</li></ul>
<p class="muted">Reference: <code>abc</code> — give this to your administrator.</p>
<form method="post" action="/login?x=1&amp;y=2"><input type="hidden" name="csrf" value="t&amp;k"></form>`
	title, text := pageText(body)
	if title != "Access requires more" || text != "Your organisation's policies are not met. No registered device Enrol this device." {
		t.Errorf("page text: %q / %q", title, text)
	}
	action, form := formOf(body)
	if action != "/login?x=1&y=2" || form.Get("csrf") != "t&k" {
		t.Errorf("form: %q %v", action, form)
	}
}

func TestTOTPStepsUsedOnce(t *testing.T) {
	a := &account{totpSecret: randomTOTP()}
	seen := map[string]bool{}
	for range 3 {
		code, err := a.otp(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if seen[code] {
			t.Fatalf("code %s given twice", code)
		}
		seen[code] = true
	}
	now := time.Now().Unix() / 30
	if a.lastStep < now-1 || a.lastStep > now+1 {
		t.Errorf("last step %d outside now±1 (%d)", a.lastStep, now)
	}
}

// TestTransportFrom: the attacker's connections to a loopback server
// come from the attacker's address, the victim's from hers.
func TestTransportFrom(t *testing.T) {
	if !canBind(attackerIP) {
		t.Skip("this machine cannot send from " + attackerIP)
	}
	seen := make(chan string, 2)
	srv, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		seen <- host
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, ip := range []string{attackerIP, victimIP} {
		c := &http.Client{Transport: transportFrom(ip)}
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := <-seen; got != ip {
			t.Errorf("from %s: the server saw %s", ip, got)
		}
		c.CloseIdleConnections()
	}
}
