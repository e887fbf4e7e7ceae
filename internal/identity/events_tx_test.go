package identity_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// TestEventCommitsWithChange: SetDisabled and SetRisk commit the user
// change and its event in one transaction. A trigger makes the database
// refuse the events of the first round: the change must be rolled back
// with them (before, the change was committed first and the event
// appended afterwards by the audit persister, so a crash in between lost
// the event). Without the trigger both commit, and the persister (here a
// stand-in with the same rule as app.persistEvent) finds them stored.
func TestEventCommitsWithChange(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "ward.db")
	st, err := sqlite.Open(ctx, path, sqlite.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := bus.NewLocal()
	persisted := map[model.EventType]int{} // appended by the persister, not with the change
	b.Subscribe("audit", func(ctx context.Context, e *model.Event) error {
		if store.EventStored(ctx, e) {
			return nil
		}
		persisted[e.Type]++
		_, err := st.AppendEvent(ctx, e)
		return err
	})
	svc := identity.New(identity.Options{Store: st, Bus: b, Now: clock,
		Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
	u, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: "a long enough passphrase"})
	if err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON events
		WHEN NEW.type IN ('user.disabled', 'user.risk_changed')
		BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetDisabled(ctx, "admin", u.ID, true); err == nil {
		t.Fatal("SetDisabled with its event refused: got nil, want an error")
	}
	if err := svc.SetRisk(ctx, "admin", u.ID, identity.RiskHigh, "test"); err == nil {
		t.Fatal("SetRisk with its event refused: got nil, want an error")
	}
	got, err := st.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Disabled || got.RiskLevel != "" || !got.RiskUpdatedAt.IsZero() {
		t.Fatalf("user changed although its events were refused: disabled %v, risk %q", got.Disabled, got.RiskLevel)
	}
	evs, err := st.ListEvents(ctx, store.EventFilter{UserID: u.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != model.EventUserCreated {
		t.Fatalf("events after the refused changes: %v, want user.created only", evs)
	}

	if _, err := db.Exec(`DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	octx := bus.WithOrigin(ctx, bus.Origin{IP: "192.0.2.9", UserAgent: "admin-console/1", CorrelationID: "corr-atomic"})
	if err := svc.SetDisabled(octx, "admin", u.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetRisk(octx, "admin", u.ID, identity.RiskHigh, "test"); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetUser(ctx, u.ID); !got.Disabled || got.RiskLevel != identity.RiskHigh {
		t.Fatalf("user after the changes: disabled %v, risk %q", got.Disabled, got.RiskLevel)
	}
	for _, typ := range []model.EventType{model.EventUserDisabled, model.EventUserRiskChanged} {
		evs, err := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{typ}})
		if err != nil || len(evs) != 1 {
			t.Fatalf("%s events: %v, %v; want one", typ, evs, err)
		}
		e := evs[0]
		if e.IP != "192.0.2.9" || e.UserAgent != "admin-console/1" || e.CorrelationID != "corr-atomic" ||
			e.Actor != "admin" || e.UserID != u.ID || e.Outcome != model.OutcomeSuccess || e.ID == "" || !e.Time.Equal(now) {
			t.Errorf("%s stored as %+v", typ, e.Event)
		}
		if persisted[typ] != 0 {
			t.Errorf("%s appended by the persister too", typ)
		}
	}
	if e, _ := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventUserRiskChanged}}); e[0].Data["previous"] != identity.RiskNone || e[0].Data["level"] != identity.RiskHigh || e[0].Reason != "test" {
		t.Errorf("user.risk_changed %+v", e[0].Event)
	}
	// Setting the level the user has changes nothing and records nothing.
	if err := svc.SetRisk(octx, "admin", u.ID, identity.RiskHigh, "again"); err != nil {
		t.Fatal(err)
	}
	if evs, _ := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventUserRiskChanged}}); len(evs) != 1 {
		t.Errorf("%d user.risk_changed events after an unchanged level, want 1", len(evs))
	}
	if persisted[model.EventUserCreated] != 0 {
		t.Errorf("user.created appended %d times by the persister, want 0 (committed with the user)", persisted[model.EventUserCreated])
	}
}

// TestRemoveTOTP: the seed and the recovery codes are removed and
// mfa.removed committed in one transaction (a refused event leaves the
// factor and its codes in place); removing a factor the user does not
// have is ErrNoTOTP and records nothing.
func TestRemoveTOTP(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	path := filepath.Join(t.TempDir(), "ward.db")
	st, err := sqlite.Open(ctx, path, sqlite.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := bus.NewLocal()
	rec := &bus.Recorder{}
	b.Subscribe("rec", rec.Handle)
	kek, err := secret.NewKEK(bytes.Repeat([]byte{3}, secret.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	svc := identity.New(identity.Options{Store: st, Bus: b, Now: clock, KEK: kek,
		Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
	u, err := svc.CreateUser(ctx, "admin", identity.NewUser{Username: "alice", Password: "a long enough passphrase",
		TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
	if err != nil {
		t.Fatal(err)
	}

	codes, err := svc.NewRecoveryCodes(ctx, "admin", u.ID)
	if err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.type = 'mfa.removed'
		BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	if err := svc.RemoveTOTP(ctx, "admin", u.ID); err == nil {
		t.Fatal("RemoveTOTP with its event refused: got nil, want an error")
	}
	if got, _ := st.GetUser(ctx, u.ID); !svc.HasTOTP(got) {
		t.Fatal("the factor was removed although its event was refused")
	}
	if n, err := svc.RecoveryCodesLeft(ctx, u.ID); err != nil || n != identity.RecoveryCodeCount {
		t.Fatalf("recovery codes after a refused removal: %d, %v", n, err)
	}
	if _, err := db.Exec(`DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}

	octx := bus.WithOrigin(ctx, bus.Origin{IP: "192.0.2.9", CorrelationID: "corr-totp"})
	if err := svc.RemoveTOTP(octx, "admin", u.ID); err != nil {
		t.Fatal(err)
	}
	got, _ := st.GetUser(ctx, u.ID)
	if svc.HasTOTP(got) || len(got.TOTPSecret) != 0 {
		t.Fatal("the factor is still there")
	}
	// A code is no longer accepted: the user has no factor, and no
	// recovery codes either.
	if err := svc.CheckTOTP(ctx, got, "123456", "192.0.2.9"); identity.Reason(err) != identity.ReasonNoTOTP {
		t.Errorf("CheckTOTP after removal: %v (%s)", err, identity.Reason(err))
	}
	if n, err := svc.RecoveryCodesLeft(ctx, u.ID); err != nil || n != 0 {
		t.Errorf("recovery codes after removal: %d, %v; want none", n, err)
	}
	if err := svc.CheckRecoveryCode(ctx, got, codes[0].Reveal(), "192.0.2.9"); identity.Reason(err) != identity.ReasonNoTOTP {
		t.Errorf("CheckRecoveryCode after removal: %v (%s)", err, identity.Reason(err))
	}
	evs, err := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARemoved}})
	if err != nil || len(evs) != 1 {
		t.Fatalf("mfa.removed events: %v, %v", evs, err)
	}
	e := evs[0]
	if e.Actor != "admin" || e.UserID != u.ID || e.Data["method"] != "totp" || e.IP != "192.0.2.9" || e.CorrelationID != "corr-totp" ||
		e.Code() != "W1003W" || e.ID == "" || !e.Time.Equal(now) {
		t.Errorf("mfa.removed stored as %+v", e.Event)
	}
	pub := rec.Events()
	if last := pub[len(pub)-1]; last.ID != e.ID || last.Type != model.EventMFARemoved {
		t.Errorf("published %+v, stored %+v", last, e.Event)
	}

	// Nothing to remove: an error, and nothing recorded.
	if err := svc.RemoveTOTP(ctx, "admin", u.ID); !errors.Is(err, identity.ErrNoTOTP) {
		t.Errorf("second removal: %v", err)
	}
	if err := svc.RemoveTOTP(ctx, "admin", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	if evs, _ := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARemoved}}); len(evs) != 1 {
		t.Errorf("%d mfa.removed events, want 1", len(evs))
	}
}
