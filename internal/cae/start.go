package cae

import (
	"context"
	"errors"
	"fmt"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
)

// Durable consumers of the domain-event stream the transmitter runs.
const (
	// ConsumerCatchUp queues the SETs of an event stored by a process
	// that died before queueing them (Service.CatchUp).
	ConsumerCatchUp = "cae-ssf"
	// ConsumerStream publishes every event's SETs to the CAE stream for
	// resource servers that follow NATS directly.
	ConsumerStream = "cae-nats"
)

// Wiring is what Start connects the transmitter to.
type Wiring struct {
	// Bus is the synchronous bus; the transmitter subscribes to it
	// (HandleEvent). Subscribe it after the audit persister, so that
	// events are recorded before their SETs are queued. Required.
	Bus bus.Bus
	// Durable delivers stored events across instances and restarts; a
	// bus without it (bus.NoDurable, which answers bus.ErrNoDurable) runs
	// no durable consumer. Nil is the same as bus.NoDurable.
	Durable bus.Durable
	// Stream publishes SETs to the CAE stream of resource servers that
	// follow NATS (bus.CAEPublisher); nil: there is none. It needs Durable.
	Stream bus.CAEPublisher
	// Audience is the aud of the SETs on Stream.
	Audience string
	// Serve makes the transmitter deliver: it runs the push worker,
	// queues the SETs of events a crashed predecessor stored but did not
	// queue (Recover) and runs the durable consumers, before Start
	// returns. Without it (a short-lived command-line tool) the
	// transmitter only queues SETs, which the running server delivers
	// within its rescan interval.
	Serve bool
}

// Start creates the transmitter (New), subscribes it to w.Bus and, for a
// server (w.Serve), starts its delivery: the push worker, the recovery of
// unqueued SETs, the catch-up consumer (ConsumerCatchUp) and, with
// w.Stream, the consumer that publishes to the CAE stream
// (ConsumerStream). Close stops all of it.
func Start(ctx context.Context, o Options, w Wiring) (_ *Service, err error) {
	if w.Bus == nil {
		return nil, errors.New("cae: Wiring.Bus is required")
	}
	if w.Stream != nil && w.Audience == "" {
		return nil, errors.New("cae: Wiring.Audience is required with a stream")
	}
	s, err := New(o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.events = bus.NewEmitter(w.Bus, o.Now)
	s.stops = append(s.stops, w.Bus.Subscribe("cae-transmitter", s.HandleEvent))
	if !w.Serve {
		return s, nil
	}
	s.Start()
	// Before serving: SETs of events a crashed predecessor stored but did
	// not queue.
	if _, err := s.Recover(ctx); err != nil {
		return nil, err
	}
	durable := w.Durable
	if durable == nil {
		durable = bus.NoDurable{Reason: "no durable delivery configured"}
	}
	// Both consumers start with the events published from their creation
	// on: older ones were handled by Recover or by their earlier runs.
	stop, err := durable.Consume(context.Background(), ConsumerCatchUp, SourceEventTypes, s.CatchUp, bus.OnlyNew())
	if errors.Is(err, bus.ErrNoDurable) {
		if w.Stream != nil {
			return nil, fmt.Errorf("cae: the CAE stream needs durable delivery: %w", err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cae: SSF catch-up: %w", err)
	}
	s.stops = append(s.stops, stop)
	if w.Stream == nil {
		return s, nil
	}
	// A durable consumer of the domain events, so an event stored while
	// NATS was away is still published, once per deployment.
	stop, err = durable.Consume(context.Background(), ConsumerStream, SourceEventTypes, s.publisher(w.Stream, w.Audience), bus.OnlyNew())
	if err != nil {
		return nil, fmt.Errorf("cae: CAE stream: %w", err)
	}
	s.stops = append(s.stops, stop)
	return s, nil
}

// publisher returns the handler that publishes an event's SETs, signed
// for aud, to the CAE stream.
func (s *Service) publisher(stream bus.CAEPublisher, aud string) bus.Handler {
	return func(ctx context.Context, e *model.Event) error {
		sets, err := s.Broadcast(ctx, e, aud)
		if err != nil {
			return err
		}
		for _, set := range sets {
			if err := stream.PublishCAE(ctx, set.Name, set.ID, set.SET); err != nil {
				return err
			}
		}
		return nil
	}
}
