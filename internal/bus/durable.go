package bus

import (
	"context"
	"errors"

	"github.com/ward-idp/ward/internal/model"
)

// Durable is cross-instance, at-least-once delivery of stored events.
type Durable interface {
	// Consume runs h for every event of the given types (all types when
	// empty) through the durable consumer name. Instances that use the
	// same name share one consumer: each event goes to one of them (work
	// queue); different names each get every event. Delivery is ordered:
	// one event is in flight per consumer, and it is acknowledged when h
	// returns nil; when h fails, the event is delivered again after a
	// back-off, so a handler that keeps failing holds up its consumer. h
	// must be idempotent (a crash between h and the acknowledgement repeats
	// the event; the event id tells repeats apart). A new consumer starts
	// with the oldest event the stream still holds (see OnlyNew).
	//
	// Consuming stops when ctx ends or stop is called; stop waits for a
	// running h. Name, types and options of one consumer must be the same
	// in every instance.
	Consume(ctx context.Context, name string, types []model.EventType, h Handler, opts ...ConsumeOption) (stop func(), err error)
}

// ConsumeOption adjusts a durable consumer.
type ConsumeOption func(*consumeOptions)

type consumeOptions struct {
	onlyNew bool
}

// OnlyNew makes a consumer that does not exist yet start with the events
// published from its creation on, instead of the oldest the stream holds:
// for a consumer added to a deployment whose stream already holds a
// week of history that it must not act on again. An existing consumer
// resumes where it was either way.
func OnlyNew() ConsumeOption { return func(o *consumeOptions) { o.onlyNew = true } }

// ErrNoDurable is returned by Consume when the bus has no durable delivery.
var ErrNoDurable = errors.New("bus: durable delivery is not available")

// NoDurable is the Durable of a process without JetStream: bus.driver
// local, or a command-line tool whose events the server's relay publishes.
type NoDurable struct {
	// Reason completes ErrNoDurable's message.
	Reason string
}

// Consume returns ErrNoDurable.
func (n NoDurable) Consume(context.Context, string, []model.EventType, Handler, ...ConsumeOption) (func(), error) {
	return nil, errors.Join(ErrNoDurable, errors.New(n.Reason))
}

// Delivery describes one durable delivery of an event.
type Delivery struct {
	// Seq is the event's sequence number in the store.
	Seq int64
	// StreamSeq is the message's sequence number in the stream.
	StreamSeq uint64
	// Attempt is 1 on the first delivery, 2 on the first redelivery, ...
	Attempt uint64
}

type deliveryKey struct{}

// DeliveryFrom returns the delivery a durable handler is running for.
func DeliveryFrom(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

func withDelivery(ctx context.Context, d Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}
