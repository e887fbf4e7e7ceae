package bus

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// seqRecorder keeps the ids a follower got.
type seqRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *seqRecorder) handle(_ context.Context, e *model.Event) error {
	r.mu.Lock()
	r.ids = append(r.ids, e.ID)
	r.mu.Unlock()
	return nil
}

func (r *seqRecorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

func followPoller(t *testing.T, src Outbox, gapWait time.Duration) *seqRecorder {
	t.Helper()
	p := NewPoller(src, PollerOptions{Interval: 10 * time.Millisecond, GapWait: gapWait, Log: testLog(t)})
	r := &seqRecorder{}
	stop, err := p.Follow(context.Background(), nil, r.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return r
}

// A sequence number that becomes visible after a higher one (a slower
// PostgreSQL transaction) is still delivered, and what follows the gap is
// not held up by it.
func TestPollerLateCommit(t *testing.T) {
	src := newFakeOutbox()
	src.idPrefix = "late"
	src.commit(1, 2) // history: not delivered
	r := followPoller(t, src, time.Hour)
	src.commit(4, 5)
	waitFor(t, 10*time.Second, "the events after the gap", func() bool { return len(r.got()) == 2 })
	src.commit(3)
	waitFor(t, 10*time.Second, "the late event", func() bool { return len(r.got()) == 3 })
	src.commit(6)
	waitFor(t, 10*time.Second, "the next event", func() bool { return len(r.got()) == 4 })
	want := []string{"late-ev-4", "late-ev-5", "late-ev-3", "late-ev-6"}
	if got := r.got(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (each once)", got, want)
	}
}

// A number that never appears (a rolled-back insert) is given up after
// GapWait: the poller does not read the events after it again and again.
func TestPollerGivesUpGap(t *testing.T) {
	src := newFakeOutbox()
	src.idPrefix = "gap"
	p := NewPoller(src, PollerOptions{Interval: time.Hour, GapWait: time.Nanosecond})
	f := &pollFollow{p: p, h: (&seqRecorder{}).handle, seen: map[int64]bool{}, log: testLog(t)}
	src.commit(2, 3, 6, 7)
	f.step(context.Background()) // sees the gaps at 1 and 4-5
	if f.low != 0 {
		t.Fatalf("low = %d after the first look at the gap, want 0 (waits GapWait)", f.low)
	}
	time.Sleep(time.Millisecond) // > GapWait
	f.step(context.Background())
	if f.low != 3 {
		t.Fatalf("low = %d, want 3 (gap at 1 given up, 4 waited for)", f.low)
	}
	time.Sleep(time.Millisecond)
	f.step(context.Background())
	if f.low != 7 || len(f.seen) != 0 {
		t.Fatalf("low = %d, seen %v; want 7 and nothing remembered", f.low, f.seen)
	}
	for i := int64(8); i <= 1200; i++ { // more than one read
		src.commit(i)
	}
	rec := &seqRecorder{}
	f.h = rec.handle
	f.step(context.Background())
	if got := rec.got(); len(got) != 1193 || got[0] != "gap-ev-8" || got[1192] != fmt.Sprintf("gap-ev-%d", 1200) || f.low != 1200 {
		t.Fatalf("delivered %d events (low %d), want 8..1200", len(got), f.low)
	}
}
