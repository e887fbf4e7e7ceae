package storetest

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// storedEvents returns every stored event by id, and fails on a repeated
// id.
func storedEvents(t *testing.T, s store.Store) map[string]*store.StoredEvent {
	t.Helper()
	got, err := s.EventsAfter(ctx, 0, 1000)
	must(t, "EventsAfter", err)
	out := map[string]*store.StoredEvent{}
	for _, e := range got {
		if out[e.ID] != nil {
			t.Fatalf("event %s stored twice", e.ID)
		}
		out[e.ID] = e
	}
	return out
}

// pendingEvent is a complete event (as a service stamps it) with its own
// id.
func pendingEvent(id string, typ model.EventType, user string) *model.Event {
	e := fullEvent(typ, user, "", "", at(time.Hour))
	e.ID = id
	return e
}

// testEventWithChange checks the writes that commit a change together
// with its domain event (store.WithEvent): with a pending event the write
// appends it in its transaction, exactly once, and reports it through
// EventStored; a failing write appends nothing; a write without a pending
// event appends nothing; and the change and the append succeed or fail
// together.
func testEventWithChange(t *testing.T, s store.Store) {
	for _, u := range []*model.User{fullUser("u1", "alice"), fullUser("u2", "bob"), fullUser("u3", "carol")} {
		u.Disabled, u.RiskLevel = false, ""
		must(t, "CreateUser", s.CreateUser(ctx, u))
	}
	for _, se := range []*model.Session{fullSession("s1", "u1"), fullSession("s2", "u1"), fullSession("s3", "u2"), fullSession("s4", "u2")} {
		must(t, "CreateSession", s.CreateSession(ctx, se))
	}
	rt := fullRefresh("s4-bound", "s4")
	rt.DeviceID = "d1"
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
	must(t, "CreateDevice", s.CreateDevice(ctx, fullDevice("d1", "u2", "jkt-d1")))

	// wantStored checks that e was committed by the write made with ectx
	// (stored true) or not at all, and that the write added n events.
	before := len(storedEvents(t, s))
	wantStored := func(t *testing.T, what string, ectx context.Context, e *model.Event, stored bool, n int) {
		t.Helper()
		if got := store.EventStored(ectx, e); got != stored {
			t.Errorf("%s: EventStored = %v, want %v", what, got, stored)
		}
		evs := storedEvents(t, s)
		if len(evs)-before != n {
			t.Errorf("%s: %d events appended, want %d", what, len(evs)-before, n)
		}
		before = len(evs)
		got := evs[e.ID]
		switch {
		case stored && got == nil:
			t.Errorf("%s: event %s not in the events table", what, e.ID)
		case stored:
			same(t, what+": stored event", &got.Event, e, normEvent)
		case got != nil:
			t.Errorf("%s: event %s in the events table, want none", what, e.ID)
		}
	}

	t.Run("UpdateUser", func(t *testing.T) {
		e := pendingEvent("ev-disable", model.EventUserDisabled, "u1")
		ectx := store.WithEvent(ctx, e)
		if store.EventStored(ectx, e) {
			t.Fatal("EventStored before any write")
		}
		u, err := s.UpdateUser(ectx, "u1", func(u *model.User) error { u.Disabled = true; return nil })
		must(t, "UpdateUser with an event", err)
		if !u.Disabled {
			t.Error("UpdateUser with an event: user not disabled")
		}
		wantStored(t, "UpdateUser with an event", ectx, e, true, 1)
		if store.EventStored(ectx, &model.Event{ID: e.ID}) || store.EventStored(ctx, e) {
			t.Error("EventStored for another pointer or without the pending event")
		}
		// The event is taken by the first write: another write made with
		// the same context (a bus subscriber's) does not append it again.
		_, err = s.UpdateUser(ectx, "u1", func(u *model.User) error { u.DisplayName = "again"; return nil })
		must(t, "UpdateUser again with the same context", err)
		wantStored(t, "UpdateUser again with the same context", ectx, e, true, 0)
		// Without a pending event nothing is appended.
		_, err = s.UpdateUser(ctx, "u1", func(u *model.User) error { u.DisplayName = "plain"; return nil })
		must(t, "UpdateUser without an event", err)
		wantStored(t, "UpdateUser without an event", ctx, &model.Event{ID: "ev-none"}, false, 0)
	})

	t.Run("RevokeClientGrant", func(t *testing.T) {
		e := pendingEvent("ev-grant", model.EventTokenRevoked, "u1")
		ectx := store.WithEvent(ctx, e)
		fresh, err := s.RevokeClientGrant(ectx, "s1", "client-1", "at-revoked:jti-1", at(time.Hour))
		must(t, "RevokeClientGrant", err)
		if !fresh {
			t.Error("RevokeClientGrant: not fresh")
		}
		wantStored(t, "RevokeClientGrant with an event", ectx, e, true, 1)
		// Again: nothing new, so an event that records only a change is
		// not recorded.
		e = pendingEvent("ev-grant-again", model.EventTokenRevoked, "u1")
		ectx = store.WithEventFunc(ctx, e, func(ids []string) bool { return len(ids) > 0 })
		fresh, err = s.RevokeClientGrant(ectx, "s1", "client-1", "at-revoked:jti-1", at(time.Hour))
		must(t, "RevokeClientGrant again", err)
		if fresh {
			t.Error("RevokeClientGrant again: fresh")
		}
		wantStored(t, "RevokeClientGrant again", ectx, e, false, 0)
	})

	t.Run("RefreshTokens", func(t *testing.T) {
		must(t, "CreateUser", s.CreateUser(ctx, fullUser("u-rt", "dave")))
		must(t, "CreateSession", s.CreateSession(ctx, fullSession("s-rt", "u-rt")))

		e := pendingEvent("ev-rt-issued", model.EventTokenIssued, "u-rt")
		ectx := store.WithEvent(ctx, e)
		must(t, "CreateRefreshToken with an event", s.CreateRefreshToken(ectx, fullRefresh("rt-a", "s-rt")))
		wantStored(t, "CreateRefreshToken with an event", ectx, e, true, 1)

		e = pendingEvent("ev-rt-taken", model.EventTokenIssued, "u-rt")
		ectx = store.WithEvent(ctx, e)
		wantErr(t, "CreateRefreshToken of a taken hash", s.CreateRefreshToken(ectx, fullRefresh("rt-a", "s-rt")), store.ErrAlreadyExists)
		wantStored(t, "CreateRefreshToken of a taken hash", ectx, e, false, 0)

		e = pendingEvent("ev-rt-refreshed", model.EventTokenRefreshed, "u-rt")
		ectx = store.WithEvent(ctx, e)
		old, err := s.RotateRefreshToken(ectx, []byte("rt-a"), at(time.Hour), fullRefresh("rt-b", "s-rt"))
		must(t, "RotateRefreshToken with an event", err)
		if old == nil || old.RotatedAt.IsZero() {
			t.Errorf("RotateRefreshToken with an event: old record %+v", old)
		}
		wantStored(t, "RotateRefreshToken with an event", ectx, e, true, 1)

		// Reuse rotates nothing and records nothing (the caller records
		// the reuse with the session's revocation).
		e = pendingEvent("ev-rt-reused", model.EventTokenRefreshed, "u-rt")
		ectx = store.WithEvent(ctx, e)
		_, err = s.RotateRefreshToken(ectx, []byte("rt-a"), at(2*time.Hour), fullRefresh("rt-c", "s-rt"))
		wantErr(t, "RotateRefreshToken of a rotated token", err, store.ErrAlreadyUsed)
		wantStored(t, "RotateRefreshToken of a rotated token", ectx, e, false, 0)
		if _, err := s.GetRefreshToken(ctx, []byte("rt-c")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("successor of a reused token: %v, want ErrNotFound", err)
		}

		e = pendingEvent("ev-rt-missing", model.EventTokenRefreshed, "u-rt")
		ectx = store.WithEvent(ctx, e)
		_, err = s.RotateRefreshToken(ectx, []byte("rt-none"), at(time.Hour), fullRefresh("rt-d", "s-rt"))
		wantErr(t, "RotateRefreshToken of an unknown token", err, store.ErrNotFound)
		wantStored(t, "RotateRefreshToken of an unknown token", ectx, e, false, 0)

		// Several events take the transaction, in order.
		e1, e2 := pendingEvent("ev-rt-one", model.EventTokenRefreshed, "u-rt"), pendingEvent("ev-rt-two", model.EventTokenRefreshed, "u-rt")
		ectx = store.WithEvents(ctx, func([]string) []*model.Event { return []*model.Event{e1, e2} })
		_, err = s.RotateRefreshToken(ectx, []byte("rt-b"), at(time.Hour), fullRefresh("rt-e", "s-rt"))
		must(t, "RotateRefreshToken with two events", err)
		wantStored(t, "RotateRefreshToken with two events", ectx, e1, true, 2)
		if !store.EventStored(ectx, e2) {
			t.Error("RotateRefreshToken with two events: the second not stored")
		}
		if evs := storedEvents(t, s); evs["ev-rt-one"] == nil || evs["ev-rt-two"] == nil || evs["ev-rt-one"].Seq >= evs["ev-rt-two"].Seq {
			t.Error("RotateRefreshToken with two events: not appended in order")
		}

		e = pendingEvent("ev-rt-revoked", model.EventTokenRevoked, "u-rt")
		ectx = store.WithEvent(ctx, e)
		must(t, "DeleteRefreshToken with an event", s.DeleteRefreshToken(ectx, []byte("rt-e")))
		wantStored(t, "DeleteRefreshToken with an event", ectx, e, true, 1)
		e = pendingEvent("ev-rt-revoked-again", model.EventTokenRevoked, "u-rt")
		ectx = store.WithEvent(ctx, e)
		wantErr(t, "DeleteRefreshToken of a deleted token", s.DeleteRefreshToken(ectx, []byte("rt-e")), store.ErrNotFound)
		wantStored(t, "DeleteRefreshToken of a deleted token", ectx, e, false, 0)
	})

	t.Run("UpdateUserFails", func(t *testing.T) {
		e := pendingEvent("ev-missing", model.EventUserDisabled, "nobody")
		ectx := store.WithEvent(ctx, e)
		_, err := s.UpdateUser(ectx, "nobody", func(u *model.User) error { u.Disabled = true; return nil })
		wantErr(t, "UpdateUser of an unknown user", err, store.ErrNotFound)
		wantStored(t, "UpdateUser of an unknown user", ectx, e, false, 0)

		e = pendingEvent("ev-fn-error", model.EventUserDisabled, "u2")
		ectx = store.WithEvent(ctx, e)
		boom := errors.New("boom")
		_, err = s.UpdateUser(ectx, "u2", func(u *model.User) error { u.Disabled = true; return boom })
		wantErr(t, "UpdateUser whose function fails", err, boom)
		wantStored(t, "UpdateUser whose function fails", ectx, e, false, 0)

		e = pendingEvent("ev-conflict", model.EventUserUpdated, "u2")
		ectx = store.WithEvent(ctx, e)
		_, err = s.UpdateUser(ectx, "u2", func(u *model.User) error { u.Username = "alice"; return nil })
		wantErr(t, "UpdateUser to a taken username", err, store.ErrAlreadyExists)
		wantStored(t, "UpdateUser to a taken username", ectx, e, false, 0)
	})

	t.Run("Completion", func(t *testing.T) {
		// The completion function decides in the transaction: false
		// keeps the change and records nothing.
		e := pendingEvent("ev-unchanged", model.EventUserRiskChanged, "u2")
		ectx := store.WithEventFunc(ctx, e, func([]string) bool { return false })
		u, err := s.UpdateUser(ectx, "u2", func(u *model.User) error { u.DisplayName = "Bob B."; return nil })
		must(t, "UpdateUser with a dropped event", err)
		if u.DisplayName != "Bob B." {
			t.Error("UpdateUser with a dropped event: change not saved")
		}
		wantStored(t, "UpdateUser with a dropped event", ectx, e, false, 0)

		// It may complete the event from what the update saw.
		e = pendingEvent("ev-risk", model.EventUserRiskChanged, "u2")
		var prev string
		ectx = store.WithEventFunc(ctx, e, func(ids []string) bool {
			e.Data = map[string]string{"previous": prev, "level": "high"}
			return ids == nil
		})
		_, err = s.UpdateUser(ectx, "u2", func(u *model.User) error {
			prev, u.RiskLevel, u.RiskUpdatedAt = u.RiskLevel, "high", at(time.Hour)
			return nil
		})
		must(t, "UpdateUser with a completed event", err)
		wantStored(t, "UpdateUser with a completed event", ectx, e, true, 1)
	})

	t.Run("Sessions", func(t *testing.T) {
		e := pendingEvent("ev-revoke-one", model.EventSessionLoggedOut, "u1")
		var gotIDs []string
		ectx := store.WithEventFunc(ctx, e, func(ids []string) bool { gotIDs = ids; return ids != nil })
		revoked, err := s.RevokeSession(ectx, "s1", at(time.Hour), "logout")
		must(t, "RevokeSession with an event", err)
		if !revoked || !reflect.DeepEqual(gotIDs, []string{"s1"}) {
			t.Errorf("RevokeSession: revoked %v, completion got %v; want true, [s1]", revoked, gotIDs)
		}
		wantStored(t, "RevokeSession with an event", ectx, e, true, 1)

		// Revoked before: the completion gets no ids and may record nothing.
		e = pendingEvent("ev-revoke-again", model.EventSessionLoggedOut, "u1")
		gotIDs = []string{"not called"}
		ectx = store.WithEventFunc(ctx, e, func(ids []string) bool { gotIDs = ids; return ids != nil })
		revoked, err = s.RevokeSession(ectx, "s1", at(2*time.Hour), "logout")
		must(t, "RevokeSession of a revoked session", err)
		if revoked || gotIDs != nil {
			t.Errorf("RevokeSession of a revoked session: revoked %v, completion got %v; want false, nil", revoked, gotIDs)
		}
		wantStored(t, "RevokeSession of a revoked session", ectx, e, false, 0)

		e = pendingEvent("ev-revoke-missing", model.EventSessionRevoked, "u1")
		ectx = store.WithEvent(ctx, e)
		_, err = s.RevokeSession(ectx, "nope", at(time.Hour), "x")
		wantErr(t, "RevokeSession of an unknown session", err, store.ErrNotFound)
		wantStored(t, "RevokeSession of an unknown session", ectx, e, false, 0)

		// The completion function gets the ids revoked, sorted.
		e = pendingEvent("ev-revoke-all", model.EventUserSessionsRevoked, "u1")
		ectx = store.WithEventFunc(ctx, e, func(ids []string) bool {
			gotIDs = append([]string(nil), ids...)
			e.Data = map[string]string{"sessions_revoked": "1"}
			return true
		})
		ids, err := s.RevokeUserSessions(ectx, "u1", at(time.Hour), "admin_revoked")
		must(t, "RevokeUserSessions with an event", err)
		if want := []string{"s2"}; !reflect.DeepEqual(ids, want) || !reflect.DeepEqual(gotIDs, want) {
			t.Errorf("RevokeUserSessions: ids %v, completion got %v, want %v", ids, gotIDs, want)
		}
		wantStored(t, "RevokeUserSessions with an event", ectx, e, true, 1)

		e = pendingEvent("ev-revoke-device", model.EventDeviceLost, "u2")
		ectx = store.WithEventFunc(ctx, e, func(ids []string) bool { gotIDs = ids; return true })
		ids, err = s.RevokeDeviceSessions(ectx, "d1", at(time.Hour), "device_lost")
		must(t, "RevokeDeviceSessions with an event", err)
		if want := []string{"s4"}; !reflect.DeepEqual(ids, want) || !reflect.DeepEqual(gotIDs, want) {
			t.Errorf("RevokeDeviceSessions: ids %v, completion got %v, want %v", ids, gotIDs, want)
		}
		wantStored(t, "RevokeDeviceSessions with an event", ectx, e, true, 1)

		// Several events built from the ids, appended in order.
		must(t, "CreateSession", s.CreateSession(ctx, fullSession("s5", "u3")))
		must(t, "CreateSession", s.CreateSession(ctx, fullSession("s6", "u3")))
		var built []*model.Event
		ectx = store.WithEvents(ctx, func(ids []string) []*model.Event {
			built = nil
			for _, id := range ids {
				ev := pendingEvent("ev-each-"+id, model.EventSessionRevoked, "u3")
				ev.SessionID = id
				built = append(built, ev)
			}
			built = append(built, pendingEvent("ev-all-u3", model.EventUserSessionsRevoked, "u3"))
			return built
		})
		_, err = s.RevokeUserSessions(ectx, "u3", at(time.Hour), "admin_revoked")
		must(t, "RevokeUserSessions with events", err)
		if len(built) != 3 {
			t.Fatalf("RevokeUserSessions with events: built %d events, want 3", len(built))
		}
		stored := storedEvents(t, s)
		var seqs []int64
		for _, ev := range built {
			if !store.EventStored(ectx, ev) {
				t.Errorf("%s: EventStored false", ev.ID)
			}
			if got := stored[ev.ID]; got == nil {
				t.Errorf("%s not in the events table", ev.ID)
			} else {
				same(t, "event built from ids", &got.Event, ev, normEvent)
				seqs = append(seqs, got.Seq)
			}
		}
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Errorf("events appended out of order: seqs %v", seqs)
			}
		}
		if store.EventStored(ectx, pendingEvent("ev-all-u3", model.EventUserSessionsRevoked, "u3")) {
			t.Error("EventStored for another pointer")
		}
		wantStored(t, "RevokeUserSessions with events", ectx, built[2], true, 3)
	})

	t.Run("Device", func(t *testing.T) {
		e := pendingEvent("ev-device", model.EventDeviceDisabled, "u2")
		ectx := store.WithEvent(ctx, e)
		d, err := s.UpdateDevice(ectx, "d1", func(d *model.Device) error { d.Status = model.DeviceDisabled; return nil })
		must(t, "UpdateDevice with an event", err)
		if d.Status != model.DeviceDisabled {
			t.Error("UpdateDevice with an event: status not saved")
		}
		wantStored(t, "UpdateDevice with an event", ectx, e, true, 1)

		e = pendingEvent("ev-device-missing", model.EventDeviceDisabled, "u2")
		ectx = store.WithEvent(ctx, e)
		_, err = s.UpdateDevice(ectx, "nope", func(d *model.Device) error { return nil })
		wantErr(t, "UpdateDevice of an unknown device", err, store.ErrNotFound)
		wantStored(t, "UpdateDevice of an unknown device", ectx, e, false, 0)
	})

	t.Run("PolicyVersion", func(t *testing.T) {
		e := pendingEvent("ev-policy", model.EventAccessPolicyChanged, "")
		ectx := store.WithEvent(ctx, e)
		must(t, "CreatePolicyVersion with an event", s.CreatePolicyVersion(ectx, policyVersion(1)))
		wantStored(t, "CreatePolicyVersion with an event", ectx, e, true, 1)

		e = pendingEvent("ev-policy-taken", model.EventAccessPolicyChanged, "")
		ectx = store.WithEvent(ctx, e)
		wantErr(t, "CreatePolicyVersion of a taken number", s.CreatePolicyVersion(ectx, policyVersion(1)), store.ErrAlreadyExists)
		wantStored(t, "CreatePolicyVersion of a taken number", ectx, e, false, 0)
	})

	t.Run("DeleteUser", func(t *testing.T) {
		e := pendingEvent("ev-delete-missing", model.EventUserDeleted, "nobody")
		ectx := store.WithEvent(ctx, e)
		wantErr(t, "DeleteUser of an unknown user", s.DeleteUser(ectx, "nobody"), store.ErrNotFound)
		wantStored(t, "DeleteUser of an unknown user", ectx, e, false, 0)

		e = pendingEvent("ev-delete", model.EventUserDeleted, "u3")
		ectx = store.WithEvent(ctx, e)
		must(t, "DeleteUser with an event", s.DeleteUser(ectx, "u3"))
		wantStored(t, "DeleteUser with an event", ectx, e, true, 1)
	})
}

