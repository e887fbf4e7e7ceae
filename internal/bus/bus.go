// Package bus carries domain events from the services that cause them to
// the consumers that react (audit log, session revoker, CAE transmitter,
// risk engine).
//
// Two kinds of delivery exist side by side:
//
//   - Bus.Subscribe: synchronous and in-process. Publish returns after every
//     subscriber ran, so the audit persister has written the event to the
//     store's events table (the outbox) and the session revoker has revoked
//     before the call that caused the event returns.
//   - Durable.Consume: at-least-once and across instances, through NATS
//     JetStream. A relay in each instance publishes the stored events, in
//     sequence order and de-duplicated by event id, to the stream; durable
//     consumers get them even after a restart of either side.
//   - Follower.Follow: every process gets every event stored from now on,
//     whichever process stored it (another instance, a command-line
//     tool), within about a second: how state kept in memory learns of
//     changes made elsewhere. NATS follows the stream with an ordered
//     consumer; Poller reads the events table.
//
// The Local bus has only the first kind. NATS has all three, against an
// embedded in-process server or an external cluster with the same code.
package bus

import (
	"context"
	"errors"
	"sync"

	"github.com/ward-idp/ward/internal/model"
)

// Handler consumes one event. An error from a synchronous subscriber is
// returned to the publisher: consumers that must not lose events (the
// audit log) make the publish fail instead of silently dropping. An error
// from a durable handler makes the event come again (Durable).
type Handler func(ctx context.Context, e *model.Event) error

// Bus publishes events to subscribers.
type Bus interface {
	Publish(ctx context.Context, e *model.Event) error
	Subscriber
}

// Subscriber is the receiving side of a Bus.
type Subscriber interface {
	// Subscribe registers h and returns a function that removes it.
	Subscribe(name string, h Handler) (unsubscribe func())
}

// Local is an in-process bus delivering to every subscriber in
// registration order before Publish returns.
type Local struct {
	mu   sync.RWMutex
	subs []sub
	next int
}

type sub struct {
	id   int
	name string
	h    Handler
}

// NewLocal returns an empty in-process bus.
func NewLocal() *Local { return &Local{} }

// Publish delivers e to every subscriber and joins their errors.
func (b *Local) Publish(ctx context.Context, e *model.Event) error {
	FillOrigin(ctx, e)
	b.mu.RLock()
	subs := b.subs
	b.mu.RUnlock()
	var errs []error
	for _, s := range subs {
		if err := s.h(ctx, e); err != nil {
			errs = append(errs, errors.New("bus: subscriber "+s.name+": "+err.Error()))
		}
	}
	return errors.Join(errs...)
}

// Subscribe adds h.
func (b *Local) Subscribe(name string, h Handler) func() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := b.next
	// copy-on-write so Publish can iterate without the lock
	subs := make([]sub, len(b.subs), len(b.subs)+1)
	copy(subs, b.subs)
	b.subs = append(subs, sub{id: id, name: name, h: h})
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		out := make([]sub, 0, len(b.subs))
		for _, s := range b.subs {
			if s.id != id {
				out = append(out, s)
			}
		}
		b.subs = out
	}
}

// Recorder is a channel-free event recorder for tests: subscribe it and
// read Events().
type Recorder struct {
	mu     sync.Mutex
	events []model.Event
}

// Handle records e.
func (r *Recorder) Handle(_ context.Context, e *model.Event) error {
	r.mu.Lock()
	r.events = append(r.events, *e)
	r.mu.Unlock()
	return nil
}

// Events returns a copy of what was recorded.
func (r *Recorder) Events() []model.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]model.Event(nil), r.events...)
}

// Has reports whether an event of type t was recorded.
func (r *Recorder) Has(t model.EventType) bool {
	for _, e := range r.Events() {
		if e.Type == t {
			return true
		}
	}
	return false
}

// Origin describes where a change came from: the request that caused it.
type Origin struct {
	IP            string
	UserAgent     string
	CorrelationID string
}

type originKey struct{}

// WithOrigin attaches the request origin to ctx. Services publish events
// with the ctx they were given, so every event a request causes records the
// client IP, user agent and correlation id without the services knowing
// about HTTP.
func WithOrigin(ctx context.Context, o Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// FillOrigin sets e's empty IP, UserAgent and CorrelationID from ctx.
func FillOrigin(ctx context.Context, e *model.Event) {
	o, ok := ctx.Value(originKey{}).(Origin)
	if !ok {
		return
	}
	if e.IP == "" {
		e.IP = o.IP
	}
	if e.UserAgent == "" {
		e.UserAgent = o.UserAgent
	}
	if e.CorrelationID == "" {
		e.CorrelationID = o.CorrelationID
	}
}
