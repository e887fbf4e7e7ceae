package postgres

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

// Group commit of independent inserts. Every token request appends an
// audit event and records its DPoP proof's jti: two single-row inserts,
// each atomic on its own, that do not read what other requests write.
// Run one by one they cost a round trip and a commit (a WAL flush) each.
// The writer sends the inserts of concurrent requests together instead:
// whatever arrived while the previous batch was on the wire goes out as
// one pipelined batch (one network write, one Sync), which PostgreSQL
// runs as one implicit transaction with one commit. Nothing waits for a
// batch to fill: a lone request goes out at once. Up to maxFlights batches
// are on the wire at a time, each on its own connection, so that a slow
// commit (a WAL flush on a busy disk) does not hold up the inserts that
// arrive meanwhile; PostgreSQL flushes the WAL of concurrent commits
// together anyway. A further batch starts only once flightQueue inserts
// wait for the one on the wire: a lone insert arriving meanwhile waits
// for that batch's commit and goes out with the others that arrive while
// it waits, instead of costing a round trip and a commit of its own (on
// a busy core, most of them did).
//
// Per caller nothing changes: each statement's own result (an event's
// sequence number, whether a jti row was inserted) is delivered, and only
// after the batch committed. If any statement fails, PostgreSQL rolls the
// whole batch back and every statement runs again alone, so that each
// caller gets its own outcome and no one's insert fails for another's.
// Two inserts of one jti in a batch behave as they would one after the
// other (the second finds the first and changes nothing); jti inserts go
// first, ordered by key, so two batches (of one instance or of two)
// cannot deadlock on each other's keys.
type groupWriter struct {
	pool       *pgxpool.Pool
	maxFlights int

	mu      sync.Mutex
	queue   []*groupOp
	flights int // batches being sent
	closed  bool
	running sync.WaitGroup
}

// flightQueue is how many queued inserts start another batch while one
// is on the wire.
const flightQueue = 4

// groupTimeout bounds one batch (or one statement run alone after a
// failed batch): the writer does not use its callers' contexts, since one
// caller's cancelled request must not roll back the others' inserts.
const groupTimeout = 30 * time.Second

const (
	opQueued int32 = iota
	opStarted
	opWithdrawn
)

type groupOp struct {
	sql  string
	args []any
	key  string // ordering key of a jti insert ("" for others)
	dest []any  // QueryRow's Scan destinations; nil for Exec
	n    int64
	err  error

	state atomic.Int32
	done  chan struct{}
}

// newGroupWriter returns a writer on pool sending up to a quarter of the
// pool's connections' worth of batches at a time (at least one).
func newGroupWriter(pool *pgxpool.Pool) *groupWriter {
	return &groupWriter{pool: pool, maxFlights: max(1, int(pool.Config().MaxConns)/4)}
}

// do queues o and waits for its outcome. A caller whose context ends
// while o is still queued withdraws it; once o is sent, the caller waits
// for the real outcome (a committed insert is not reported as failed).
func (w *groupWriter) do(ctx context.Context, o *groupOp) error {
	o.done = make(chan struct{})
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errors.New("postgres: store closed")
	}
	w.queue = append(w.queue, o)
	if w.flights == 0 || (w.flights < w.maxFlights && len(w.queue) >= flightQueue) {
		w.flights++
		w.running.Add(1)
		go w.send()
	}
	w.mu.Unlock()
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opWithdrawn) {
			return ctx.Err()
		}
		<-o.done
		return o.err
	}
}

// send is one flight: it sends what is queued, then what was queued
// meanwhile, until the queue is empty.
func (w *groupWriter) send() {
	defer w.running.Done()
	for {
		w.mu.Lock()
		ops := w.queue
		w.queue = nil
		if len(ops) == 0 {
			w.flights--
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.flush(ops)
	}
}

// close waits for the batches on the wire and what is queued; later
// calls fail.
func (w *groupWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.running.Wait()
}

func (w *groupWriter) flush(queued []*groupOp) {
	ops := queued[:0]
	for _, o := range queued {
		if o.state.CompareAndSwap(opQueued, opStarted) {
			ops = append(ops, o)
		}
	}
	if len(ops) == 0 {
		return
	}
	slices.SortStableFunc(ops, func(a, b *groupOp) int {
		switch {
		case a.key != "" && b.key != "":
			return strings.Compare(a.key, b.key)
		case a.key != "":
			return -1
		case b.key != "":
			return 1
		}
		return 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	if len(ops) == 1 || !w.batch(ctx, ops) {
		for _, o := range ops {
			w.alone(ctx, o)
		}
	}
	for _, o := range ops {
		close(o.done)
	}
}

// batch runs ops in one pipelined batch and reports whether it committed.
func (w *groupWriter) batch(ctx context.Context, ops []*groupOp) bool {
	b := &pgx.Batch{}
	for _, o := range ops {
		b.Queue(o.sql, o.args...)
	}
	br := w.pool.SendBatch(ctx, b)
	ok := true
	for _, o := range ops {
		if o.dest != nil {
			o.err = br.QueryRow().Scan(o.dest...)
		} else {
			var tag, err = br.Exec()
			o.n, o.err = tag.RowsAffected(), err
		}
		if o.err != nil {
			ok = false
			break
		}
	}
	// Close reads up to the Sync: the commit of the implicit transaction.
	if err := br.Close(); err != nil {
		ok = false
	}
	return ok
}

// alone runs o as a statement of its own.
func (w *groupWriter) alone(ctx context.Context, o *groupOp) {
	if o.dest != nil {
		o.err = w.pool.QueryRow(ctx, o.sql, o.args...).Scan(o.dest...)
		return
	}
	tag, err := w.pool.Exec(ctx, o.sql, o.args...)
	o.n, o.err = tag.RowsAffected(), err
}

// groupQuerier is the sqlstore.Querier of grouped inserts (Exec and
// QueryRow; Query runs on the pool).
type groupQuerier struct {
	w   *groupWriter
	key string
}

func (q groupQuerier) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	o := &groupOp{sql: sql, args: args, key: q.key}
	err := q.w.do(ctx, o)
	return o.n, err
}

func (q groupQuerier) Query(ctx context.Context, sql string, args ...any) (sqlstore.Rows, error) {
	return querier{q.w.pool}.Query(ctx, sql, args...)
}

func (q groupQuerier) QueryRow(ctx context.Context, sql string, args ...any) sqlstore.Row {
	return groupRow{q: q, ctx: ctx, sql: sql, args: args}
}

// groupRow queues its statement when scanned.
type groupRow struct {
	q    groupQuerier
	ctx  context.Context
	sql  string
	args []any
}

func (r groupRow) Scan(dest ...any) error {
	if len(dest) == 0 {
		return errors.New("postgres: grouped QueryRow needs a destination")
	}
	return r.q.w.do(r.ctx, &groupOp{sql: r.sql, args: r.args, key: r.q.key, dest: dest})
}
