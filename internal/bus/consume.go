package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// consumer is one Consume call: a loop that (re)creates the durable
// consumer and pulls from it until stopped.
type consumer struct {
	n     *NATS
	name  string
	types map[model.EventType]bool // nil: every type
	subs  []string
	h     Handler
	log   *slog.Logger
	opts  consumeOptions

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns
	restart chan struct{} // the server lost the consumer
	inH     sync.WaitGroup
	// warnedFilter: the warning about a server that cannot filter by
	// several subjects was logged (once; start runs on its goroutine).
	warnedFilter bool
}

// Consume implements Durable (see there). The durable consumer is created
// (or updated) on the server in the background: if NATS is unreachable,
// Consume still succeeds and delivery starts once it answers.
func (n *NATS) Consume(ctx context.Context, name string, types []model.EventType, h Handler, opts ...ConsumeOption) (func(), error) {
	if !validName(name) {
		return nil, fmt.Errorf("bus: invalid consumer name %q (1-64 letters, digits, '_' or '-')", name)
	}
	if h == nil {
		return nil, errors.New("bus: nil handler")
	}
	c := &consumer{n: n, name: name, h: h, log: n.log.With("consumer", name),
		done: make(chan struct{}), restart: make(chan struct{}, 1)}
	for _, o := range opts {
		o(&c.opts)
	}
	for _, t := range types {
		if c.types == nil {
			c.types = map[model.EventType]bool{}
		}
		if !c.types[t] {
			c.types[t] = true
			c.subs = append(c.subs, n.Subject(t))
		}
	}
	slices.Sort(c.subs)
	c.ctx, c.cancel = context.WithCancel(ctx)

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		c.cancel()
		return nil, ErrClosed
	}
	n.consumers[c] = struct{}{}
	n.mu.Unlock()

	go c.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.stop()
			n.mu.Lock()
			delete(n.consumers, c)
			n.mu.Unlock()
		})
	}, nil
}

// stop ends consumption and waits for a running handler.
func (c *consumer) stop() {
	c.cancel()
	<-c.done
	c.inH.Wait()
}

func (c *consumer) run() {
	defer close(c.done)
	failing := false
	for c.ctx.Err() == nil {
		cc, err := c.start()
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			if !failing {
				c.log.Warn("bus: durable consumer not ready; retrying", "err", err)
				failing = true
			}
			sleep(c.ctx, time.Second)
			continue
		}
		if failing {
			c.log.Info("bus: durable consumer ready")
			failing = false
		}
		select {
		case <-c.ctx.Done():
			// Drain, not Stop: an event already delivered into the
			// client's buffer reaches handle(), which gives it back (Nak)
			// at once. Stop would drop it unanswered, and with one event
			// in flight per consumer every instance would wait AckWait.
			cc.Drain()
			<-cc.Closed()
			return
		case <-cc.Closed():
			// The server ended the subscription (consumer deleted, stream
			// recreated): set it up again.
			c.log.Warn("bus: durable consumer subscription ended; recreating")
			sleep(c.ctx, time.Second)
		case <-c.restart:
			c.log.Warn("bus: durable consumer lost on the server; recreating")
			cc.Stop()
			<-cc.Closed()
		}
	}
}

// start creates or updates the durable consumer and subscribes.
func (c *consumer) start() (jetstream.ConsumeContext, error) {
	o := c.n.o
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	cfg := jetstream.ConsumerConfig{
		Durable:       c.name,
		Description:   "Ward durable consumer",
		DeliverPolicy: c.deliverPolicy(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1, // never drop an event: a failing handler holds its consumer up
		// One event in flight per consumer, across all instances: the
		// stream's order is the delivery order.
		MaxAckPending: 1,
	}
	switch {
	case len(c.subs) == 1:
		cfg.FilterSubject = c.subs[0]
	case len(c.subs) > 1 && serverAtLeast(c.n.nc.ConnectedServerVersion(), 2, 10):
		cfg.FilterSubjects = c.subs
	default:
		// Every type, or several on a server before 2.10 (one filter
		// subject only): take everything, handle() filters.
		cfg.FilterSubject = o.SubjectPrefix + ".>"
		if len(c.subs) > 1 && !c.warnedFilter {
			c.warnedFilter = true
			// One event in flight (MaxAckPending 1) over every event of
			// the stream: under load this consumer falls behind (the CAE
			// consumers by seconds to minutes, measured in test/cluster).
			c.log.Warn("bus: this nats-server cannot filter a consumer by several subjects (2.10 and newer can): the consumer reads every event, one at a time, and lags behind under load; upgrade nats-server",
				"consumer", c.name, "server_version", c.n.nc.ConnectedServerVersion())
		}
	}
	cons, err := c.n.js.CreateOrUpdateConsumer(ctx, o.Stream, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if err = c.n.ensureStream(ctx); err == nil {
			cons, err = c.n.js.CreateOrUpdateConsumer(ctx, o.Stream, cfg)
		}
	}
	if err != nil {
		return nil, err
	}
	select { // a restart request from a previous subscription is stale
	case <-c.restart:
	default:
	}
	return cons.Consume(c.handle,
		jetstream.PullMaxMessages(pullBatch),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				select {
				case c.restart <- struct{}{}:
				default:
				}
				return
			}
			c.log.Debug("bus: durable consumer", "err", err)
		}))
}

