package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
)

// pgStore opens a PostgreSQL store in a schema of its own: the database
// the instances of a test share.
func pgStore(t *testing.T) store.Store {
	t.Helper()
	st, _ := pgStoreSchema(t)
	return st
}

// pgStoreSchema is pgStore, and the store's schema.
func pgStoreSchema(t *testing.T) (store.Store, string) {
	t.Helper()
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("WARD_TEST_POSTGRES_DSN is not set under CI")
		}
		t.Skip("WARD_TEST_POSTGRES_DSN is not set; skipping (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_bus_" + hex.EncodeToString(b)
	st, err := postgres.Open(ctx, dsn, postgres.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	return st, schema
}

// flakyLease is a store whose lease claims fail while down is set (the
// database unreachable for the lease, as in a partition).
type flakyLease struct {
	store.Store
	down atomic.Bool
	// stateDown fails only the writes of the state kept with the lease.
	stateDown atomic.Bool
}

func (f *flakyLease) SetExportCursorState(ctx context.Context, sink, owner, state string, now time.Time) (bool, error) {
	if f.down.Load() || f.stateDown.Load() {
		return false, errors.New("lease store unreachable")
	}
	return f.Store.SetExportCursorState(ctx, sink, owner, state, now)
}

func (f *flakyLease) ClaimExportCursor(ctx context.Context, sink, owner string, start int64, now, until time.Time) (store.ExportCursor, bool, error) {
	if f.down.Load() {
		return store.ExportCursor{}, false, errors.New("lease store unreachable")
	}
	return f.Store.ClaimExportCursor(ctx, sink, owner, start, now, until)
}

// leaseGroup is several instances (Ward processes) on one PostgreSQL and
// the external NATS, each with a relay under the lease.
type leaseGroup struct {
	t    *testing.T
	st   store.Store
	base NATSOptions
	ins  []*instance
}

func newLeaseGroup(t *testing.T, ttl, poll time.Duration) *leaseGroup {
	base := externalBackend.base(t)
	base.RelayLeaseTTL, base.PollInterval, base.GapWait = ttl, poll, 200*time.Millisecond
	return &leaseGroup{t: t, st: pgStore(t), base: base}
}

func (g *leaseGroup) open(owner string, outbox Outbox) *instance {
	o := g.base
	o.RelayOwner, o.Outbox = owner, outbox
	in := openInstance(g.t, g.st, o)
	g.ins = append(g.ins, in)
	return in
}

// holders returns the indexes of the instances whose relay holds the lease.
func (g *leaseGroup) holders() []int {
	var out []int
	for i, in := range g.ins {
		if in.relay.holding.Load() && in.ctx.Err() == nil {
			out = append(out, i)
		}
	}
	return out
}

func (g *leaseGroup) waitHolder(d time.Duration) int {
	g.t.Helper()
	var h []int
	waitFor(g.t, d, "one relay holding the lease", func() bool { h = g.holders(); return len(h) == 1 })
	return h[0]
}

// storedSeqs returns the database's event sequence numbers in order.
func (g *leaseGroup) storedSeqs() []string {
	g.t.Helper()
	evs, err := g.st.EventsAfter(context.Background(), 0, 100000)
	if err != nil {
		g.t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = strconv.FormatInt(ev.Seq, 10)
	}
	return out
}

// checkStream waits until the stream holds every stored event and checks
// that it holds each once, in sequence order.
func (g *leaseGroup) checkStream(via *NATS) {
	g.t.Helper()
	want := g.storedSeqs()
	waitFor(g.t, 20*time.Second, fmt.Sprintf("%d events in the stream", len(want)), func() bool { return streamMsgs(g.t, via) >= uint64(len(want)) })
	time.Sleep(100 * time.Millisecond) // a copy would come now
	if got := streamSeqs(g.t, via); !reflect.DeepEqual(got, want) {
		g.t.Fatalf("stream has Ward-Seq\n%v\nwant (each stored event once, in order)\n%v", got, want)
	}
}

// With two and three instances, one relay publishes; the others publish
// nothing and nothing is refused; events stored on any instance reach
// the stream once and in order.
func TestRelayLeaseOnePublishes(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			g := newLeaseGroup(t, 3*time.Second, 50*time.Millisecond)
			for i := range n {
				g.open(fmt.Sprintf("instance-%d", i), nil)
			}
			h := g.waitHolder(10 * time.Second)
			for round := range 5 {
				for i, in := range g.ins {
					publishN(t, in, 10+round+i)
				}
			}
			g.checkStream(g.ins[0].NATS)
			for i, in := range g.ins {
				if p := in.relay.Published(); (i == h) != (p > 0) {
					t.Errorf("instance %d (holder %d) published %d messages: only the holder may publish", i, h, p)
				}
				if r := in.RelayRefused(); r != 0 {
					t.Errorf("instance %d: the stream refused %d messages, want none with one relay", i, r)
				}
			}
			if got := g.holders(); !reflect.DeepEqual(got, []int{h}) {
				t.Errorf("holders %v, want [%d]", got, h)
			}
		})
	}
}

// Events stored on an instance that does not relay reach the stream by
// the wake-up through NATS: the holder's poll (an hour) and lease renewal
// (the lease is a minute) are too far off to relay them in this test.
func TestRelayLeaseWakesHolder(t *testing.T) {
	g := newLeaseGroup(t, time.Minute, time.Hour)
	a := g.open("a", nil)
	g.open("b", nil)
	g.open("c", nil)
	h := g.waitHolder(10 * time.Second)
	polls := g.ins[h].relay.polls.Load()
	for round := range 3 {
		for i, in := range g.ins {
			if i != h {
				publishN(t, in, 5+round)
				// Liveness: each batch is relayed without any poll.
				want := len(g.storedSeqs())
				waitFor(t, 20*time.Second, "events stored on a standby in the stream", func() bool { return streamMsgs(t, a.NATS) == uint64(want) })
			}
		}
	}
	g.checkStream(a.NATS)
	if p := g.ins[h].relay.polls.Load(); p != polls {
		t.Fatalf("the holder polled %d times; the test meant to show the wake-up alone", p-polls)
	}
}

