package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// TestWithSQLiteStore runs the main flows against the real SQLite store:
// atomic UpdateUser for lockout, RecordJTI for TOTP replay, groups.
func TestWithSQLiteStore(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	clock := func() time.Time { return now }
	st, err := sqlite.Open(ctx, ":memory:", sqlite.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, _ := secret.NewKEK(make([]byte, secret.KEKSize))
	b := bus.NewLocal()
	rec := &bus.Recorder{}
	b.Subscribe("rec", rec.Handle)
	svc := identity.New(identity.Options{
		Store: st, Bus: b, KEK: kek, Now: clock, MaxFailures: 2,
		Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
	})
	const pw = "a long enough passphrase"

	u, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "Alice", Password: pw, Roles: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: pw}); !errors.Is(err, identity.ErrExists) {
		t.Fatalf("duplicate: %v, want ErrExists", err)
	}
	if got, err := svc.CheckPassword(ctx, identity.Attempt{Username: "alice", Password: pw, IP: "192.0.2.1"}); err != nil || got.ID != u.ID {
		t.Fatalf("CheckPassword = %v, %v", got, err)
	}
	for range 2 {
		svc.CheckPassword(ctx, identity.Attempt{Username: "alice", Password: "wrong", IP: "192.0.2.1"})
	}
	if _, err := svc.CheckPassword(ctx, identity.Attempt{Username: "alice", Password: pw, IP: "192.0.2.1"}); !errors.Is(err, identity.ErrLocked) {
		t.Fatalf("after 2 failures: %v, want ErrLocked", err)
	}
	if err := svc.Unlock(ctx, "admin", u.ID); err != nil {
		t.Fatal(err)
	}

	sec, _, err := svc.NewTOTPKey(u, "Ward")
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(sec, now)
	if err := svc.EnrollTOTP(ctx, u.ID, u.ID, sec, code); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	u, _ = st.GetUser(ctx, u.ID)
	code, _ = totp.GenerateCode(sec, now)
	if err := svc.CheckTOTP(ctx, u, code, "192.0.2.1"); err != nil {
		t.Fatalf("CheckTOTP: %v", err)
	}
	if err := svc.CheckTOTP(ctx, u, code, "192.0.2.1"); identity.Reason(err) != identity.ReasonTOTPReplay {
		t.Fatalf("replay: %v, want %s", err, identity.ReasonTOTPReplay)
	}

	g, err := svc.CreateGroup(ctx, "admin", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AddMember(ctx, "admin", g.ID, u.ID); err != nil {
		t.Fatal(err)
	}
	if gs, err := svc.GroupsOf(ctx, u.ID); err != nil || len(gs) != 1 {
		t.Fatalf("GroupsOf = %v, %v", gs, err)
	}
	if err := svc.DeleteUser(ctx, "admin", u.ID); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []model.EventType{model.EventUserCreated, model.EventUserLocked, model.EventMFAEnrolled, model.EventGroupUpdated, model.EventUserDeleted} {
		if !rec.Has(typ) {
			t.Errorf("no %s event", typ)
		}
	}
}
