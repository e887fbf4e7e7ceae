package bus

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// Tests and benchmark of the relay's pipelined publishing: windows of
// messages in flight, kept in sequence order by the stream's
// expectations.

func openRelayOn(t testing.TB, be backend, src Outbox) *NATS {
	t.Helper()
	o := be.base(t)
	o.Outbox, o.PollInterval, o.Log = src, 20*time.Millisecond, testLog(t)
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func seqRange(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

// A message in the middle of a window fails while the ones after it are
// already on their way: the stream refuses those (their expectation no
// longer holds) instead of storing them ahead of the failed one, and the
// relay publishes again from the failed one. The stream ends up with
// every event once, in sequence order.
func TestRelayWindowFailureKeepsOrder(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		const total = 600
		src := newFakeOutbox()
		src.idPrefix = t.Name()
		var mu sync.Mutex
		spoiled := map[int64]bool{}
		spoil := func(ev *store.StoredEvent) bool {
			mu.Lock()
			defer mu.Unlock()
			if (ev.Seq == 100 || ev.Seq == 400) && !spoiled[ev.Seq] {
				spoiled[ev.Seq] = true
				return true
			}
			return false
		}
		n := openRelayOn(t, be, src)
		n.relay.spoil.Store(&spoil)
		// All at once, so that the first window is full.
		var all []int64
		for s := int64(1); s <= total; s++ {
			all = append(all, s)
		}
		src.commit(all...)
		n.relay.wake()
		waitSeqs(t, n, seqRange(1, total)...)
		pub, failed := n.relay.counts()
		n.relay.mu.Lock()
		refused := n.relay.refused
		n.relay.mu.Unlock()
		if failed != 2 {
			t.Errorf("%d publications failed, want the 2 spoiled ones", failed)
		}
		// The rest of the spoiled ones' windows was in flight and refused.
		if refused < 50 {
			t.Errorf("%d publications refused, want the rest of the spoiled ones' windows (was the window pipelined?)", refused)
		}
		if pub != total {
			t.Errorf("%d publications acknowledged, want %d (one each; a refused one is not acknowledged)", pub, total)
		}
		t.Logf("acknowledged %d, failed %d, refused %d", pub, failed, refused)
	})
}

// The relay continues in order when a late event (published out of
// order, see publishLate) and pipelined windows mix: the late event
// moves the stream, and the next window expects that.
func TestRelayWindowAfterLatePublication(t *testing.T) {
	src := newFakeOutbox()
	src.commit(1, 3, 4)
	n := openRelayOnly(t, src, 100*time.Millisecond)
	waitSeqs(t, n, "1", "3", "4")
	src.commit(2)
	var more []int64
	for s := int64(5); s <= 300; s++ {
		more = append(more, s)
	}
	src.commit(more...)
	n.relay.wake()
	want := append([]string{"1", "3", "4"}, seqRange(5, 300)...)
	waitFor(t, 10*time.Second, "301 messages", func() bool { return streamMsgs(t, n) >= 300 })
	time.Sleep(100 * time.Millisecond) // the next poll publishes 2
	got := streamSeqs(t, n)
	// 2 comes when a poll finds it: after 4, somewhere in 5..300.
	var rest []string
	found := false
	for _, s := range got {
		if s == "2" && !found {
			found = true
			continue
		}
		rest = append(rest, s)
	}
	if !found || !reflect.DeepEqual(rest, want) {
		t.Fatalf("stream %v, want %v with 2 (late) somewhere after 4", got, want)
	}
}

// BenchmarkRelay measures the relay alone: N events are in the outbox
// (SQLite) when the relay is woken, and the clock stops when the stream
// has acknowledged all of them. window-1 publishes one event at a time
// and waits for each acknowledgement (the relay's former behaviour);
// window-256 is the pipelined relay.
//
//	WARD_TEST_NATS_URL=nats://127.0.0.1:4222 \
//	go test -run '^$' -bench Relay -benchtime 3000x -count 3 ./internal/bus
func BenchmarkRelay(b *testing.B) {
	for _, be := range []backend{embeddedBackend, externalBackend} {
		for _, w := range []int{1, relayWindow} {
			b.Run(fmt.Sprintf("%s/window-%d", be.name, w), func(b *testing.B) { benchRelay(b, be, w) })
		}
	}
}

func benchRelay(b *testing.B, be backend, window int) {
	st := openStore(b)
	n := openRelayOn(b, be, st)
	n.relay.hold.Store(true)
	n.relay.window = window
	ctx := context.Background()
	for i := range b.N {
		e := benchEvent(i)
		e.Time = time.Now()
		if _, err := st.AppendEvent(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	defer cpuMeter(b)()
	n.relay.hold.Store(false)
	n.relay.wake()
	deadline := time.Now().Add(5 * time.Minute)
	for n.relay.Published() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("relayed %d of %d", n.relay.Published(), b.N)
		}
		time.Sleep(200 * time.Microsecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