// A holder that crashes (stops without releasing its lease): a standby
// takes over once the lease has ended and relays the events stored
// meanwhile; a restarted process (a new instance) joins as a standby.
// A holder that shuts down releases the lease: a standby takes over
// without waiting for it to end.
func TestRelayLeaseTakeover(t *testing.T) {
	const ttl = 3 * time.Second
	g := newLeaseGroup(t, ttl, 50*time.Millisecond)
	for i := range 3 {
		g.open(fmt.Sprintf("instance-%d", i), nil)
	}
	h := g.waitHolder(10 * time.Second)
	for _, in := range g.ins {
		publishN(t, in, 20)
	}
	g.checkStream(g.ins[h].NATS)

	// Crash: a writer keeps storing events on a standby meanwhile.
	dead := g.ins[h]
	dead.relay.abandon.Store(true)
	crashed := time.Now()
	dead.Close()
	var live *instance
	for i, in := range g.ins {
		if i != h {
			live = in
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				publishN(t, live, 3)
			}
		}
	}()
	// The bound: the lease's end (at most ttl after the crash) plus a
	// standby's claim interval; twice that for a loaded machine.
	h2 := g.waitHolder(2*ttl + time.Second)
	took := time.Since(crashed)
	if h2 == h {
		t.Fatal("the crashed instance still holds the lease")
	}
	restarted := g.open("instance-0-restarted", nil) // a new process, a new name
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	publishN(t, restarted, 10)
	g.checkStream(live.NATS)
	t.Logf("taken over %s after the crash (lease %s)", took.Round(time.Millisecond), ttl)
	if restarted.relay.Published() != 0 || restarted.relay.holding.Load() {
		t.Error("the restarted instance took the lease from a live holder")
	}

	// Shutdown: released, taken over at once (well before the lease ends).
	g.ins[h2].Close()
	closed := time.Now()
	h3 := g.waitHolder(ttl)
	if h3 == h2 {
		t.Fatal("the closed instance still holds the lease")
	}
	publishN(t, restarted, 10)
	g.checkStream(restarted.NATS)
	t.Logf("taken over %s after the shutdown", time.Since(closed).Round(time.Millisecond))
}

// A holder that cannot renew its lease stops publishing at the fence,
// before the lease ends and another instance may take it: the events
// stored meanwhile are relayed once, in order, by the other.
func TestRelayLeaseFence(t *testing.T) {
	const ttl = 3 * time.Second
	g := newLeaseGroup(t, ttl, 50*time.Millisecond)
	flaky := &flakyLease{Store: g.st}
	a := g.open("a", flaky)
	waitFor(t, 10*time.Second, "a holding the lease", func() bool { return a.relay.holding.Load() })
	b := g.open("b", nil)
	publishN(t, a, 10)
	g.checkStream(a.NATS)

	flaky.down.Store(true)
	var stoppedAt atomic.Pointer[time.Time]
	go func() {
		for a.relay.holding.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		now := time.Now()
		stoppedAt.Store(&now)
	}()
	for !b.relay.holding.Load() {
		publishN(t, a, 2)
		time.Sleep(20 * time.Millisecond)
		if stoppedAt.Load() == nil && b.relay.holding.Load() {
			t.Fatal("b took the lease over while a still published")
		}
	}
	publishN(t, b, 5)
	g.checkStream(b.NATS)
	if a.RelayRefused()+b.RelayRefused() != 0 {
		t.Errorf("refused: a %d, b %d; the fence should keep the two relays apart", a.RelayRefused(), b.RelayRefused())
	}
	// a comes back: it stands by.
	flaky.down.Store(false)
	time.Sleep(ttl / 2)
	if a.relay.holding.Load() {
		t.Error("a took the lease back from b")
	}
}

// The operator deleted the stream's newest message: its sequence stays
// the stream's last, so a message expecting the one before is refused.
// The relay learns the stream's last sequence and goes on. With a window
// of one event, the deleted message's event (a duplicate: the stream
// remembers its id) is acknowledged alone and the next one expects the
// last message's sequence; with the default window it follows the
// duplicate in the same window.
func TestRelayNewestMessageDeleted(t *testing.T) {
	for _, window := range []int{1, 0} {
		t.Run(fmt.Sprint("window-", window), func(t *testing.T) {
			o := externalBackend.base(t)
			o.PollInterval, o.relayWindow = 50*time.Millisecond, window
			in := openInstance(t, openStore(t), o)
			publishN(t, in, 3)
			waitSeqs(t, in.NATS, "1", "2", "3")

			ctx := context.Background()
			s, err := in.js.Stream(ctx, o.Stream)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteMsg(ctx, 3); err != nil {
				t.Fatal(err)
			}
			// A relay that starts now (a restart, a new lease holder)
			// finds message 2 last but sequence 3 the stream's last.
			in.Close()
			in = openInstance(t, in.st, o)
			publishN(t, in, 2)
			// 3 is not stored again: the stream remembers its id.
			waitSeqs(t, in.NATS, "1", "2", "4", "5")
			if r := in.RelayRefused(); r > 2 {
				t.Fatalf("the stream refused %d messages after the deletion; the relay should have learnt its last sequence", r)
			}
			if s, err = in.js.Stream(ctx, o.Stream); err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.LastSeq != 5 {
				t.Fatalf("stream last sequence %d, want 5", info.State.LastSeq)
			}
		})
	}
}
