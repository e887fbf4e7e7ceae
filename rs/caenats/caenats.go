// Package caenats feeds an [rs.Receiver] from Ward's CAE stream in NATS
// JetStream: the "subscribe to NATS directly" way for a resource server to
// follow Continuous Access Evaluation, next to an SSF push endpoint or
// poll loop (docs/ssf.md, "Direct NATS").
//
// Ward publishes every CAEP/RISC event once, signed, to the stream
// (WARD_CAE by default), addressed to the audience all followers share.
// A Follower reads it with an ordered consumer of its own: at start it
// replays the events of the last Receiver.MaxAge (every event that can
// still affect a live token, so a restarted resource rebuilds its
// revocation state with no database of its own), then follows new ones as
// they are stored, in order, across reconnections. Each SET is verified by
// the Receiver (signature, iss, aud, iat) like a pushed one: NATS is only
// the transport, and whoever can publish to it cannot forge a revocation.
//
// The package is separate from rs so that rs does not depend on the NATS
// client.
package caenats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/rs"
)

// DefaultStream is the stream Ward publishes SETs to.
const DefaultStream = "WARD_CAE"

// Config configures a Follower. Conn and Receiver are required.
type Config struct {
	// Conn is a connection to Ward's NATS: the embedded server's listener
	// with a subscriber nkey, or the external cluster.
	Conn *nats.Conn
	// Receiver verifies the SETs and applies them to its RevocationState.
	// Its Audience must be Ward's ssf.nats.audience.
	Receiver *rs.Receiver
	// Stream is the CAE stream's name (DefaultStream).
	Stream string
	// Subjects filters the stream (all of it if empty), for example
	// "ward.cae.caep.>".
	Subjects []string
	// Replay is how far back to start (Receiver.MaxAge if zero).
	Replay time.Duration
	// RetryMin and RetryMax bound the pause before a SET that could not be
	// processed for a temporary reason (signing keys unreachable) is tried
	// again; later SETs wait, so order holds (200ms, 30s).
	RetryMin, RetryMax time.Duration
	// Logger receives refused SETs and connection trouble (nil: nothing).
	Logger *slog.Logger
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Stats counts what a Follower saw.
type Stats struct {
	Received   int64 // messages read from the stream
	Applied    int64 // SETs verified and applied
	Duplicates int64 // SETs whose jti was already applied
	Refused    int64 // SETs the Receiver refused (bad signature, audience, too old...)
	Retries    int64 // temporary failures retried
}

// Follower follows the CAE stream until Close.
type Follower struct {
	cfg   Config
	it    jetstream.MessagesContext
	ready chan struct{}
	done  chan struct{}

	readyOnce sync.Once
	closeOnce sync.Once
	cancel    context.CancelFunc

	received, applied, duplicates, refused, retries atomic.Int64
}

// Follow starts following. It returns once the consumer exists; Ready
// tells when the replay has caught up.
func Follow(ctx context.Context, cfg Config) (*Follower, error) {
	if cfg.Conn == nil || cfg.Receiver == nil {
		return nil, errors.New("caenats: Conn and Receiver are required")
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Replay <= 0 {
		cfg.Replay = cfg.Receiver.MaxAge()
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 200 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("caenats: %w", err)
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("caenats: stream %s: %w", cfg.Stream, err)
	}
	start := cfg.Now().Add(-cfg.Replay)
	st := s.CachedInfo().State
	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects: cfg.Subjects,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	}
	cons, err := js.OrderedConsumer(ctx, cfg.Stream, occ)
	if err != nil {
		return nil, fmt.Errorf("caenats: consumer on %s: %w", cfg.Stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("caenats: consume %s: %w", cfg.Stream, err)
	}
	f := &Follower{cfg: cfg, it: it, ready: make(chan struct{}), done: make(chan struct{})}
	if st.Msgs == 0 || st.LastTime.Before(start) {
		f.markReady() // nothing to replay
	} else if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 && ci.Delivered.Consumer == 0 {
		// Messages in range, but none that Subjects selects (a message
		// already delivered is counted in Delivered, and marks the
		// follower ready once processed).
		f.markReady()
	}
	rctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go f.run(rctx)
	return f, nil
}

// Ready is closed once every SET stored when Follow was called has been
// processed. A resource that must not accept a token revoked before it
// started waits for it (with a deadline of its choosing) before serving.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Stats returns the counters.
func (f *Follower) Stats() Stats {
	return Stats{Received: f.received.Load(), Applied: f.applied.Load(), Duplicates: f.duplicates.Load(),
		Refused: f.refused.Load(), Retries: f.retries.Load()}
}

// Close stops following and waits for the SET in hand to be processed.
func (f *Follower) Close() error {
	f.closeOnce.Do(func() {
		f.cancel()
		f.it.Stop()
	})
	<-f.done
	return nil
}

func (f *Follower) markReady() { f.readyOnce.Do(func() { close(f.ready) }) }

func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	for {
		msg, err := f.it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			// The ordered consumer recreates itself after a reset or a
			// reconnection; anything else is worth a line in the log.
			f.cfg.Logger.Warn("caenats: reading the CAE stream", "stream", f.cfg.Stream, "err", err)
			continue
		}
		f.received.Add(1)
		f.process(ctx, msg)
		if md, err := msg.Metadata(); err == nil && md.NumPending == 0 {
			f.markReady()
		}
	}
}

// process hands one SET to the Receiver, retrying temporary failures.
func (f *Follower) process(ctx context.Context, msg jetstream.Msg) {
	wait := f.cfg.RetryMin
	for {
		res, err := f.cfg.Receiver.Process(ctx, string(msg.Data()))
		var se *rs.SETError
		switch {
		case err == nil && res.Duplicate:
			f.duplicates.Add(1)
			return
		case err == nil:
			f.applied.Add(1)
			return
		case errors.As(err, &se):
			f.refused.Add(1) // the Receiver logged why
			return
		}
		f.retries.Add(1)
		f.cfg.Logger.Warn("caenats: SET not processed; retrying", "subject", msg.Subject(), "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, f.cfg.RetryMax)
	}
}
