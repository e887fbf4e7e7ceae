package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// The bus conformance suite: every test runs against the embedded server
// and the external NATS (WARD_TEST_NATS_URL).

func TestBusPublishConsumeInOrder(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		in := openInstance(t, openStore(t), be.base(t))
		g := newGot()
		stop, err := in.Consume(context.Background(), "audit-export", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		ids := publishN(t, in, 60)
		waitFor(t, 10*time.Second, "60 deliveries", func() bool { return g.uniqueIDs() == 60 })
		evs, dels := g.events()
		if dups := dedupInOrder(t, evs, ids); dups != 0 {
			t.Errorf("%d repeated deliveries without a failure", dups)
		}
		stored, err := in.st.EventsAfter(context.Background(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range evs {
			want := stored[i]
			if dels[i].Seq != want.Seq || dels[i].Attempt != 1 || dels[i].StreamSeq == 0 {
				t.Errorf("delivery %d: %+v, want seq %d, attempt 1", i, dels[i], want.Seq)
			}
			gotJSON, _ := json.Marshal(store.StoredEvent{Seq: want.Seq, Event: e})
			wantJSON, _ := json.Marshal(want)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Errorf("event %d:\n got %s\nwant %s", i, gotJSON, wantJSON)
			}
		}

		// The message itself: subject, headers and the documented JSON.
		ctx := context.Background()
		s, err := in.js.Stream(ctx, in.Stream())
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(stored[1])
		if m.Subject != in.o.SubjectPrefix+".user.disabled" || m.Header.Get(jetstream.MsgIDHeader) != stored[1].ID ||
			m.Header.Get(HeaderSeq) != strconv.FormatInt(stored[1].Seq, 10) || !bytes.Equal(m.Data, wantJSON) {
			t.Errorf("message 2: subject %s, headers %v, data %s; want the JSON %s", m.Subject, m.Header, m.Data, wantJSON)
		}
	})
}

func TestBusConsumeTypes(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		in := openInstance(t, openStore(t), be.base(t))
		one, two := newGot(), newGot()
		stop1, err := in.Consume(context.Background(), "one-type", []model.EventType{model.EventSessionRevoked}, one.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop1()
		stop2, err := in.Consume(context.Background(), "two-types",
			[]model.EventType{model.EventUserDisabled, model.EventRefreshReuseDetected, model.EventUserDisabled}, two.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop2()
		publishN(t, in, 40) // 10 of each test type
		waitFor(t, 10*time.Second, "filtered deliveries", func() bool { return one.uniqueIDs() == 10 && two.uniqueIDs() == 20 })
		time.Sleep(100 * time.Millisecond)
		for _, c := range []struct {
			g     *got
			types map[model.EventType]bool
		}{
			{one, map[model.EventType]bool{model.EventSessionRevoked: true}},
			{two, map[model.EventType]bool{model.EventUserDisabled: true, model.EventRefreshReuseDetected: true}},
		} {
			evs, _ := c.g.events()
			for _, e := range evs {
				if !c.types[e.Type] {
					t.Errorf("got %s, not subscribed", e.Type)
				}
			}
		}
	})
}

func TestBusRedeliveryAfterHandlerError(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		in := openInstance(t, openStore(t), be.base(t))
		ids := publishN(t, in, 5)
		var (
			mu       sync.Mutex
			attempts []string // id@attempt in handling order
		)
		done := make(chan struct{})
		stop, err := in.Consume(context.Background(), "flaky", nil, func(ctx context.Context, e *model.Event) error {
			d, _ := DeliveryFrom(ctx)
			mu.Lock()
			defer mu.Unlock()
			attempts = append(attempts, e.ID+"@"+strconv.FormatUint(d.Attempt, 10))
			if e.ID == ids[2] && d.Attempt < 3 {
				return errors.New("downstream unavailable")
			}
			if e.ID == ids[4] {
				close(done)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("timed out")
		}
		mu.Lock()
		defer mu.Unlock()
		want := []string{ids[0] + "@1", ids[1] + "@1", ids[2] + "@1", ids[2] + "@2", ids[2] + "@3", ids[3] + "@1", ids[4] + "@1"}
		if len(attempts) != len(want) {
			t.Fatalf("handled %v, want %v", attempts, want)
		}
		for i := range want {
			if attempts[i] != want[i] {
				t.Fatalf("handled %v, want %v (the failing event must hold up the ones after it)", attempts, want)
			}
		}
	})
}

