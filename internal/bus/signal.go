package bus

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Signal wakes other instances over core NATS: messages are not stored
// and may be lost (a reconnect, no listener yet), so what they announce
// must also be found by polling; they only make it sooner.
type Signal struct {
	nc      *nats.Conn
	subject string
}

// NewSignal returns a signal on subject over nc.
func NewSignal(nc *nats.Conn, subject string) *Signal { return &Signal{nc: nc, subject: subject} }

// Signal returns the deployment's signal named name, on the core subject
// <subject_prefix>-<name> (outside the event stream, like the relay's
// wake-up). Nil when this bus has no connection.
func (n *NATS) Signal(name string) *Signal {
	if n == nil || n.nc == nil {
		return nil
	}
	return NewSignal(n.nc, n.o.SubjectPrefix+"-"+name)
}

// Notify sends data to every listener, this instance's included.
func (s *Signal) Notify(data []byte) error {
	if err := s.nc.Publish(s.subject, data); err != nil {
		return fmt.Errorf("bus: signal %s: %w", s.subject, err)
	}
	return nil
}

// Listen calls fn with every message's data (on the connection's
// dispatch goroutine: fn must not block) until stop is called.
func (s *Signal) Listen(fn func(data []byte)) (stop func(), err error) {
	sub, err := s.nc.Subscribe(s.subject, func(m *nats.Msg) { fn(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe to %s: %w", s.subject, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