// testRotateRefreshTokenConcurrentEvents races rotations of one token,
// each with its own pending token.refreshed: exactly one rotates, and
// exactly its event is stored.
func testRotateRefreshTokenConcurrentEvents(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("old", "s1")))
	evs := make([]*model.Event, racers)
	ectxs := make([]context.Context, racers)
	for i := range racers {
		evs[i] = pendingEvent("ev-race-"+strconv.Itoa(i), model.EventTokenRefreshed, "u1")
		ectxs[i] = store.WithEvent(ctx, evs[i])
	}
	errs := race(func(i int) error {
		_, err := s.RotateRefreshToken(ectxs[i], []byte("old"), at(time.Duration(i+1)*time.Second),
			fullRefresh("next-"+strconv.Itoa(i), "s1"))
		return err
	})
	w := oneWinner(t, "concurrent RotateRefreshToken with events", errs, store.ErrAlreadyUsed)
	stored := storedEvents(t, s)
	if len(stored) != 1 {
		t.Errorf("%d events stored, want 1", len(stored))
	}
	for i := range racers {
		if got := store.EventStored(ectxs[i], evs[i]); got != (i == w) {
			t.Errorf("goroutine %d: EventStored %v, want %v", i, got, i == w)
		}
		if got := stored[evs[i].ID] != nil; got != (i == w) {
			t.Errorf("goroutine %d: event in the table %v, want %v", i, got, i == w)
		}
	}
}

