package identity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// One host holds a whole IPv6 /64: its addresses share one budget.
// IPv4 addresses have one each unless a shorter prefix is configured;
// IPv4-mapped IPv6 addresses are their IPv4 address.
func TestIPThrottlingByNetwork(t *testing.T) {
	ctx := context.Background()
	try := func(e *env, ip string) error {
		_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: "wrong password", IP: ip})
		return err
	}
	t.Run("ipv6 /64", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.IPFailuresPerMinute = 3; o.MaxFailures = 100 })
		e.mustCreate(t, "alice")
		for _, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa:bbbb:cccc:dddd"} {
			if err := try(e, ip); !errors.Is(err, ErrInvalidCredentials) {
				t.Fatalf("%s: %v, want ErrInvalidCredentials", ip, err)
			}
		}
		if err := try(e, "2001:db8:1:2:ffff::9"); !errors.Is(err, ErrThrottled) || Reason(err) != ReasonThrottled {
			t.Errorf("4th address of the /64: %v, want ErrThrottled", err)
		}
		if err := try(e, "2001:db8:1:3::1"); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("another /64: %v, want its own budget", err)
		}
	})
	t.Run("ipv4 per address", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.IPFailuresPerMinute = 3; o.MaxFailures = 100 })
		e.mustCreate(t, "alice")
		for range 3 {
			try(e, "198.51.100.1")
		}
		if err := try(e, "::ffff:198.51.100.1"); !errors.Is(err, ErrThrottled) {
			t.Errorf("IPv4-mapped form of a spent address: %v, want ErrThrottled", err)
		}
		if err := try(e, "198.51.100.2"); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("neighbour address: %v, want its own budget", err)
		}
	})
	t.Run("ipv4 /24 by configuration", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.IPFailuresPerMinute = 3; o.MaxFailures = 100; o.IPv4Prefix = 24 })
		e.mustCreate(t, "alice")
		for i := range 3 {
			try(e, fmt.Sprint("198.51.100.", i+1))
		}
		if err := try(e, "198.51.100.200"); !errors.Is(err, ErrThrottled) {
			t.Errorf("same /24: %v, want ErrThrottled", err)
		}
		if err := try(e, "198.51.101.1"); !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("another /24: %v, want its own budget", err)
		}
	})
}

// Spraying from many networks is bounded by the instance's budget of
// failed sign-ins (default 600 a minute); refusals of locked accounts do
// not spend it.
func TestGlobalFailureBudget(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxFailures = 3 })
	ctx := context.Background()
	e.mustCreate(t, "alice")
	attempt := func(i int, user, pw string) error {
		_, err := e.svc.CheckPassword(ctx, Attempt{Username: user, Password: pw, IP: fmt.Sprintf("2001:db8:%x::1", i)})
		return err
	}
	// Lock alice, then hammer her locked account: free for the budget.
	for i := range 3 {
		attempt(i, "alice", "wrong password")
	}
	for i := range 50 {
		if err := attempt(i, "alice", goodPassword); !errors.Is(err, ErrLocked) {
			t.Fatalf("locked account: %v", err)
		}
	}
	for i := 3; i < DefaultGlobalFailuresPerMinute; i++ {
		if err := attempt(i, fmt.Sprint("sprayed", i), "Summer2026!"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("failure %d of %d: %v, want ErrInvalidCredentials", i+1, DefaultGlobalFailuresPerMinute, err)
		}
	}
	err := attempt(9999, "sprayed-more", "Summer2026!")
	if !errors.Is(err, ErrThrottled) || Reason(err) != ReasonThrottledGlobal {
		t.Fatalf("past the global budget: %v (%s), want ErrThrottled/%s", err, Reason(err), ReasonThrottledGlobal)
	}
	e.clock.Advance(time.Second) // 10 a second come back
	for i := range 10 {
		if err := attempt(10000+i, "bob-"+fmt.Sprint(i), "x"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("after refill, attempt %d: %v", i, err)
		}
	}
	if err := attempt(10010, "one-more", "x"); !errors.Is(err, ErrThrottled) {
		t.Errorf("after spending the refill: %v, want ErrThrottled", err)
	}
}

// The queue in front of the argon2 slots is bounded: with every slot
// busy and the queue full, one more sign-in is refused at once (instead
// of waiting behind a flood), is not counted against the account, and
// the attempts already queued are all evaluated.
func TestHashQueueBounded(t *testing.T) {
	const queue = 4
	e := newEnv(t, func(o *Options) {
		o.MaxConcurrentHashes = 1
		o.MaxHashQueue = queue
		o.IPFailuresPerMinute = 1000
		o.MaxFailures = 1000
	})
	ctx := context.Background()
	alice := e.mustCreate(t, "alice")
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	e.svc.hashHook = func(d int) {
		if d > 0 && first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
	}
	var wg sync.WaitGroup
	results := make(chan error, queue+1)
	wg.Go(func() {
		_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: "wrong holder", IP: "192.0.2.1"})
		results <- err
	})
	<-entered
	for i := range queue {
		wg.Go(func() {
			_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: "wrong waiter", IP: fmt.Sprint("192.0.2.", 10+i)})
			results <- err
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.svc.hashQueue) < queue && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// Refused without waiting: the slot stays held until the test lets
	// the holder go, so an attempt that queued would end at its context's
	// deadline, with that error, not ErrThrottled.
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := e.svc.CheckPassword(tctx, Attempt{Username: "alice", Password: goodPassword, IP: "203.0.113.5"})
	if !errors.Is(err, ErrThrottled) || Reason(err) != ReasonOverloaded {
		t.Errorf("with the queue full: %v (%s), want ErrThrottled/%s at once", err, Reason(err), ReasonOverloaded)
	}
	// An unknown name is refused the same way.
	if _, err := e.svc.CheckPassword(tctx, Attempt{Username: "ghost", Password: "x", IP: "203.0.113.6"}); !errors.Is(err, ErrThrottled) {
		t.Errorf("unknown name with the queue full: %v, want ErrThrottled", err)
	}
	close(release)
	wg.Wait()
	close(results)
	for err := range results {
		if !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("queued attempt: %v, want it evaluated", err)
		}
	}
	if got := e.store.rawUser(alice.ID).FailedLogins; got != queue+1 {
		t.Errorf("FailedLogins = %d, want %d (the refused attempt is not counted)", got, queue+1)
	}
	// With room again, the right password goes through.
	if _, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "203.0.113.5"}); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}
