package admin_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// The admin API's critical changes commit their event with the change:
// revoking one session, revoking all of a user's sessions, disabling a
// user, setting a user's risk. Each event is stored once, with the
// request's origin; so are the session.revoked events that accompany the
// user-level ones: every session revocation commits with its events.
func TestCriticalEventsCommitWithChange(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	var mu sync.Mutex
	withChange := map[string]bool{} // event id -> stored with its change
	in.App.Bus.Subscribe("test-committed-with-change", func(ctx context.Context, e *model.Event) error {
		mu.Lock()
		withChange[e.ID] = store.EventStored(ctx, e)
		mu.Unlock()
		return nil
	})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")
	bob1 := signIn(t, in, "bob", "openid offline_access")
	bob2 := signIn(t, in, "bob", "openid offline_access")

	// want checks the events of one call: n of type typ, with the origin,
	// committed with the change or not.
	want := func(r result, typ model.EventType, n int, committed bool) []*store.StoredEvent {
		t.Helper()
		corr := r.Header.Get("X-Correlation-ID")
		evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{CorrelationID: corr, Types: []model.EventType{typ}})
		if err != nil {
			t.Fatal(err)
		}
		if corr == "" || len(evs) != n {
			t.Fatalf("request %q: %d %s events, want %d", corr, len(evs), typ, n)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			if e.Actor != aliceID || e.UserID != bobID || e.IP != "127.0.0.1" || e.UserAgent == "" {
				t.Errorf("%s stored as %+v", typ, e.Event)
			}
			if stored, ok := withChange[e.ID]; !ok || stored != committed {
				t.Errorf("%s %s: published %v, committed with its change %v; want %v", typ, e.ID, ok, stored, committed)
			}
		}
		return evs
	}

	r := alice.do(t, req{method: "DELETE", path: "/sessions/" + sessionOf(t, bob1.caller)})
	wantStatus(t, r, 204, "")
	want(r, model.EventSessionRevoked, 1, true)

	r = alice.do(t, req{method: "POST", path: "/users/" + bobID + "/sessions/revoke"})
	wantStatus(t, r, 200, "")
	if evs := want(r, model.EventUserSessionsRevoked, 1, true); evs[0].Data["sessions_revoked"] != "1" || evs[0].Reason != "admin_revoked" {
		t.Errorf("user.sessions_revoked %+v", evs[0].Event)
	}
	if evs := want(r, model.EventSessionRevoked, 1, true); evs[0].SessionID != sessionOf(t, bob2.caller) || evs[0].Data["all_sessions"] != "true" {
		t.Errorf("session.revoked %+v", evs[0].Event)
	}

	r = alice.do(t, req{method: "PUT", path: "/users/" + bobID + "/risk", body: map[string]any{"level": "high", "reason": "test"}})
	wantStatus(t, r, 200, "")
	want(r, model.EventUserRiskChanged, 1, true)

	bob3 := signIn(t, in, "bob", "openid offline_access")
	r = alice.do(t, req{method: "PATCH", path: "/users/" + bobID, body: map[string]any{"disabled": true}})
	wantStatus(t, r, 200, "")
	want(r, model.EventUserDisabled, 1, true)
	// The session revoker's events, published while user.disabled was
	// being delivered, commit with its revocation.
	if evs := want(r, model.EventSessionRevoked, 1, true); evs[0].SessionID != sessionOf(t, bob3.caller) || evs[0].Reason != "user_disabled" {
		t.Errorf("session.revoked %+v", evs[0].Event)
	}
}
