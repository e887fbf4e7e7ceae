package sqlite

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/ward-idp/ward/internal/model"
)

// Group commit for the audit log.
//
// Every token issued appends one event, and on SQLite the cost of an
// append is almost all commit: the WAL frames of the events table and its
// five indexes are written with one pwrite each (about 100 µs on a loaded
// machine, a third of a client-credentials grant). Appends that arrive
// together are therefore written by one goroutine in one transaction, so
// they share those page writes. Nothing about durability changes: every
// caller still returns only after the transaction holding its event has
// committed (WAL, synchronous=NORMAL as before), and an error reaches the
// caller whose event it concerns. There is no timer: an append that
// arrives when the writer is idle is written at once; batches form only
// from appends that arrive while a commit is in progress (or runnable at
// the same moment), so an idle server pays no extra latency.

// maxEventBatch bounds how many events share one transaction, so a burst
// cannot hold the single write connection for long.
const maxEventBatch = 128

// errStoreClosed is returned by AppendEvent after Close.
var errStoreClosed = errors.New("sqlite: store closed")

type appendReq struct {
	ctx  context.Context
	e    *model.Event
	seq  int64
	err  error
	done chan struct{}
}

// eventWriter is the group-commit writer behind Store.AppendEvent.
type eventWriter struct {
	one  func(context.Context, *model.Event) (int64, error)
	many func(context.Context, []*model.Event) ([]int64, error)

	mu     sync.RWMutex // held (read) while sending on reqs; (write) to close it
	closed bool
	reqs   chan *appendReq
	done   chan struct{}

	// batches and events count commits and events written (for tests).
	batches, events atomic.Int64
}

func newEventWriter(one func(context.Context, *model.Event) (int64, error),
	many func(context.Context, []*model.Event) ([]int64, error)) *eventWriter {
	w := &eventWriter{one: one, many: many, reqs: make(chan *appendReq, maxEventBatch), done: make(chan struct{})}
	go w.run()
	return w
}

// append queues e and waits until it is committed. If ctx ends first the
// caller gets ctx.Err(), but an event already handed to the writer may
// still be stored (as with a commit whose acknowledgement is lost): the
// audit log may hold an event whose publisher saw an error, never the
// other way round.
func (w *eventWriter) append(ctx context.Context, e *model.Event) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r := &appendReq{ctx: ctx, e: e, done: make(chan struct{})}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return 0, errStoreClosed
	}
	w.reqs <- r
	w.mu.RUnlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (w *eventWriter) run() {
	defer close(w.done)
	batch := make([]*appendReq, 0, maxEventBatch)
	for r := range w.reqs {
		batch = append(batch[:0], r)
		// Let every goroutine that is runnable right now (with
		// GOMAXPROCS=1: all requests in flight) reach its own append
		// before this commit starts; otherwise the writer, woken first,
		// would commit batches of one.
		runtime.Gosched()
	drain:
		for len(batch) < maxEventBatch {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		w.write(batch)
		clear(batch) // drop references to finished requests
	}
}

// write commits batch and completes every request in it.
func (w *eventWriter) write(batch []*appendReq) {
	// Callers that gave up before the write are not written.
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		// A single event needs no explicit transaction.
		r := live[0]
		r.seq, r.err = w.one(r.ctx, r.e)
		w.batches.Add(1)
		w.events.Add(1)
		close(r.done)
		return
	}
	es := make([]*model.Event, len(live))
	for i, r := range live {
		es[i] = r.e
	}
	// One caller's cancellation must not abort the others' commit.
	seqs, err := w.many(context.WithoutCancel(live[0].ctx), es)
	if err == nil {
		w.batches.Add(1)
		w.events.Add(int64(len(live)))
		for i, r := range live {
			r.seq = seqs[i]
			close(r.done)
		}
		return
	}
	// The transaction rolled back as a whole. Write the events one by one
	// (in order, so Seq still follows arrival) so that each caller gets
	// the outcome of its own event: a faulty event fails alone, and a
	// broken database fails every caller with its error.
	for _, r := range live {
		r.seq, r.err = w.one(context.WithoutCancel(r.ctx), r.e)
		w.batches.Add(1)
		if r.err == nil {
			w.events.Add(1)
		}
		close(r.done)
	}
}

// close stops accepting appends, writes the ones already queued and
// waits for the writer to finish. It is safe to call more than once.
func (w *eventWriter) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	<-w.done
}