// RunTokenEventAtomicity checks, as RunEventAtomicity does, the writes of
// the token endpoint that commit a refresh token's change with its event:
// a rotation, a new token and a deletion whose event the database refuses
// change nothing (the presented token stays the live one and can still be
// rotated), and the same writes with events the database accepts commit
// both, one event each, in order. The store's database must refuse every
// event whose Reason is RefusedAppend.
func RunTokenEventAtomicity(t *testing.T, s store.Store) {
	refused := func(id string, typ model.EventType) *model.Event {
		e := pendingEvent(id, typ, "u1")
		e.Reason = RefusedAppend
		return e
	}
	if _, err := s.AppendEvent(ctx, refused("probe", model.EventTokenRefreshed)); err == nil {
		t.Fatalf("AppendEvent with Reason %q succeeded: the database does not refuse it", RefusedAppend)
	}
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("rt-1", "s1")))
	wantLive := func(what string, live []string, gone ...string) {
		t.Helper()
		for _, h := range live {
			rt, err := s.GetRefreshToken(ctx, []byte(h))
			if err != nil || !rt.RotatedAt.IsZero() {
				t.Errorf("%s: %s should be live: %+v, %v", what, h, rt, err)
			}
		}
		for _, h := range gone {
			if _, err := s.GetRefreshToken(ctx, []byte(h)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: %s stored (%v), want none", what, h, err)
			}
		}
	}
	noEvents := func(what string) {
		t.Helper()
		if evs := storedEvents(t, s); len(evs) != 0 {
			t.Errorf("%s: %d events stored, want none", what, len(evs))
		}
	}
	refusedWrite := func(what string, e *model.Event, do func(context.Context) error) {
		t.Helper()
		ectx := store.WithEvent(ctx, e)
		err := do(ectx)
		if err == nil || errors.Is(err, store.ErrAlreadyUsed) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("%s with an event the database refuses: got %v, want a plain failure", what, err)
		}
		if store.EventStored(ectx, e) {
			t.Errorf("%s: EventStored after a failed append", what)
		}
	}

	refusedWrite("rotate", refused("r-rotate", model.EventTokenRefreshed), func(c context.Context) error {
		_, err := s.RotateRefreshToken(c, []byte("rt-1"), at(time.Hour), fullRefresh("rt-2", "s1"))
		return err
	})
	wantLive("refused rotation", []string{"rt-1"}, "rt-2")
	noEvents("refused rotation")

	refusedWrite("create", refused("r-create", model.EventTokenIssued), func(c context.Context) error {
		return s.CreateRefreshToken(c, fullRefresh("rt-new", "s1"))
	})
	wantLive("refused creation", []string{"rt-1"}, "rt-new")
	noEvents("refused creation")

	refusedWrite("delete", refused("r-delete", model.EventTokenRevoked), func(c context.Context) error {
		return s.DeleteRefreshToken(c, []byte("rt-1"))
	})
	wantLive("refused deletion", []string{"rt-1"})
	noEvents("refused deletion")

	// The token that was not rotated is still the one to present: the
	// refused attempt did not use it up.
	var accepted []*model.Event
	accept := func(what string, e *model.Event, do func(context.Context) error) {
		t.Helper()
		ectx := store.WithEvent(ctx, e)
		must(t, what, do(ectx))
		if !store.EventStored(ectx, e) {
			t.Errorf("%s: EventStored false", what)
		}
		accepted = append(accepted, e)
	}
	accept("rotate", pendingEvent("a-rotate", model.EventTokenRefreshed, "u1"), func(c context.Context) error {
		_, err := s.RotateRefreshToken(c, []byte("rt-1"), at(time.Hour), fullRefresh("rt-2", "s1"))
		return err
	})
	accept("create", pendingEvent("a-create", model.EventTokenIssued, "u1"), func(c context.Context) error {
		return s.CreateRefreshToken(c, fullRefresh("rt-new", "s1"))
	})
	accept("delete", pendingEvent("a-delete", model.EventTokenRevoked, "u1"), func(c context.Context) error {
		return s.DeleteRefreshToken(c, []byte("rt-new"))
	})
	wantLive("accepted writes", []string{"rt-2"}, "rt-new")
	if rt, err := s.GetRefreshToken(ctx, []byte("rt-1")); err != nil || rt.RotatedAt.IsZero() {
		t.Errorf("rt-1 after the accepted rotation: %+v, %v; want rotated", rt, err)
	}
	got, err := s.EventsAfter(ctx, 0, 100)
	must(t, "EventsAfter", err)
	if len(got) != len(accepted) {
		t.Fatalf("%d events stored, want %d", len(got), len(accepted))
	}
	for i, e := range got {
		if e.ID != accepted[i].ID {
			t.Errorf("event %d is %s, want %s (in the order of the writes)", i, e.ID, accepted[i].ID)
		}
	}
	testRedeemCodeRefusedEvent(t, s, refused)
}

