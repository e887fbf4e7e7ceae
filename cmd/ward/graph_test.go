package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// ward graph: the root cause first, then the entities and relations in
// time order; --json; usage errors before anything is opened.
func TestGraphCommand(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "erin", "--password-stdin")
	a := h.openApp()
	ctx := context.Background()
	u, err := a.Store.GetUserByUsername(ctx, "erin")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := a.Store.CreateSession(ctx, &model.Session{ID: "erin-s1", UserID: u.ID, IP: "192.0.2.10", AuthTime: t0, CreatedAt: t0,
		LastSeen: t0, ExpiresAt: t0.Add(24 * time.Hour), IdleTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*model.Event{
		{ID: "ev-code", Type: model.EventTokenIssued, Time: t0, UserID: u.ID, SessionID: "erin-s1", ClientID: "spa", DeviceID: "erin-laptop",
			TokenID: "jti-1", IP: "192.0.2.10", Outcome: model.OutcomeSuccess,
			Data: map[string]string{"grant_type": "authorization_code", "jkt": "key-erin", "proof": "ok", "rt_gen_issued": "1"}},
		{ID: "ev-stolen", Type: model.EventTokenRequestFailed, Time: t0.Add(5 * time.Minute), UserID: u.ID, SessionID: "erin-s1", ClientID: "spa",
			IP: "198.51.100.7", Outcome: model.OutcomeFailure, Reason: "refresh_key_mismatch",
			Data: map[string]string{"grant_type": "refresh_token", "jkt": "key-thief", "bound_jkt": "key-erin", "proof": "wrong_key", "rt_gen_presented": "1"}},
	} {
		if _, err := a.Store.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	det := &model.Event{ID: "ev-det-1", Type: model.EventRiskDetected, Time: t0.Add(5 * time.Minute), UserID: u.ID, SessionID: "erin-s1",
		IP: "198.51.100.7", Reason: "refresh_token_wrong_key", Data: map[string]string{model.DataDetectionID: "det-1",
			model.DataDetectionSeverity: "high", model.DataDetectionConfidence: "0.9", model.DataDetectionEvidence: "ev-stolen"}}
	if _, err := a.Store.AppendEvent(ctx, det); err != nil {
		t.Fatal(err)
	}
	if err := a.Risk.HandleDetection(ctx, det); err != nil {
		t.Fatal(err)
	}
	a.Close()

	out := h.ok("", "graph", "--user", "erin", "--from", "2h")
	want := "session erin-s1 of erin created on device erin-laptop at " + t0.UTC().Format(time.RFC3339) +
		" from IP 192.0.2.10; its refresh token (generation 1) replayed from IP 198.51.100.7 with another key at " +
		t0.Add(5*time.Minute).UTC().Format(time.RFC3339) + " (5m0s later); detected as refresh_token_wrong_key (high)"
	rc, ents, rels := strings.Index(out, want), strings.Index(out, "\nEntities"), strings.Index(out, "\nRelations")
	if rc < 0 || ents < rc || rels < ents || !strings.Contains(out, "session erin-s1 -used_from-> ip 198.51.100.7") ||
		!strings.Contains(out, "detection det-1 (refresh_token_wrong_key) -about-> session erin-s1") {
		t.Errorf("ward graph:\n%s\nwant the root cause %q first", out, want)
	}
	var g map[string]any
	if err := json.Unmarshal([]byte(h.ok("", "graph", "--session", "erin-s1", "--json")), &g); err != nil {
		t.Fatal(err)
	}
	if r, _ := g["root_cause"].(map[string]any); r == nil || r["summary"] != want {
		t.Errorf("--json root cause: %v", g["root_cause"])
	}
	// Nothing there: an empty graph, said so.
	if out := h.ok("", "graph", "--ip", "203.0.113.9"); !strings.Contains(out, "0 events, 0 entities, 0 relations") ||
		!strings.Contains(out, "Root cause: none found") {
		t.Errorf("empty graph:\n%s", out)
	}
	for _, args := range [][]string{
		{"graph"},
		{"graph", "--ip", "not-an-ip"},
		{"graph", "--user", "erin", "--from", "yesterday"},
		{"graph", "--user", "erin", "--from", "1h", "--to", "2h"},
		{"graph", "--user", "erin", "--from", "2400h"},
	} {
		if _, errs, code := h.run("", args...); code != exitUsage || errs == "" {
			t.Errorf("ward %s: exit %d, stderr %q; want usage error", strings.Join(args, " "), code, errs)
		}
	}
	if _, errs, code := h.run("", "graph", "--user", "nobody"); code == 0 || !strings.Contains(errs, `no user "nobody"`) {
		t.Errorf("unknown user: exit %d, %q", code, errs)
	}
}
