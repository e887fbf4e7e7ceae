package session_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
)

// TestGetAndList: sessions are read through the service; ActiveOnly
// leaves out revoked, expired and idle sessions (the store's filter alone
// does not apply the idle timeout), newest first; an unknown session is
// ErrNotFound.
func TestGetAndList(t *testing.T) {
	e := newEnv(t) // the service's clock is t0 + 1h
	add := func(id, user string, created time.Time, mod func(*model.Session)) {
		t.Helper()
		s := &model.Session{ID: id, UserID: user, AuthTime: created, AMR: []string{"pwd"}, CreatedAt: created,
			LastSeen: t0.Add(50 * time.Minute), ExpiresAt: t0.Add(24 * time.Hour), IdleTimeout: 30 * time.Minute}
		if mod != nil {
			mod(s)
		}
		if err := e.st.CreateSession(e.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	add("s-active", "bob", t0.Add(4*time.Minute), nil)
	add("s-newer", "bob", t0.Add(5*time.Minute), nil)
	add("s-idle", "bob", t0.Add(3*time.Minute), func(s *model.Session) { s.LastSeen = t0 })
	add("s-expired", "bob", t0.Add(2*time.Minute), func(s *model.Session) { s.ExpiresAt = t0.Add(30 * time.Minute) })
	add("s-revoked", "bob", t0.Add(time.Minute), nil)
	add("s-carol", "carol", t0, nil)
	if _, err := e.svc.Revoke(e.ctx, "admin", "s-revoked", model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}

	ids := func(f session.Filter) []string {
		t.Helper()
		ss, err := e.svc.List(e.ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range ss {
			out = append(out, s.ID)
		}
		return out
	}
	if got, want := ids(session.Filter{UserID: "bob"}), []string{"s-newer", "s-active", "s-idle", "s-expired", "s-revoked"}; !slices.Equal(got, want) {
		t.Errorf("bob's sessions %v, want %v", got, want)
	}
	if got, want := ids(session.Filter{UserID: "bob", ActiveOnly: true}), []string{"s-newer", "s-active"}; !slices.Equal(got, want) {
		t.Errorf("bob's active sessions %v, want %v", got, want)
	}
	if got := ids(session.Filter{}); len(got) != 6 {
		t.Errorf("every session: %v", got)
	}
	if got, want := ids(session.Filter{UserID: "bob", Limit: 2}), []string{"s-newer", "s-active"}; !slices.Equal(got, want) {
		t.Errorf("limit 2: %v, want %v", got, want)
	}

	s, err := e.svc.Get(e.ctx, "s-revoked")
	if err != nil || s.RevokedAt.IsZero() || s.RevokeCause != string(model.CauseAdminRevoked) {
		t.Fatalf("Get(revoked) = %+v, %v", s, err)
	}
	if _, err := e.svc.Get(e.ctx, "s-none"); !errors.Is(err, session.ErrNotFound) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
}
