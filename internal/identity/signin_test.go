package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

func TestCheckPasswordSuccessAndFailure(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")

	u, err := e.svc.CheckPassword(ctx, Attempt{Username: " Alice ", Password: goodPassword, IP: "192.0.2.1"})
	if err != nil || u == nil || u.ID != alice.ID {
		t.Fatalf("CheckPassword(correct) = %v, %v; want alice", u, err)
	}
	u, err = e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: "wrong password!", IP: "192.0.2.1"})
	if u != nil || !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("CheckPassword(wrong) = %v, %v; want nil, ErrInvalidCredentials", u, err)
	}
	if Reason(err) != ReasonInvalidCredentials || FailedUserID(err) != alice.ID {
		t.Errorf("Reason = %q, FailedUserID = %q; want %q, %q", Reason(err), FailedUserID(err), ReasonInvalidCredentials, alice.ID)
	}
	if got := e.store.rawUser(alice.ID).FailedLogins; got != 1 {
		t.Errorf("FailedLogins = %d, want 1", got)
	}
	if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	if got := e.store.rawUser(alice.ID).FailedLogins; got != 0 {
		t.Errorf("FailedLogins after success = %d, want 0", got)
	}
	// CheckPassword publishes no sign-in events.
	for _, ev := range e.rec.Events() {
		if strings.HasPrefix(string(ev.Type), "signin.") {
			t.Errorf("CheckPassword published %s", ev.Type)
		}
	}
}

// Unknown user, wrong password and disabled user must look the same to the
// caller: same error value under errors.Is, same message; only Reason
// differs.
func TestCheckPasswordIndistinguishableFailures(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.mustCreate(t, "alice")
	bob := e.mustCreate(t, "bob")
	if err := e.svc.SetDisabled(ctx, "admin", bob.ID, true); err != nil {
		t.Fatal(err)
	}
	var hashes atomic.Int64
	e.svc.hashHook = func(d int) {
		if d > 0 {
			hashes.Add(1)
		}
	}
	cases := []struct {
		name, user, pw, reason string
	}{
		{"wrong password", "alice", "not the password", ReasonInvalidCredentials},
		{"unknown user", "mallory", "not the password", ReasonUnknownUser},
		{"invalid username", "no such/user!", "not the password", ReasonUnknownUser},
		{"disabled, right password", "bob", goodPassword, ReasonDisabled},
		{"disabled, wrong password", "bob", "not the password", ReasonDisabled},
	}
	var msgs []string
	for _, tc := range cases {
		hashes.Store(0)
		u, err := e.svc.CheckPassword(ctx, Attempt{Username: tc.user, Password: tc.pw, IP: "192.0.2.7"})
		if u != nil || !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("%s: got %v, %v; want nil, ErrInvalidCredentials", tc.name, u, err)
		}
		if got := Reason(err); got != tc.reason {
			t.Errorf("%s: Reason = %q, want %q", tc.name, got, tc.reason)
		}
		if n := hashes.Load(); n != 1 {
			t.Errorf("%s: %d argon2 computations, want exactly 1", tc.name, n)
		}
		msgs = append(msgs, err.Error())
	}
	for _, m := range msgs {
		if m != ErrInvalidCredentials.Error() {
			t.Errorf("message %q differs from %q", m, ErrInvalidCredentials.Error())
		}
	}
}

