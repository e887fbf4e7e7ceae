package identity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// lockedRecords returns the stored user.locked events of userID.
func lockedRecords(t *testing.T, st store.Store, userID string) []*store.StoredEvent {
	t.Helper()
	evs, err := st.ListEvents(context.Background(), store.EventFilter{UserID: userID, Types: []model.EventType{model.EventUserLocked}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// published returns the events of type typ that rec saw.
func published(rec *bus.Recorder, typ model.EventType) []model.Event {
	var out []model.Event
	for _, ev := range rec.Events() {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// The lock set by the attempt that reaches the limit commits with its
// user.locked: refused, the attempt fails without being counted and the
// account is not locked; accepted, the account is locked with exactly
// one record, the one published.
func TestLockoutCommitsWithEvent(t *testing.T) {
	const maxFail = 3
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			b := be.New(t)
			clk := newFakeClock()
			st := b.Open(t, clk.Now)
			svc, rec := realEnv(t, st, clk, func(o *Options) { o.MaxFailures = maxFail })
			ctx := context.Background()
			alice, err := svc.CreateUser(ctx, "admin", NewUser{Username: "alice", Password: goodPassword})
			if err != nil {
				t.Fatal(err)
			}
			try := func(i int) error {
				_, err := svc.CheckPassword(ctx, Attempt{Username: "alice", Password: fmt.Sprintf("wrong %d", i), IP: "192.0.2.7", UserAgent: "ua"})
				return err
			}
			for i := range maxFail - 1 {
				if err := try(i); !errors.Is(err, ErrInvalidCredentials) {
					t.Fatalf("failure %d: %v", i+1, err)
				}
			}
			lift := b.RefuseEvents(t, model.EventUserLocked)
			if err := try(99); err == nil || errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrLocked) {
				t.Fatalf("the locking attempt with its record refused: %v, want a store failure", err)
			}
			u, err := st.GetUser(ctx, alice.ID)
			if err != nil || u.FailedLogins != maxFail-1 || !u.LockedUntil.IsZero() {
				t.Fatalf("after a refused lock: %+v, %v; want %d failures and no lock", u, err, maxFail-1)
			}
			if n, p := len(lockedRecords(t, st, alice.ID)), len(published(rec, model.EventUserLocked)); n != 0 || p != 0 {
				t.Fatalf("after a refused lock: %d user.locked stored, %d published; want none", n, p)
			}
			lift()
			if err := try(100); !errors.Is(err, ErrInvalidCredentials) {
				t.Fatalf("the locking attempt: %v, want ErrInvalidCredentials", err)
			}
			u, err = st.GetUser(ctx, alice.ID)
			if err != nil || u.FailedLogins != maxFail || !u.LockedUntil.After(clk.Now()) {
				t.Fatalf("after the lock: %+v, %v; want locked with %d failures", u, err, maxFail)
			}
			evs, pub := lockedRecords(t, st, alice.ID), published(rec, model.EventUserLocked)
			if len(evs) != 1 || len(pub) != 1 || evs[0].ID != pub[0].ID || evs[0].Data["failures"] != fmt.Sprint(maxFail) ||
				evs[0].Data["locked_until"] != pub[0].Data["locked_until"] || evs[0].IP != "192.0.2.7" || evs[0].UserAgent != "ua" {
				t.Fatalf("user.locked stored %+v, published %+v; want the same one", evs, pub)
			}
			// Locked: the next attempts are refused, counted nowhere, recorded once.
			if err := try(101); !errors.Is(err, ErrLocked) || len(lockedRecords(t, st, alice.ID)) != 1 {
				t.Fatalf("while locked: %v, %d records", err, len(lockedRecords(t, st, alice.ID)))
			}
		})
	}
}

// Two instances on one database take wrong guesses on one account at
// once: exactly one attempt locks it, and exactly one user.locked is
// stored (the one that instance published).
func TestLockoutTwoInstances(t *testing.T) {
	const n, maxFail = 40, 5
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			open := be.Opener(t, clk.Now)
			st1, st2 := open(), open()
			mod := func(o *Options) { o.MaxFailures = maxFail; o.MaxHashQueue = n }
			svc1, rec1 := realEnv(t, st1, clk, mod)
			svc2, rec2 := realEnv(t, st2, clk, mod)
			ctx := context.Background()
			alice, err := svc1.CreateUser(ctx, "admin", NewUser{Username: "alice", Password: goodPassword})
			if err != nil {
				t.Fatal(err)
			}
			var out raceOutcome
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				svc := svc1
				if i%2 == 1 {
					svc = svc2
				}
				wg.Go(func() {
					<-start
					_, err := svc.CheckPassword(ctx, Attempt{Username: "alice", Password: fmt.Sprintf("guess %d", i), IP: fmt.Sprintf("198.51.100.%d", i%4+1)})
					out.add(err)
				})
			}
			close(start)
			wg.Wait()
			t.Logf("%s: answers %v", be.Name, out.answers)
			for msg := range out.answers {
				if msg != ErrInvalidCredentials.Error() && msg != ErrLocked.Error() {
					t.Errorf("a guess answered %q", msg)
				}
			}
			if got := out.answers[ErrInvalidCredentials.Error()]; got != maxFail {
				t.Errorf("%d guesses evaluated, want %d", got, maxFail)
			}
			u, err := st1.GetUser(ctx, alice.ID)
			if err != nil || u.FailedLogins != maxFail || !u.LockedUntil.After(clk.Now()) {
				t.Fatalf("after the race: %+v, %v; want locked with %d failures", u, err, maxFail)
			}
			evs := lockedRecords(t, st2, alice.ID)
			pub := append(published(rec1, model.EventUserLocked), published(rec2, model.EventUserLocked)...)
			if len(evs) != 1 || len(pub) != 1 || evs[0].ID != pub[0].ID {
				t.Fatalf("%d user.locked stored, %d published; want one, the same", len(evs), len(pub))
			}
		})
	}
}

