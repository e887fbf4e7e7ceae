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
	// CheckInterval is how often a follower that received nothing since
	// the last check asks the server whether the stream holds SETs for it
	// (2s). Two checks in a row that find some, with nothing received in
	// between, make it resume on a new consumer from the last SET it
	// processed: the client library recovers a lost consumer by itself
	// when it notices (missing heartbeats, a reconnection), and this
	// bounds what it does not notice.
	CheckInterval time.Duration
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
	Resumes    int64 // consumers replaced after a stall (see Config.CheckInterval)
}

// Follower follows the CAE stream until Close.
type Follower struct {
	cfg   Config
	js    jetstream.JetStream
	start time.Time // the replay's start, for a consumer made before any SET arrived
	ready chan struct{}
	done  chan struct{}

	mu   sync.Mutex
	cons jetstream.Consumer        // the current ordered consumer
	it   jetstream.MessagesContext // its iterator; Stop makes run resume

	readyOnce sync.Once
	closeOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc

	// lastSeq is the stream sequence of the last message processed.
	lastSeq atomic.Uint64
	// busy is set while a message is being processed (retries included):
	// no progress then is not a stall.
	busy atomic.Bool

	received, applied, duplicates, refused, retries, resumes atomic.Int64
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
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 2 * time.Second
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
	f := &Follower{cfg: cfg, js: js, start: cfg.Now().Add(-cfg.Replay), ready: make(chan struct{}), done: make(chan struct{})}
	st := s.CachedInfo().State
	cons, it, err := f.consume(ctx)
	if err != nil {
		return nil, err
	}
	f.cons, f.it = cons, it
	if st.Msgs == 0 || st.LastTime.Before(f.start) {
		f.markReady() // nothing to replay
	} else if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 && ci.Delivered.Consumer == 0 {
		// Messages in range, but none that Subjects selects (a message
		// already delivered is counted in Delivered, and marks the
		// follower ready once processed).
		f.markReady()
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	go f.run(f.ctx)
	go f.watch(f.ctx)
	return f, nil
}

// How the ordered consumer pulls: a large buffer makes the client's
// refill of its pull requests rare (nats.go decides it only when a
// message arrives), and a short idle heartbeat makes a lost pull request
// or consumer show within 2 × followHeartbeat.
const (
	followBatch     = 1024
	followHeartbeat = 2 * time.Second
	// resumeRetryMax caps the pause between two attempts to make a new
	// consumer: while none exists, nothing is followed.
	resumeRetryMax = 5 * time.Second
)

// consume creates an ordered consumer that starts after the last message
// processed (or at the replay's start) and its iterator.
func (f *Follower) consume(ctx context.Context) (jetstream.Consumer, jetstream.MessagesContext, error) {
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: f.cfg.Subjects}
	if seq := f.lastSeq.Load(); seq > 0 {
		occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		occ.OptStartSeq = seq + 1
	} else {
		start := f.start
		occ.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		occ.OptStartTime = &start
	}
	cons, err := f.js.OrderedConsumer(ctx, f.cfg.Stream, occ)
	if err != nil {
		return nil, nil, fmt.Errorf("caenats: consumer on %s: %w", f.cfg.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(followBatch), jetstream.PullHeartbeat(followHeartbeat))
	if err != nil {
		return nil, nil, fmt.Errorf("caenats: consume %s: %w", f.cfg.Stream, err)
	}
	return cons, it, nil
}

// Ready is closed once every SET stored when Follow was called has been
// processed. A resource that must not accept a token revoked before it
// started waits for it (with a deadline of its choosing) before serving.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Stats returns the counters.
func (f *Follower) Stats() Stats {
	return Stats{Received: f.received.Load(), Applied: f.applied.Load(), Duplicates: f.duplicates.Load(),
		Refused: f.refused.Load(), Retries: f.retries.Load(), Resumes: f.resumes.Load()}
}

// Close stops following and waits for the SET in hand to be processed.
func (f *Follower) Close() error {
	f.closeOnce.Do(func() {
		f.cancel()
		f.stopIterator()
	})
	<-f.done
	return nil
}

func (f *Follower) markReady() { f.readyOnce.Do(func() { close(f.ready) }) }

func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	for {
		f.mu.Lock()
		it := f.it
		f.mu.Unlock()
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				// Stopped by watch (a stall), or given up by the client
				// library: go on from the last SET processed.
				if !f.resume(ctx) {
					return
				}
				continue
			}
			// The ordered consumer recreates itself after a reset or a
			// reconnection; anything else is worth a line in the log.
			f.cfg.Logger.Warn("caenats: reading the CAE stream", "stream", f.cfg.Stream, "err", err)
			continue
		}
		f.received.Add(1)
		f.busy.Store(true)
		f.process(ctx, msg)
		f.busy.Store(false)
		if md, err := msg.Metadata(); err == nil {
			f.lastSeq.Store(md.Sequence.Stream)
			if md.NumPending == 0 {
				f.markReady()
			}
		}
	}
}

