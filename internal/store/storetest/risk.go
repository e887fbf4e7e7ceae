package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func fullDetection(id, user, session string) *model.RiskDetection {
	return &model.RiskDetection{
		ID: id, Type: "token_replay_wrong_key", UserID: user, SessionID: session, ClientID: "c1", DeviceID: "d1",
		IP: "198.51.100.9", Severity: model.RiskHigh, Confidence: 0.95, Technique: "T1550.001",
		Evidence: []string{"ev-1", "ev-2"}, Detail: "refresh token presented with another key", Source: model.DetectionSourceOnline,
		EventID: "event-" + id, DetectedAt: at(time.Minute), ExpiresAt: at(48 * time.Hour), State: model.DetectionActive,
	}
}

func normDetection(d model.RiskDetection) model.RiskDetection {
	d.Evidence = nl(d.Evidence)
	d.DetectedAt, d.ExpiresAt, d.StateAt = nt(d.DetectedAt), nt(d.ExpiresAt), nt(d.StateAt)
	return d
}

// riskUser creates a user without risk and its sessions.
func riskUser(t *testing.T, s store.Store, id string, sessions ...string) {
	t.Helper()
	u := fullUser(id, "name-"+id)
	u.RiskLevel, u.RiskUpdatedAt = "", time.Time{}
	must(t, "CreateUser", s.CreateUser(ctx, u))
	for _, sid := range sessions {
		must(t, "CreateSession", s.CreateSession(ctx, fullSession(sid, id)))
	}
}

// testRiskRoundTrip: a detection added with UpdateRisk round-trips every
// field, the levels fn sets are stored (the user's in its users row) with
// one history row each, and the list methods filter and order.
func testRiskRoundTrip(t *testing.T, s store.Store) {
	riskUser(t, s, "u1", "s1", "s2")
	riskUser(t, s, "u2", "s3")
	d := fullDetection("det-1", "u1", "s1")
	cause := store.RiskCause{Reason: "token_replay_wrong_key", Actor: "system", DetectionID: "det-1", At: at(2 * time.Minute)}
	st, err := s.UpdateRisk(ctx, "u1", d, func(st *store.RiskState) error {
		if st.UserLevel != model.RiskNone || len(st.Sessions) != 0 {
			return fmt.Errorf("fresh state: level %q, sessions %v", st.UserLevel, st.Sessions)
		}
		if st.Added == nil || st.Added.ID != "det-1" || len(st.Active) != 1 {
			return fmt.Errorf("added %v, active %d", st.Added, len(st.Active))
		}
		st.UserLevel = model.RiskHigh
		st.Sessions["s1"] = &model.SessionRisk{Level: model.RiskHigh}
		st.Cause = cause
		return nil
	})
	must(t, "UpdateRisk", err)
	if st.UserLevel != model.RiskHigh || st.Sessions["s1"].Level != model.RiskHigh || st.Sessions["s1"].UserID != "u1" {
		t.Fatalf("returned state: %+v %+v", st, st.Sessions["s1"])
	}
	got, err := s.GetRiskDetection(ctx, "det-1")
	must(t, "GetRiskDetection", err)
	if !reflect.DeepEqual(normDetection(*got), normDetection(*d)) {
		t.Errorf("detection round trip:\n got %+v\nwant %+v", *got, *d)
	}
	u, err := s.GetUser(ctx, "u1")
	must(t, "GetUser", err)
	if u.RiskLevel != model.RiskHigh || !nt(u.RiskUpdatedAt).Equal(nt(cause.At)) {
		t.Errorf("user risk %q at %v, want high at %v", u.RiskLevel, u.RiskUpdatedAt, cause.At)
	}
	sr, err := s.GetSessionRisk(ctx, "s1")
	must(t, "GetSessionRisk", err)
	if sr.Level != model.RiskHigh || sr.UserID != "u1" || !nt(sr.UpdatedAt).Equal(nt(cause.At)) {
		t.Errorf("session risk %+v", sr)
	}
	if _, err := s.GetSessionRisk(ctx, "s2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSessionRisk(no risk): %v, want ErrNotFound", err)
	}
	hist, err := s.RiskHistory(ctx, "u1", "", 0)
	must(t, "RiskHistory", err)
	if len(hist) != 2 {
		t.Fatalf("history: %d rows, want 2", len(hist))
	}
	for _, h := range hist {
		if h.Level != model.RiskHigh || h.Previous != model.RiskNone || h.Reason != cause.Reason || h.Actor != "system" ||
			h.DetectionID != "det-1" || h.UserID != "u1" || !nt(h.At).Equal(nt(cause.At)) {
			t.Errorf("history row %+v", h)
		}
	}
	if sh, _ := s.RiskHistory(ctx, "u1", "s1", 0); len(sh) != 1 || sh[0].Subject != model.RiskSubjectSession || sh[0].SubjectID != "s1" {
		t.Errorf("session history %+v", sh)
	}

	// Lower the user to medium with a second detection on u2 at low.
	_, err = s.UpdateRisk(ctx, "u2", fullDetection("det-2", "u2", "s3"), func(st *store.RiskState) error {
		st.UserLevel = model.RiskLow
		return nil
	})
	must(t, "UpdateRisk u2", err)
	users, err := s.ListRiskyUsers(ctx, store.RiskLevelFilter{})
	must(t, "ListRiskyUsers", err)
	if len(users) != 2 || users[0].ID != "u1" || users[1].ID != "u2" {
		t.Errorf("risky users: %v, want u1 (high) then u2 (low)", userIDs(users))
	}
	if users, _ := s.ListRiskyUsers(ctx, store.RiskLevelFilter{Levels: []string{model.RiskLow}}); len(users) != 1 || users[0].ID != "u2" {
		t.Errorf("risky users at low: %v", userIDs(users))
	}
	sess, err := s.ListRiskySessions(ctx, store.RiskLevelFilter{Levels: []string{model.RiskHigh}})
	must(t, "ListRiskySessions", err)
	if len(sess) != 1 || sess[0].SessionID != "s1" {
		t.Errorf("risky sessions: %+v", sess)
	}
	ds, err := s.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: "u1"})
	must(t, "ListRiskDetections", err)
	if len(ds) != 1 || ds[0].ID != "det-1" {
		t.Errorf("detections of u1: %v", ds)
	}
	if ds, _ := s.ListRiskDetections(ctx, store.RiskDetectionFilter{SessionID: "s3"}); len(ds) != 1 || ds[0].ID != "det-2" {
		t.Errorf("detections of s3: %v", ds)
	}
	if _, err := s.GetRiskDetection(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRiskDetection(missing): %v", err)
	}
}