func TestBusDifferentNamesEachGetEverything(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		in := openInstance(t, openStore(t), be.base(t))
		a, b := newGot(), newGot()
		ids := publishN(t, in, 30)
		for name, g := range map[string]*got{"cae-transmitter": a, "risk-engine": b} {
			stop, err := in.Consume(context.Background(), name, nil, g.handle)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
		}
		ids = append(ids, publishN(t, in, 30)...)
		waitFor(t, 10*time.Second, "both consumers", func() bool { return a.uniqueIDs() == 60 && b.uniqueIDs() == 60 })
		for _, g := range []*got{a, b} {
			evs, _ := g.events()
			dedupInOrder(t, evs, ids)
		}
	})
}

func TestBusSameNameSharesWork(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		st := openStore(t)
		o := be.base(t)
		first := openInstance(t, st, o)
		second := openInstance(t, st, be.peer(t, first.NATS, o))
		var (
			mu     sync.Mutex
			counts = map[string]int{}
			by     = map[string]int{}
			order  []string
		)
		handler := func(who string) Handler {
			return func(_ context.Context, e *model.Event) error {
				mu.Lock()
				counts[e.ID]++
				by[who]++
				order = append(order, e.ID)
				mu.Unlock()
				time.Sleep(time.Millisecond) // some work, so that both instances get a share
				return nil
			}
		}
		for _, in := range []struct {
			n   *instance
			who string
		}{{first, "first"}, {second, "second"}} {
			stop, err := in.n.Consume(context.Background(), "cae-transmitter", nil, handler(in.who))
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
		}
		ids := publishN(t, first, 100)
		ids = append(ids, publishN(t, second, 100)...)
		waitFor(t, 20*time.Second, "200 events", func() bool { mu.Lock(); defer mu.Unlock(); return len(counts) == 200 })
		time.Sleep(200 * time.Millisecond) // would-be duplicates
		mu.Lock()
		defer mu.Unlock()
		for id, c := range counts {
			if c != 1 {
				t.Errorf("event %s handled %d times, want once", id, c)
			}
		}
		for i := range ids {
			if order[i] != ids[i] {
				t.Fatalf("shared consumer: event %d is %s, want %s (order across instances)", i, order[i], ids[i])
			}
		}
		t.Logf("handled by first: %d, second: %d", by["first"], by["second"])
		if by["first"] == 0 || by["second"] == 0 {
			t.Errorf("one instance did all the work: %v", by)
		}
	})
}

// Restart: 1,000 events are published and the bus is closed while the
// relay is still working through them; after reopening, the consumer
// gets every event once (after de-dup by id), in sequence order. The
// wait fails on a lack of progress, not on a fixed deadline (see
// waitCount): under CPU load it takes longer, and a stuck consumer (a
// lost pull request, see pullBatch) still fails it.
func TestBusRestartLosesNothing(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		st := openStore(t)
		o := be.base(t)
		in := openInstance(t, st, o)
		g := newGot()
		stop, err := in.Consume(context.Background(), "restart", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		// Slow the relay down so that the close comes mid-way.
		var relayed atomic.Int64
		slow := func(*store.StoredEvent) {
			if relayed.Add(1) > 200 {
				time.Sleep(time.Millisecond)
			}
		}
		in.relay.beforePublish.Store(&slow)
		ids := publishN(t, in, 1000)
		stop()
		in.Close()
		mid := relayed.Load()
		if mid >= 1000 {
			t.Fatalf("the relay published all %d events before the close; the test did not test a restart", mid)
		}
		evs, _ := g.events()
		firstRun := len(evs)
		t.Logf("before the restart: relayed %d, delivered %d", mid, firstRun)

		again := openInstance(t, st, o)
		stop, err = again.Consume(context.Background(), "restart", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		pause := waitCount(t, "1000 events after the restart", 1000, g.uniqueIDs, func() string { return consumerState(again.NATS, "restart") })
		time.Sleep(100 * time.Millisecond)
		evs, _ = g.events()
		dups := dedupInOrder(t, evs, ids)
		t.Logf("after the restart: %d deliveries, %d repeated, longest pause %v", len(evs), dups, pause.Round(time.Millisecond))
		if n := streamMsgs(t, again.NATS); n != 1000 {
			t.Errorf("stream holds %d messages, want 1000 (de-duplicated by id)", n)
		}
	})
}

