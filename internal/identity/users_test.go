package identity

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func TestCreateUserValidation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.mustCreate(t, "taken")
	cases := []struct {
		name string
		nu   NewUser
		want error
	}{
		{"weak password", NewUser{Username: "bob", Password: "short"}, ErrWeakPassword},
		{"empty password", NewUser{Username: "bob"}, ErrWeakPassword},
		{"empty username", NewUser{Username: "", Password: goodPassword}, ErrInvalidUsername},
		{"space in username", NewUser{Username: "bob smith", Password: goodPassword}, ErrInvalidUsername},
		{"slash in username", NewUser{Username: "bob/x", Password: goodPassword}, ErrInvalidUsername},
		{"non-ascii username", NewUser{Username: "bøb", Password: goodPassword}, ErrInvalidUsername},
		{"username too long", NewUser{Username: strings.Repeat("a", 65), Password: goodPassword}, ErrInvalidUsername},
		{"duplicate", NewUser{Username: "taken", Password: goodPassword}, ErrExists},
		{"duplicate other case", NewUser{Username: "TAKEN", Password: goodPassword}, ErrExists},
		{"bad email", NewUser{Username: "bob", Email: "Bob <bob@x>", Password: goodPassword}, ErrInvalidInput},
		{"control char display name", NewUser{Username: "bob", DisplayName: "a\nb", Password: goodPassword}, ErrInvalidInput},
		{"bad role", NewUser{Username: "bob", Roles: []string{"ad min"}, Password: goodPassword}, ErrInvalidInput},
		{"unknown role", NewUser{Username: "bob", Roles: []string{"superuser"}, Password: goodPassword}, ErrInvalidInput},
		{"bad totp secret", NewUser{Username: "bob", Password: goodPassword, TOTPSecret: "not base32!"}, ErrInvalidInput},
		{"short totp secret", NewUser{Username: "bob", Password: goodPassword, TOTPSecret: "JBSWY3DP"}, ErrInvalidInput},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.CreateUser(ctx, "admin", tc.nu)
			if !errors.Is(err, tc.want) {
				t.Fatalf("CreateUser(%+v) error = %v, want %v", tc.nu.LogValue(), err, tc.want)
			}
		})
	}
	_, err := e.svc.CreateUser(ctx, "admin", NewUser{Username: "taken", Password: goodPassword})
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("duplicate error %v does not wrap store.ErrAlreadyExists", err)
	}
	if got := Reason(err); got != ReasonExists {
		t.Errorf("Reason(duplicate) = %q, want %q", got, ReasonExists)
	}
}

func TestCreateUserStoresNormalisedUser(t *testing.T) {
	e := newEnv(t, nil)
	u, err := e.svc.CreateUser(context.Background(), "admin", NewUser{
		Username: "Alice.Smith@Example.com", Email: "alice@example.com", DisplayName: "Alice",
		Password: goodPassword, Roles: []string{"admin", " admin", ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := e.store.rawUser(u.ID)
	if got.Username != "alice.smith@example.com" {
		t.Errorf("Username = %q, want lower-cased", got.Username)
	}
	if len(got.Roles) != 1 || got.Roles[0] != model.RoleAdmin {
		t.Errorf("Roles = %q, want [admin]", got.Roles)
	}
	if !strings.HasPrefix(got.PasswordHash, "$argon2id$") || strings.Contains(got.PasswordHash, goodPassword) {
		t.Errorf("PasswordHash = %q, want an argon2id PHC string", got.PasswordHash)
	}
	if got.CreatedAt != e.clock.Now() || len(got.ID) != 36 {
		t.Errorf("CreatedAt %v / ID %q not set as expected", got.CreatedAt, got.ID)
	}
	if !e.rec.Has(model.EventUserCreated) {
		t.Error("no user.created event")
	}
}

func TestUserAdminEvents(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	u := e.mustCreate(t, "alice")
	newPW := "another fine passphrase"
	steps := []struct {
		name string
		do   func() error
		want model.EventType
	}{
		{"set password", func() error { return e.svc.SetPassword(ctx, "admin", u.ID, newPW) }, model.EventPasswordChanged},
		{"disable", func() error { return e.svc.SetDisabled(ctx, "admin", u.ID, true) }, model.EventUserDisabled},
		{"enable", func() error { return e.svc.SetDisabled(ctx, "admin", u.ID, false) }, model.EventUserUpdated},
		{"roles", func() error { return e.svc.SetRoles(ctx, "admin", u.ID, []string{"admin", " admin"}) }, model.EventUserUpdated},
		{"unlock", func() error { return e.svc.Unlock(ctx, "admin", u.ID) }, model.EventUserUpdated},
		{"delete", func() error { return e.svc.DeleteUser(ctx, "admin", u.ID) }, model.EventUserDeleted},
	}
	for _, st := range steps {
		before := len(e.rec.Events())
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		evs := e.rec.Events()
		if len(evs) != before+1 {
			t.Fatalf("%s: %d events, want 1", st.name, len(evs)-before)
		}
		ev := evs[len(evs)-1]
		if ev.Type != st.want || ev.Actor != "admin" || ev.UserID != u.ID || ev.ID == "" || ev.Time.IsZero() || ev.Code() == "" {
			t.Errorf("%s: event = %+v, want type %s actor admin user %s with id, time, code", st.name, ev, st.want, u.ID)
		}
		if st.name == "roles" && ev.Data["roles"] != "admin" {
			t.Errorf("roles event data = %v", ev.Data)
		}
		if st.name == "set password" {
			if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: newPW, IP: "192.0.2.1"}); err != nil {
				t.Errorf("sign-in with new password: %v", err)
			}
		}
	}
	if _, err := e.store.GetUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user still present after DeleteUser: %v", err)
	}
	for _, ev := range e.rec.Events() {
		for k, v := range ev.Data {
			if strings.Contains(v, newPW) || strings.Contains(v, goodPassword) {
				t.Errorf("event %s data %s carries a password", ev.Type, k)
			}
		}
	}
}

