package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// lockoutRule is the rule of the sign-in reservation tests.
var lockoutRule = store.Lockout{MaxFailures: 3, LockFor: 15 * time.Minute, Window: time.Hour}

// signInSubject is what a reservation counts against: an account or an
// unknown name.
type signInSubject struct {
	name    string
	reserve func(now time.Time, r store.Lockout) (*store.SignInReservation, error)
	release func(r *store.SignInReservation) error
}

func signInSubjects(t *testing.T, s store.Store) []signInSubject {
	u := &model.User{ID: "u1", Username: "alice", CreatedAt: at(0)}
	must(t, "CreateUser", s.CreateUser(ctx, u))
	key := []byte{0, 1, 2, 0xfe, 0xff}
	return []signInSubject{
		{"account",
			func(now time.Time, r store.Lockout) (*store.SignInReservation, error) {
				return s.ReserveSignIn(ctx, "u1", now, r)
			},
			func(r *store.SignInReservation) error { return s.ReleaseSignIn(ctx, "u1", r) }},
		{"unknown name",
			func(now time.Time, r store.Lockout) (*store.SignInReservation, error) {
				return s.ReserveUnknownSignIn(ctx, key, now, r)
			},
			func(r *store.SignInReservation) error { return s.ReleaseUnknownSignIn(ctx, key, r) }},
	}
}

// wantReservation checks one reservation's outcome.
func wantReservation(t *testing.T, what string, got *store.SignInReservation, err error, failures int, lockedUntil time.Time) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: got error %v, want a reservation", what, err)
	}
	if got.Failures != failures || !nt(got.LockedUntil).Equal(nt(lockedUntil)) || got.LockedNow != !lockedUntil.IsZero() {
		t.Errorf("%s: got %+v, want failures %d, locked until %v", what, got, failures, nt(lockedUntil))
	}
}

func wantLocked(t *testing.T, what string, got *store.SignInReservation, err error, until time.Time) {
	t.Helper()
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("%s: got %+v, %v; want ErrLocked", what, got, err)
	}
	if got == nil || !nt(got.LockedUntil).Equal(nt(until)) || got.LockedNow {
		t.Errorf("%s: got %+v, want the lock in force until %v", what, got, nt(until))
	}
}

// testSignInReservation: the lockout sequence, the lock's expiry, the
// failure window and giving reservations back, for accounts and unknown
// names alike.
func testSignInReservation(t *testing.T, s store.Store) {
	for _, sub := range signInSubjects(t, s) {
		t.Run(sub.name, func(t *testing.T) {
			r := lockoutRule
			r1, err := sub.reserve(at(0), r)
			wantReservation(t, "1st", r1, err, 1, time.Time{})
			r2, err := sub.reserve(at(time.Minute), r)
			wantReservation(t, "2nd", r2, err, 2, time.Time{})
			r3, err := sub.reserve(at(2*time.Minute), r)
			until := at(2*time.Minute + r.LockFor)
			wantReservation(t, "3rd locks", r3, err, 3, until)
			got, err := sub.reserve(at(3*time.Minute), r)
			wantLocked(t, "4th while locked", got, err, until)
			got, err = sub.reserve(until.Add(-time.Microsecond), r)
			wantLocked(t, "just before the lock ends", got, err, until)

			// The locking attempt gives its reservation back: one count
			// less, no lock.
			must(t, "release the locking attempt", sub.release(r3))
			got, err = sub.reserve(at(4*time.Minute), r)
			wantReservation(t, "after the lock was given back", got, err, 3, at(4*time.Minute+r.LockFor))
			// Giving back a reservation whose lock was replaced lifts nothing.
			must(t, "release a stale lock", sub.release(r3))
			got, err = sub.reserve(at(5*time.Minute), r)
			wantLocked(t, "the newer lock stays", got, err, at(4*time.Minute+r.LockFor))

			// An expired lock starts a fresh count.
			after := at(4*time.Minute + r.LockFor)
			got, err = sub.reserve(after, r)
			wantReservation(t, "after the lock", got, err, 1, time.Time{})
			r5, err := sub.reserve(after.Add(time.Minute), r)
			wantReservation(t, "2nd after the lock", r5, err, 2, time.Time{})
			must(t, "release", sub.release(r5))
			got, err = sub.reserve(after.Add(2*time.Minute), r)
			wantReservation(t, "after a release", got, err, 2, time.Time{})
			// A count whose last attempt is a window old starts afresh.
			got, err = sub.reserve(after.Add(2*time.Minute+r.Window), r)
			wantReservation(t, "a window later", got, err, 1, time.Time{})
			// Without a window, counts never start afresh.
			got, err = sub.reserve(after.Add(100*24*time.Hour), store.Lockout{MaxFailures: 3, LockFor: time.Minute})
			wantReservation(t, "no window", got, err, 2, time.Time{})
		})
	}
	// The account's record is the user's FailedLogins and LockedUntil.
	u, err := s.GetUser(ctx, "u1")
	must(t, "GetUser", err)
	if u.FailedLogins != 2 || !u.LockedUntil.IsZero() {
		t.Errorf("user after the sequence: FailedLogins %d LockedUntil %v, want 2 and none", u.FailedLogins, u.LockedUntil)
	}
	locked := s.ReleaseSignIn(ctx, "u1", &store.SignInReservation{})
	must(t, "ReleaseSignIn", locked)
	_, err = s.UpdateUser(ctx, "u1", func(u *model.User) error { u.LockedUntil = at(time.Hour); return nil })
	must(t, "UpdateUser", err)
	got, err := s.ReserveSignIn(ctx, "u1", at(30*time.Minute), lockoutRule)
	wantLocked(t, "a lock set through UpdateUser", got, err, at(time.Hour))
	if u, _ := s.GetUser(ctx, "u1"); u.FailedLogins != 1 {
		t.Errorf("a refused reservation counted: FailedLogins %d, want 1", u.FailedLogins)
	}
	_, err = s.ReserveSignIn(ctx, "nobody", at(0), lockoutRule)
	wantErr(t, "ReserveSignIn of a missing user", err, store.ErrNotFound)
	must(t, "ReleaseSignIn of a missing user", s.ReleaseSignIn(ctx, "nobody", &store.SignInReservation{}))
	must(t, "ReleaseUnknownSignIn of a missing key", s.ReleaseUnknownSignIn(ctx, []byte("nobody"), &store.SignInReservation{}))
	// Keys are compared as bytes.
	for _, k := range [][]byte{{0, 1, 2, 0xfe}, {0, 1, 2, 0xfe, 0xff, 0}} {
		got, err := s.ReserveUnknownSignIn(ctx, k, at(0), lockoutRule)
		wantReservation(t, "another key", got, err, 1, time.Time{})
	}
}

