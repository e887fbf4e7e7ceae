package session_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is a session service over a real SQLite store and an in-process
// bus whose first subscriber persists events as the audit persister does
// (skipping those committed with their change), and whose second records
// what was published and whether it was committed with its change.
type env struct {
	t   *testing.T
	ctx context.Context
	st  store.Store
	b   *bus.Local
	svc *session.Service

	mu        sync.Mutex
	published []model.Event
	withTx    map[string]bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"), sqlite.WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, ctx: ctx, st: st, b: bus.NewLocal(), withTx: map[string]bool{}}
	e.b.Subscribe("audit", func(ctx context.Context, ev *model.Event) error {
		if store.EventStored(ctx, ev) {
			return nil
		}
		_, err := st.AppendEvent(ctx, ev)
		return err
	})
	e.b.Subscribe("watch", func(ctx context.Context, ev *model.Event) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.published = append(e.published, *ev)
		e.withTx[ev.ID] = store.EventStored(ctx, ev)
		return nil
	})
	e.svc = session.New(session.Options{Store: st, Bus: e.b, Now: func() time.Time { return t0.Add(time.Hour) }})
	return e
}

// session stores an active session of user with a refresh token (bound
// to device when not empty).
func (e *env) session(id, user, device string) {
	e.t.Helper()
	if err := e.st.CreateSession(e.ctx, &model.Session{ID: id, UserID: user, AuthTime: t0, AMR: []string{"pwd"},
		CreatedAt: t0, LastSeen: t0, ExpiresAt: t0.Add(24 * time.Hour), IdleTimeout: 24 * time.Hour}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.CreateRefreshToken(e.ctx, &model.RefreshToken{Hash: []byte("rt-" + id), SessionID: id, ClientID: "web",
		UserID: user, DeviceID: device, AuthTime: t0, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
}

// stored returns the stored events of type typ.
func (e *env) stored(typ model.EventType) []*store.StoredEvent {
	e.t.Helper()
	evs, err := e.st.ListEvents(e.ctx, store.EventFilter{Types: []model.EventType{typ}, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// checkCommitted checks that every published event was committed with its
// change and is stored exactly as published.
func (e *env) checkCommitted() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	all, err := e.st.EventsAfter(e.ctx, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	byID := map[string]*store.StoredEvent{}
	for _, s := range all {
		byID[s.ID] = s
	}
	if len(all) != len(e.published) {
		e.t.Errorf("%d events stored, %d published", len(all), len(e.published))
	}
	for _, p := range e.published {
		if !e.withTx[p.ID] {
			e.t.Errorf("%s %s published without having been committed with its revocation", p.Type, p.ID)
		}
		s := byID[p.ID]
		if s == nil || s.Type != p.Type || s.SessionID != p.SessionID || s.Reason != p.Reason || s.Actor != p.Actor {
			e.t.Errorf("published %+v, stored %+v", p, s)
		}
		if p.ID == "" || p.Time.IsZero() || p.Outcome == "" {
			e.t.Errorf("not stamped: %+v", p)
		}
	}
}

func (e *env) cause(id string) string {
	e.t.Helper()
	se, err := e.st.GetSession(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return se.RevokeCause
}

func TestRevokeOnce(t *testing.T) {
	e := newEnv(t)
	e.session("s1", "u1", "")
	ctx := bus.WithOrigin(e.ctx, bus.Origin{IP: "192.0.2.7", UserAgent: "ua", CorrelationID: "corr-1"})
	revoked, err := e.svc.Revoke(ctx, "admin-1", "s1", model.CauseAdminRevoked)
	if err != nil || !revoked {
		t.Fatalf("Revoke = %v, %v; want true", revoked, err)
	}
	if c := e.cause("s1"); c != "admin_revoked" {
		t.Errorf("revoke cause %q", c)
	}
	if _, err := e.st.GetRefreshToken(e.ctx, []byte("rt-s1")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refresh token of the revoked session: %v", err)
	}
	evs := e.stored(model.EventSessionRevoked)
	if len(evs) != 1 {
		t.Fatalf("%d session.revoked", len(evs))
	}
	if ev := evs[0]; ev.Actor != "admin-1" || ev.UserID != "u1" || ev.SessionID != "s1" || ev.Reason != "admin_revoked" ||
		ev.IP != "192.0.2.7" || ev.CorrelationID != "corr-1" || ev.Outcome != model.OutcomeSuccess {
		t.Errorf("session.revoked %+v", ev.Event)
	}
	// Again: nothing changes, nothing is recorded.
	revoked, err = e.svc.Revoke(ctx, "admin-2", "s1", model.CauseLogout)
	if err != nil || revoked {
		t.Errorf("Revoke again = %v, %v; want false", revoked, err)
	}
	if c := e.cause("s1"); c != "admin_revoked" {
		t.Errorf("revoke cause after a second revocation %q", c)
	}
	if _, err := e.svc.Revoke(ctx, "admin-1", "nope", model.CauseAdminRevoked); !errors.Is(err, session.ErrNotFound) || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Revoke of an unknown session: %v", err)
	}
	if _, err := e.svc.Logout(ctx, "nope", "web"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Logout of an unknown session: %v", err)
	}
	e.checkCommitted()
}

// Many requests finding the reuse of one refresh token at once: the
// session is revoked once, with one theft signal and one session.revoked.
func TestRefreshTokenReusedConcurrently(t *testing.T) {
	e := newEnv(t)
	e.session("s1", "u1", "")
	rt := &model.RefreshToken{SessionID: "s1", UserID: "u1", ClientID: "spa"}
	const n = 30
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			revoked, err := e.svc.RefreshTokenReused(e.ctx, "spa", rt, "jkt-1")
			if err != nil {
				t.Error(err)
			}
			if revoked {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d calls revoked the session, want 1", wins)
	}
	reuse, revoked := e.stored(model.EventRefreshReuseDetected), e.stored(model.EventSessionRevoked)
	if len(reuse) != 1 || len(revoked) != 1 {
		t.Fatalf("%d reuse events and %d session.revoked, want 1 each", len(reuse), len(revoked))
	}
	if ev := reuse[0]; ev.Outcome != model.OutcomeFailure || ev.Reason != "refresh_reuse" || ev.ClientID != "spa" ||
		ev.Actor != "spa" || ev.SessionID != "s1" || ev.UserID != "u1" || ev.Data["jkt"] != "jkt-1" {
		t.Errorf("reuse event %+v", ev.Event)
	}
	if ev := revoked[0]; ev.Actor != "system" || ev.Reason != "refresh_reuse" || ev.SessionID != "s1" || ev.Seq < reuse[0].Seq {
		t.Errorf("session.revoked %+v (seq %d, reuse seq %d)", ev.Event, ev.Seq, reuse[0].Seq)
	}
	if c := e.cause("s1"); c != "refresh_reuse" {
		t.Errorf("revoke cause %q", c)
	}
	e.checkCommitted()
}

// Each single-session revocation records its own event type and reason.
func TestRevocationEvents(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"s1", "s2", "s3"} {
		e.session(id, "u1", "")
	}
	if ok, err := e.svc.Logout(e.ctx, "s1", "web"); err != nil || !ok {
		t.Fatalf("Logout = %v, %v", ok, err)
	}
	if ok, err := e.svc.AccessTokenRevoked(e.ctx, "web", "u1", "s2", "jti-1", t0.Add(10*time.Minute)); err != nil || !ok {
		t.Fatalf("AccessTokenRevoked = %v, %v", ok, err)
	}
	if ok, err := e.svc.CodeReused(e.ctx, "web", &model.AuthCode{SessionID: "s3", UserID: "u1", ClientID: "web"}); err != nil || !ok {
		t.Fatalf("CodeReused = %v, %v", ok, err)
	}
	// Again: nothing more is recorded.
	e.svc.Logout(e.ctx, "s1", "web")
	e.svc.AccessTokenRevoked(e.ctx, "web", "u1", "s2", "jti-1", t0.Add(10*time.Minute))
	e.svc.CodeReused(e.ctx, "web", &model.AuthCode{SessionID: "s3", UserID: "u1", ClientID: "web"})

	for _, c := range []struct {
		typ                       model.EventType
		sid, actor, reason, cause string
		outcome, client, tokenID  string
	}{
		{model.EventSessionLoggedOut, "s1", "u1", "user_logout", "logout", model.OutcomeSuccess, "web", ""},
		// The client's grant ends, not the session (cause stays empty).
		{model.EventTokenRevoked, "s2", "web", "client_revoked_access_token", "", model.OutcomeSuccess, "web", "jti-1"},
		{model.EventCodeReuseDetected, "s3", "web", "code_reuse", "code_reuse", model.OutcomeFailure, "web", ""},
	} {
		evs := e.stored(c.typ)
		if len(evs) != 1 {
			t.Errorf("%s: %d events, want 1", c.typ, len(evs))
			continue
		}
		ev := evs[0]
		if ev.SessionID != c.sid || ev.Actor != c.actor || ev.Reason != c.reason || ev.Outcome != c.outcome ||
			ev.ClientID != c.client || ev.TokenID != c.tokenID || ev.UserID != "u1" {
			t.Errorf("%s: %+v", c.typ, ev.Event)
		}
		if got := e.cause(c.sid); got != c.cause {
			t.Errorf("%s: revoke cause %q, want %q", c.typ, got, c.cause)
		}
	}
	if n := len(e.stored(model.EventSessionRevoked)); n != 0 {
		t.Errorf("%d session.revoked besides the events of their own type", n)
	}
	// The revoked token is recorded, its client's refresh token is gone.
	if has, err := e.st.HasJTI(e.ctx, model.RevokedAccessTokenKey("jti-1")); err != nil || !has {
		t.Errorf("revoked access token not recorded: %v %v", has, err)
	}
	if _, err := e.st.GetRefreshToken(e.ctx, []byte("rt-s2")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the client's refresh token after the revocation: %v", err)
	}
	e.checkCommitted()
}

func TestRevokeUser(t *testing.T) {
	e := newEnv(t)
	e.session("s1", "u1", "")
	e.session("s2", "u1", "")
	e.session("s3", "u2", "")
	ids, err := e.svc.RevokeUser(e.ctx, "admin-1", "u1", model.CauseAdminRevoked)
	if err != nil || len(ids) != 2 {
		t.Fatalf("RevokeUser = %v, %v", ids, err)
	}
	each, all := e.stored(model.EventSessionRevoked), e.stored(model.EventUserSessionsRevoked)
	if len(each) != 2 || len(all) != 1 {
		t.Fatalf("%d session.revoked, %d user.sessions_revoked", len(each), len(all))
	}
	for _, ev := range each {
		if ev.Data[model.DataAllSessions] != "true" || ev.Reason != "admin_revoked" || ev.Actor != "admin-1" || ev.Seq > all[0].Seq {
			t.Errorf("session.revoked %+v", ev.Event)
		}
	}
	if ev := all[0]; ev.Data["sessions_revoked"] != "2" || ev.UserID != "u1" || ev.Reason != "admin_revoked" {
		t.Errorf("user.sessions_revoked %+v", ev.Event)
	}
	// Again, with nothing left to revoke: the administrator's intent is
	// still recorded once more, for the user.
	ids, err = e.svc.RevokeUser(e.ctx, "admin-1", "u1", model.CauseAdminRevoked)
	if err != nil || len(ids) != 0 {
		t.Fatalf("RevokeUser again = %v, %v", ids, err)
	}
	if all := e.stored(model.EventUserSessionsRevoked); len(all) != 2 || all[0].Data["sessions_revoked"] != "0" {
		t.Errorf("user.sessions_revoked after revoking nothing: %v", all)
	}
	if n := len(e.stored(model.EventSessionRevoked)); n != 2 {
		t.Errorf("%d session.revoked after revoking nothing", n)
	}
	if c := e.cause("s3"); c != "" {
		t.Errorf("another user's session revoked: %q", c)
	}
	e.checkCommitted()
}

// The session revoker: an account change ends the user's sessions before
// the change's publish returns, attributed to its actor and origin, and
// records no user-level event (the account's own event speaks for it).
func TestAccountChangeRevokesSessions(t *testing.T) {
	e := newEnv(t)
	e.svc.Subscribe(e.b)
	e.session("s1", "u1", "")
	e.session("s2", "u1", "")
	for _, c := range []struct {
		typ   model.EventType
		cause string
	}{
		{model.EventUserDisabled, "user_disabled"},
		{model.EventPasswordChanged, "password_changed"},
		{model.EventUserDeleted, "user_deleted"},
	} {
		sid := "s-" + c.cause
		e.session(sid, "u1", "")
		if err := e.b.Publish(e.ctx, &model.Event{ID: "ev-" + c.cause, Type: c.typ, Time: t0, Actor: "admin-1", UserID: "u1",
			Outcome: model.OutcomeSuccess, IP: "198.51.100.2", UserAgent: "ward-admin", CorrelationID: "corr-" + c.cause}); err != nil {
			t.Fatal(err)
		}
		if got := e.cause(sid); got != c.cause {
			t.Errorf("%s: session revoked for %q, want %q", c.typ, got, c.cause)
		}
		evs, err := e.st.ListEvents(e.ctx, store.EventFilter{SessionID: sid})
		if err != nil || len(evs) != 1 {
			t.Fatalf("%s: events of the session %v, %v", c.typ, evs, err)
		}
		if ev := evs[0]; ev.Type != model.EventSessionRevoked || ev.Reason != c.cause || ev.Actor != "admin-1" ||
			ev.IP != "198.51.100.2" || ev.UserAgent != "ward-admin" || ev.CorrelationID != "corr-"+c.cause || ev.Data[model.DataAllSessions] != "" {
			t.Errorf("%s: %+v", c.typ, ev.Event)
		}
	}
	if c := e.cause("s1"); c != "user_disabled" {
		t.Errorf("s1 revoked for %q", c)
	}
	if n := len(e.stored(model.EventUserSessionsRevoked)); n != 0 {
		t.Errorf("%d user.sessions_revoked for account changes", n)
	}
	// Other events revoke nothing.
	e.session("s9", "u2", "")
	if err := e.b.Publish(e.ctx, &model.Event{ID: "ev-other", Type: model.EventUserUpdated, Time: t0, UserID: "u2", Outcome: model.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	if c := e.cause("s9"); c != "" {
		t.Errorf("user.updated revoked a session: %q", c)
	}
}

func TestRevokeDevice(t *testing.T) {
	e := newEnv(t)
	e.session("s1", "u1", "d1")
	e.session("s2", "u1", "d1")
	e.session("s3", "u1", "d2")
	e.session("s4", "u1", "")
	ids, err := e.svc.RevokeDevice(e.ctx, "admin-1", "d1", "u1", model.CauseDeviceLost)
	if err != nil || len(ids) != 2 || ids[0] != "s1" || ids[1] != "s2" {
		t.Fatalf("RevokeDevice = %v, %v", ids, err)
	}
	for _, ev := range e.stored(model.EventSessionRevoked) {
		if ev.DeviceID != "d1" || ev.UserID != "u1" || ev.Reason != "device_lost" || ev.Actor != "admin-1" {
			t.Errorf("session.revoked %+v", ev.Event)
		}
	}
	if n := len(e.stored(model.EventSessionRevoked)); n != 2 {
		t.Errorf("%d session.revoked, want 2", n)
	}
	if ids, err := e.svc.RevokeDevice(e.ctx, "admin-1", "d1", "u1", model.CauseDeviceLost); err != nil || len(ids) != 0 {
		t.Errorf("RevokeDevice again = %v, %v", ids, err)
	}
	for id, want := range map[string]string{"s1": "device_lost", "s2": "device_lost", "s3": "", "s4": ""} {
		if got := e.cause(id); got != want {
			t.Errorf("%s: cause %q, want %q", id, got, want)
		}
	}
	e.checkCommitted()
}

// A subscriber that fails does not undo the revocation, which is
// committed with its record; the caller hears of the failure.
func TestDeliveryFailureIsReported(t *testing.T) {
	e := newEnv(t)
	e.b.Subscribe("broken", func(context.Context, *model.Event) error { return errors.New("downstream unavailable") })
	e.session("s1", "u1", "")
	revoked, err := e.svc.Revoke(e.ctx, "admin-1", "s1", model.CauseAdminRevoked)
	if err == nil || !revoked {
		t.Fatalf("Revoke = %v, %v; want revoked with an error", revoked, err)
	}
	if c := e.cause("s1"); c != "admin_revoked" || len(e.stored(model.EventSessionRevoked)) != 1 {
		t.Errorf("revocation not kept: cause %q", c)
	}
}

// Without a bus, revocations happen and nothing is recorded.
func TestWithoutBus(t *testing.T) {
	e := newEnv(t)
	svc := session.New(session.Options{Store: e.st})
	e.session("s1", "u1", "")
	e.session("s2", "u2", "")
	if ok, err := svc.Revoke(e.ctx, "admin-1", "s1", model.CauseAdminRevoked); err != nil || !ok {
		t.Fatalf("Revoke = %v, %v", ok, err)
	}
	if ids, err := svc.RevokeUser(e.ctx, "admin-1", "u2", model.CauseAdminRevoked); err != nil || len(ids) != 1 {
		t.Fatalf("RevokeUser = %v, %v", ids, err)
	}
	if all, _ := e.st.EventsAfter(e.ctx, 0, 100); len(all) != 0 {
		t.Errorf("recorded %d events without a bus", len(all))
	}
}
