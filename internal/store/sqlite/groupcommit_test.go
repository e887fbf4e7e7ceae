package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// fakeLog is a stand-in for the database behind an eventWriter: it assigns
// sequence numbers, records the transactions and can be held busy.
type fakeLog struct {
	mu      sync.Mutex
	seq     int64
	txs     [][]string // event ids per commit
	gate    chan struct{}
	entered chan struct{} // a write has started (buffered)
	bad     string        // an event id that fails to insert
	down    error         // every write fails with this
}

func newFakeLog() *fakeLog {
	return &fakeLog{gate: make(chan struct{}), entered: make(chan struct{}, 1000)}
}

func (f *fakeLog) wait() { f.entered <- struct{}{}; <-f.gate }

func (f *fakeLog) one(_ context.Context, e *model.Event) (int64, error) {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return 0, f.down
	}
	if e.ID == f.bad {
		return 0, errors.New("bad event")
	}
	f.seq++
	f.txs = append(f.txs, []string{e.ID})
	return f.seq, nil
}

func (f *fakeLog) many(_ context.Context, es []*model.Event) ([]int64, error) {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	seqs := make([]int64, len(es))
	var ids []string
	for i, e := range es {
		if e.ID == f.bad {
			return nil, errors.New("bad event") // the whole transaction rolls back
		}
		seqs[i] = f.seq + int64(i) + 1
		ids = append(ids, e.ID)
	}
	f.seq += int64(len(es))
	f.txs = append(f.txs, ids)
	return seqs, nil
}

type result struct {
	seq int64
	err error
}

