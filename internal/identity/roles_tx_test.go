package identity_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// A user's creation commits with its user.created, and a role change (a
// grant of privilege) and an unlock with their
// user.updated: refused, the user keeps its roles and its lock;
// accepted, each change lands with exactly one record.
func TestRolesAndUnlockCommitWithEvent(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st := b.Open(t, func() time.Time { return now })
			svc := identity.New(identity.Options{Store: st, Bus: bus.NewLocal(), Now: func() time.Time { return now },
				Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
			lift := b.RefuseEvents(t, model.EventUserCreated)
			if _, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: "a long enough passphrase"}); err == nil {
				t.Fatal("CreateUser with its record refused: got nil")
			}
			if _, err := st.GetUserByUsername(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("user after a refused creation: %v, want none", err)
			}
			lift()
			u, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: "a long enough passphrase"})
			if err != nil {
				t.Fatal(err)
			}
			if evs, err := st.ListEvents(ctx, store.EventFilter{UserID: u.ID, Types: []model.EventType{model.EventUserCreated}}); err != nil || len(evs) != 1 {
				t.Fatalf("user.created after the creation: %d, %v; want 1", len(evs), err)
			}
			if _, err := st.UpdateUser(ctx, u.ID, func(x *model.User) error {
				x.FailedLogins, x.LockedUntil = 5, now.Add(time.Hour)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			updates := func() []*store.StoredEvent {
				evs, err := st.ListEvents(ctx, store.EventFilter{UserID: u.ID, Types: []model.EventType{model.EventUserUpdated}})
				if err != nil {
					t.Fatal(err)
				}
				return evs
			}
			lift = b.RefuseEvents(t, model.EventUserUpdated)
			if err := svc.SetRoles(ctx, "admin", u.ID, []string{"admin"}); err == nil {
				t.Fatal("SetRoles with its record refused: got nil")
			}
			if err := svc.Unlock(ctx, "admin", u.ID); err == nil {
				t.Fatal("Unlock with its record refused: got nil")
			}
			got, err := st.GetUser(ctx, u.ID)
			if err != nil || slices.Contains(got.Roles, "admin") || got.FailedLogins != 5 || got.LockedUntil.IsZero() {
				t.Fatalf("user after refused changes: %+v, %v; want it unchanged (no admin role, still locked)", got, err)
			}
			if n := len(updates()); n != 0 {
				t.Fatalf("%d user.updated after the refusals, want none", n)
			}
			lift()
			if err := svc.SetRoles(ctx, "admin", u.ID, []string{"admin"}); err != nil {
				t.Fatal(err)
			}
			if err := svc.Unlock(ctx, "admin", u.ID); err != nil {
				t.Fatal(err)
			}
			got, err = st.GetUser(ctx, u.ID)
			if err != nil || !slices.Contains(got.Roles, "admin") || got.FailedLogins != 0 || !got.LockedUntil.IsZero() {
				t.Fatalf("user after the changes: %+v, %v", got, err)
			}
			evs := updates()
			if len(evs) != 2 || evs[1].Data["change"] != "roles" || evs[1].Data["roles"] != "admin" || evs[0].Data["change"] != "unlocked" {
				t.Errorf("user.updated recorded (newest first): %+v %+v", evs, len(evs))
			}
		})
	}
}
