package bus

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Follower delivers every stored event to every process that follows, and
// each to all of them: a broadcast, not a work queue (compare Durable).
// It is how state a process keeps in memory (the OAuth client cache, the
// signing keys, the Conditional Access policies) learns of a change that
// another process stored: another instance on the same database, or a
// command-line tool (`ward client rotate-secret`, `ward keys rotate`,
// `ward policy apply`).
//
// Delivery starts with the events stored from the call on (the history is
// not replayed, though an event stored just before the call may come),
// keeps the store's order as far as the carrier does, and is
// best effort: an event that arrives while the handler fails is not
// delivered again, and an outage of the carrier can lose events. So a
// follower must keep a periodic re-check as a safety net. Events this
// process published come too, possibly twice and after their synchronous
// delivery: handlers must be idempotent.
type Follower interface {
	// Follow runs h for every event of the given types (all types when
	// empty), one at a time, until ctx ends or stop is called; stop waits
	// for a running h. An error from h is logged.
	Follow(ctx context.Context, types []model.EventType, h Handler) (stop func(), err error)
}

// NoFollow is the Follower of a process that learns of nothing others
// store: a short-lived command-line tool. Follow runs nothing.
type NoFollow struct{}

// Follow returns at once; h never runs.
func (NoFollow) Follow(context.Context, []model.EventType, Handler) (func(), error) {
	return func() {}, nil
}

// PollerOptions configure a Poller.
type PollerOptions struct {
	// Interval is how often the events table is read (default 1s).
	Interval time.Duration
	// GapWait is how long a missing sequence number is waited for before
	// the poller stops looking for it (default DefaultGapWait).
	GapWait time.Duration
	// Log receives read errors and handler failures.
	Log *slog.Logger
}

// Poller is the Follower without NATS (bus.driver local): it reads the
// events table (EventsAfter) every Interval.
type Poller struct {
	src Outbox
	o   PollerOptions
}

var (
	_ Follower = (*Poller)(nil)
	_ Follower = (*NATS)(nil)
	_ Follower = NoFollow{}
)

// NewPoller returns a Poller over the events table of src.
func NewPoller(src Outbox, o PollerOptions) *Poller {
	if o.Interval <= 0 {
		o.Interval = DefaultPollInterval
	}
	if o.GapWait <= 0 {
		o.GapWait = DefaultGapWait
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Poller{src: src, o: o}
}

// Follow implements Follower. It starts after the newest stored event.
func (p *Poller) Follow(ctx context.Context, types []model.EventType, h Handler) (func(), error) {
	if h == nil {
		return nil, errors.New("bus: nil handler")
	}
	newest, err := p.src.ListEvents(ctx, store.EventFilter{Limit: 1})
	if err != nil {
		return nil, err
	}
	f := &pollFollow{p: p, h: h, types: typeSet(types), seen: map[int64]bool{}, log: p.o.Log.With("component", "bus", "part", "follow")}
	if len(newest) == 1 {
		f.low = newest[0].Seq
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(fctx)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}, nil
}

// pollFollow is one Follow call of a Poller.
//
// Sequence numbers become visible at commit, which on PostgreSQL is not
// always their order (see relay.go). So the poller reads from low, the
// highest number below which everything was delivered or given up, and
// remembers what it delivered above it (seen). A missing number holds low
// back for GapWait; later events are delivered meanwhile.
type pollFollow struct {
	p     *Poller
	h     Handler
	types map[model.EventType]bool
	log   *slog.Logger

	low      int64
	seen     map[int64]bool
	gapSince time.Time
	failing  bool
}

func (f *pollFollow) run(ctx context.Context) {
	t := time.NewTicker(f.p.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.step(ctx)
		}
	}
}

func (f *pollFollow) step(ctx context.Context) {
	from := f.low
	for ctx.Err() == nil {
		evs, err := f.p.src.EventsAfter(ctx, from, relayBatch)
		if err != nil {
			if ctx.Err() == nil && !f.failing {
				f.log.Warn("bus: reading the events table failed; following again on the next poll", "err", err)
				f.failing = true
			}
			return
		}
		f.failing = false
		for _, ev := range evs {
			if f.seen[ev.Seq] {
				continue
			}
			f.seen[ev.Seq] = true
			if f.types == nil || f.types[ev.Type] {
				if err := f.h(ctx, &ev.Event); err != nil && ctx.Err() == nil {
					f.log.Warn("bus: follower failed", "event_id", ev.ID, "type", string(ev.Type), "seq", ev.Seq, "err", err)
				}
			}
		}
		if len(evs) < relayBatch {
			break
		}
		from = evs[len(evs)-1].Seq
	}
	f.advance(time.Now())
}

// advance moves low over what was delivered, and over a missing number
// waited for longer than GapWait.
func (f *pollFollow) advance(now time.Time) {
	for len(f.seen) > 0 {
		if f.seen[f.low+1] {
			delete(f.seen, f.low+1)
			f.low++
			f.gapSince = time.Time{}
			continue
		}
		// f.low+1 is missing while later events were seen.
		if f.gapSince.IsZero() {
			f.gapSince = now
			return
		}
		if now.Sub(f.gapSince) < f.p.o.GapWait {
			return
		}
		// Given up (a rolled-back insert, or a very late commit): go on
		// from the first number seen after the gap.
		next := int64(-1)
		for s := range f.seen {
			if next < 0 || s < next {
				next = s
			}
		}
		f.low = next - 1
		f.gapSince = time.Time{}
	}
}

func typeSet(types []model.EventType) map[model.EventType]bool {
	if len(types) == 0 {
		return nil
	}
	m := make(map[model.EventType]bool, len(types))
	for _, t := range types {
		m[t] = true
	}
	return m
}