func userIDs(us []*model.User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.ID)
	}
	return out
}

// testRiskDuplicate: a detection id is unique across the store. The second
// UpdateRisk with it is ErrAlreadyExists, does not call fn and changes
// nothing; an UpdateRisk whose fn fails stores nothing (not even its
// detection); a user that does not exist is ErrNotFound.
func testRiskDuplicate(t *testing.T, s store.Store) {
	riskUser(t, s, "u1", "s1")
	riskUser(t, s, "u2")
	_, err := s.UpdateRisk(ctx, "u1", fullDetection("det-1", "u1", "s1"), func(st *store.RiskState) error {
		st.UserLevel = model.RiskMedium
		return nil
	})
	must(t, "UpdateRisk", err)
	called := false
	// The same id for another user too: the id is the key, not (user, id).
	for _, user := range []string{"u1", "u2"} {
		_, err = s.UpdateRisk(ctx, user, fullDetection("det-1", user, ""), func(st *store.RiskState) error {
			called = true
			st.UserLevel = model.RiskHigh
			return nil
		})
		if !errors.Is(err, store.ErrAlreadyExists) || called {
			t.Fatalf("repeat for %s: err %v called %v, want ErrAlreadyExists without fn", user, err, called)
		}
	}
	if u, _ := s.GetUser(ctx, "u1"); u.RiskLevel != model.RiskMedium {
		t.Errorf("level after repeat: %q", u.RiskLevel)
	}
	boom := errors.New("boom")
	_, err = s.UpdateRisk(ctx, "u1", fullDetection("det-2", "u1", "s1"), func(st *store.RiskState) error {
		st.UserLevel = model.RiskHigh
		st.Sessions["s1"] = &model.SessionRisk{Level: model.RiskHigh}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if _, err := s.GetRiskDetection(ctx, "det-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("detection of a rolled-back UpdateRisk: %v", err)
	}
	if _, err := s.GetSessionRisk(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session risk of a rolled-back UpdateRisk: %v", err)
	}
	if h, _ := s.RiskHistory(ctx, "u1", "", 0); len(h) != 1 {
		t.Errorf("history after rollback: %d rows, want 1", len(h))
	}
	_, err = s.UpdateRisk(ctx, "ghost", fullDetection("det-3", "ghost", ""), func(*store.RiskState) error { return nil })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateRisk(missing user): %v, want ErrNotFound", err)
	}
	if _, err := s.GetRiskDetection(ctx, "det-3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("detection for a missing user stored: %v", err)
	}
}

// testRiskStates: fn takes detections out of the active state (and marks
// them handled); they are saved and no longer loaded as active. The user's
// level none is stored as before identity's "" (and read back as none),
// and the ids handed to pending events name the levels that changed.
func testRiskStates(t *testing.T, s store.Store) {
	riskUser(t, s, "u1", "s1")
	for i, id := range []string{"a", "b", "c"} {
		d := fullDetection(id, "u1", "s1")
		d.DetectedAt = at(time.Duration(i) * time.Minute)
		_, err := s.UpdateRisk(ctx, "u1", d, func(st *store.RiskState) error {
			st.UserLevel = model.RiskHigh
			st.Sessions["s1"] = &model.SessionRisk{Level: model.RiskHigh}
			return nil
		})
		must(t, "UpdateRisk", err)
	}
	var ids []string
	ev := pendingEvent("ev-risk-1", model.EventUserRiskChanged, "u1")
	ectx := store.WithEvents(ctx, func(got []string) []*model.Event {
		ids = append([]string(nil), got...)
		return []*model.Event{ev}
	})
	_, err := s.UpdateRisk(ectx, "u1", nil, func(st *store.RiskState) error {
		if len(st.Active) != 3 || st.Active[0].ID != "a" || st.Active[2].ID != "c" || st.Added != nil {
			return fmt.Errorf("active %d (oldest first), added %v", len(st.Active), st.Added)
		}
		st.Active[0].State, st.Active[0].StateReason, st.Active[0].StateActor, st.Active[0].StateAt =
			model.DetectionDismissed, "false positive", "admin-1", at(time.Hour)
		st.Active[1].Handled = true
		st.UserLevel = model.RiskNone
		st.Sessions["s1"].Level = model.RiskLow
		return nil
	})
	must(t, "UpdateRisk dismiss", err)
	sort.Strings(ids)
	if !reflect.DeepEqual(ids, []string{"session:s1", "user:u1"}) {
		t.Errorf("pending event ids %v", ids)
	}
	if !store.EventStored(ectx, ev) {
		t.Errorf("the pending event was not committed with the change")
	}
	a, _ := s.GetRiskDetection(ctx, "a")
	if a.State != model.DetectionDismissed || a.StateReason != "false positive" || a.StateActor != "admin-1" || !nt(a.StateAt).Equal(nt(at(time.Hour))) {
		t.Errorf("dismissed detection %+v", a)
	}
	if b, _ := s.GetRiskDetection(ctx, "b"); !b.Handled || b.State != model.DetectionActive {
		t.Errorf("handled detection %+v", b)
	}
	u, _ := s.GetUser(ctx, "u1")
	if u.RiskLevel != "" {
		t.Errorf("users.risk_level for none: %q, want \"\"", u.RiskLevel)
	}
	_, err = s.UpdateRisk(ctx, "u1", nil, func(st *store.RiskState) error {
		if st.UserLevel != model.RiskNone || len(st.Active) != 2 || st.Sessions["s1"].Level != model.RiskLow {
			return fmt.Errorf("reloaded: level %q, active %d, session %+v", st.UserLevel, len(st.Active), st.Sessions["s1"])
		}
		return nil
	})
	must(t, "UpdateRisk reload", err)
	if act, _ := s.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: "u1", ActiveOnly: true}); len(act) != 2 {
		t.Errorf("active detections: %d, want 2", len(act))
	}
	// Unchanged levels record no history and hand no ids.
	ids = []string{"x"}
	ectx = store.WithEvents(ctx, func(got []string) []*model.Event { ids = got; return nil })
	_, err = s.UpdateRisk(ectx, "u1", nil, func(*store.RiskState) error { return nil })
	must(t, "UpdateRisk no-op", err)
	if len(ids) != 0 {
		t.Errorf("ids of a no-op: %v", ids)
	}
}