func TestLockoutAndExpiry(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxFailures = 3; o.LockoutDuration = 15 * time.Minute })
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")
	try := func(pw string) error {
		_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: pw, IP: "192.0.2.1", UserAgent: "test-ua"})
		return err
	}
	for i := range 3 {
		if err := try("wrong password " + fmt.Sprint(i)); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("failure %d: %v, want ErrInvalidCredentials", i+1, err)
		}
	}
	raw := e.store.rawUser(alice.ID)
	if raw.FailedLogins != 3 || !raw.LockedUntil.Equal(e.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("after 3 failures: FailedLogins=%d LockedUntil=%v", raw.FailedLogins, raw.LockedUntil)
	}
	var locked []model.Event
	for _, ev := range e.rec.Events() {
		if ev.Type == model.EventUserLocked {
			locked = append(locked, ev)
		}
	}
	if len(locked) != 1 || locked[0].UserID != alice.ID || locked[0].IP != "192.0.2.1" || locked[0].UserAgent != "test-ua" || locked[0].Reason == "" {
		t.Fatalf("user.locked events = %+v, want one for alice with ip, ua and reason", locked)
	}
	// Locked: even the right password is refused, without hashing.
	var hashes atomic.Int64
	e.svc.hashHook = func(d int) { hashes.Add(int64(max(d, 0))) }
	if err := try(goodPassword); !errors.Is(err, ErrLocked) || Reason(err) != ReasonLocked || FailedUserID(err) != alice.ID {
		t.Fatalf("while locked: %v (reason %q), want ErrLocked", err, Reason(err))
	}
	if hashes.Load() != 0 {
		t.Errorf("locked attempt spent %d hashes, want 0", hashes.Load())
	}
	e.clock.Advance(15*time.Minute - time.Second)
	if err := try(goodPassword); !errors.Is(err, ErrLocked) {
		t.Fatalf("1s before expiry: %v, want ErrLocked", err)
	}
	e.clock.Advance(time.Second)
	if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	raw = e.store.rawUser(alice.ID)
	if raw.FailedLogins != 0 || !raw.LockedUntil.IsZero() {
		t.Errorf("after success: FailedLogins=%d LockedUntil=%v, want reset", raw.FailedLogins, raw.LockedUntil)
	}
	// A fresh budget after an expired lock: one failure does not relock.
	for range 3 {
		try("wrong")
	}
	e.clock.Advance(16 * time.Minute)
	if err := try("wrong again"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("first failure after expired lock: %v, want ErrInvalidCredentials", err)
	}
	if err := e.svc.Unlock(ctx, "admin", alice.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.store.rawUser(alice.ID).FailedLogins; got != 0 {
		t.Errorf("FailedLogins after Unlock = %d", got)
	}
}

// An unknown username locks after the same number of failures, with the
// same errors, as a real one.
func TestUnknownUsernameLockout(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxFailures = 3 })
	ctx := context.Background()
	e.mustCreate(t, "alice")
	seq := func(user string) []string {
		var out []string
		for i := range 5 {
			_, err := e.svc.CheckPassword(ctx, Attempt{Username: user, Password: fmt.Sprintf("guess %d", i), IP: "192.0.2.1"})
			out = append(out, err.Error())
		}
		return out
	}
	real, unknown := seq("alice"), seq("ghost")
	if strings.Join(real, "|") != strings.Join(unknown, "|") {
		t.Fatalf("error sequences differ:\nreal:    %q\nunknown: %q", real, unknown)
	}
	if real[3] != ErrLocked.Error() {
		t.Fatalf("4th attempt = %q, want ErrLocked", real[3])
	}
	_, err := e.svc.CheckPassword(ctx, Attempt{Username: "GHOST", Password: "x", IP: "192.0.2.1"})
	if !errors.Is(err, ErrLocked) || FailedUserID(err) != "" {
		t.Errorf("unknown locked (case-folded): %v, FailedUserID %q", err, FailedUserID(err))
	}
	// Unknown usernames lock without events (there is no user).
	n := 0
	for _, ev := range e.rec.Events() {
		if ev.Type == model.EventUserLocked {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d user.locked events, want 1 (alice only)", n)
	}
	e.clock.Advance(DefaultLockoutDuration)
	if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "ghost", Password: "x", IP: "192.0.2.1"}); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("unknown after expiry: %v, want ErrInvalidCredentials", err)
	}
}

func TestIPThrottling(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.IPFailuresPerMinute = 3; o.MaxFailures = 100 })
	ctx := context.Background()
	e.mustCreate(t, "alice")
	attempt := func(ip, pw string) error {
		_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: pw, IP: ip})
		return err
	}
	// Successes do not spend the budget.
	for range 5 {
		if err := attempt("198.51.100.1", goodPassword); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := attempt("198.51.100.1", "wrong"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	var hashes atomic.Int64
	e.svc.hashHook = func(d int) { hashes.Add(int64(max(d, 0))) }
	err := attempt("198.51.100.1", goodPassword)
	if !errors.Is(err, ErrThrottled) || Reason(err) != ReasonThrottled {
		t.Fatalf("over budget: %v, want ErrThrottled", err)
	}
	if hashes.Load() != 0 {
		t.Errorf("throttled attempt spent %d hashes, want 0", hashes.Load())
	}
	// Unknown usernames are throttled too.
	if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "ghost", Password: "x", IP: "198.51.100.1"}); !errors.Is(err, ErrThrottled) {
		t.Errorf("unknown user over budget: %v, want ErrThrottled", err)
	}
	// Other addresses are unaffected.
	if err := attempt("198.51.100.2", goodPassword); err != nil {
		t.Errorf("other IP: %v", err)
	}
	// 3 per minute: one token back after 20 s.
	e.clock.Advance(20 * time.Second)
	if err := attempt("198.51.100.1", "wrong"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("after 20s: %v, want one more try", err)
	}
	if err := attempt("198.51.100.1", goodPassword); !errors.Is(err, ErrThrottled) {
		t.Errorf("after spending the refilled token: %v, want ErrThrottled", err)
	}
	e.clock.Advance(time.Minute)
	if err := attempt("198.51.100.1", goodPassword); err != nil {
		t.Errorf("after a minute: %v", err)
	}
}

