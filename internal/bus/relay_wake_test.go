package bus

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// countingOutbox counts the relay's reads of the events table.
type countingOutbox struct {
	*fakeOutbox
	reads atomic.Int64
}

func (c *countingOutbox) EventsAfter(ctx context.Context, seq int64, limit int) ([]*store.StoredEvent, error) {
	c.reads.Add(1)
	return c.fakeOutbox.EventsAfter(ctx, seq, limit)
}

func openRelayWake(t *testing.T, src Outbox, interval time.Duration) *NATS {
	t.Helper()
	o := embeddedBackend.base(t)
	o.Embedded.Listen, o.Token = "", ""
	// No polls during the test: only wake-ups make the relay read.
	o.Outbox, o.GapWait, o.PollInterval, o.RelayWakeInterval, o.Log = src, time.Second, time.Hour, interval, testLog(t)
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// A stream of wake-ups (one per stored event, as under a token load)
// makes the relay read the events table at most once per interval, not
// once per wake-up, and every event is still relayed in order.
func TestRelayWakeUpsInQuickSuccessionShareARead(t *testing.T) {
	const interval, events = 300 * time.Millisecond, 60
	src := &countingOutbox{fakeOutbox: newFakeOutbox()}
	src.commit(1)
	n := openRelayWake(t, src, interval)
	waitSeqs(t, n, "1")
	before := src.reads.Load()
	want := []string{"1"}
	began := time.Now()
	for i := range events {
		seq := int64(i + 2)
		src.commit(seq)
		want = append(want, strconv.FormatInt(seq, 10))
		n.relay.wake()
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(began)
	waitSeqs(t, n, want...)
	// At most one read per interval while the wake-ups came, plus one at
	// their start and one for the last interval (a read per wake-up
	// would be 60).
	if r, limit := src.reads.Load()-before, int64(elapsed/interval)+2; r > limit {
		t.Errorf("%d reads for %d wake-ups in %v; want at most %d", r, events, elapsed, limit)
	}
}

// The first wake-up after a quiet spell reads at once: the interval adds
// no latency to a lone event.
func TestRelayWakeAfterQuietSpellReadsAtOnce(t *testing.T) {
	const interval = 3 * time.Second
	src := &countingOutbox{fakeOutbox: newFakeOutbox()}
	src.commit(1)
	n := openRelayWake(t, src, interval)
	waitSeqs(t, n, "1")
	time.Sleep(interval + 100*time.Millisecond) // quiet for an interval
	src.commit(2)
	woke := time.Now()
	n.relay.wake()
	// Waiting out the interval would take 3 s; a read at once takes
	// milliseconds (the bound leaves room for a loaded machine).
	waitFor(t, interval*2/3, "event 2 relayed before the interval", func() bool { return streamMsgs(t, n) >= 2 })
	t.Logf("relayed %v after the wake-up", time.Since(woke))
	waitSeqs(t, n, "1", "2")
}