// testSignInReservationConcurrent: concurrent attempts on one account or
// name reserve exactly MaxFailures attempts; the others are refused, and
// exactly one of the reserved ones locks.
func testSignInReservationConcurrent(t *testing.T, s store.Store) {
	for _, sub := range signInSubjects(t, s) {
		t.Run(sub.name, func(t *testing.T) {
			res := make([]*store.SignInReservation, racers)
			errs := race(func(i int) error {
				var err error
				res[i], err = sub.reserve(at(time.Duration(i)*time.Microsecond), lockoutRule)
				return err
			})
			counts := map[int]bool{}
			lockers, refused := 0, 0
			for i, err := range errs {
				switch {
				case errors.Is(err, store.ErrLocked):
					refused++
				case err != nil:
					t.Errorf("goroutine %d: %v", i, err)
				default:
					counts[res[i].Failures] = true
					if res[i].LockedNow {
						lockers++
					}
				}
			}
			if len(counts) != lockoutRule.MaxFailures || refused != racers-lockoutRule.MaxFailures || lockers != 1 {
				t.Errorf("%d racers: counts %v, %d refused, %d locked; want 1..%d, %d refused, one lock",
					racers, counts, refused, lockers, lockoutRule.MaxFailures, racers-lockoutRule.MaxFailures)
			}
			// Concurrent releases give back exactly what was reserved.
			var wg sync.WaitGroup
			for i := range res {
				if errs[i] == nil {
					wg.Go(func() {
						if err := sub.release(res[i]); err != nil {
							t.Errorf("release: %v", err)
						}
					})
				}
			}
			wg.Wait()
			got, err := sub.reserve(at(time.Second), lockoutRule)
			wantReservation(t, "after releasing all", got, err, 1, time.Time{})
		})
	}
}

// testPurgeSignInFailures: PurgeExpired deletes only the records of
// unknown names that no longer count.
func testPurgeSignInFailures(t *testing.T, s store.Store) {
	r := lockoutRule
	locked, counting, stale := []byte("locked"), []byte("counting"), []byte("stale")
	for range r.MaxFailures {
		_, err := s.ReserveUnknownSignIn(ctx, locked, at(0), store.Lockout{MaxFailures: r.MaxFailures, LockFor: 2 * r.Window, Window: r.Window})
		must(t, "reserve", err)
	}
	for range 2 {
		_, err := s.ReserveUnknownSignIn(ctx, counting, at(30*time.Minute), r)
		must(t, "reserve", err)
	}
	_, err := s.ReserveUnknownSignIn(ctx, stale, at(0), store.Lockout{MaxFailures: 3, LockFor: time.Minute})
	must(t, "reserve", err)
	// At 1h10m: "locked" is locked for another 50 minutes, "counting" is
	// 40 minutes into its window; "stale" had no window (it never
	// expires).
	now := at(time.Hour + 10*time.Minute)
	must(t, "PurgeExpired", s.PurgeExpired(ctx, now))
	got, err := s.ReserveUnknownSignIn(ctx, locked, now, r)
	wantLocked(t, "locked name after purge", got, err, at(2*r.Window))
	got, err = s.ReserveUnknownSignIn(ctx, counting, now, r)
	wantReservation(t, "counting name after purge", got, err, 3, now.Add(r.LockFor))
	got, err = s.ReserveUnknownSignIn(ctx, stale, now, store.Lockout{MaxFailures: 3, LockFor: time.Minute})
	wantReservation(t, "name without a window after purge", got, err, 2, time.Time{})
	// Far later everything is gone; counts start at 1 (as they would
	// without the purge: expiry and purge agree).
	later := at(30 * 24 * time.Hour)
	must(t, "PurgeExpired", s.PurgeExpired(ctx, later))
	for _, k := range [][]byte{locked, counting} {
		got, err := s.ReserveUnknownSignIn(ctx, k, later, store.Lockout{MaxFailures: 3, LockFor: time.Minute})
		wantReservation(t, "after the purge, "+string(k), got, err, 1, time.Time{})
	}
}
