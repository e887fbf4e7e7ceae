package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

// fakeDB is a runner that records the statements of every commit. An
// operation's statements are its ids; the statement "bad" fails (and the
// operation's savepoint drops what it did), "poison" makes a shared
// transaction fail as a whole. It can be held busy at a gate.
type fakeDB struct {
	mu      sync.Mutex
	txs     [][]string // statements per commit
	gate    chan struct{}
	entered chan struct{} // a write has started (buffered)
	down    error         // every transaction fails with this
}

func newFakeDB() *fakeDB {
	return &fakeDB{gate: make(chan struct{}), entered: make(chan struct{}, 1000)}
}

func (f *fakeDB) wait() { f.entered <- struct{}{}; <-f.gate }

type fakeQ struct{ stmts *[]string }

func (q fakeQ) Exec(_ context.Context, s string, _ ...any) (int64, error) {
	if s == "bad" {
		return 0, errors.New("bad statement")
	}
	*q.stmts = append(*q.stmts, s)
	return 1, nil
}

func (q fakeQ) Query(context.Context, string, ...any) (sqlstore.Rows, error) { panic("unused") }
func (q fakeQ) QueryRow(context.Context, string, ...any) sqlstore.Row        { panic("unused") }

func (f *fakeDB) together(ops []*writeOp) error {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return f.down
	}
	var all []string
	for _, op := range ops {
		var mine []string
		if op.err = op.run(fakeQ{&mine}); op.err == nil {
			all = append(all, mine...)
		}
	}
	if slices.Contains(all, "poison") {
		return errors.New("commit failed")
	}
	f.txs = append(f.txs, all)
	return nil
}

func (f *fakeDB) alone(op *writeOp) {
	f.wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		op.err = f.down
		return
	}
	var mine []string
	if op.err = op.run(fakeQ{&mine}); op.err == nil {
		f.txs = append(f.txs, mine)
	}
}

func (f *fakeDB) commits() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.txs)
}