func TestSetPasswordPolicyAndMissingUser(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	u := e.mustCreate(t, "alice")
	if err := e.svc.SetPassword(ctx, "admin", u.ID, "tiny"); !errors.Is(err, ErrWeakPassword) {
		t.Errorf("SetPassword(weak) = %v, want ErrWeakPassword", err)
	}
	if err := e.svc.SetPassword(ctx, "admin", "nope", goodPassword); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetPassword(unknown id) = %v, want ErrNotFound", err)
	}
	if err := e.svc.SetDisabled(ctx, "admin", "nope", true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetDisabled(unknown id) = %v, want ErrNotFound", err)
	}
}

func TestGroups(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")
	g, err := e.svc.CreateGroup(ctx, "admin", " Engineering ")
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "Engineering" {
		t.Errorf("group name = %q, want trimmed", g.Name)
	}
	if _, err := e.svc.CreateGroup(ctx, "admin", "Engineering"); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate group: %v, want ErrExists", err)
	}
	if _, err := e.svc.CreateGroup(ctx, "admin", "  "); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty group name: %v, want ErrInvalidInput", err)
	}
	if err := e.svc.AddMember(ctx, "admin", g.ID, "no-such-user"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddMember(unknown user) = %v, want ErrNotFound", err)
	}
	for range 2 { // second add is a no-op
		if err := e.svc.AddMember(ctx, "admin", g.ID, alice.ID); err != nil {
			t.Fatal(err)
		}
	}
	gs, err := e.svc.GroupsOf(ctx, alice.ID)
	if err != nil || len(gs) != 1 || gs[0].ID != g.ID || len(gs[0].Members) != 1 {
		t.Fatalf("GroupsOf = %v, %v; want [Engineering] with one member", gs, err)
	}
	if err := e.svc.RemoveMember(ctx, "admin", g.ID, alice.ID); err != nil {
		t.Fatal(err)
	}
	if gs, _ := e.svc.GroupsOf(ctx, alice.ID); len(gs) != 0 {
		t.Errorf("GroupsOf after remove = %v", gs)
	}
	// Deleting a user removes its memberships.
	if err := e.svc.AddMember(ctx, "admin", g.ID, alice.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteUser(ctx, "admin", alice.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.store.GetGroup(ctx, g.ID); len(got.Members) != 0 {
		t.Errorf("members after DeleteUser = %v", got.Members)
	}
	if err := e.svc.DeleteGroup(ctx, "admin", g.ID); err != nil {
		t.Fatal(err)
	}
	var types []model.EventType
	for _, ev := range e.rec.Events() {
		if strings.HasPrefix(string(ev.Type), "group.") {
			types = append(types, ev.Type)
		}
	}
	want := []model.EventType{model.EventGroupCreated, model.EventGroupUpdated, model.EventGroupUpdated, model.EventGroupUpdated, model.EventGroupDeleted}
	if strings.Join(typesStr(types), " ") != strings.Join(typesStr(want), " ") {
		t.Errorf("group events = %v, want %v (duplicate add must not publish)", types, want)
	}
}

func typesStr(ts []model.EventType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}
