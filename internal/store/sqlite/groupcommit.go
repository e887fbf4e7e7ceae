package sqlite

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

// Group commit for every write.
//
// SQLite has one writer, and on the token endpoint the cost of a write is
// mostly its commit: the WAL frames of every page it touched are written
// with one pwrite each, and a refresh grant touches the refresh-token
// table and its indexes (rotation) and the events table and its five
// indexes (audit record). So all writes (single statements and InTx
// functions alike) go to one goroutine, which runs the operations that
// arrived together in one transaction, each in its own savepoint when it
// takes several statements, and commits once.
//
// What each caller sees is unchanged:
//   - an operation is atomic: its savepoint is rolled back when it fails,
//     without touching the others;
//   - operations run one after another in arrival order, each seeing the
//     effects of the ones before it (as with the single write connection
//     before), so a one-time operation (refresh rotation, code redemption)
//     still has exactly one winner, and the loser learns it from the
//     winner's committed change;
//   - a caller gets its result only after the transaction holding its
//     operation committed (WAL, synchronous=NORMAL as before), successes
//     and failures alike: a failure may have been caused by an earlier
//     operation of the batch (ErrAlreadyUsed after a rotation) and must
//     not be reported unless that operation is durable;
//   - if the shared transaction fails as a whole (COMMIT, BEGIN or a
//     savepoint fails, or SQLite rolled the transaction back by itself),
//     nothing of it was committed and every operation runs again alone,
//     so each caller gets the outcome of its own operation.
//
// There is no timer: an operation that arrives when the writer is idle
// is written at once; batches form only from operations that arrive while
// a commit is in progress (or are runnable at the same moment), so an
// idle server pays no extra latency.
//
// Deferred operations (later) are the exception, since nobody waits for
// them: they are held and written together, in one transaction of their
// own, deferWait after the first of them arrived (or once maxBatch are
// held, and before close returns), in arrival order among themselves but
// not with the other operations. They are for writes that must become
// durable but need not be acknowledged, such as DPoP jtis (an in-memory
// cache refuses a replay within the process at once; the store has to
// remember the jti across a restart): a few dozen inserts of neighbouring
// keys then share the pages and the commit that each would otherwise
// write alone.

// maxBatch bounds how many operations share one transaction, so a burst
// cannot hold the write connection for long.
const maxBatch = 128

// deferWait is how long a deferred operation may wait to be written: all
// a process crash may lose of them, and long enough for a busy server to
// gather dozens.
const deferWait = 10 * time.Millisecond

// errStoreClosed is returned by writes after Close.
var errStoreClosed = errors.New("sqlite: store closed")

// errTxAborted reports that SQLite rolled a transaction back by itself
// (an I/O error, a full disk, RAISE(ROLLBACK) ...): later statements of
// the operation are refused, since they would otherwise run, and commit,
// outside the transaction.
var errTxAborted = errors.New("sqlite: transaction rolled back by the database")

// Operation states: the caller may withdraw an operation only while it
// is queued; once the writer started it, the caller waits for its result.
const (
	opQueued int32 = iota
	opStarted
	opWithdrawn
)

// writeOp is one caller's write: a single statement, or an InTx function
// (multi) that may run several.
type writeOp struct {
	ctx      context.Context
	run      func(q sqlstore.Querier) error
	multi    bool
	deferred bool // queued by later: nobody waits for it
	state    atomic.Int32
	err      error
	done     chan struct{}
}

// start marks op started unless its caller withdrew it or its context
// ended; it reports whether op is to be run.
func (op *writeOp) start() bool {
	if op.state.Load() == opQueued && op.ctx.Err() != nil {
		if op.state.CompareAndSwap(opQueued, opWithdrawn) {
			op.err = op.ctx.Err()
			close(op.done)
			return false
		}
	}
	return op.state.CompareAndSwap(opQueued, opStarted)
}

// runner executes operations on the database (sqlRunner; a fake in
// tests).
type runner interface {
	// together runs ops in one transaction and sets each op's err. It
	// returns an error, with nothing committed, if the transaction failed
	// as a whole.
	together(ops []*writeOp) error
	// alone runs op by itself and sets its err.
	alone(op *writeOp)
}

// writer is the group-commit goroutine behind every write.
type writer struct {
	r         runner
	deferWait time.Duration

	mu     sync.RWMutex // held (read) while sending on ops; (write) to close it
	closed bool
	ops    chan *writeOp
	done   chan struct{}

	// commits and written count transactions and operations (for tests).
	commits, written atomic.Int64
}

func newWriter(r runner) *writer { return newWriterWait(r, deferWait) }

// newWriterWait is newWriter holding deferred operations for wait.
func newWriterWait(r runner, wait time.Duration) *writer {
	w := &writer{r: r, deferWait: wait, ops: make(chan *writeOp, maxBatch), done: make(chan struct{})}
	go w.loop()
	return w
}