// testRiskConcurrent: concurrent UpdateRisk calls of one user are
// serialised (each sees the detections committed before it: no lost
// update, as a dismissal racing a new detection needs), and of concurrent
// inserts of one detection id exactly one wins (two instances consuming
// the same event).
func testRiskConcurrent(t *testing.T, s store.Store) {
	riskUser(t, s, "u1", "s1")
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen []int
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var count int
			_, err := s.UpdateRisk(ctx, "u1", fullDetection(fmt.Sprintf("d%d", i), "u1", "s1"), func(st *store.RiskState) error {
				count = len(st.Active)
				st.UserLevel = model.RiskLevel(len(st.Active) % 4)
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			seen = append(seen, count)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent UpdateRisk: %v", errs)
	}
	sort.Ints(seen)
	for i, c := range seen {
		if c != i+1 {
			t.Fatalf("active counts seen %v, want 1..%d: an update saw a stale state", seen, n)
		}
	}
	var wins, dups int
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateRisk(ctx, "u1", fullDetection("same", "u1", "s1"), func(*store.RiskState) error { return nil })
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrAlreadyExists):
				dups++
			default:
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || dups != n-1 || len(errs) > 0 {
		t.Errorf("one id inserted concurrently: %d wins, %d repeats, errors %v", wins, dups, errs)
	}
}