// The attempt that reaches the limit locks the account (user.locked) and,
// when its password proves right, lifts its own lock with a user.updated
// (change "unlocked") committed with the lift. Refused, that record
// leaves the lock in place and the sign-in fails.
func TestLockingAttemptThatSucceedsLiftsItsLock(t *testing.T) {
	const maxFail = 3
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			b := be.New(t)
			clk := newFakeClock()
			st := b.Open(t, clk.Now)
			svc, rec := realEnv(t, st, clk, func(o *Options) { o.MaxFailures = maxFail })
			ctx := context.Background()
			lifts := func(userID string) []*store.StoredEvent {
				evs, err := st.ListEvents(ctx, store.EventFilter{UserID: userID, Types: []model.EventType{model.EventUserUpdated}})
				if err != nil {
					t.Fatal(err)
				}
				var out []*store.StoredEvent
				for _, e := range evs {
					if e.Data["change"] == "unlocked" && e.Reason == "locking_attempt_succeeded" {
						out = append(out, e)
					}
				}
				return out
			}
			signIn := func(name string) (*model.User, error) {
				u, err := svc.CreateUser(ctx, "admin", NewUser{Username: name, Password: goodPassword})
				if err != nil {
					t.Fatal(err)
				}
				for i := range maxFail - 1 {
					if _, err := svc.CheckPassword(ctx, Attempt{Username: name, Password: fmt.Sprint("wrong ", i), IP: "192.0.2.8"}); !errors.Is(err, ErrInvalidCredentials) {
						t.Fatalf("%s failure %d: %v", name, i+1, err)
					}
				}
				_, err = svc.CheckPassword(ctx, Attempt{Username: name, Password: goodPassword, IP: "192.0.2.8"})
				return u, err
			}

			lift := b.RefuseEvents(t, model.EventUserUpdated)
			bob, err := signIn("bob")
			if err == nil {
				t.Fatal("the locking attempt's right password with the lift's record refused: signed in")
			}
			lift()
			u, err := st.GetUser(ctx, bob.ID)
			if err != nil || !u.LockedUntil.After(clk.Now()) || len(lockedRecords(t, st, bob.ID)) != 1 || len(lifts(bob.ID)) != 0 {
				t.Fatalf("bob after a refused lift: %+v, %v, %d locks, %d lifts; want locked, one user.locked, no lift",
					u, err, len(lockedRecords(t, st, bob.ID)), len(lifts(bob.ID)))
			}

			alice, err := signIn("alice")
			if err != nil {
				t.Fatalf("the locking attempt's right password: %v", err)
			}
			u, err = st.GetUser(ctx, alice.ID)
			if err != nil || !u.LockedUntil.IsZero() || u.FailedLogins != 0 {
				t.Fatalf("alice after signing in: %+v, %v; want unlocked, no failures", u, err)
			}
			ls, locks := lifts(alice.ID), lockedRecords(t, st, alice.ID)
			var pub []model.Event
			for _, e := range published(rec, model.EventUserUpdated) {
				if e.UserID == alice.ID {
					pub = append(pub, e)
				}
			}
			if len(locks) != 1 || len(ls) != 1 || len(pub) != 1 || ls[0].ID != pub[0].ID || ls[0].Seq < locks[0].Seq {
				t.Fatalf("alice: %d user.locked, %d lifts stored, %d published; want one each, the lift after the lock", len(locks), len(ls), len(pub))
			}
		})
	}
}