// do queues a write and waits for its result. If ctx ends while the
// operation is still queued, it is withdrawn and ctx.Err() returned; once
// started it runs to completion and its result is returned, so a caller
// never sees an error for a write that was committed.
func (w *writer) do(ctx context.Context, multi bool, run func(sqlstore.Querier) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &writeOp{ctx: ctx, run: run, multi: multi, done: make(chan struct{})}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return errStoreClosed
	}
	w.ops <- op
	w.mu.RUnlock()
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opWithdrawn) {
			return ctx.Err()
		}
		<-op.done
		return op.err
	}
}

// later queues run, a single statement, as a deferred operation and
// returns at once: its result is dropped. After close it does nothing.
func (w *writer) later(run func(sqlstore.Querier) error) {
	op := &writeOp{ctx: context.Background(), run: run, deferred: true, done: make(chan struct{})}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.closed {
		w.ops <- op
	}
}

func (w *writer) loop() {
	defer close(w.done)
	batch := make([]*writeOp, 0, maxBatch)
	// held are the deferred operations not yet written; wait fires
	// deferWait after the first of them arrived.
	held := make([]*writeOp, 0, maxBatch)
	wait := time.NewTimer(w.deferWait)
	wait.Stop()
	flush := func() {
		wait.Stop()
		w.write(held)
		clear(held)
		held = held[:0]
	}
	hold := func(op *writeOp) {
		if len(held) == 0 {
			wait.Reset(w.deferWait)
		}
		held = append(held, op)
		if len(held) == maxBatch {
			flush()
		}
	}
	for {
		var op *writeOp
		ok := true
		if len(held) == 0 {
			op, ok = <-w.ops
		} else {
			select {
			case op, ok = <-w.ops:
			case <-wait.C:
				flush()
				continue
			}
		}
		if !ok {
			if len(held) > 0 {
				flush()
			}
			return
		}
		if op.deferred {
			hold(op)
			continue
		}
		batch = append(batch[:0], op)
		// Let every goroutine that is runnable right now (with
		// GOMAXPROCS=1: all requests in flight) reach its own write
		// before this commit starts; otherwise the writer, woken first,
		// would commit batches of one.
		runtime.Gosched()
	drain:
		for len(batch) < maxBatch {
			select {
			case op, ok := <-w.ops:
				if !ok {
					break drain
				}
				if op.deferred {
					hold(op)
					continue
				}
				batch = append(batch, op)
			default:
				break drain
			}
		}
		w.write(batch)
		clear(batch) // drop references to finished operations
	}
}

// write runs batch and completes every operation in it.
func (w *writer) write(batch []*writeOp) {
	live := batch[:0:0]
	for _, op := range batch {
		if op.start() {
			live = append(live, op)
		}
	}
	switch {
	case len(live) == 1:
		w.r.alone(live[0])
		w.commits.Add(1)
	case len(live) > 1:
		if err := w.r.together(live); err != nil {
			for _, op := range live {
				w.r.alone(op)
				w.commits.Add(1)
			}
		} else {
			w.commits.Add(1)
		}
	}
	w.written.Add(int64(len(live)))
	for _, op := range live {
		close(op.done)
	}
}

// close stops accepting writes, runs the ones already queued and waits
// for the writer to finish. It is safe to call more than once.
func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ops)
	}
	w.mu.Unlock()
	<-w.done
}

// writeQuerier is the sqlstore.Querier of single-statement writes: each
// statement is one operation of the writer.
type writeQuerier struct{ w *writer }

func (q writeQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := q.w.do(ctx, false, func(tq sqlstore.Querier) error {
		var err error
		n, err = tq.Exec(ctx, query, args...)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// QueryRow runs a statement with a result row (INSERT … RETURNING,
// UPDATE … RETURNING) when the row is scanned.
func (q writeQuerier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return writeRow{q.w, ctx, query, args}
}

// Query runs a statement with result rows (UPDATE … RETURNING, INSERT …
// RETURNING) as one operation. The rows cannot outlive the operation
// (its transaction may be shared and commits only after the statement
// finished), so they are read to the end inside it and returned from
// memory, after the commit, like every other write result.
func (q writeQuerier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	var b *bufferedRows
	err := q.w.do(ctx, false, func(tq sqlstore.Querier) error {
		rs, err := tq.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		b, err = readAll(rs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

type writeRow struct {
	w     *writer
	ctx   context.Context
	query string
	args  []any
}

func (r writeRow) Scan(dest ...any) error {
	return r.w.do(r.ctx, false, func(tq sqlstore.Querier) error {
		return tq.QueryRow(r.ctx, r.query, r.args...).Scan(dest...)
	})
}