// resume replaces the consumer, retrying until it succeeds or ctx ends
// (false).
func (f *Follower) resume(ctx context.Context) bool {
	for wait := f.cfg.RetryMin; ; wait = min(wait*2, max(f.cfg.RetryMin, resumeRetryMax)) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, it, err := f.consume(cctx)
		cancel()
		if err == nil {
			f.mu.Lock()
			old := f.cons
			f.cons, f.it = cons, it
			f.mu.Unlock()
			if ctx.Err() != nil { // Close ran while the consumer was made
				it.Stop()
				return false
			}
			f.resumes.Add(1)
			go f.deleteConsumer(old)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		f.cfg.Logger.Warn("caenats: cannot resume following the CAE stream; retrying", "stream", f.cfg.Stream, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// deleteConsumer removes a replaced consumer from the server, which would
// otherwise keep it until its inactivity threshold.
func (f *Follower) deleteConsumer(c jetstream.Consumer) {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = f.js.DeleteConsumer(ctx, f.cfg.Stream, c.CachedInfo().Name)
}

// watch stops the iterator (run then resumes on a new consumer) when two
// checks in a row find the stream holding SETs for this follower and
// nothing was received in between: a stall the client library did not
// notice (seen as a follower with messages pending and no pull request
// under CPU load and NATS node failures).
func (f *Follower) watch(ctx context.Context) {
	t := time.NewTicker(f.cfg.CheckInterval)
	defer t.Stop()
	seen, stalls := int64(-1), 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := f.received.Load(); n != seen || f.busy.Load() || !f.cfg.Conn.IsConnected() {
			// Progress, a SET in hand, or a reconnection under way (the
			// library resets its consumer on reconnecting).
			seen, stalls = n, 0
			continue
		}
		if !f.behind(ctx) {
			stalls = 0
			continue
		}
		if stalls++; stalls < 2 {
			continue
		}
		stalls = 0
		f.cfg.Logger.Warn("caenats: the CAE stream holds SETs this follower has not received; resuming on a new consumer",
			"stream", f.cfg.Stream, "after_seq", f.lastSeq.Load())
		f.stopIterator()
	}
}

// stopIterator stops the current iterator, which makes run's Next return.
// The lock is not held while stopping: nats.go's Stop waits for a reset
// of the ordered consumer that may be under way.
func (f *Follower) stopIterator() {
	f.mu.Lock()
	it := f.it
	f.mu.Unlock()
	it.Stop()
}

// behind reports whether the server holds messages for this follower
// that it has not received: the current consumer has some pending, or
// says it delivered a later one than the last processed (lost on the way:
// the ordered consumer notices the gap only when a next message comes,
// which may be never), or, if the consumer cannot be asked (lost with a
// server), the stream's last sequence is after the last one processed.
func (f *Follower) behind(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.CheckInterval)
	defer cancel()
	f.mu.Lock()
	cons := f.cons
	f.mu.Unlock()
	if ci, err := cons.Info(ctx); err == nil {
		return ci.NumPending > 0 || ci.Delivered.Stream > f.lastSeq.Load()
	}
	s, err := f.js.Stream(ctx, f.cfg.Stream)
	if err != nil {
		return false // the server cannot be asked either: nothing to gain from a new consumer
	}
	return s.CachedInfo().State.LastSeq > f.lastSeq.Load()
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