// Parallel attempts from one address cannot all pass the budget check
// before any failure is counted.
func TestIPThrottlingParallel(t *testing.T) {
	const budget = 3
	e := newEnv(t, func(o *Options) { o.IPFailuresPerMinute = budget; o.MaxFailures = 1000; o.MaxConcurrentHashes = 1 })
	e.mustCreate(t, "alice")
	var invalid, throttled atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := e.svc.CheckPassword(context.Background(), Attempt{Username: "alice", Password: "wrong guess", IP: "198.51.100.77"})
			switch {
			case errors.Is(err, ErrInvalidCredentials):
				invalid.Add(1)
			case errors.Is(err, ErrThrottled):
				throttled.Add(1)
			default:
				t.Errorf("unexpected %v", err)
			}
		})
	}
	wg.Wait()
	if invalid.Load() != budget || throttled.Load() != 20-budget {
		t.Errorf("%d guesses checked, %d throttled; want %d and %d", invalid.Load(), throttled.Load(), budget, 20-budget)
	}
}

func TestHashConcurrencyBound(t *testing.T) {
	const limit = 2
	e := newEnv(t, func(o *Options) {
		o.MaxConcurrentHashes = limit
		o.MaxHashQueue = 16 // every attempt waits its turn
		o.IPFailuresPerMinute = 1000
		o.MaxFailures = 1000
	})
	ctx := context.Background()
	e.mustCreate(t, "alice")
	var cur, peak, total atomic.Int64
	e.svc.hashHook = func(d int) {
		if d > 0 {
			total.Add(1)
			n := cur.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond) // widen the window
		} else {
			cur.Add(-1)
		}
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			user, pw := "alice", goodPassword
			switch i % 3 {
			case 1:
				pw = "wrong password"
			case 2:
				user = "ghost"
			}
			e.svc.CheckPassword(ctx, Attempt{Username: user, Password: pw, IP: fmt.Sprint("203.0.113.", i)})
		})
	}
	wg.Wait()
	if p := peak.Load(); p != limit {
		t.Errorf("peak concurrent argon2 computations = %d, want %d", p, limit)
	}
	if total.Load() < 16 {
		t.Errorf("%d computations for 16 attempts", total.Load())
	}
}

func TestHashWaitHonoursContext(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxConcurrentHashes = 1 })
	e.mustCreate(t, "alice")
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	e.svc.hashHook = func(d int) {
		if d > 0 && first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.CheckPassword(context.Background(), Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"})
		done <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.2"})
	if !errors.Is(err, context.DeadlineExceeded) || Reason(err) != ReasonCanceled {
		t.Errorf("waiting with expired context: %v (reason %q), want DeadlineExceeded", err, Reason(err))
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("holder: %v", err)
	}
	// A cancelled wait is not a failure against the account.
	u, _ := e.store.GetUserByUsername(context.Background(), "alice")
	if u.FailedLogins != 0 {
		t.Errorf("FailedLogins = %d after a cancelled attempt", u.FailedLogins)
	}
}

func TestRehashOnParamChange(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")
	old := e.store.rawUser(alice.ID).PasswordHash
	// Same store, new parameters.
	stronger := Argon2Params{Time: 2, MemoryKiB: 128, Threads: 1}
	svc2 := New(Options{Store: e.store, Now: e.clock.Now, Argon2: stronger})
	if _, err := svc2.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	now := e.store.rawUser(alice.ID).PasswordHash
	if now == old || !strings.HasPrefix(now, "$argon2id$v=19$m=128,t=2,p=1$") {
		t.Fatalf("hash after sign-in = %q, want re-hashed with m=128,t=2", now)
	}
	writes := e.store.hashWrites
	if _, err := svc2.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	if e.store.hashWrites != writes {
		t.Error("a current hash was written again")
	}
}

func TestUnusableStoredHash(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")
	e.store.UpdateUser(ctx, alice.ID, func(u *model.User) error { u.PasswordHash = ""; return nil })
	_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: "", IP: "192.0.2.1"})
	if !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("empty stored hash, empty password: %v, want ErrInvalidCredentials", err)
	}
}

