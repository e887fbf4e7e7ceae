package export_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit/export"
	"github.com/ward-idp/ward/internal/store"
)

// countingSource counts the reads of the events table.
type countingSource struct {
	export.Source
	reads atomic.Int64
}

func (c *countingSource) EventsAfter(ctx context.Context, seq int64, limit int) ([]*store.StoredEvent, error) {
	c.reads.Add(1)
	return c.Source.EventsAfter(ctx, seq, limit)
}

// rawSink records the sequence numbers delivered to it.
type rawSink struct {
	mu   sync.Mutex
	seqs []int64
}

func (s *rawSink) Deliver(_ context.Context, items []export.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range items {
		s.seqs = append(s.seqs, it.Seq)
	}
	return nil
}

func (s *rawSink) Close() error { return nil }

func (s *rawSink) delivered() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.seqs...)
}

// A stream of wake-ups (one per stored event, as the bus sends them)
// costs a read per WakeInterval, not a read per event, and every event
// is still delivered once, in order.
func TestWakeUpsInQuickSuccessionShareARead(t *testing.T) {
	const interval = 500 * time.Millisecond
	st := openStore(t)
	src := &countingSource{Source: st}
	sink := &rawSink{}
	e, err := export.Start(context.Background(), export.Options{Store: src, Owner: "a",
		PollInterval: time.Hour, LeaseTTL: time.Minute, WakeInterval: interval},
		[]export.SinkConfig{{Name: "raw", Sink: sink, Raw: true, Start: export.StartOldest}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	waitReads := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); src.reads.Load() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d reads, want %d", src.reads.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitReads(1) // the start
	const events = 50
	began := time.Now()
	for i := range events {
		appendEventsFrom(t, st, i, 1)
		e.Wake()
	}
	elapsed := time.Since(began)
	waitCursor(t, st, "raw", events, 10*time.Second)
	// At most one read per interval while the wake-ups came, one more
	// at their start and one for the last interval (a read per wake-up
	// would be 50).
	if r, limit := src.reads.Load()-1, int64(elapsed/interval)+2; r > limit {
		t.Errorf("%d reads for %d wake-ups in %v; want at most %d", r, events, elapsed, limit)
	}
	got := sink.delivered()
	if len(got) != events {
		t.Fatalf("delivered %d events, want %d: %v", len(got), events, got)
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("delivered %v, want 1..%d in order", got, events)
		}
	}
}