// The attempt that locks the account and is then given back unchecked
// (here a replayed TOTP code) lifts its lock with a user.updated
// committed with the lift; refused, the lock stays (stricter) and
// nothing records a lift.
func TestLockingAttemptGivenBackLiftsItsLock(t *testing.T) {
	const maxFail = 3
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			b := be.New(t)
			clk := newFakeClock()
			st := b.Open(t, clk.Now)
			svc, _ := realEnv(t, st, clk, func(o *Options) { o.MaxFailures = maxFail })
			ctx := context.Background()
			givenBack := func(userID string) int {
				evs, err := st.ListEvents(ctx, store.EventFilter{UserID: userID, Types: []model.EventType{model.EventUserUpdated}})
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, e := range evs {
					if e.Data["change"] == "unlocked" && e.Reason == "locking_attempt_given_back" {
						n++
					}
				}
				return n
			}
			// lockWithReplay makes maxFail-1 wrong codes and then replays
			// the code used at enrolment: the replay reaches the limit.
			lockWithReplay := func(name string) (*model.User, error) {
				u, err := svc.CreateUser(ctx, "admin", NewUser{Username: name, Password: goodPassword})
				if err != nil {
					t.Fatal(err)
				}
				sec, _, _ := svc.NewTOTPKey(u, "Ward")
				used := codeAt(t, sec, clk.Now())
				if err := svc.EnrollTOTP(ctx, u.ID, u.ID, sec, used); err != nil {
					t.Fatal(err)
				}
				for i := range maxFail - 1 {
					code := fmt.Sprintf("%06d", i)
					if code == used {
						code = "999999"
					}
					if err := svc.CheckTOTP(ctx, u, code, "192.0.2.9"); !errors.Is(err, ErrInvalidTOTP) {
						t.Fatalf("%s wrong code %d: %v", name, i+1, err)
					}
				}
				return u, svc.CheckTOTP(ctx, u, used, "192.0.2.9")
			}

			lift := b.RefuseEvents(t, model.EventUserUpdated)
			bob, err := lockWithReplay("bob")
			lift()
			if !errors.Is(err, ErrTOTPUsed) {
				t.Fatalf("bob's replayed code: %v, want ErrTOTPUsed", err)
			}
			u, err := st.GetUser(ctx, bob.ID)
			if err != nil || !u.LockedUntil.After(clk.Now()) || len(lockedRecords(t, st, bob.ID)) != 1 || givenBack(bob.ID) != 0 {
				t.Fatalf("bob after a refused lift: %+v, %v; want still locked, one user.locked, no lift", u, err)
			}

			alice, err := lockWithReplay("alice")
			if !errors.Is(err, ErrTOTPUsed) {
				t.Fatalf("alice's replayed code: %v, want ErrTOTPUsed", err)
			}
			u, err = st.GetUser(ctx, alice.ID)
			if err != nil || !u.LockedUntil.IsZero() || u.FailedLogins != maxFail-1 {
				t.Fatalf("alice after the replay: %+v, %v; want unlocked with %d failures", u, err, maxFail-1)
			}
			if l, g := len(lockedRecords(t, st, alice.ID)), givenBack(alice.ID); l != 1 || g != 1 {
				t.Fatalf("alice: %d user.locked, %d lifts; want one each", l, g)
			}
		})
	}
}