// RefusedAppend is the Reason of the events RunEventAtomicity makes the
// store append in vain: the backend's test installs a trigger that makes
// its database refuse to insert them into the events table.
const RefusedAppend = "storetest-refused-append"

// RunEventAtomicity checks that a change and its pending event
// (store.WithEvent) commit together: when the event's append fails
// inside the write's transaction, the change is rolled back with it (a
// disable and a risk change of a user, the revocation of one session and
// of all of a user's sessions, a device's status, a policy version, the
// deletion of a user), and the same write with an event the database
// accepts commits both. The store's database must refuse every event
// whose Reason is RefusedAppend (a trigger the backend's test installs
// before calling it); a store whose appends cannot fail on demand has no
// other way to show this.
func RunEventAtomicity(t *testing.T, s store.Store) {
	refused := func(id string, typ model.EventType) *model.Event {
		e := pendingEvent(id, typ, "u1")
		e.Reason = RefusedAppend
		return e
	}
	if _, err := s.AppendEvent(ctx, refused("probe", model.EventUserUpdated)); err == nil {
		t.Fatalf("AppendEvent with Reason %q succeeded: the database does not refuse it", RefusedAppend)
	}
	u := fullUser("u1", "alice")
	u.Disabled, u.RiskLevel, u.RiskUpdatedAt = false, "", time.Time{}
	must(t, "CreateUser", s.CreateUser(ctx, u))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("s1-rt", "s1")))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s2", "u1")))
	d := fullDevice("d1", "u1", "jkt-d1")
	must(t, "CreateDevice", s.CreateDevice(ctx, d))

	// Each write, first with an event the database refuses, then with one
	// it accepts.
	writes := []struct {
		name string
		typ  model.EventType
		do   func(ctx context.Context) error
	}{
		{"disable user", model.EventUserDisabled, func(ctx context.Context) error {
			_, err := s.UpdateUser(ctx, "u1", func(u *model.User) error { u.Disabled = true; return nil })
			return err
		}},
		{"change user risk", model.EventUserRiskChanged, func(ctx context.Context) error {
			_, err := s.UpdateUser(ctx, "u1", func(u *model.User) error {
				u.RiskLevel, u.RiskUpdatedAt = "high", at(time.Hour)
				return nil
			})
			return err
		}},
		{"revoke session", model.EventSessionRevoked, func(ctx context.Context) error {
			_, err := s.RevokeSession(ctx, "s1", at(time.Hour), "admin_revoked")
			return err
		}},
		{"revoke user sessions", model.EventUserSessionsRevoked, func(ctx context.Context) error {
			_, err := s.RevokeUserSessions(ctx, "u1", at(time.Hour), "admin_revoked")
			return err
		}},
		{"disable device", model.EventDeviceDisabled, func(ctx context.Context) error {
			_, err := s.UpdateDevice(ctx, "d1", func(d *model.Device) error { d.Status = model.DeviceDisabled; return nil })
			return err
		}},
		{"create policy version", model.EventAccessPolicyChanged, func(ctx context.Context) error {
			return s.CreatePolicyVersion(ctx, policyVersion(1))
		}},
		{"delete user", model.EventUserDeleted, func(ctx context.Context) error {
			return s.DeleteUser(ctx, "u1")
		}},
	}
	for i, w := range writes {
		e := refused("refused-"+strconv.Itoa(i), w.typ)
		ectx := store.WithEvent(ctx, e)
		if err := w.do(ectx); err == nil {
			t.Fatalf("%s with an event the database refuses: got nil, want an error", w.name)
		}
		if store.EventStored(ectx, e) {
			t.Errorf("%s: EventStored after a failed append", w.name)
		}
		// Nothing changed: not this write, nor (for the later ones) the
		// ones before, which were refused too.
		got, err := s.GetUser(ctx, "u1")
		must(t, w.name+": GetUser", err)
		same(t, w.name+": user after the refused writes", got, u, normUser)
		for _, sid := range []string{"s1", "s2"} {
			se, err := s.GetSession(ctx, sid)
			must(t, w.name+": GetSession", err)
			if !se.RevokedAt.IsZero() {
				t.Errorf("%s: session %s revoked although the event was refused", w.name, sid)
			}
		}
		if _, err := s.GetRefreshToken(ctx, []byte("s1-rt")); err != nil {
			t.Errorf("%s: refresh token of s1 after the refused writes: %v", w.name, err)
		}
		gd, err := s.GetDevice(ctx, "d1")
		must(t, w.name+": GetDevice", err)
		same(t, w.name+": device after the refused writes", gd, d, normDevice)
		if n, err := s.LatestPolicyVersionNumber(ctx); err != nil || n != 0 {
			t.Errorf("%s: latest policy version %d, %v; want 0", w.name, n, err)
		}
		if evs := storedEvents(t, s); len(evs) != 0 {
			t.Errorf("%s: %d events stored, want none", w.name, len(evs))
		}
	}
	for i, w := range writes {
		e := pendingEvent("accepted-"+strconv.Itoa(i), w.typ, "u1")
		ectx := store.WithEvent(ctx, e)
		must(t, w.name+" with an event the database accepts", w.do(ectx))
		if !store.EventStored(ectx, e) {
			t.Errorf("%s: EventStored false after the write", w.name)
		}
	}
	if evs := storedEvents(t, s); len(evs) != len(writes) {
		t.Errorf("%d events stored, want %d", len(evs), len(writes))
	}
}