// queue starts appends of ids one after another, each only once the
// previous one is queued (so arrival order is ids order), while the
// writer is held in the write of "first". It returns the results in ids
// order once all are done.
func queue(t *testing.T, w *eventWriter, f *fakeLog, ctxs map[string]context.Context, ids ...string) []result {
	t.Helper()
	out := make([]result, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		ctx := ctxs[id]
		if ctx == nil {
			ctx = context.Background()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].seq, out[i].err = w.append(ctx, &model.Event{ID: id, Type: model.EventTokenIssued})
		}()
		if i == 0 {
			<-f.entered // the writer holds "first" and waits at the gate
			continue
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(w.reqs) < i {
			if time.Now().After(deadline) {
				t.Fatalf("append %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(f.gate) // release the writer
	wg.Wait()
	return out
}

func TestGroupCommitBatchesInArrivalOrder(t *testing.T) {
	f := newFakeLog()
	w := newEventWriter(f.one, f.many)
	defer w.close()
	res := queue(t, w, f, nil, "first", "a", "b", "c", "d")
	for i, r := range res {
		if r.err != nil || r.seq != int64(i+1) {
			t.Errorf("append %d: got seq %d, err %v; want seq %d", i, r.seq, r.err, i+1)
		}
	}
	want := "[[first] [a b c d]]"
	if got := fmt.Sprint(f.txs); got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
	if b, e := w.batches.Load(), w.events.Load(); b != 2 || e != 5 {
		t.Errorf("got %d commits for %d events, want 2 for 5", b, e)
	}
}

// A faulty event rolls its batch back; the others are then written one
// by one and succeed, in arrival order, and only the faulty one's caller
// sees the error.
func TestGroupCommitFaultyEventFailsAlone(t *testing.T) {
	f := newFakeLog()
	f.bad = "b"
	close(f.gate) // queueNoGate holds the writer instead
	w := newEventWriter(f.one, f.many)
	defer w.close()
	res := queueNoGate(t, w, "first", "a", "b", "c")
	for i, id := range []string{"first", "a", "b", "c"} {
		if id == "b" {
			if res[i].err == nil {
				t.Errorf("append of the faulty event succeeded")
			}
			continue
		}
		if res[i].err != nil {
			t.Errorf("append %s: %v", id, res[i].err)
		}
	}
	if !(res[0].seq < res[1].seq && res[1].seq < res[3].seq) {
		t.Errorf("seqs not in arrival order: %v", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got, want := fmt.Sprint(f.txs), "[[first] [a] [c]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
}

// queueNoGate is queue for a fakeLog whose gate is open: it holds the
// writer by wrapping its single-event write (the first append is always
// written alone) until every other append is queued.
func queueNoGate(t *testing.T, w *eventWriter, ids ...string) []result {
	t.Helper()
	hold := make(chan struct{})
	one, many := w.one, w.many
	held := make(chan struct{})
	var once sync.Once
	w.one = func(ctx context.Context, e *model.Event) (int64, error) {
		once.Do(func() { close(held); <-hold })
		return one(ctx, e)
	}
	w.many = many
	out := make([]result, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].seq, out[i].err = w.append(context.Background(), &model.Event{ID: id})
		}()
		if i == 0 {
			<-held
			continue
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(w.reqs) < i {
			if time.Now().After(deadline) {
				t.Fatalf("append %d never queued", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(hold)
	wg.Wait()
	return out
}

// When the database fails, every waiter of the batch gets the error.
func TestGroupCommitErrorReachesEveryWaiter(t *testing.T) {
	f := newFakeLog()
	f.down = errors.New("disk I/O error")
	close(f.gate) // queueNoGate holds the writer instead
	w := newEventWriter(f.one, f.many)
	defer w.close()
	res := queueNoGate(t, w, "first", "a", "b", "c")
	for i, r := range res {
		if r.err == nil || r.err.Error() != "disk I/O error" {
			t.Errorf("append %d: got err %v, want the database's error", i, r.err)
		}
	}
}

// A caller whose context ends while queued gets ctx.Err() and its event
// is not written; the rest of the batch is unaffected.
func TestGroupCommitCanceledWhileQueued(t *testing.T) {
	f := newFakeLog()
	w := newEventWriter(f.one, f.many)
	defer w.close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// An already-canceled context never reaches the queue.
	if _, err := w.append(ctx, &model.Event{ID: "x"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with canceled ctx: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		<-f.entered // "first" is being written
		go func() {
			s, err := w.append(ctx2, &model.Event{ID: "gone"})
			done <- result{s, err}
		}()
		for len(w.reqs) < 1 {
			time.Sleep(time.Millisecond)
		}
		cancel2()
		if r := <-done; !errors.Is(r.err, context.Canceled) {
			t.Errorf("canceled append: %v", r.err)
		}
		close(f.gate)
	}()
	if _, err := w.append(context.Background(), &model.Event{ID: "first"}); err != nil {
		t.Fatal(err)
	}
	w.close()
	if got, want := fmt.Sprint(f.txs), "[[first]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
}

// Close writes what is queued, then refuses new appends.
func TestGroupCommitCloseFlushes(t *testing.T) {
	f := newFakeLog()
	w := newEventWriter(f.one, f.many)
	res := make([]result, 3)
	var wg sync.WaitGroup
	appendAt := func(i int, id string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].seq, res[i].err = w.append(context.Background(), &model.Event{ID: id, Type: model.EventTokenIssued})
		}()
	}
	// Hold the writer inside the commit of "first", queue two more, and
	// close while it is held: Close must wait for the queued events.
	appendAt(0, "first")
	<-f.entered
	for i, id := range []string{"a", "b"} {
		appendAt(i+1, id)
		deadline := time.Now().Add(5 * time.Second)
		for len(w.reqs) < i+1 { // the held writer cannot drain the queue
			if time.Now().After(deadline) {
				t.Fatalf("append %q never queued", id)
			}
			time.Sleep(time.Millisecond)
		}
	}
	closed := make(chan struct{})
	go func() { w.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("close returned while events were still queued")
	case <-time.After(20 * time.Millisecond):
	}
	close(f.gate)
	wg.Wait()
	<-closed
	for i, r := range res {
		if r.err != nil {
			t.Errorf("append %d: %v", i, r.err)
		}
	}
	if got, want := fmt.Sprint(f.txs), "[[first] [a b]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
	if _, err := w.append(context.Background(), &model.Event{ID: "late"}); !errors.Is(err, errStoreClosed) {
		t.Errorf("append after close: %v, want errStoreClosed", err)
	}
	w.close() // idempotent
}

// With the real store: many concurrent appenders share commits, every
// event is stored exactly once, each appender sees its own appends in
// increasing Seq, and everything is on disk after Close.
func TestGroupCommitSQLiteConcurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 32, 40
	seqs := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				seq, err := s.AppendEvent(ctx, &model.Event{ID: fmt.Sprintf("e-%d-%d", w, i), Type: model.EventTokenIssued,
					ClientID: fmt.Sprintf("c%d", w), Time: time.Now()})
				if err != nil {
					t.Errorf("AppendEvent: %v", err)
					return
				}
				seqs[w] = append(seqs[w], seq)
			}
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for w, ss := range seqs {
		for i, seq := range ss {
			if seen[seq] {
				t.Fatalf("seq %d assigned twice", seq)
			}
			seen[seq] = true
			if i > 0 && seq <= ss[i-1] {
				t.Errorf("worker %d: seq %d after %d", w, seq, ss[i-1])
			}
		}
	}
	b, e := s.events.batches.Load(), s.events.events.Load()
	t.Logf("%d events in %d commits", e, b)
	if e != workers*per || b >= e {
		t.Errorf("got %d events in %d commits; want %d events in fewer commits", e, b, workers*per)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for w := range workers {
		evs, err := s2.ListEvents(ctx, store.EventFilter{ClientID: fmt.Sprintf("c%d", w), Limit: 1000})
		if err != nil || len(evs) != per {
			t.Fatalf("client c%d: %d events, %v; want %d", w, len(evs), err, per)
		}
	}
	if _, err := s.AppendEvent(ctx, &model.Event{Type: model.EventTokenIssued}); err == nil {
		t.Error("AppendEvent after Close succeeded")
	}
}

// With the real store: when the database is gone, every concurrent
// appender gets an error (none is silently dropped).
func TestGroupCommitSQLiteBrokenDatabase(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.db.Close(); err != nil { // the connections, not the writer
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.AppendEvent(ctx, &model.Event{ID: fmt.Sprint(i), Type: model.EventTokenIssued}); err == nil {
				t.Errorf("append %d succeeded on a closed database", i)
			}
		}()
	}
	wg.Wait()
}
