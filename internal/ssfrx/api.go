package ssfrx

import (
	"context"
	"errors"
	"fmt"

	"github.com/ward-idp/ward/internal/model"
)

// ErrUnknownReceiver: no receiver of that name is configured.
var ErrUnknownReceiver = errors.New("ssfrx: no such receiver in ssf_receivers")

// Status is what Ward knows of one receiver's stream.
type Status struct {
	Name     string
	Issuer   string
	Delivery string // Push or Poll, as configured
	// Stream is the stored stream (nil before it was first set up).
	Stream *model.SSFReceiverStream
	// Live and LiveReason are the status the transmitter reports now
	// (Status only; "" when not asked or not reachable, then LiveErr).
	Live, LiveReason string
	LiveErr          error
}

func (s *Service) receiver(name string) (*receiver, error) {
	r := s.byName[name]
	if r == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownReceiver, name)
	}
	return r, nil
}

// List returns every configured receiver with its stored stream.
func (s *Service) List(ctx context.Context) ([]Status, error) {
	var out []Status
	for _, r := range s.order {
		st, err := r.load(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, Status{Name: r.cfg.Name, Issuer: r.cfg.Issuer, Delivery: r.cfg.Delivery, Stream: st})
	}
	return out, nil
}

// Status returns a receiver's stored stream and the status its
// transmitter reports now.
func (s *Service) Status(ctx context.Context, name string) (*Status, error) {
	r, err := s.receiver(name)
	if err != nil {
		return nil, err
	}
	st, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{Name: name, Issuer: r.cfg.Issuer, Delivery: r.cfg.Delivery, Stream: st}
	out.Live, out.LiveReason, out.LiveErr = r.liveStatus(ctx)
	return out, nil
}

// Ensure creates or updates the receiver's stream at its transmitter now
// (what Start does in the background) and returns it.
func (s *Service) Ensure(ctx context.Context, name string) (*model.SSFReceiverStream, error) {
	r, err := s.receiver(name)
	if err != nil {
		return nil, err
	}
	return r.ensure(ctx, false)
}

// Verify asks the transmitter for a verification event on the
// receiver's stream (SSF 1.0 §8.1.4.2); the running server records its
// arrival as the stream's VerifiedAt.
func (s *Service) Verify(ctx context.Context, name string) error {
	r, err := s.receiver(name)
	if err != nil {
		return err
	}
	r.mu.Lock()
	ready := r.stream != nil && r.tc != nil
	r.mu.Unlock()
	if !ready {
		if _, err := r.ensure(ctx, false); err != nil {
			return err
		}
	}
	return r.requestVerification(ctx)
}

// Recreate deletes the receiver's stream at its transmitter (if it still
// has it) and creates a new one, with a new push token: after a lost or
// leaked push credential, or a transmitter that lost its state.
func (s *Service) Recreate(ctx context.Context, name string) (*model.SSFReceiverStream, error) {
	r, err := s.receiver(name)
	if err != nil {
		return nil, err
	}
	return r.ensure(ctx, true)
}
