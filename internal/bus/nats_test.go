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

	"github.com/ward-idp/ward/internal/store"
)

// Tests of the NATS bus's own mechanics (the stream's messages, restarts,
// outages, several relays): every test runs against the embedded server
// and the external NATS (WARD_TEST_NATS_URL). What every bus must do is
// the conformance suite (bustest), run in conformance_test.go.

// The message of an event in the stream: subject, headers and the
// documented JSON (the delivery itself is in the conformance suite,
// bustest).
func TestBusStreamMessage(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		in := openInstance(t, openStore(t), be.base(t))
		publishN(t, in, 3)
		stored, err := in.st.EventsAfter(context.Background(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		waitFor(t, 10*time.Second, "3 messages", func() bool { return streamMsgs(t, in.NATS) == 3 })
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
		// Hold the relay after 200 events until all 1000 are stored, then
		// slow it down, so that the close comes mid-way however fast the
		// relay or however slow the store is.
		var relayed atomic.Int64
		published := make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(published) }) }
		t.Cleanup(release) // a failed publishN must not leave the relay held
		slow := func(*store.StoredEvent) {
			if relayed.Add(1) > 200 {
				<-published
				time.Sleep(time.Millisecond)
			}
		}
		in.relay.beforePublish.Store(&slow)
		ids := publishN(t, in, 1000)
		release()
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

// Two relays over one database (two instances) publish every event once
// to the stream, in sequence order.
func TestBusTwoRelays(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		st := openStore(t)
		o := be.base(t)
		o.PollInterval = 20 * time.Millisecond
		first := openInstance(t, st, o)
		second := openInstance(t, st, be.peer(t, first.NATS, o))
		g := newGot()
		stop, err := second.Consume(context.Background(), "two-relays", nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
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
		// The consumer gets every event once, in the database's order.
		stored, err := st.EventsAfter(context.Background(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, ev := range stored {
			ids = append(ids, ev.ID)
		}
		waitFor(t, 10*time.Second, "300 deliveries", func() bool { return g.uniqueIDs() == 300 })
		evs, _ := g.events()
		if dups := dedupInOrder(t, evs, ids); dups != 0 {
			t.Errorf("%d events delivered twice", dups)
		}
		// What two relays cost: publications the stream refused or
		// acknowledged as duplicates, which one relay would not make.
		for i, in := range []*instance{first, second} {
			p, f := in.relay.counts()
			in.relay.mu.Lock()
			r := in.relay.refused
			in.relay.mu.Unlock()
			t.Logf("relay %d: acknowledged %d (duplicates included), refused %d, failed %d (300 events)", i+1, p, r, f)
			if f != 0 {
				t.Errorf("relay %d: %d failed publications; contention between relays is a refusal, not a failure (it would raise the failure alert)", i+1, f)
			}
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

// Consume after Close fails with ErrClosed (invalid names are in the
// conformance suite).
func TestBusConsumeAfterClose(t *testing.T) {
	in := openInstance(t, openStore(t), embeddedBackend.base(t))
	in.Close()
	if _, err := in.Consume(context.Background(), "late", nil, newGot().handle); !errors.Is(err, ErrClosed) {
		t.Errorf("Consume after Close: %v, want ErrClosed", err)
	}
}
