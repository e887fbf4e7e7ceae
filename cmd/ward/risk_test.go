package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// ward risk list | explain | dismiss | confirm-compromised, and ward logs
// showing why for the user.
func TestRiskCommands(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "erin", "--password-stdin")
	a := h.openApp()
	ctx := context.Background()
	u, err := a.Store.GetUserByUsername(ctx, "erin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := a.Store.CreateSession(ctx, &model.Session{ID: "erin-s1", UserID: u.ID, AuthTime: now, CreatedAt: now, LastSeen: now,
		ExpiresAt: now.Add(time.Hour), IdleTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e := &model.Event{ID: "ev-det-1", Type: model.EventRiskDetected, Time: now, UserID: u.ID, SessionID: "erin-s1", IP: "198.51.100.7",
		Reason: "impossible_travel", Data: map[string]string{model.DataDetectionID: "det-1", model.DataDetectionSeverity: "medium",
			model.DataDetectionConfidence: "0.8", model.DataDetectionTechnique: "T1078.004", model.DataDetectionEvidence: "ev-a ev-b",
			model.DataDetectionDetail: "Paris then Sydney within 20 minutes", model.DataDetectionSource: "online"}}
	if _, err := a.Store.AppendEvent(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := a.Risk.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	a.Close()

	out := h.ok("", "risk", "list")
	if !regexp.MustCompile(`(?m)^user\s+\S+\s+erin\s+medium\s`).MatchString(out) || !regexp.MustCompile(`(?m)^session\s+erin-s1\s+erin\s+medium\s`).MatchString(out) {
		t.Errorf("risk list:\n%s", out)
	}
	if out := h.ok("", "risk", "list", "--level", "high"); strings.Contains(out, "erin") {
		t.Errorf("risk list --level high:\n%s", out)
	}
	out = h.ok("", "risk", "explain", "erin")
	for _, want := range []string{"user erin", "risk medium", "impossible_travel", "T1078.004", "Paris then Sydney within 20 minutes",
		"evidence: ev-a, ev-b", "no longer in the audit log: ev-a, ev-b", "risk.detected"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	var x map[string]any
	if err := json.Unmarshal([]byte(h.ok("", "risk", "explain", "--session", "erin-s1", "--json")), &x); err != nil || x["level"] != "medium" {
		t.Errorf("explain --json: %v %v", x, err)
	}
	// ward logs --user shows why: the detection's type and detail, readable.
	out = h.ok("", "logs", "--user", "erin")
	if !regexp.MustCompile(`risk\.detected\s.*reason=impossible_travel.*detail="Paris then Sydney within 20 minutes"`).MatchString(out) ||
		!strings.Contains(out, "user.risk_changed") {
		t.Errorf("logs:\n%s", out)
	}
	if _, errs, code := h.run("", "risk", "dismiss"); code != exitUsage || !strings.Contains(errs, "exactly one") {
		t.Errorf("dismiss without a target: %d %s", code, errs)
	}
	out = h.ok("", "risk", "dismiss", "--detection", "det-1", "--reason", "travelling")
	if !strings.Contains(out, "risk medium -> none") {
		t.Errorf("dismiss: %s", out)
	}
	if _, errs, code := h.run("", "risk", "dismiss", "erin"); code == 0 || !strings.Contains(errs, "nothing to dismiss") {
		t.Errorf("dismiss again: %d %s", code, errs)
	}
	out = h.ok("", "risk", "confirm-compromised", "erin", "--reason", "phished")
	if !strings.Contains(out, "1 session(s) revoked") {
		t.Errorf("confirm-compromised: %s", out)
	}
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^Risk:\s+high`).MatchString(out) {
		t.Errorf("show after confirm:\n%s", out)
	}
	if out := h.ok("", "logs", "--user", "erin", "--type", "risk.compromise_confirmed"); !strings.Contains(out, "reason=phished") {
		t.Errorf("logs of the confirmation:\n%s", out)
	}
}