// testRiskExpiriesPurge: RiskExpiries names the users with an active
// detection past its expiry; PurgeRisk removes what belongs to nothing any
// more and old inactive records, never an active detection.
func testRiskExpiriesPurge(t *testing.T, s store.Store) {
	riskUser(t, s, "u1", "s1")
	riskUser(t, s, "u2", "s2")
	riskUser(t, s, "u3")
	add := func(user, id, session string, expires time.Time) {
		d := fullDetection(id, user, session)
		d.ExpiresAt = expires
		_, err := s.UpdateRisk(ctx, user, d, func(st *store.RiskState) error {
			st.UserLevel = model.RiskLow
			if session != "" {
				st.Sessions[session] = &model.SessionRisk{Level: model.RiskLow}
			}
			return nil
		})
		must(t, "UpdateRisk", err)
	}
	add("u1", "e1", "s1", at(time.Hour))
	add("u2", "e2", "s2", at(3*time.Hour))
	add("u3", "e3", "", time.Time{}) // never expires
	got, err := s.RiskExpiries(ctx, at(2*time.Hour), 0)
	must(t, "RiskExpiries", err)
	if !reflect.DeepEqual(got, []string{"u1"}) {
		t.Errorf("expiries at +2h: %v, want [u1]", got)
	}
	if got, _ := s.RiskExpiries(ctx, at(100*time.Hour), 0); !reflect.DeepEqual(got, []string{"u1", "u2"}) {
		t.Errorf("expiries at +100h: %v, want [u1 u2]", got)
	}
	// u1's detection stops counting; u2 and its session go away.
	_, err = s.UpdateRisk(ctx, "u1", nil, func(st *store.RiskState) error {
		st.Active[0].State, st.Active[0].StateAt = model.DetectionExpired, at(time.Hour)
		return nil
	})
	must(t, "UpdateRisk expire", err)
	must(t, "RevokeSession", func() error { _, err := s.RevokeSession(ctx, "s2", at(0), "x"); return err }())
	must(t, "DeleteUser", s.DeleteUser(ctx, "u2"))
	must(t, "PurgeExpired", s.PurgeExpired(ctx, at(1000*time.Hour))) // sessions past their lifetime go
	n, err := s.PurgeRisk(ctx, at(10*24*time.Hour))
	must(t, "PurgeRisk", err)
	if n == 0 {
		t.Errorf("PurgeRisk deleted nothing")
	}
	if _, err := s.GetRiskDetection(ctx, "e2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("detection of a deleted user kept: %v", err)
	}
	if _, err := s.GetSessionRisk(ctx, "s2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("risk of a deleted session kept: %v", err)
	}
	if _, err := s.GetRiskDetection(ctx, "e1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old expired detection kept: %v", err)
	}
	if _, err := s.GetRiskDetection(ctx, "e3"); err != nil {
		t.Errorf("active detection purged: %v", err)
	}
}

