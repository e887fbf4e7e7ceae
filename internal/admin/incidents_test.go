package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestIncidentRoutes: list, show, assign, status (a reason required to
// close), comments, merge, split and a response action, with their
// 400/403/404/409 answers and events attributed to the administrator.
func TestIncidentRoutes(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")
	ctx := context.Background()
	now := time.Now()
	for _, id := range []string{"bob-s1", "bob-s2"} {
		if err := in.App.Store.CreateSession(ctx, &model.Session{ID: id, UserID: bobID, AuthTime: now, AMR: []string{"pwd"},
			CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(time.Hour), IdleTimeout: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	detect := func(id, user, ip string) {
		e := &model.Event{ID: "ev-" + id, Type: model.EventRiskDetected, Time: now, UserID: user, SessionID: "", IP: ip,
			Reason: "token_replay_wrong_key", Data: map[string]string{model.DataDetectionID: id, model.DataDetectionSeverity: "medium",
				model.DataDetectionConfidence: "0.9", model.DataDetectionTechnique: "T1550.001"}}
		if user == bobID {
			e.SessionID = "bob-s1"
		}
		if _, err := in.App.Store.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := in.App.Incidents.HandleDetection(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	detect("d1", bobID, "203.0.113.7")
	detect("d2", bobID, "203.0.113.7")
	if err := in.App.Store.CreateUser(ctx, &model.User{ID: "carol-id", Username: "carol", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	detect("d3", "carol-id", "198.51.100.1")

	// Only administrators.
	bob := signIn(t, in, "bob", "openid ward:admin").caller
	wantStatus(t, bob.do(t, req{method: "GET", path: "/incidents"}), 403, "access_denied")
	wantStatus(t, bob.do(t, req{method: "POST", path: "/incidents/INC-1/status", body: map[string]string{"status": "resolved", "reason": "x"}}), 403, "access_denied")

	r := alice.do(t, req{method: "GET", path: "/incidents?status=open"})
	wantStatus(t, r, 200, "")
	if l := r.list("incidents"); len(l) != 2 || l[0]["name"] != "INC-2" || l[1]["detections"] != float64(2) || l[1]["severity"] != "medium" {
		t.Fatalf("GET /incidents: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/incidents?status=closed"}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/incidents?before=x"}), 400, "invalid_request")

	r = alice.do(t, req{method: "GET", path: "/incidents/INC-1"})
	wantStatus(t, r, 200, "")
	if r.str("status") != "new" || len(r.list("detection_list")) != 2 || len(r.list("attack")) != 1 ||
		!strings.Contains(r.Body, `"triggering_events":["ev-d1","ev-d2"]`) || !strings.Contains(r.Body, `"tactics":["TA0005","TA0008"]`) ||
		!strings.Contains(r.Body, `"users":["`+bobID+`"]`) {
		t.Fatalf("GET /incidents/INC-1: %s", r.Body)
	}
	id := r.str("id")
	if r := alice.do(t, req{method: "GET", path: "/incidents/" + id}); r.str("name") != "INC-1" {
		t.Errorf("by id: %s", r.Body)
	}
	for _, p := range []string{"/incidents/INC-99", "/incidents/nope"} {
		wantStatus(t, alice.do(t, req{method: "GET", path: p}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "POST", path: p + "/assign", body: map[string]string{"assignee": aliceID}}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "POST", path: p + "/status", body: map[string]string{"status": "resolved", "reason": "x"}}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "POST", path: p + "/comments", body: map[string]string{"text": "x"}}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "POST", path: p + "/merge", body: map[string]any{"incidents": []string{"INC-2"}}}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "POST", path: p + "/split", body: map[string]any{"detections": []string{"d1"}}}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "POST", path: p + "/actions", body: map[string]string{"action": "revoke_sessions"}}), 404, "not_found")
		wantStatus(t, alice.do(t, req{method: "PATCH", path: p, body: map[string]string{"assignee": aliceID}}), 404, "not_found")
	}

	// Assign.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/assign", body: map[string]string{"assignee": "ghost"}}), 400, "invalid_request")
	r = alice.do(t, req{method: "POST", path: "/incidents/INC-1/assign", body: map[string]string{"assignee": aliceID}})
	wantStatus(t, r, 200, "")
	if r.str("assignee") != aliceID || r.str("status") != "active" {
		t.Errorf("assign: %s", r.Body)
	}
	// Closing needs a reason.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/status", body: map[string]string{"status": "resolved"}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/incidents/INC-1", body: map[string]string{"status": "false_positive"}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/status", body: map[string]string{"status": "resolved", "reason": "x", "extra": "y"}}), 400, "invalid_request")
	// Comments.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/comments", body: map[string]string{"text": "  "}}), 400, "invalid_request")
	r = alice.do(t, req{method: "POST", path: "/incidents/INC-1/comments", body: map[string]string{"text": "bob confirms he was asleep"}})
	wantStatus(t, r, 201, "")
	// Merge INC-2 into INC-1, split d3 back out.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/merge", body: map[string]any{"incidents": []string{"INC-1"}}}), 409, "conflict")
	r = alice.do(t, req{method: "POST", path: "/incidents/INC-1/merge", body: map[string]any{"incidents": []string{"INC-2"}, "reason": "same attacker"}})
	wantStatus(t, r, 200, "")
	if r.JSON["detections"] != float64(3) {
		t.Errorf("merge: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-2/merge", body: map[string]any{"incidents": []string{"INC-1"}}}), 409, "conflict")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/split", body: map[string]any{"detections": []string{"zz"}}}), 400, "invalid_request")
	r = alice.do(t, req{method: "POST", path: "/incidents/INC-1/split", body: map[string]any{"detections": []string{"d3"}, "reason": "unrelated"}})
	wantStatus(t, r, 201, "")
	if r.str("name") != "INC-3" || r.JSON["detections"] != float64(1) {
		t.Errorf("split: %s", r.Body)
	}
	// A response action: bob's sessions (his two and the one he signed in
	// with above), through the session service.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/actions", body: map[string]string{"action": "revoke_sessions", "target": aliceID}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/actions", body: map[string]string{"action": "format_disk"}}), 400, "invalid_request")
	r = alice.do(t, req{method: "POST", path: "/incidents/INC-1/actions", body: map[string]string{"action": "revoke_sessions", "reason": "stolen token"}})
	wantStatus(t, r, 200, "")
	if res := r.list("results"); len(res) != 1 || res[0]["id"] != bobID || res[0]["detail"] != "3 sessions revoked" {
		t.Errorf("action: %s", r.Body)
	}
	for _, sid := range []string{"bob-s1", "bob-s2"} {
		if se, _ := in.App.Store.GetSession(ctx, sid); se.RevokedAt.IsZero() {
			t.Errorf("%s not revoked", sid)
		}
	}
	r = alice.do(t, req{method: "POST", path: "/incidents/INC-1/status", body: map[string]string{"status": "resolved", "reason": "sessions revoked"}})
	wantStatus(t, r, 200, "")
	if r.str("status") != "resolved" || r.str("status_reason") != "sessions revoked" {
		t.Errorf("resolve: %s", r.Body)
	}

	// Hostile sizes and shapes are refused before anything changes.
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/comments", body: map[string]string{"text": strings.Repeat("x", 70<<10)}}), 413, "request_too_large")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/comments", body: map[string]string{"text": strings.Repeat("x", 4001)}}), 400, "invalid_request")
	many := make([]string, 51)
	for i := range many {
		many[i] = "INC-2"
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/merge", body: map[string]any{"incidents": many}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/split", body: map[string]any{"detections": []string{}}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/status", body: map[string]string{"status": "active", "reason": strings.Repeat("r", 201)}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/incidents/INC-1/actions", body: `{"action": ["revoke_sessions"]}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/incidents/INC-1", body: `{}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/incidents/%ff%fe"}), 404, "not_found")
	if n := len(events(t, in, model.EventIncidentCommented)); n != 1 {
		t.Errorf("%d comments recorded", n)
	}

	// Every change is in the audit log, attributed to alice, with the
	// request's correlation id.
	for typ, n := range map[model.EventType]int{model.EventIncidentAssigned: 1, model.EventIncidentCommented: 1, model.EventIncidentMerged: 1,
		model.EventIncidentSplit: 1, model.EventIncidentActionTaken: 1} {
		evs := events(t, in, typ)
		if len(evs) != n {
			t.Errorf("%s: %d events, want %d", typ, len(evs), n)
			continue
		}
		if evs[0].Actor != aliceID || evs[0].Data[model.DataIncidentID] == "" || evs[0].CorrelationID == "" {
			t.Errorf("%s: %+v", typ, evs[0].Event)
		}
	}
	act := events(t, in, model.EventIncidentActionTaken)[0]
	revoked := events(t, in, model.EventUserSessionsRevoked)
	if len(revoked) != 1 || revoked[0].Actor != aliceID || revoked[0].CorrelationID != act.CorrelationID {
		t.Errorf("user.sessions_revoked %+v does not share the action's correlation id %s", revoked, act.CorrelationID)
	}
}
