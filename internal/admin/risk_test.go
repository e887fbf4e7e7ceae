package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestRiskRoutes: list, explain, dismiss (a detection, a session, a user)
// and confirm compromised, with their 400/404/409 answers and their audit
// events, attributed to the calling administrator.
func TestRiskRoutes(t *testing.T) {
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
	detect := func(id, session, severity string) {
		e := &model.Event{ID: "ev-" + id, Type: model.EventRiskDetected, Time: now, UserID: bobID, SessionID: session,
			Reason: "unfamiliar_sign_in", Data: map[string]string{model.DataDetectionID: id, model.DataDetectionSeverity: severity,
				model.DataDetectionConfidence: "0.9", model.DataDetectionEvidence: "ev-x", model.DataDetectionDetail: "new country"}}
		if _, err := in.App.Store.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := in.App.Risk.HandleDetection(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	detect("d1", "bob-s1", "medium")
	detect("d2", "bob-s2", "low")

	r := alice.do(t, req{method: "GET", path: "/risk"})
	wantStatus(t, r, 200, "")
	if us := r.list("users"); len(us) != 1 || us[0]["user_id"] != bobID || us[0]["level"] != "medium" || len(r.list("sessions")) != 2 {
		t.Fatalf("GET /risk: %s", r.Body)
	}
	if r := alice.do(t, req{method: "GET", path: "/risk?level=low"}); len(r.list("users")) != 0 || len(r.list("sessions")) != 1 {
		t.Errorf("GET /risk?level=low: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/risk?level=extreme"}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/risk?limit=0"}), 400, "invalid_request")

	r = alice.do(t, req{method: "GET", path: "/users/" + bobID + "/risk"})
	wantStatus(t, r, 200, "")
	if r.str("level") != "medium" || len(r.list("detections")) != 2 || len(r.list("events")) != 2 || len(r.list("history")) == 0 {
		t.Fatalf("explain user: %s", r.Body)
	}
	if r := alice.do(t, req{method: "GET", path: "/sessions/bob-s1/risk"}); r.str("level") != "medium" || len(r.list("detections")) != 1 {
		t.Errorf("explain session: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/nobody/risk"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/sessions/nope/risk"}), 404, "not_found")

	// Dismiss one detection, then the same again (409), an unknown one (404).
	r = alice.do(t, req{method: "POST", path: "/risk/detections/d1/dismiss", body: map[string]string{"reason": "travelling"}})
	wantStatus(t, r, 200, "")
	if r.str("level") != "low" || r.str("previous") != "medium" {
		t.Errorf("dismiss d1: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/risk/detections/d1/dismiss"}), 409, "conflict")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/risk/detections/nope/dismiss"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/sessions/bob-s1/risk/dismiss"}), 409, "conflict")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/" + bobID + "/risk/dismiss",
		body: map[string]string{"reason": strings.Repeat("x", 201)}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/" + bobID + "/risk/dismiss", body: `{"reason": 7}`}), 400, "invalid_request")
	if r := alice.do(t, req{method: "POST", path: "/sessions/bob-s2/risk/dismiss"}); r.Status != 200 || r.str("level") != "none" {
		t.Errorf("dismiss session: %d %s", r.Status, r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/" + bobID + "/risk/dismiss"}), 409, "conflict")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/nobody/risk/dismiss"}), 404, "not_found")
	ds := events(t, in, model.EventRiskDismissed)
	if len(ds) != 2 || ds[1].Actor != aliceID || ds[1].Reason != "travelling" || ds[1].CorrelationID == "" || ds[1].Code() != "W9010I" {
		t.Errorf("risk.dismissed: %+v", ds)
	}

	// Confirm compromised: high, every session revoked, audited.
	r = alice.do(t, req{method: "POST", path: "/users/" + bobID + "/risk/confirm-compromised", body: map[string]string{"reason": "phished"}})
	wantStatus(t, r, 200, "")
	if r.str("level") != "high" || len(asSlice(r.JSON["sessions_revoked"])) != 2 {
		t.Errorf("confirm compromised: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/users/nobody/risk/confirm-compromised"}), 404, "not_found")
	ss, _ := in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: bobID})
	for _, se := range ss {
		if se.RevokeCause != string(model.CauseCompromiseConfirmed) {
			t.Errorf("session %s: %q", se.ID, se.RevokeCause)
		}
	}
	cc := events(t, in, model.EventRiskCompromiseConfirmed)
	if len(cc) != 1 || cc[0].Actor != aliceID || cc[0].Reason != "phished" {
		t.Errorf("risk.compromise_confirmed: %+v", cc)
	}
	if u := alice.do(t, req{method: "GET", path: "/users/" + bobID}); u.str("risk_level") != "high" {
		t.Errorf("user after confirm: %s", u.Body)
	}

	// A user who is no administrator is refused like on every admin route.
	bob := signIn(t, in, "bob", "openid").caller
	wantStatus(t, bob.do(t, req{method: "GET", path: "/risk"}), 403, "access_denied")
}