// Parallel wrong guesses cannot exceed the lock: once locked, a correct
// password verified concurrently is not accepted, and it answers like a
// wrong password verified at the same time (not "locked", which would
// tell the right password apart).
func TestLockRecheckedAfterVerify(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxFailures = 1 })
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")
	e.svc.hashHook = func(d int) {
		if d > 0 {
			// Another request locks the account while we hash.
			e.store.UpdateUser(ctx, alice.ID, func(u *model.User) error {
				u.LockedUntil = e.clock.Now().Add(time.Minute)
				return nil
			})
		}
	}
	if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); !errors.Is(err, ErrInvalidCredentials) || Reason(err) != ReasonLocked {
		t.Errorf("locked during verification: %v (%s), want ErrInvalidCredentials with reason %s", err, Reason(err), ReasonLocked)
	}
}

func TestReasonCodes(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrInvalidCredentials, ReasonInvalidCredentials},
		{ErrLocked, ReasonLocked},
		{ErrThrottled, ReasonThrottled},
		{ErrInvalidTOTP, ReasonInvalidTOTP},
		{fmt.Errorf("x: %w", ErrWeakPassword), ReasonWeakPassword},
		{ErrInvalidUsername, ReasonInvalidUsername},
		{fmt.Errorf("user: %w", ErrExists), ReasonExists},
		{authErr(ErrInvalidCredentials, ReasonDisabled, "u1"), ReasonDisabled},
		{fmt.Errorf("wrapped: %w", authErr(ErrInvalidTOTP, ReasonTOTPReplay, "u1")), ReasonTOTPReplay},
		{context.Canceled, ReasonCanceled},
		{errors.New("boom"), ReasonInternal},
	}
	for _, tc := range cases {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// A correct password whose account is locked, disabled or given another
// password while it is verified answers exactly like a wrong password
// (it must not panic, which drops the connection: an oracle only the
// right password triggers), and the account keeps the failure.
func TestAccountChangedDuringVerify(t *testing.T) {
	cases := []struct {
		name   string
		change func(u *model.User, now time.Time)
		reason string
	}{
		{"locked", func(u *model.User, now time.Time) { u.LockedUntil = now.Add(time.Minute) }, ReasonLocked},
		{"disabled", func(u *model.User, _ time.Time) { u.Disabled = true }, ReasonDisabled},
		{"password changed", func(u *model.User, _ time.Time) {
			u.PasswordHash = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"
		}, ReasonInvalidCredentials},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.MaxFailures = 5 })
			ctx := context.Background()
			alice := e.mustCreate(t, "alice")
			// One earlier failure: success would have to reset the count.
			if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: "wrong password!", IP: "192.0.2.1"}); !errors.Is(err, ErrInvalidCredentials) {
				t.Fatal(err)
			}
			e.svc.hashHook = func(d int) {
				if d > 0 {
					e.store.UpdateUser(ctx, alice.ID, func(u *model.User) error { tc.change(u, e.clock.Now()); return nil })
				}
			}
			var u *model.User
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("CheckPassword panicked: %v", p)
					}
				}()
				u, err = e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"})
			}()
			if u != nil || !errors.Is(err, ErrInvalidCredentials) || err.Error() != ErrInvalidCredentials.Error() {
				t.Fatalf("%s during verification: %v, %v; want nil and the wrong-password answer", tc.name, u, err)
			}
			if Reason(err) != tc.reason || FailedUserID(err) != alice.ID {
				t.Errorf("Reason %q FailedUserID %q, want %q %q", Reason(err), FailedUserID(err), tc.reason, alice.ID)
			}
			if got := e.store.rawUser(alice.ID).FailedLogins; got != 2 {
				t.Errorf("FailedLogins = %d, want 2 (the refused attempt counts)", got)
			}
		})
	}
}