// exec is one caller's write of the statements in ids (a multi-statement
// operation when there are several).
func exec(ctx context.Context, w *writer, ids ...string) error {
	return w.do(ctx, len(ids) > 1, func(q sqlstore.Querier) error {
		for _, id := range ids {
			if _, err := q.Exec(ctx, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// queue starts the writes one after another, each only once the previous
// one is queued (so arrival order is their order), while the writer is
// held in the first. It releases the writer and returns the errors in
// order once all are done.
func queue(t *testing.T, w *writer, f *fakeDB, ctxs map[int]context.Context, writes ...[]string) []error {
	t.Helper()
	out := make([]error, len(writes))
	var wg sync.WaitGroup
	for i, ids := range writes {
		ctx := ctxs[i]
		if ctx == nil {
			ctx = context.Background()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = exec(ctx, w, ids...)
		}()
		if i == 0 {
			<-f.entered // the writer holds the first write at the gate
			continue
		}
		waitQueued(t, w, i)
	}
	close(f.gate)
	wg.Wait()
	return out
}

func waitQueued(t *testing.T, w *writer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(w.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("write %d never queued", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func w1(ids ...string) []string { return ids }

func TestGroupCommitBatchesInArrivalOrder(t *testing.T) {
	f := newFakeDB()
	w := newWriter(f)
	defer w.close()
	errs := queue(t, w, f, nil, w1("first"), w1("a"), w1("b1", "b2"), w1("c"), w1("d"))
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if got, want := f.commits(), "[[first] [a b1 b2 c d]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
	if c, n := w.commits.Load(), w.written.Load(); c != 2 || n != 5 {
		t.Errorf("got %d commits for %d writes, want 2 for 5", c, n)
	}
}

// An operation that fails inside a shared transaction is rolled back
// alone (its savepoint); the others commit together and only its caller
// sees the error.
func TestGroupCommitFailingOperationInBatch(t *testing.T) {
	f := newFakeDB()
	w := newWriter(f)
	defer w.close()
	errs := queue(t, w, f, nil, w1("first"), w1("a"), w1("b1", "bad"), w1("c"))
	for i, err := range errs {
		if (err != nil) != (i == 2) {
			t.Errorf("write %d: got %v", i, err)
		}
	}
	if got, want := f.commits(), "[[first] [a c]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
}

// When the shared transaction fails as a whole, nothing of it was
// committed and every operation runs again alone, in arrival order.
func TestGroupCommitSharedFailureRunsAlone(t *testing.T) {
	f := newFakeDB()
	w := newWriter(f)
	defer w.close()
	errs := queue(t, w, f, nil, w1("first"), w1("a"), w1("poison"), w1("c"))
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if got, want := f.commits(), "[[first] [a] [poison] [c]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
}

// When the database fails, every waiter gets the error.
func TestGroupCommitErrorReachesEveryWaiter(t *testing.T) {
	f := newFakeDB()
	f.down = errors.New("disk I/O error")
	w := newWriter(f)
	defer w.close()
	errs := queue(t, w, f, nil, w1("first"), w1("a"), w1("b"), w1("c"))
	for i, err := range errs {
		if err == nil || err.Error() != "disk I/O error" {
			t.Errorf("write %d: got err %v, want the database's error", i, err)
		}
	}
}

// A caller whose context ends while its write is queued gets ctx.Err()
// and the write never runs; the rest of the batch is unaffected.
func TestGroupCommitCanceledWhileQueued(t *testing.T) {
	f := newFakeDB()
	w := newWriter(f)
	defer w.close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := exec(ctx, w, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with a canceled ctx: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		<-f.entered // "first" is being written
		done := make(chan error, 1)
		go func() { done <- exec(ctx2, w, "gone") }()
		waitQueued(t, w, 1)
		cancel2()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled write: %v", err)
		}
		go func() { done <- exec(context.Background(), w, "kept") }()
		waitQueued(t, w, 2)
		close(f.gate)
		if err := <-done; err != nil {
			t.Errorf("write after the canceled one: %v", err)
		}
	}()
	if err := exec(context.Background(), w, "first"); err != nil {
		t.Fatal(err)
	}
	w.close()
	if got, want := f.commits(), "[[first] [kept]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
}

// A caller whose context ends after its write started waits for the
// write and gets its real outcome: it never sees an error for a write
// that was committed.
func TestGroupCommitCanceledAfterStart(t *testing.T) {
	f := newFakeDB()
	w := newWriter(f)
	defer w.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- exec(ctx, w, "started") }()
	<-f.entered // the write has started and is held
	cancel()
	select {
	case err := <-done:
		t.Fatalf("returned %v while its write was running", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(f.gate)
	if err := <-done; err != nil {
		t.Errorf("got %v, want the committed write's nil", err)
	}
	if got, want := f.commits(), "[[started]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
}

// Close runs what is queued, then refuses new writes.
func TestGroupCommitCloseFlushes(t *testing.T) {
	f := newFakeDB()
	w := newWriter(f)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	writeAt := func(i int, id string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = exec(context.Background(), w, id)
		}()
	}
	writeAt(0, "first")
	<-f.entered
	for i, id := range []string{"a", "b"} {
		writeAt(i+1, id)
		waitQueued(t, w, i+1)
	}
	closed := make(chan struct{})
	go func() { w.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("close returned while writes were still queued")
	case <-time.After(20 * time.Millisecond):
	}
	close(f.gate)
	wg.Wait()
	<-closed
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if got, want := f.commits(), "[[first] [a b]]"; got != want {
		t.Errorf("commits: got %s, want %s", got, want)
	}
	if err := exec(context.Background(), w, "late"); !errors.Is(err, errStoreClosed) {
		t.Errorf("write after close: %v, want errStoreClosed", err)
	}
	w.close() // idempotent
}

func openFile(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// With the real store: many concurrent appenders share commits, every
// event is stored exactly once, each appender sees its own appends in
// increasing Seq, and everything is on disk after Close.
func TestGroupCommitSQLiteConcurrent(t *testing.T) {
	ctx := context.Background()
	s, path := openFile(t)
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
	c, n := s.db.writer.commits.Load(), s.db.writer.written.Load()
	t.Logf("%d writes in %d commits", n, c)
	if c >= n {
		t.Errorf("got %d writes in %d commits; want fewer commits", n, c)
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

// With the real store: refresh chains rotated concurrently, each rotation
// raced by a replay of the same token, together with audit appends. Every
// token has exactly one successor, every replay sees ErrAlreadyUsed, and
// rotations share commits with each other and with events.
func TestGroupCommitSQLiteRotationsAndReplays(t *testing.T) {
	ctx := context.Background()
	s, path := openFile(t)
	const chains, steps = 16, 25
	now := time.Now()
	for c := range chains {
		sid := fmt.Sprintf("s%d", c)
		if err := s.CreateSession(ctx, &model.Session{ID: sid, UserID: "u", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRefreshToken(ctx, &model.RefreshToken{Hash: []byte(sid + "-0"), SessionID: sid, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for c := range chains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sid := fmt.Sprintf("s%d", c)
			for i := range steps {
				old := []byte(fmt.Sprintf("%s-%d", sid, i))
				errs := make([]error, 2)
				var race sync.WaitGroup
				for k := range 2 {
					race.Add(1)
					go func() {
						defer race.Done()
						next := &model.RefreshToken{Hash: []byte(fmt.Sprintf("%s-%d-%d", sid, i+1, k)), SessionID: sid, ExpiresAt: now.Add(time.Hour)}
						_, errs[k] = s.RotateRefreshToken(ctx, old, now, next)
					}()
				}
				if _, err := s.AppendEvent(ctx, &model.Event{Type: model.EventTokenRefreshed, SessionID: sid}); err != nil {
					t.Error(err)
				}
				race.Wait()
				won := -1
				for k, err := range errs {
					switch {
					case err == nil && won < 0:
						won = k
					case err == nil:
						t.Errorf("%s: both rotations succeeded", old)
					case !errors.Is(err, store.ErrAlreadyUsed):
						t.Errorf("%s: %v", old, err)
					}
				}
				if won < 0 {
					t.Errorf("%s: no rotation succeeded", old)
					return
				}
				// Continue the chain from the winner's successor.
				if err := renameToken(ctx, s, fmt.Sprintf("%s-%d-%d", sid, i+1, won), fmt.Sprintf("%s-%d", sid, i+1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c, n := s.db.writer.commits.Load(), s.db.writer.written.Load()
	t.Logf("%d writes in %d commits", n, c)
	if c >= n {
		t.Errorf("got %d writes in %d commits; want fewer commits", n, c)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for c := range chains {
		for i := range steps {
			rt, err := s2.GetRefreshToken(ctx, []byte(fmt.Sprintf("s%d-%d", c, i)))
			if err != nil || rt.RotatedAt.IsZero() {
				t.Fatalf("s%d-%d: %v, rotated %v; want rotated", c, i, err, rt != nil && !rt.RotatedAt.IsZero())
			}
		}
	}
}

// renameToken gives a stored refresh token another hash (a test helper
// to continue a chain under a predictable name).
func renameToken(ctx context.Context, s *Store, from, to string) error {
	return s.db.InTx(ctx, func(q sqlstore.Querier) error {
		n, err := q.Exec(ctx, `UPDATE refresh_tokens SET hash = $2 WHERE hash = $1`, []byte(from), []byte(to))
		if err == nil && n != 1 {
			err = fmt.Errorf("rename %s: %d rows", from, n)
		}
		return err
	})
}

// With the real store, in one shared transaction: an operation that
// fails after writing is rolled back to its savepoint (which SQLite does
// not report as a rollback of the transaction), and the others commit.
func TestGroupCommitSQLiteSavepoint(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	defer s.Close()
	f := errors.New("fn failed")
	ops := []*writeOp{
		{ctx: ctx, run: insertEvent("a")},
		{ctx: ctx, multi: true, run: func(q sqlstore.Querier) error {
			if err := insertEvent("b")(q); err != nil {
				return err
			}
			return f
		}},
		{ctx: ctx, multi: true, run: insertEvent("c")},
	}
	if err := s.db.run.together(ops); err != nil {
		t.Fatalf("shared transaction: %v", err)
	}
	if ops[0].err != nil || !errors.Is(ops[1].err, f) || ops[2].err != nil {
		t.Fatalf("results: %v, %v, %v", ops[0].err, ops[1].err, ops[2].err)
	}
	if got, want := eventIDs(t, s), "[a c]"; got != want {
		t.Errorf("events: got %s, want %s", got, want)
	}
}

// With the real store: when SQLite rolls the shared transaction back by
// itself (here RAISE(ROLLBACK) in a trigger), the operation's later
// statements are refused instead of running outside the transaction, the
// batch is rejected, and every operation then runs alone.
func TestGroupCommitSQLiteAbortedTransaction(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	defer s.Close()
	if err := s.db.InTx(ctx, func(q sqlstore.Querier) error {
		_, err := q.Exec(ctx, `CREATE TEMP TRIGGER abort_tx BEFORE INSERT ON events
			WHEN NEW.id = 'boom' BEGIN SELECT RAISE(ROLLBACK, 'boom'); END`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var afterAbort error
	ops := []*writeOp{
		{ctx: ctx, run: insertEvent("a")},
		{ctx: ctx, multi: true, run: func(q sqlstore.Querier) error {
			_ = insertEvent("boom")(q) // an operation that ignores the failure...
			afterAbort = insertEvent("leak")(q)
			return nil
		}},
		{ctx: ctx, run: insertEvent("c")},
	}
	if err := s.db.run.together(ops); !errors.Is(err, errTxAborted) {
		t.Fatalf("shared transaction: got %v, want errTxAborted", err)
	}
	if !errors.Is(afterAbort, errTxAborted) {
		t.Errorf("statement after the rollback: got %v, want errTxAborted", afterAbort)
	}
	if got := eventIDs(t, s); got != "[]" {
		t.Fatalf("events after the aborted batch: %s, want none", got)
	}
	// What the writer does next: each operation alone.
	for _, op := range ops {
		s.db.run.alone(op)
	}
	if ops[0].err != nil || !errors.Is(ops[1].err, errTxAborted) || ops[2].err != nil {
		t.Fatalf("results alone: %v, %v, %v", ops[0].err, ops[1].err, ops[2].err)
	}
	if got, want := eventIDs(t, s), "[a c]"; got != want {
		t.Errorf("events: got %s, want %s", got, want)
	}
}

func insertEvent(id string) func(sqlstore.Querier) error {
	return func(q sqlstore.Querier) error {
		_, err := q.Exec(context.Background(), `INSERT INTO events (id, type) VALUES ($1, 'test')`, id)
		return err
	}
}

func eventIDs(t *testing.T, s *Store) string {
	t.Helper()
	evs, err := s.ListEvents(context.Background(), store.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	slices.Sort(ids)
	return "[" + strings.Join(ids, " ") + "]"
}

// With the real store: when the database is gone, every concurrent
// writer gets an error (none is silently dropped).
func TestGroupCommitSQLiteBrokenDatabase(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	defer s.Close()
	if err := s.db.w.close(); err != nil { // the write connection, not the writer
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

// Lookups use the write connection only when the writer is idle: while
// a transaction is open they go to the read pool instead of waiting, and
// they never see its uncommitted changes.
func TestLookupDuringWrite(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	defer s.Close()
	inTx, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.db.InTx(ctx, func(q sqlstore.Querier) error {
			if _, err := q.Exec(ctx, `INSERT INTO sessions (id, user_id) VALUES ('s1', 'u')`); err != nil {
				return err
			}
			close(inTx)
			<-release
			return nil
		})
	}()
	<-inTx
	if _, err := s.GetSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lookup during the transaction: %v, want ErrNotFound (uncommitted)", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "s1"); err != nil {
		t.Errorf("lookup after the commit: %v", err)
	}
}

// later queues the statement id as a deferred operation.
func later(w *writer, id string) {
	w.later(func(q sqlstore.Querier) error {
		_, err := q.Exec(context.Background(), id)
		return err
	})
}

// Deferred operations are held and written together, in arrival order,
// in a transaction of their own; the operations callers wait for are
// not delayed by them and do not carry them. Close writes what is held;
// a deferred operation after close is dropped.
func TestGroupCommitDeferredHeld(t *testing.T) {
	f := newFakeDB()
	close(f.gate)
	w := newWriterWait(f, time.Hour)
	later(w, "a")
	later(w, "b")
	if err := exec(context.Background(), w, "n"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.commits(), "[[n]]"; got != want {
		t.Errorf("after a write: commits %s, want %s (the deferred ones still held)", got, want)
	}
	later(w, "bad") // fails alone: the others are written
	later(w, "c")
	w.close()
	if got, want := f.commits(), "[[n] [a b c]]"; got != want {
		t.Errorf("after close: commits %s, want %s", got, want)
	}
	later(w, "late")
	if got, want := f.commits(), "[[n] [a b c]]"; got != want {
		t.Errorf("deferred after close: commits %s, want %s", got, want)
	}
}

// Held deferred operations are written once wait has passed since the
// first of them arrived, without any other write, and at once when
// maxBatch of them are held.
func TestGroupCommitDeferredWait(t *testing.T) {
	f := newFakeDB()
	close(f.gate)
	const wait = 20 * time.Millisecond
	w := newWriterWait(f, wait)
	defer w.close()
	start := time.Now()
	later(w, "a")
	later(w, "b")
	waitCommits(t, f, "[[a b]]")
	if d := time.Since(start); d < wait {
		t.Errorf("written after %v, before the %v wait", d, wait)
	}

	f2 := newFakeDB()
	close(f2.gate)
	w2 := newWriterWait(f2, time.Hour)
	defer w2.close()
	var want []string
	for i := range maxBatch {
		id := fmt.Sprint(i)
		later(w2, id)
		want = append(want, id)
	}
	waitCommits(t, f2, fmt.Sprint([][]string{want}))
}

func waitCommits(t *testing.T, f *fakeDB, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.commits() != want {
		if time.Now().After(deadline) {
			t.Fatalf("commits %s, want %s", f.commits(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
