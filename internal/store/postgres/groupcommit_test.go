package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// openGroup opens a store in a schema of its own (dropped afterwards).
func openGroup(t *testing.T) *Store {
	t.Helper()
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_test_" + hex.EncodeToString(b)
	s, err := Open(ctx, dsn, WithSchema(schema), WithMaxConns(8))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Error(err)
		}
	})
	return s
}

const (
	jtiSQL   = `INSERT INTO jtis (jti, exp) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING`
	eventSQL = `INSERT INTO events (id, type) VALUES ($1, 'test.event') RETURNING seq`
)

func count(t *testing.T, s *Store, q string, args ...any) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A batch is one round trip and one transaction: each statement gets its
// own result, a second insert of a key in the same batch sees the first.
func TestGroupBatchResults(t *testing.T) {
	s := openGroup(t)
	var seq int64
	ops := []*groupOp{
		{sql: eventSQL, args: []any{"ev-1"}, dest: []any{&seq}},
		{sql: jtiSQL, args: []any{"k2", int64(1)}, key: "k2"},
		{sql: jtiSQL, args: []any{"k1", int64(1)}, key: "k1"},
		{sql: jtiSQL, args: []any{"k1", int64(1)}, key: "k1"},
	}
	for _, o := range ops {
		o.done = make(chan struct{})
		o.state.Store(opQueued)
	}
	before := s.PoolStat()
	s.group.flush(ops)
	after := s.PoolStat()
	for i, o := range ops {
		if o.err != nil {
			t.Fatalf("op %d: %v", i, o.err)
		}
	}
	// Sorted: k1, k1, k2, then the event.
	if ops[0].n != 1 || ops[1].n != 0 || ops[2].n != 1 || ops[2].key != "k2" {
		t.Errorf("jti results %d %d %d (%s), want 1 0 1 (k2)", ops[0].n, ops[1].n, ops[2].n, ops[2].key)
	}
	if seq <= 0 {
		t.Errorf("event seq %d", seq)
	}
	if got := after.Batches - before.Batches; got != 1 || after.Statements != before.Statements {
		t.Errorf("%d batches and %d statements for one group, want 1 and 0", got, after.Statements-before.Statements)
	}
}

// One failing statement rolls the whole batch back; every statement runs
// again alone, so the others succeed exactly once and the failure is the
// failing caller's only.
func TestGroupBatchFailureRunsAlone(t *testing.T) {
	s := openGroup(t)
	var seq int64
	ops := []*groupOp{
		{sql: jtiSQL, args: []any{"a", int64(1)}, key: "a"},
		{sql: jtiSQL, args: []any{"b", nil}, key: "b"}, // exp NOT NULL: fails
		{sql: jtiSQL, args: []any{"c", int64(1)}, key: "c"},
		{sql: eventSQL, args: []any{"ev-1"}, dest: []any{&seq}},
	}
	for _, o := range ops {
		o.done = make(chan struct{})
	}
	s.group.flush(ops)
	if ops[1].err == nil {
		t.Fatal("the NULL exp was accepted")
	}
	for _, i := range []int{0, 2, 3} {
		if ops[i].err != nil {
			t.Errorf("op %d failed with another's error: %v", i, ops[i].err)
		}
	}
	if ops[0].n != 1 || ops[2].n != 1 {
		t.Errorf("re-run inserts report %d, %d rows, want 1, 1 (the batch's were rolled back)", ops[0].n, ops[2].n)
	}
	if n := count(t, s, `SELECT count(*) FROM events WHERE id = 'ev-1'`); n != 1 {
		t.Errorf("%d copies of the event, want 1", n)
	}
	if n := count(t, s, `SELECT count(*) FROM jtis`); n != 2 {
		t.Errorf("%d jtis, want 2", n)
	}
}

