package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// The tests in this file race sign-in attempts against the real stores:
// SQLite (a file, so that reads and the writer use different
// connections) and PostgreSQL when WARD_TEST_POSTGRES_DSN is set. Each

// realEnv is a Service on a real store, with the test KEK (so that a
// second Service on the same database derives the same keys).
func realEnv(t *testing.T, st store.Store, clk *clock.Fake, mod func(*Options)) (*Service, *bus.Recorder) {
	t.Helper()
	kek, err := secret.NewKEK(bytes.Repeat([]byte{7}, secret.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	b := bus.NewLocal()
	rec := &bus.Recorder{}
	b.Subscribe("recorder", rec.Handle)
	o := Options{Store: st, Bus: b, KEK: kek, Now: clk.Now, Argon2: testParams}
	if mod != nil {
		mod(&o)
	}
	return New(o), rec
}

// raceOutcome counts the answers of a burst of concurrent attempts.
type raceOutcome struct {
	mu      sync.Mutex
	answers map[string]int // error message ("" for success) -> count
}

func (r *raceOutcome) add(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.answers == nil {
		r.answers = map[string]int{}
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	r.answers[msg]++
}

// TestConcurrentGuessesReserveTheLockout: 120 concurrent sign-ins from 4
// addresses, 119 wrong and one right, against an account with a limit
// of 5. At most 5 passwords may be evaluated (the argon2 computations),
// every evaluated attempt answers "wrong password" or succeeds, every
// other one answers "locked", and the right password, when it was
// evaluated but another attempt won the race, answers like a wrong one.
func TestConcurrentGuessesReserveTheLockout(t *testing.T) {
	const n, maxFail = 120, 5
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			st := be.Opener(t, clk.Now)()
			svc, _ := realEnv(t, st, clk, func(o *Options) {
				o.MaxFailures = maxFail
				o.MaxConcurrentHashes = 4
				o.MaxHashQueue = n
			})
			ctx := context.Background()
			alice, err := svc.CreateUser(ctx, "admin", NewUser{Username: "alice", Password: goodPassword})
			if err != nil {
				t.Fatal(err)
			}
			var hashes atomic.Int64
			svc.hashHook = func(d int) {
				if d > 0 {
					hashes.Add(1)
					time.Sleep(time.Millisecond) // keep verifications overlapping
				}
			}
			var out raceOutcome
			var rightErr error
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					pw := fmt.Sprintf("wrong guess %d", i)
					if i == n/2 {
						pw = goodPassword
					}
					<-start
					_, err := svc.CheckPassword(ctx, Attempt{Username: "alice", Password: pw, IP: fmt.Sprintf("198.51.100.%d", i%4+1)})
					if i == n/2 {
						rightErr = err
						return
					}
					out.add(err)
				})
			}
			close(start)
			wg.Wait()
			wrongEvaluated := out.answers[ErrInvalidCredentials.Error()]
			t.Logf("%s: %d of %d wrong guesses evaluated (limit %d), %d argon2 computations; right password: %v; answers %v",
				be.Name, wrongEvaluated, n-1, maxFail, hashes.Load(), rightErr, out.answers)
			if h := hashes.Load(); h > maxFail {
				t.Errorf("%d passwords evaluated, limit %d", h, maxFail)
			}
			for msg := range out.answers {
				if msg != ErrInvalidCredentials.Error() && msg != ErrLocked.Error() {
					t.Errorf("wrong guess answered %q", msg)
				}
			}
			// Evaluated attempts answer "wrong" (or succeed); the others "locked".
			evaluated := wrongEvaluated
			if rightErr == nil || errors.Is(rightErr, ErrInvalidCredentials) {
				evaluated++
			}
			if int64(evaluated) != hashes.Load() {
				t.Errorf("%d attempts answered as evaluated, %d were: the right password's answer (%v) tells it apart", evaluated, hashes.Load(), rightErr)
			}
			raw, err := st.GetUser(ctx, alice.ID)
			if err != nil {
				t.Fatal(err)
			}
			if rightErr != nil && raw.FailedLogins != maxFail {
				t.Errorf("FailedLogins = %d, want %d", raw.FailedLogins, maxFail)
			}
		})
	}
}