// testRiskRevoke: a revocation fn sets (RiskState.Revoke) commits with
// the level: every unrevoked session of the user (no bound), or those the
// bound takes and its subject; their refresh tokens go too; the pending
// events' builder runs after it, sees Revoked and gets "revoked:ID" after
// the levels' ids. An error from fn revokes nothing.
func testRiskRevoke(t *testing.T, s store.Store) {
	riskUser(t, s, "u1", "s1", "s2")
	riskUser(t, s, "u2", "s3", "s4")
	for _, sid := range []string{"s1", "s2", "s3", "s4"} {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("rt-"+sid, sid)))
	}
	live := func(sid string) bool {
		t.Helper()
		se, err := s.GetSession(ctx, sid)
		must(t, "GetSession", err)
		_, rterr := s.GetRefreshToken(ctx, []byte("rt-"+sid))
		if se.RevokedAt.IsZero() != (rterr == nil) {
			t.Errorf("session %s: revoked at %v, refresh token %v", sid, se.RevokedAt, rterr)
		}
		return se.RevokedAt.IsZero()
	}

	// fn fails: nothing.
	boom := errors.New("boom")
	_, err := s.UpdateRisk(ctx, "u1", fullDetection("det-r0", "u1", "s1"), func(st *store.RiskState) error {
		st.UserLevel = model.RiskHigh
		st.Revoke = &store.UserRevocation{At: at(time.Hour), Cause: "user_risk"}
		return boom
	})
	if !errors.Is(err, boom) || !live("s1") || !live("s2") {
		t.Fatalf("UpdateRisk with a failing fn: %v", err)
	}

	var rev *store.UserRevocation
	var gotIDs []string
	var built []*model.Event
	ectx := store.WithEvents(ctx, func(ids []string) []*model.Event {
		gotIDs, built = ids, nil
		for _, id := range rev.Revoked {
			built = append(built, &model.Event{ID: "ev-rev-" + id, Type: model.EventSessionRevoked, Time: at(time.Hour),
				Actor: "system", UserID: "u1", SessionID: id, Reason: "user_risk", Outcome: model.OutcomeSuccess})
		}
		return built
	})
	st, err := s.UpdateRisk(ectx, "u1", fullDetection("det-r1", "u1", "s1"), func(st *store.RiskState) error {
		st.UserLevel = model.RiskHigh
		st.Cause = store.RiskCause{Reason: "token_replay_wrong_key", Actor: "system", At: at(time.Hour)}
		rev = &store.UserRevocation{At: at(time.Hour), Cause: "user_risk"}
		st.Revoke = rev
		return nil
	})
	must(t, "UpdateRisk with a revocation", err)
	if !reflect.DeepEqual(st.Revoke.Revoked, []string{"s1", "s2"}) || !reflect.DeepEqual(gotIDs, []string{"user:u1", "revoked:s1", "revoked:s2"}) {
		t.Errorf("revoked %v, builder ids %v", st.Revoke.Revoked, gotIDs)
	}
	if live("s1") || live("s2") || !live("s3") {
		t.Error("every session of u1, and only those, should be revoked")
	}
	if se, _ := s.GetSession(ctx, "s1"); se.RevokeCause != "user_risk" || !nt(se.RevokedAt).Equal(nt(at(time.Hour))) {
		t.Errorf("s1 revoked at %v for %q", se.RevokedAt, se.RevokeCause)
	}
	if len(built) != 2 || !store.EventStored(ectx, built[0]) || !store.EventStored(ectx, built[1]) {
		t.Errorf("the revocation's events not committed with it: %v", built)
	}

	// A bound before the sessions' creation: only the subject.
	b := &store.RemediationBound{Activity: at(-time.Hour), Until: at(-time.Second), Subject: "s4"}
	st, err = s.UpdateRisk(ctx, "u2", nil, func(st *store.RiskState) error {
		st.UserLevel = model.RiskHigh
		st.Revoke = &store.UserRevocation{At: at(time.Hour), Cause: "user_risk", Bound: b}
		return nil
	})
	must(t, "UpdateRisk with a bounded revocation", err)
	if !reflect.DeepEqual(st.Revoke.Revoked, []string{"s4"}) || !nt(b.Applied).Equal(nt(at(-time.Second))) || !live("s3") || live("s4") {
		t.Errorf("bounded revocation: revoked %v, applied %v", st.Revoke.Revoked, b.Applied)
	}
	if u, _ := s.GetUser(ctx, "u2"); u.RiskLevel != model.RiskHigh {
		t.Errorf("u2 level %q", u.RiskLevel)
	}
}
