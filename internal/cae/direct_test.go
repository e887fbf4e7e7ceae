package cae

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
)

// Tests of "deliver first, persist only what failed" (direct.go).

// directBackends runs f on SQLite, and on PostgreSQL (with NATS) when
// configured.
func directBackends(t *testing.T, f func(t *testing.T, e *spreadEnv)) {
	t.Run("sqlite", func(t *testing.T) {
		kek, err := secret.NewKEK(bytes.Repeat([]byte{7}, 32))
		if err != nil {
			t.Fatal(err)
		}
		r := &spreadReceiver{got: map[string][]string{}}
		r.srv = httptest.NewServer(r)
		t.Cleanup(r.srv.Close)
		f(t, &spreadEnv{sqlitePath: filepath.Join(t.TempDir(), "ward.db"), kek: kek, recv: r})
	})
	t.Run("postgres", func(t *testing.T) { f(t, newSpreadEnv(t)) })
}

// instOpts configures one transmitter instance of a test.
type instOpts struct {
	name        string
	rescan      time.Duration
	lease       time.Duration
	noNotifier  bool
	directWait  time.Duration
	pushTimeout time.Duration
}

// openStore opens the environment's database (a new pool, as a new
// process would).
func (e *spreadEnv) openStore(t *testing.T) store.Store {
	t.Helper()
	ctx := context.Background()
	var (
		st  store.Store
		err error
	)
	if e.sqlitePath != "" {
		st, err = sqlite.Open(ctx, e.sqlitePath)
	} else {
		st, err = postgres.Open(ctx, e.dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// start starts an instance with o on its own pool.
func (e *spreadEnv) start(t *testing.T, o instOpts) *Service {
	t.Helper()
	st := e.openStore(t)
	keys, err := tokens.NewKeyManager(context.Background(), tokens.KeyOptions{Store: st, KEK: e.kek})
	if err != nil {
		t.Fatal(err)
	}
	if o.rescan == 0 {
		o.rescan = 100 * time.Millisecond
	}
	if o.lease == 0 {
		o.lease = time.Minute
	}
	var n Notifier
	if e.nc != nil && !o.noNotifier {
		n = bus.NewSignal(e.nc, e.subject)
	}
	s, err := New(Options{Issuer: "https://ward.example", Store: st, Keys: keys, KEK: e.kek, InstanceID: o.name,
		RescanInterval: o.rescan, LeaseDuration: o.lease, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		MaxStreamsPerClient: 1000, PushAllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		DirectWait: o.directWait, PushTimeout: o.pushTimeout, Notifier: n})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

// event has s handle one domain event of subject user and returns its id
// (the event is stored first, as the audit persister does).
func event(t *testing.T, s *Service, id, user string) (*model.Event, error) {
	t.Helper()
	e := &model.Event{ID: id, Type: model.EventUserDisabled, Time: time.Now(), Actor: "admin", UserID: user}
	if _, err := s.o.Store.AppendEvent(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return e, s.HandleEvent(context.Background(), e)
}

func setCounts(t *testing.T, s *Service, id string) store.SETCounts {
	t.Helper()
	c, err := s.o.Store.CountSETs(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitIdle waits until s pushes nothing and has nothing to push (after
// its first claims, the worker reads each stream's queue once).
func waitIdle(t *testing.T, s *Service) {
	t.Helper()
	waitFor(t, "an idle push worker", func() bool {
		p := s.pusher
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, ps := range p.owned {
			if ps.running || ps.dirty {
				return false
			}
		}
		return true
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Streams with nothing queued get their SETs without an outbox row; the
// event is recorded as handled all the same.
func TestDirectPushWritesNothingDelivered(t *testing.T) {
	directBackends(t, func(t *testing.T, e *spreadEnv) {
		a := e.start(t, instOpts{name: "inst-a"})
		ids := e.createStreams(t, a, 5)
		waitSplit(t, len(ids), a)
		waitIdle(t, a)
		var events []string
		for i := range 3 {
			time.Sleep(2 * directQuiet) // not a burst
			ev, err := event(t, a, fmt.Sprintf("ev-%d", i), "u1")
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, ev.ID)
			if ok, err := a.o.Store.SSFEventHandled(context.Background(), ev.ID); err != nil || !ok {
				t.Fatalf("event %s handled = %v, %v", ev.ID, ok, err)
			}
		}
		e.waitDelivered(t, len(ids), events)
		if got := a.stats.Direct.Load(); got != int64(3*len(ids)) {
			t.Errorf("direct = %d, want %d", got, 3*len(ids))
		}
		if got := a.stats.Enqueued.Load(); got != 0 {
			t.Errorf("%d SETs written to the outbox, want none", got)
		}
		for _, id := range ids {
			if c := setCounts(t, a, id); c.Queued != 0 || c.Refused != 0 {
				t.Errorf("stream %s: %+v", id, c)
			}
		}
	})
}

// A receiver answering 500, one answering 400 and one that hangs: the
// event's handler returns while the hung push is still open, writes the
// SETs that were not delivered, the failed one is retried until
// delivered, the refused one is kept as refused, and the hung one's row
// is deleted once it is answered.
func TestDirectPushFailingReceivers(t *testing.T) {
	directBackends(t, func(t *testing.T, e *spreadEnv) {
		release := make(chan struct{})
		var fails500 atomic.Int32
		e.recv.answer = func(path string) int {
			switch path {
			case "/r/1":
				if fails500.Add(1) <= 2 {
					return http.StatusInternalServerError
				}
			case "/r/2":
				return http.StatusBadRequest
			case "/r/3":
				<-release
			}
			return http.StatusAccepted
		}
		// Long enough for a local receiver on a loaded machine; /r/3 hangs
		// past it.
		a := e.start(t, instOpts{name: "inst-a", directWait: 2 * time.Second})
		ids := e.createStreams(t, a, 4)
		waitSplit(t, len(ids), a)
		waitIdle(t, a)

		ev, err := event(t, a, "ev-0", "u1")
		if err != nil {
			t.Fatal(err)
		}
		// Returned with /r/3 still hanging: its SET is in the outbox.
		select {
		case <-release:
			t.Fatal("released early")
		default:
		}
		if c := setCounts(t, a, ids[3]); c.Queued != 1 {
			t.Errorf("hung stream: %+v, want its SET queued", c)
		}
		if c := setCounts(t, a, ids[0]); c.Queued != 0 {
			t.Errorf("delivered stream: %+v, want nothing queued", c)
		}
		waitFor(t, "the 500 receiver's retry", func() bool { return len(e.recv.txns("/r/1")) == 1 })
		waitFor(t, "the refusal recorded", func() bool { c := setCounts(t, a, ids[2]); return c.Refused == 1 && c.Queued == 0 })
		close(release)
		waitFor(t, "the hung push's row deleted", func() bool { return setCounts(t, a, ids[3]).Queued == 0 })
		waitFor(t, "queue of the retried stream empty", func() bool { return setCounts(t, a, ids[1]).Queued == 0 })
		for _, p := range []string{"/r/0", "/r/1", "/r/3"} {
			if got := e.recv.txns(p); !slices.Equal(got, []string{ev.ID}) {
				t.Errorf("%s got %v, want [%s]", p, got, ev.ID)
			}
		}
		if got := e.recv.txns("/r/2"); len(got) != 0 {
			t.Errorf("/r/2 recorded %v", got)
		}
		// The next event: nothing queued any more, so direct again.
		before := a.stats.Direct.Load()
		time.Sleep(2 * directQuiet) // not a burst
		if _, err := event(t, a, "ev-1", "u1"); err != nil {
			t.Fatal(err)
		}
		if got := a.stats.Direct.Load() - before; got < 3 {
			t.Errorf("direct pushes of the next event: %d, want at least 3", got)
		}
	})
}

// txns returns the txns recorded for path.
func (r *spreadReceiver) txns(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[path])
}

// A process killed after its direct pushes and before writing the rest
// (here: the write is not done and the process crashes) leaves the event
// unrecorded; Recover at the next start handles it again, every receiver
// gets the SET, and those who already had it get the same jti.
func TestDirectPushCrashBeforeWrite(t *testing.T) {
	directBackends(t, func(t *testing.T, e *spreadEnv) {
		release := make(chan struct{})
		var fail atomic.Bool
		e.recv.answer = func(path string) int {
			switch {
			case path == "/r/1" && fail.Load():
				return http.StatusServiceUnavailable
			case path == "/r/2" && fail.Load():
				<-release
				return http.StatusServiceUnavailable
			}
			return http.StatusAccepted
		}
		a := e.start(t, instOpts{name: "inst-a", directWait: time.Second, pushTimeout: 5 * time.Second})
		ids := e.createStreams(t, a, 4)
		waitSplit(t, len(ids), a)
		waitIdle(t, a)
		ev0, err := event(t, a, "ev-0", "u1") // recorded: Recover looks from here
		if err != nil {
			t.Fatal(err)
		}
		e.waitDelivered(t, len(ids), []string{ev0.ID})
		waitIdle(t, a)
		for _, id := range ids {
			waitFor(t, "an empty queue", func() bool { return setCounts(t, a, id).Queued == 0 })
		}
		fail.Store(true)
		a.beforeWrite = func() error { return errors.New("killed") }
		time.Sleep(2 * directQuiet) // not a burst
		ev1, err := event(t, a, "ev-1", "u1")
		if err == nil {
			t.Fatal("the handler wrote despite the crash")
		}
		if ok, _ := a.o.Store.SSFEventHandled(context.Background(), ev1.ID); ok {
			t.Fatal("event recorded as handled")
		}
		// Pushed before the (failed) write, answered now or a moment later.
		waitFor(t, "the direct push at /r/0", func() bool { return slices.Contains(e.recv.txns("/r/0"), ev1.ID) })
		close(release)
		crash(t, a)
		fail.Store(false)

		b := e.start(t, instOpts{name: "inst-a", directWait: 50 * time.Millisecond})
		if n, err := b.Recover(context.Background()); err != nil || n != 1 {
			t.Fatalf("Recover = %d, %v; want 1 event", n, err)
		}
		e.waitDelivered(t, len(ids), []string{ev0.ID, ev1.ID})
		// The copy /r/0 gets again carries the jti it already has.
		waitFor(t, "the copy at /r/0", func() bool { return len(e.recv.txns("/r/0")) == 3 })
		e.recv.mu.Lock()
		j := e.recv.jtis["/r/0"]
		e.recv.mu.Unlock()
		if len(j) != 3 || j[1] != j[2] {
			t.Errorf("/r/0 jtis %v: want ev-1's twice, the same", j)
		}
	})
}

// Events of one subject reach every receiver in order, each at least
// once, when receivers are slow (pushes outlive DirectWait, so their SETs
// are written while in flight) and fail now and then.
func TestDirectPushKeepsOrder(t *testing.T) {
	directBackends(t, func(t *testing.T, e *spreadEnv) {
		var n atomic.Int64
		e.recv.answer = func(path string) int {
			k := n.Add(1)
			time.Sleep(time.Duration(k%4) * 10 * time.Millisecond)
			if k%5 == 0 {
				return http.StatusServiceUnavailable
			}
			return http.StatusAccepted
		}
		a := e.start(t, instOpts{name: "inst-a", directWait: 15 * time.Millisecond})
		ids := e.createStreams(t, a, 6)
		waitSplit(t, len(ids), a)
		waitIdle(t, a)
		var events []string
		for i := range 15 {
			ev, err := event(t, a, fmt.Sprintf("ev-%02d", i), "u1")
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, ev.ID)
		}
		e.waitDelivered(t, len(ids), events)
		// Usually both paths are taken; a loaded machine may write all.
		t.Logf("direct %d, written %d", a.stats.Direct.Load(), a.stats.Enqueued.Load())
	})
}

// A stream disabled while a direct push of it hangs: its written SET is
// dropped with the queue, the push's failure is not retried, and nothing
// more is sent until it is enabled again.
func TestDirectPushStreamDisabledMidFlight(t *testing.T) {
	directBackends(t, func(t *testing.T, e *spreadEnv) {
		release := make(chan struct{})
		var calls atomic.Int32
		e.recv.answer = func(path string) int {
			if path != "/r/0" {
				return http.StatusAccepted
			}
			if calls.Add(1) == 1 {
				<-release
				return http.StatusServiceUnavailable
			}
			return http.StatusAccepted
		}
		a := e.start(t, instOpts{name: "inst-a", directWait: 20 * time.Millisecond})
		ids := e.createStreams(t, a, 2)
		waitSplit(t, len(ids), a)
		waitIdle(t, a)
		if _, err := event(t, a, "ev-0", "u1"); err != nil {
			t.Fatal(err)
		}
		if c := setCounts(t, a, ids[0]); c.Queued != 1 {
			t.Fatalf("hung stream: %+v, want its SET written", c)
		}
		ctx := context.Background()
		if _, err := a.SetStatus(ctx, "rcv", ids[0], model.StreamDisabled, "test"); err != nil {
			t.Fatal(err)
		}
		close(release)
		if _, err := event(t, a, "ev-1", "u1"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.SetStatus(ctx, "rcv", ids[0], model.StreamEnabled, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := event(t, a, "ev-2", "u1"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ev-2 at the re-enabled stream", func() bool { return len(e.recv.txns("/r/0")) == 1 })
		// ev-0 (its push failed after the disable) was not sent again,
		// ev-1 (while disabled) never.
		if got := e.recv.txns("/r/0"); !slices.Equal(got, []string{"ev-2"}) {
			t.Errorf("/r/0 got %v, want [ev-2]", got)
		}
		waitFor(t, "every event at the other stream", func() bool { return len(e.recv.txns("/r/1")) == 3 })
		if got := e.recv.txns("/r/1"); !slices.Equal(got, []string{"ev-0", "ev-1", "ev-2"}) {
			t.Errorf("/r/1 got %v", got)
		}
	})
}

// An instance that did not hear of a SET another instance queued for a
// stream it holds (no NATS wake-up, no rescan during the test) still
// does not push a later SET of that stream directly: it finds the queued
// one in the outbox and pushes both, in order.
func TestDirectPushAfterAnotherInstanceQueued(t *testing.T) {
	e := newSpreadEnv(t)
	b := e.start(t, instOpts{name: "inst-b", rescan: time.Hour, noNotifier: true})
	ids := e.createStreams(t, b, 4)
	waitSplit(t, len(ids), b)
	waitIdle(t, b)
	a := e.start(t, instOpts{name: "inst-a", rescan: time.Hour, noNotifier: true})
	if h := held(a); len(h) != 0 {
		t.Fatalf("a holds %v", h)
	}
	if _, err := event(t, a, "ev-0", "u1"); err != nil {
		t.Fatal(err)
	}
	if c := setCounts(t, a, ids[0]); c.Queued != 1 {
		t.Fatalf("queued by a: %+v", c)
	}
	if _, err := event(t, b, "ev-1", "u1"); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(t, len(ids), []string{"ev-0", "ev-1"})
	if got := b.stats.Direct.Load(); got != 0 {
		t.Errorf("b pushed %d SETs directly past a queued one", got)
	}
}

// An instance whose lease runs out while its direct push hangs: the new
// holder pushes the SET written for it, then the next event's, in order;
// the late answer to the old holder deletes its row and breaks nothing.
func TestDirectPushLeaseLostMidFlight(t *testing.T) {
	e := newSpreadEnv(t)
	release := make(chan struct{})
	var calls atomic.Int32
	e.recv.answer = func(path string) int {
		if path == "/r/0" && calls.Add(1) == 1 {
			<-release
		}
		return http.StatusAccepted
	}
	// a never renews its 2 s leases (rescan an hour).
	a := e.start(t, instOpts{name: "inst-a", rescan: time.Hour, lease: 2 * time.Second, directWait: 20 * time.Millisecond})
	ids := e.createStreams(t, a, 3)
	waitSplit(t, len(ids), a)
	waitIdle(t, a)
	if _, err := event(t, a, "ev-0", "u1"); err != nil {
		t.Fatal(err)
	}
	b := e.start(t, instOpts{name: "inst-b", lease: 2 * time.Second})
	waitFor(t, "b holding every stream", func() bool { return len(held(b)) == len(ids) })
	close(release)
	if _, err := event(t, b, "ev-1", "u1"); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(t, len(ids), []string{"ev-0", "ev-1"})
	waitFor(t, "an empty queue", func() bool { return setCounts(t, b, ids[0]).Queued == 0 })
}

// With two instances, the SETs of the streams the other instance pushes
// are written (and it is woken) while this instance's direct pushes are
// still open: the other half of the receivers does not wait for this
// half's slowest receiver. The held half is written as usual once
// DirectWait passes, and every receiver gets the event once, in order
// with the next one.
func TestDirectPushWritesOtherInstancesFirst(t *testing.T) {
	e := newSpreadEnv(t)
	release := make(chan struct{})
	var mine sync.Map // paths of a's receivers: they hang until release
	e.recv.answer = func(path string) int {
		if _, ok := mine.Load(path); ok {
			<-release
		}
		return http.StatusAccepted
	}
	a := e.start(t, instOpts{name: "inst-a", directWait: 20 * time.Second, pushTimeout: 30 * time.Second})
	b := e.start(t, instOpts{name: "inst-b"})
	ids := e.createStreams(t, a, 6)
	waitSplit(t, len(ids), a, b)
	waitIdle(t, a)
	waitIdle(t, b)
	pathOf := map[string]string{}
	for i, id := range ids {
		pathOf[id] = fmt.Sprintf("/r/%d", i)
	}
	var others []string
	for _, id := range held(a) {
		mine.Store(pathOf[id], true)
	}
	for _, id := range held(b) {
		others = append(others, pathOf[id])
	}
	if len(others) == 0 || len(others) == len(ids) {
		t.Fatalf("split: b holds %d of %d", len(others), len(ids))
	}
	time.Sleep(2 * directQuiet) // not a burst
	done := make(chan error, 1)
	go func() {
		_, err := event(t, a, "ev-0", "u1")
		done <- err
	}()
	// b's receivers get the SET while a's handler still waits on its own.
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range others {
		for len(e.recv.txns(p)) == 0 {
			if time.Now().After(deadline) {
				close(release)
				t.Fatalf("%s (b's) got nothing while a's pushes were open", p)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a's handler returned (%v) before its receivers answered", err)
	default:
	}
	if ok, _ := a.o.Store.SSFEventHandled(context.Background(), "ev-0"); ok {
		t.Error("event recorded as handled before its direct pushes were answered or written")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ok, err := a.o.Store.SSFEventHandled(context.Background(), "ev-0"); err != nil || !ok {
		t.Fatalf("event handled = %v, %v", ok, err)
	}
	time.Sleep(2 * directQuiet)
	if _, err := event(t, a, "ev-1", "u1"); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(t, len(ids), []string{"ev-0", "ev-1"})
	if got := a.stats.Direct.Load(); got < int64(len(ids)-len(others)) {
		t.Errorf("a pushed %d SETs directly, want at least %d", got, len(ids)-len(others))
	}
}

// A process that dies after the early write (the other instance's SETs
// are written, and delivered by it) and before its final write: the
// event is not recorded, Recover at the next start handles it again, and
// every receiver ends with the SET; the other instance's receivers,
// which had it, get at most a copy with the same jti, never a new one.
func TestDirectPushCrashAfterEarlyWrite(t *testing.T) {
	e := newSpreadEnv(t)
	a := e.start(t, instOpts{name: "inst-a", directWait: time.Second})
	b := e.start(t, instOpts{name: "inst-b"})
	ids := e.createStreams(t, a, 6)
	waitSplit(t, len(ids), a, b)
	waitIdle(t, a)
	waitIdle(t, b)
	pathOf := map[string]string{}
	for i, id := range ids {
		pathOf[id] = fmt.Sprintf("/r/%d", i)
	}
	var others []string
	for _, id := range held(b) {
		others = append(others, pathOf[id])
	}
	ev0, err := event(t, a, "ev-0", "u1") // recorded: Recover looks from here
	if err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(t, len(ids), []string{ev0.ID})
	waitIdle(t, a)
	a.beforeWrite = func() error { return errors.New("killed") }
	time.Sleep(2 * directQuiet) // not a burst
	ev1, err := event(t, a, "ev-1", "u1")
	if err == nil {
		t.Fatal("the handler wrote despite the crash")
	}
	if ok, _ := a.o.Store.SSFEventHandled(context.Background(), ev1.ID); ok {
		t.Fatal("event recorded as handled")
	}
	// The early write went through: b delivers its half.
	for _, p := range others {
		waitFor(t, "b's receiver "+p, func() bool { return slices.Contains(e.recv.txns(p), ev1.ID) })
	}
	crash(t, a)
	a2 := e.start(t, instOpts{name: "inst-a", directWait: 50 * time.Millisecond})
	if n, err := a2.Recover(context.Background()); err != nil || n != 1 {
		t.Fatalf("Recover = %d, %v; want 1 event", n, err)
	}
	e.waitDelivered(t, len(ids), []string{ev0.ID, ev1.ID})
	e.recv.mu.Lock()
	defer e.recv.mu.Unlock()
	for _, p := range others {
		var j1 []string
		for i, txn := range e.recv.got[p] {
			if txn == ev1.ID {
				j1 = append(j1, e.recv.jtis[p][i])
			}
		}
		if len(j1) == 0 || len(j1) > 2 || len(j1) == 2 && j1[0] != j1[1] {
			t.Errorf("%s: ev-1 jtis %v, want one, or one copy with the same jti", p, j1)
		}
	}
}
