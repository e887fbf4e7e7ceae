package bus

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Emitter is how services record domain events: it completes each event
// the same way (Stamp) and publishes it, or prepares it to commit with the
// store write that makes its change (Pending, PendingEvents). Every
// service records its events through one; no service stamps events itself.
//
// An Emitter made with a nil Bus records nothing (a service configured
// without a bus), and its methods are safe to call.
type Emitter struct {
	bus Bus
	now func() time.Time
	log *slog.Logger // nil: failures are only returned
}

// NewEmitter returns an Emitter publishing on b (nil: nothing is
// recorded) with the clock now (nil: time.Now).
func NewEmitter(b Bus, now func() time.Time) *Emitter {
	if now == nil {
		now = time.Now
	}
	return &Emitter{bus: b, now: now}
}

// Logging returns a copy of em that also logs every event it fails to
// record (type, id and correlation id; never the event's data), for
// callers that cannot fail their request over an audit record.
func (em *Emitter) Logging(log *slog.Logger) *Emitter {
	c := *em
	c.log = log
	return &c
}

// Enabled reports whether events are recorded (the Emitter has a bus).
func (em *Emitter) Enabled() bool { return em != nil && em.bus != nil }

// NewEventID returns a new event id: a random (version 4) UUID.
//
// One format for every event: most events already had one (the audit
// persister, the admin API, identity, devices, clients), it carries 122
// random bits, and SIEMs and JetStream (Nats-Msg-Id) take it as it is. A
// time-ordered id (UUIDv7) would buy nothing: events are ordered and
// indexed by their store sequence number, never by id. Ids stored before
// keep their format.
func NewEventID() string { return uuid.NewString() }

// Stamp completes e for recording, filling only what is empty: the id
// (NewEventID), the time (the Emitter's clock), the outcome (success) and
// the request origin from ctx (client IP, user agent, correlation id:
// WithOrigin).
func (em *Emitter) Stamp(ctx context.Context, e *model.Event) {
	now := time.Now
	if em != nil {
		now = em.now
	}
	Stamp(ctx, e, now)
}

// Stamp is Emitter.Stamp with the clock now: for the audit persister,
// which completes events that reach it unstamped (a test's, or an older
// caller's), in the same way. Every field is bounded (Bound), so no
// request can make an event larger than a few kilobytes.
func Stamp(ctx context.Context, e *model.Event, now func() time.Time) {
	if e.ID == "" {
		e.ID = NewEventID()
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	if e.Outcome == "" {
		e.Outcome = model.OutcomeSuccess
	}
	FillOrigin(ctx, e)
	Bound(e)
}

// Emit stamps e and publishes it. The error is the bus's: a synchronous
// subscriber (the audit persister) could not take the event.
func (em *Emitter) Emit(ctx context.Context, e *model.Event) error {
	if !em.Enabled() {
		return nil
	}
	em.Stamp(ctx, e)
	if err := em.bus.Publish(ctx, e); err != nil {
		emitFailures.Add(1)
		if em.log != nil {
			em.log.ErrorContext(ctx, "recording an event failed", "type", string(e.Type), "event_id", e.ID,
				"correlation_id", e.CorrelationID, "err", err)
		}
		return fmt.Errorf("record %s: %w", e.Type, err)
	}
	return nil
}

// emitFailures counts events no Emitter of this process could record.
var emitFailures atomic.Int64

// EmitFailures returns how many events Emit could not record in this
// process (a synchronous subscriber, the audit persister, refused them).
func EmitFailures() int64 { return emitFailures.Load() }

// Pending stamps e and returns the context for the store write that
// makes its change and for emitting e afterwards (store.WithEventFunc;
// complete, which may be nil, decides in the transaction whether e is
// recorded), so that the audit persister finds it stored. Without a bus
// it returns ctx as it is.
func (em *Emitter) Pending(ctx context.Context, e *model.Event, complete func(ids []string) bool) context.Context {
	if !em.Enabled() {
		return ctx
	}
	em.Stamp(ctx, e)
	return store.WithEventFunc(ctx, e, complete)
}

// PendingEvents is Pending for a write recorded by events that depend on
// its outcome (store.WithEvents): build returns them for the write's ids,
// and each is stamped in the transaction. Emit each of them afterwards
// with the returned context. Without a bus it returns ctx as it is.
func (em *Emitter) PendingEvents(ctx context.Context, build func(ids []string) []*model.Event) context.Context {
	if !em.Enabled() {
		return ctx
	}
	return store.WithEvents(ctx, func(ids []string) []*model.Event {
		evs := build(ids)
		for _, e := range evs {
			em.Stamp(ctx, e)
		}
		return evs
	})
}