// TestConcurrentTOTPGuessesReserveTheLockout: 60 concurrent wrong codes
// after a correct password; at most the lockout limit are evaluated.
func TestConcurrentTOTPGuessesReserveTheLockout(t *testing.T) {
	const n, maxFail = 60, 5
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			st := be.Opener(t, clk.Now)()
			svc, _ := realEnv(t, st, clk, func(o *Options) { o.MaxFailures = maxFail })
			ctx := context.Background()
			u, err := svc.CreateUser(ctx, "admin", NewUser{Username: "alice", Password: goodPassword})
			if err != nil {
				t.Fatal(err)
			}
			sec, _, _ := svc.NewTOTPKey(u, "Ward")
			if err := svc.EnrollTOTP(ctx, u.ID, u.ID, sec, codeAt(t, sec, clk.Now())); err != nil {
				t.Fatal(err)
			}
			clk.Advance(5 * time.Minute)
			if u, err = svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); err != nil {
				t.Fatal(err)
			}
			right := codeAt(t, sec, clk.Now())
			var out raceOutcome
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					code := fmt.Sprintf("%06d", i)
					if code == right {
						code = "999999"
					}
					<-start
					out.add(svc.CheckTOTP(ctx, u, code, fmt.Sprintf("198.51.100.%d", i%4+1)))
				})
			}
			close(start)
			wg.Wait()
			evaluated := out.answers[ErrInvalidTOTP.Error()]
			t.Logf("%s: %d of %d wrong codes evaluated (limit %d); answers %v", be.Name, evaluated, n, maxFail, out.answers)
			if evaluated > maxFail {
				t.Errorf("%d codes evaluated, limit %d", evaluated, maxFail)
			}
			if out.answers[ErrLocked.Error()] != n-evaluated {
				t.Errorf("answers %v: want only invalid and locked", out.answers)
			}
			if err := svc.CheckTOTP(ctx, u, right, "192.0.2.9"); !errors.Is(err, ErrLocked) {
				t.Errorf("right code after the burst: %v, want ErrLocked", err)
			}
		})
	}
}

// TestUnknownNameLockoutSharedAndDurable: failures of an unknown name
// count on every instance of one database and survive a restart, exactly
// like those of a real account, so neither a second instance nor a
// restart tells them apart.
func TestUnknownNameLockoutSharedAndDurable(t *testing.T) {
	const maxFail = 3
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			reopen := be.Opener(t, clk.Now)
			mod := func(o *Options) { o.MaxFailures = maxFail }
			a, _ := realEnv(t, reopen(), clk, mod)
			b, _ := realEnv(t, reopen(), clk, mod)
			ctx := context.Background()
			if _, err := a.CreateUser(ctx, "admin", NewUser{Username: "alice", Password: goodPassword}); err != nil {
				t.Fatal(err)
			}
			seq := func(user string) []string {
				var out []string
				for i := range maxFail + 2 {
					svc := a
					if i%2 == 1 {
						svc = b // alternate instances
					}
					if i == maxFail { // and restart before the attempt after the lock
						svc, _ = realEnv(t, reopen(), clk, mod)
					}
					_, err := svc.CheckPassword(ctx, Attempt{Username: user, Password: fmt.Sprintf("guess %d", i), IP: "192.0.2.1"})
					out = append(out, err.Error())
				}
				return out
			}
			real, unknown := seq("alice"), seq("ghost")
			t.Logf("real:    %q\nunknown: %q", real, unknown)
			if fmt.Sprint(real) != fmt.Sprint(unknown) {
				t.Errorf("sequences differ:\nreal:    %q\nunknown: %q", real, unknown)
			}
			if real[maxFail] != ErrLocked.Error() {
				t.Errorf("attempt %d on a real account = %q, want locked", maxFail+1, real[maxFail])
			}
		})
	}
}