// NATS unreachable when events are published: Publish still succeeds (the
// database has the event) and the relay publishes once NATS is back.
func TestBusOutage(t *testing.T) {
	t.Run("external", func(t *testing.T) {
		o := externalBackend.base(t)
		target := hostPort(t, o.URL)
		dead := deadPort(t)
		o.URL = "nats://" + dead
		st := openStore(t)
		in := openInstance(t, st, o)
		ids := publishN(t, in, 20)
		stored, err := st.EventsAfter(context.Background(), 0, 100)
		if err != nil || len(stored) != 20 {
			t.Fatalf("stored %d events (%v), want 20", len(stored), err)
		}
		g := newGot()
		stop, err := in.Consume(context.Background(), "outage", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		time.Sleep(300 * time.Millisecond)
		if n := g.uniqueIDs(); n != 0 {
			t.Fatalf("delivered %d events while NATS was down", n)
		}
		proxy(t, dead, target) // NATS is back
		waitFor(t, 20*time.Second, "events after the outage", func() bool { return g.uniqueIDs() == 20 })
		evs, _ := g.events()
		dedupInOrder(t, evs, ids)
	})
	t.Run("embedded", func(t *testing.T) {
		st := openStore(t)
		in := openInstance(t, st, embeddedBackend.base(t))
		in.relay.hold.Store(true) // the relay is down
		ids := publishN(t, in, 20)
		time.Sleep(50 * time.Millisecond)
		if n := streamMsgs(t, in.NATS); n != 0 {
			t.Fatalf("stream has %d messages while the relay was down", n)
		}
		g := newGot()
		stop, err := in.Consume(context.Background(), "outage", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		in.relay.hold.Store(false)
		in.relay.wake()
		waitFor(t, 10*time.Second, "events after the relay is back", func() bool { return g.uniqueIDs() == 20 })
		evs, _ := g.events()
		dedupInOrder(t, evs, ids)
	})
}

// An instance whose events another process wrote (a CLI command, an
// instance without a relay) publishes them on its poll.
func TestBusRelaysEventsOfOtherWriters(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		st := openStore(t)
		o := be.base(t)
		o.PollInterval = 50 * time.Millisecond
		in := openInstance(t, st, o)
		g := newGot()
		stop, err := in.Consume(context.Background(), "others", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		tool := NewLocal() // a command-line tool: events go to the database only
		tool.Subscribe("audit", persister(st))
		ids := publishN(t, tool, 10)
		waitFor(t, 10*time.Second, "events written elsewhere", func() bool { return g.uniqueIDs() == 10 })
		evs, _ := g.events()
		dedupInOrder(t, evs, ids)
	})
}

// Two relays over one database (two instances) publish every event once
// to the stream, in sequence order.
func TestBusTwoRelays(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		st := openStore(t)
		o := be.base(t)
		o.PollInterval = 20 * time.Millisecond
		first := openInstance(t, st, o)
		second := openInstance(t, st, be.peer(t, first.NATS, o))
		var wg sync.WaitGroup
		for _, in := range []*instance{first, second} {
			wg.Add(1)
			go func() { defer wg.Done(); publishN(t, in, 150) }()
		}
		wg.Wait()
		waitFor(t, 10*time.Second, "300 messages", func() bool { return streamMsgs(t, first.NATS) >= 300 })
		time.Sleep(200 * time.Millisecond)
		seqs := streamSeqs(t, first.NATS)
		if len(seqs) != 300 {
			t.Fatalf("stream has %d messages, want 300", len(seqs))
		}
		for i := 1; i < len(seqs); i++ {
			a, _ := strconv.Atoi(seqs[i-1])
			b, _ := strconv.Atoi(seqs[i])
			if b <= a {
				t.Fatalf("stream order: Ward-Seq %d after %d", b, a)
			}
		}
	})
}

func TestBusConsumeInvalid(t *testing.T) {
	in := openInstance(t, openStore(t), embeddedBackend.base(t))
	for _, name := range []string{"", "a.b", "a b", "a*", "a>", "a/b"} {
		if _, err := in.Consume(context.Background(), name, nil, newGot().handle); err == nil {
			t.Errorf("Consume(%q): no error", name)
		}
	}
	in.Close()
	if _, err := in.Consume(context.Background(), "late", nil, newGot().handle); !errors.Is(err, ErrClosed) {
		t.Errorf("Consume after Close: %v, want ErrClosed", err)
	}
}
