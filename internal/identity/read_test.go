package identity_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// TestReadsAndNotFound: users and groups are read through the service
// (the admin API has no store), and every call about a user or group that
// does not exist fails with ErrNotFound, an error that still matches
// store.ErrNotFound and keeps the store's message; other failures do not
// match it.
func TestReadsAndNotFound(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st, err := sqlite.Open(ctx, ":memory:", sqlite.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, _ := secret.NewKEK(make([]byte, secret.KEKSize))
	svc := identity.New(identity.Options{Store: st, KEK: kek, Now: func() time.Time { return now },
		Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
	const pw = "a long enough passphrase"
	alice, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: pw, Roles: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "bob", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	g, err := svc.CreateGroup(ctx, "admin", "staff")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AddMember(ctx, "admin", g.ID, bob.ID); err != nil {
		t.Fatal(err)
	}

	if u, err := svc.GetUser(ctx, alice.ID); err != nil || u.Username != "alice" || !u.HasRole(model.RoleAdmin) {
		t.Fatalf("GetUser = %+v, %v", u, err)
	}
	us, err := svc.ListUsers(ctx)
	var names []string
	for _, u := range us {
		names = append(names, u.Username)
	}
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
		t.Fatalf("ListUsers = %v, %v", names, err)
	}
	if got, err := svc.GetGroup(ctx, g.ID); err != nil || got.Name != "staff" || !slices.Equal(got.Members, []string{bob.ID}) {
		t.Fatalf("GetGroup = %+v, %v", got, err)
	}
	if gs, err := svc.ListGroups(ctx); err != nil || len(gs) != 1 || gs[0].ID != g.ID {
		t.Fatalf("ListGroups = %v, %v", gs, err)
	}

	const ghost = "00000000-0000-4000-8000-000000000000"
	calls := map[string]func() error{
		"GetUser":     func() error { _, err := svc.GetUser(ctx, ghost); return err },
		"SetPassword": func() error { return svc.SetPassword(ctx, "admin", ghost, pw+"!") },
		"SetRoles":    func() error { return svc.SetRoles(ctx, "admin", ghost, nil) },
		"SetDisabled": func() error { return svc.SetDisabled(ctx, "admin", ghost, true) },
		"SetRisk":     func() error { return svc.SetRisk(ctx, "admin", ghost, identity.RiskHigh, "test") },
		"Unlock":      func() error { return svc.Unlock(ctx, "admin", ghost) },
		"DeleteUser":  func() error { return svc.DeleteUser(ctx, "admin", ghost) },
		"AddMember":   func() error { return svc.AddMember(ctx, "admin", g.ID, ghost) },
		"GetGroup":    func() error { _, err := svc.GetGroup(ctx, ghost); return err },
		"AddMember to no group": func() error {
			return svc.AddMember(ctx, "admin", ghost, bob.ID)
		},
		"RemoveMember": func() error { return svc.RemoveMember(ctx, "admin", ghost, bob.ID) },
		"DeleteGroup":  func() error { return svc.DeleteGroup(ctx, "admin", ghost) },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, identity.ErrNotFound) || !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound and store.ErrNotFound", name, err)
		}
		if err != nil && err.Error() == identity.ErrNotFound.Error() {
			t.Errorf("%s: message %q lost the store's detail", name, err)
		}
	}
	if _, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: pw}); errors.Is(err, identity.ErrNotFound) {
		t.Errorf("duplicate user: %v matches ErrNotFound", err)
	}
	if err := svc.SetRisk(ctx, "admin", bob.ID, "extreme", ""); err == nil || errors.Is(err, identity.ErrNotFound) {
		t.Errorf("invalid risk: %v", err)
	}
	if got := identity.Reason(calls["GetUser"]()); got != identity.ReasonNotFound {
		t.Errorf("Reason(not found) = %q, want %q", got, identity.ReasonNotFound)
	}
}
