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

// ward incidents list | show | assign | comment | resolve | reopen |
// merge | split | act, on an incident made from detections.
func TestIncidentCommands(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "erin", "--password-stdin")
	h.ok("correct horse battery\n", "user", "add", "sam", "--password-stdin")
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
	for i, typ := range []string{"token_replay_wrong_key", "impossible_travel", "password_spray"} {
		e := &model.Event{ID: "ev-det-" + typ, Type: model.EventRiskDetected, Time: now.Add(time.Duration(i) * time.Second), UserID: u.ID,
			SessionID: "erin-s1", IP: "198.51.100.7", Reason: typ, Data: map[string]string{model.DataDetectionID: "det-" + typ,
				model.DataDetectionSeverity: "medium", model.DataDetectionConfidence: "0.8"}}
		if typ == "password_spray" {
			e.UserID, e.SessionID, e.IP = "", "", "203.0.113.99" // about another address: its own incident
		}
		if _, err := a.Store.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := a.Incidents.HandleDetection(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()

	out := h.ok("", "incidents", "list")
	if !regexp.MustCompile(`(?m)^INC-1\s+medium\s+new\s+2\s+-\s+\S+\s+TA0001 TA0003 TA0004 TA0005 TA0008\s+token_replay_wrong_key`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^INC-2\s+medium\s+new\s+1\s`).MatchString(out) {
		t.Errorf("incidents list:\n%s", out)
	}
	out = h.ok("", "incidents", "show", "INC-1")
	for _, want := range []string{"INC-1", "T1550.001", "Use Alternate Authentication Material: Application Access Token", "TA0008 Lateral Movement",
		"T1078", "users     erin", "erin-s1", "198.51.100.7", "ev-det-token_replay_wrong_key", "created"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(h.ok("", "incidents", "show", "1", "--json")), &d); err != nil || d["name"] != "INC-1" {
		t.Errorf("show --json: %v %v", d["name"], err)
	}
	if _, errs, code := h.run("", "incidents", "show", "INC-42"); code == 0 || !strings.Contains(errs, "no such incident") {
		t.Errorf("show of a missing incident: %d %s", code, errs)
	}
	if out := h.ok("", "incidents", "assign", "INC-1", "sam"); !strings.Contains(out, "INC-1 assigned to sam (active)") {
		t.Errorf("assign: %s", out)
	}
	h.ok("", "incidents", "comment", "INC-1", "erin was on a plane")
	if _, errs, code := h.run("", "incidents", "resolve", "INC-1"); code != exitUsage || !strings.Contains(errs, "reason is required") {
		t.Errorf("resolve without a reason: %d %s", code, errs)
	}
	if out := h.ok("", "incidents", "merge", "INC-1", "INC-2", "--reason", "same campaign"); !strings.Contains(out, "INC-1 now holds 3 detection(s)") {
		t.Errorf("merge: %s", out)
	}
	if out := h.ok("", "incidents", "split", "INC-1", "det-password_spray", "--reason", "unrelated"); !strings.Contains(out, "INC-3 opened with 1 detection(s)") {
		t.Errorf("split: %s", out)
	}
	if _, errs, code := h.run("", "incidents", "act", "INC-1", "revoke_sessions", "--target", "someone-else"); code != exitUsage || !strings.Contains(errs, "not a user of INC-1") {
		t.Errorf("act on a foreign target: %d %s", code, errs)
	}
	out = h.ok("", "incidents", "act", "INC-1", "revoke_sessions", "--reason", "token replayed")
	if !regexp.MustCompile(`(?m)^user\s+` + u.ID + `\s+true\s+1 sessions revoked`).MatchString(out) {
		t.Errorf("act:\n%s", out)
	}
	if out := h.ok("", "incidents", "resolve", "INC-1", "--reason", "session revoked, user informed"); !strings.Contains(out, "INC-1 resolved: session revoked, user informed") {
		t.Errorf("resolve: %s", out)
	}
	if out := h.ok("", "incidents", "list", "--status", "open"); strings.Contains(out, "INC-1 ") || !strings.Contains(out, "INC-3") {
		t.Errorf("list --status open:\n%s", out)
	}
	out = h.ok("", "incidents", "show", "INC-1")
	for _, want := range []string{"erin was on a plane", "assignee=sam", "action=revoke_sessions", `"token replayed"`, "session revoked, user informed"} {
		if !strings.Contains(out, want) {
			t.Errorf("timeline lacks %q:\n%s", want, out)
		}
	}
	// The audit log has each change, by the command line.
	out = h.ok("", "logs")
	for _, typ := range []string{"incident.assigned", "incident.commented", "incident.merged", "incident.split", "incident.action_taken", "incident.status_changed", "user.sessions_revoked"} {
		if !strings.Contains(out, typ) {
			t.Errorf("logs lack %s", typ)
		}
	}
}