// How the subscription pulls. nats.go's Consume keeps pull requests for
// pullBatch messages outstanding and asks for more when fewer than half
// are left. That refill is only decided when a message arrives, and it is
// skipped while the previous pull request is still being sent (nats.go
// v1.55, pullSubscription.checkPending and fetchInProgress). With one
// event in flight, every event after the first is a full round trip
// (handler, confirmed acknowledgement, next delivery); if the requests run
// dry during one such send (its goroutine descheduled on a loaded
// machine), the client counts nothing outstanding, the server holds no
// request, no message comes to trigger the refill, and delivery stops
// until the client notices missing idle heartbeats: 2 × 15 s with the
// default expiry. Seen with a batch of 8 (four round trips suffice) as a
// 30 s stall under CPU load.
//
// A large batch costs nothing here (the server sends one event at a time,
// MaxAckPending 1, and the client buffers at most that one) and makes a
// refill necessary only every pullBatch/2 events, so the race needs that
// many round trips within one send; the short heartbeat bounds any stall
// of a lost pull request, this one or another, to 2 × pullHeartbeat.
const (
	pullBatch     = 1024
	pullHeartbeat = 2 * time.Second
)

// deliverPolicy is where a new consumer starts. The same value on every
// start keeps CreateOrUpdateConsumer an idempotent no-op for an existing
// one (JetStream cannot change a consumer's deliver policy).
func (c *consumer) deliverPolicy() jetstream.DeliverPolicy {
	if c.opts.onlyNew {
		return jetstream.DeliverNewPolicy
	}
	return jetstream.DeliverAllPolicy
}

// handle runs the handler for one message and acknowledges it.
func (c *consumer) handle(msg jetstream.Msg) {
	c.inH.Add(1)
	defer c.inH.Done()
	if c.ctx.Err() != nil {
		giveBack(msg)
		return
	}
	var ev store.StoredEvent
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		// Not ours (nothing else publishes to the stream's subjects): it
		// cannot be handled, ever.
		c.log.Error("bus: undecodable message on the event stream; dropping it", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	if c.types != nil && !c.types[ev.Type] {
		_ = msg.Ack() // filtered here when the server cannot
		return
	}
	d := Delivery{Seq: ev.Seq, Attempt: 1}
	if md, err := msg.Metadata(); err == nil {
		d.StreamSeq, d.Attempt = md.Sequence.Stream, md.NumDelivered
	}

	// Keep the event ours while the handler runs: without this, a handler
	// slower than AckWait would see it redelivered to another instance.
	hctx, stopProgress := context.WithCancel(withDelivery(c.ctx, d))
	go func() {
		t := time.NewTicker(c.n.o.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err := c.h(hctx, &ev.Event)
	stopProgress()
	if err != nil && c.ctx.Err() != nil {
		giveBack(msg)
		return
	}
	if err != nil {
		delay := c.backoff(d.Attempt)
		c.log.Warn("bus: durable handler failed; will redeliver", "event_id", ev.ID, "type", string(ev.Type),
			"seq", ev.Seq, "attempt", d.Attempt, "retry_in", delay, "err", err)
		_ = msg.NakWithDelay(delay)
		return
	}
	// Wait for the server to record the acknowledgement, so a stop right
	// after does not deliver the event again.
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		c.log.Debug("bus: acknowledgement not confirmed; the event may come again", "event_id", ev.ID, "err", err)
	}
}

// handBackDelay is how long an event given back by a stopping consumer
// waits before redelivery: long enough for this subscription to be gone
// (otherwise the server may hand it straight back to it, where it would
// wait AckWait unanswered), short enough not to matter.
const handBackDelay = time.Second

// giveBack returns an event a stopping consumer will not handle.
func giveBack(msg jetstream.Msg) { _ = msg.NakWithDelay(handBackDelay) }

// backoff is the redelivery delay after the attempt-th failure.
func (c *consumer) backoff(attempt uint64) time.Duration {
	d := c.n.o.RedeliveryMin
	for i := uint64(1); i < attempt && d < c.n.o.RedeliveryMax; i++ {
		d *= 2
	}
	return min(d, c.n.o.RedeliveryMax)
}

// serverAtLeast reports whether the NATS server version v ("2.9.10") is
// at least major.minor.
func serverAtLeast(v string, major, minor int) bool {
	var a, b int
	if _, err := fmt.Sscanf(v, "%d.%d", &a, &b); err != nil {
		return false
	}
	return a > major || a == major && b >= minor
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