// Concurrent callers of two instances: each jti is recorded exactly once
// whoever wins, every append gets its own sequence number, and the inserts
// share round trips.
func TestGroupConcurrentCallers(t *testing.T) {
	s := openGroup(t)
	s2, err := Open(context.Background(), os.Getenv("WARD_TEST_POSTGRES_DSN"), WithSchema(s.Schema()), WithMaxConns(8))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	const n = 200
	ctx := context.Background()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted = map[string]int{}
		seqs     = map[int64]bool{}
	)
	before := s.PoolStat().RoundTrips()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := []*Store{s, s2}[i%2]
			key := "key-" + string(rune('a'+i%50)) // each key four times, from both instances
			err := st.RecordJTI(ctx, key, time.Now().Add(time.Minute))
			seq, aerr := st.AppendEvent(ctx, &model.Event{ID: "e", Type: model.EventTokenIssued})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted[key]++
			case !errors.Is(err, store.ErrReplay):
				t.Errorf("RecordJTI: %v", err)
			}
			if aerr != nil || seqs[seq] {
				t.Errorf("AppendEvent: %d %v", seq, aerr)
			}
			seqs[seq] = true
		}()
	}
	wg.Wait()
	if len(accepted) != 50 {
		t.Errorf("%d keys accepted, want 50", len(accepted))
	}
	for k, c := range accepted {
		if c != 1 {
			t.Errorf("key %s accepted %d times", k, c)
		}
	}
	if trips := s.PoolStat().RoundTrips() - before; trips >= n {
		t.Logf("%d round trips for %d inserts on one instance (no grouping happened)", trips, n)
	}
}

// An insert withdrawn while queued (its caller's context ended) is not
// sent; one that was sent is waited for, and reported, whatever the
// caller's context does.
func TestGroupWithdrawn(t *testing.T) {
	s := openGroup(t)
	withdrawn := &groupOp{sql: jtiSQL, args: []any{"gone", int64(1)}, key: "gone", done: make(chan struct{})}
	withdrawn.state.Store(opWithdrawn)
	kept := &groupOp{sql: jtiSQL, args: []any{"kept", int64(1)}, key: "kept", done: make(chan struct{})}
	s.group.flush([]*groupOp{withdrawn, kept})
	if kept.err != nil || kept.n != 1 {
		t.Fatalf("kept: %d %v", kept.n, kept.err)
	}
	if n := count(t, s, `SELECT count(*) FROM jtis WHERE jti = 'gone'`); n != 0 {
		t.Error("a withdrawn insert was sent")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Cancelled before the call: queued, then withdrawn or run; either
	// way the answer matches the database.
	err := s.RecordJTI(ctx, "late", time.Now().Add(time.Minute))
	n := count(t, s, `SELECT count(*) FROM jtis WHERE jti = 'late'`)
	if (err == nil) != (n == 1) {
		t.Errorf("RecordJTI answered %v with %d rows stored", err, n)
	}
}

// While a batch is on the wire, a lone insert waits for it (and goes out
// with the next batch) instead of costing a round trip of its own; once
// flightQueue inserts wait, they go out at once in a further batch.
func TestGroupFurtherBatchOnlyForAQueue(t *testing.T) {
	s := openGroup(t)
	w := s.group
	if w.maxFlights < 2 {
		t.Fatalf("maxFlights %d: the test needs room for a second batch", w.maxFlights)
	}
	// A batch on the wire (held by the test, not sent).
	w.mu.Lock()
	w.flights++
	w.running.Add(1)
	w.mu.Unlock()
	released := false
	release := func() {
		if !released {
			released = true
			w.mu.Lock()
			w.flights--
			w.mu.Unlock()
			w.running.Done()
		}
	}
	defer release()
	queued := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queue)
	}
	ctx := context.Background()
	errs := make(chan error, flightQueue)
	record := func(i int) {
		go func() { errs <- s.RecordJTI(ctx, fmt.Sprintf("queued-%d", i), time.Now().Add(time.Minute)) }()
	}
	for i := range flightQueue - 1 {
		record(i)
	}
	for deadline := time.Now().Add(10 * time.Second); queued() < flightQueue-1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d inserts queued, want %d", queued(), flightQueue-1)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := queued(); n != flightQueue-1 {
		t.Fatalf("%d inserts still queued, want %d: a batch left before the queue was long enough", n, flightQueue-1)
	}
	if n := count(t, s, `SELECT count(*) FROM jtis`); n != 0 {
		t.Fatalf("%d rows stored while the inserts should be waiting", n)
	}
	before := s.PoolStat()
	record(flightQueue - 1)
	for range flightQueue {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the queued inserts were not sent")
		}
	}
	// One batch (preparing the statement on a new connection aside).
	if after := s.PoolStat(); after.Batches-before.Batches != 1 || after.Statements != before.Statements {
		t.Errorf("%d batches and %d statements for %d queued inserts, want one batch",
			after.Batches-before.Batches, after.Statements-before.Statements, flightQueue)
	}
	if n := count(t, s, `SELECT count(*) FROM jtis WHERE jti LIKE 'queued-%'`); n != flightQueue {
		t.Errorf("%d rows stored, want %d", n, flightQueue)
	}
	release()
}
