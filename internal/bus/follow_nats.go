package bus

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// natsFollow is one Follow call on the JetStream bus: an ordered consumer
// of the event stream, ephemeral and private to this process (every
// instance gets every event), without acknowledgements. nats.go recreates
// it after a lost heartbeat or a reconnection, from the message after the
// last one delivered.
type natsFollow struct {
	n     *NATS
	h     Handler
	types map[model.EventType]bool // nil: every type
	subs  []string
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu sync.Mutex // held while h runs; stop takes it to wait for h
	// next is the stream sequence to start from when a consumer has to
	// be created: the first message after "now" (the call), then after
	// the last one delivered.
	next    uint64
	stopped bool
}

// Follow implements Follower. It starts with the first message the stream
// receives after the call, so an event relayed while the consumer is being
// created, or while NATS cannot be reached, is not missed.
func (n *NATS) Follow(ctx context.Context, types []model.EventType, h Handler) (func(), error) {
	if h == nil {
		return nil, errors.New("bus: nil handler")
	}
	f := &natsFollow{n: n, h: h, types: typeSet(types), log: n.log.With("part", "follow"), done: make(chan struct{})}
	for t := range f.types {
		f.subs = append(f.subs, n.Subject(t))
	}
	slices.Sort(f.subs)
	f.ctx, f.cancel = context.WithCancel(ctx)
	if n.nc.IsConnected() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		f.next, _ = f.streamEnd(sctx) // else: learnt when NATS answers
		cancel()
	}

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		f.cancel()
		return nil, ErrClosed
	}
	n.followers[f] = struct{}{}
	n.mu.Unlock()

	go f.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.stop()
			n.mu.Lock()
			delete(n.followers, f)
			n.mu.Unlock()
		})
	}, nil
}

// streamEnd returns the sequence number the stream's next message will
// have (1 when the stream does not exist yet).
func (f *natsFollow) streamEnd(ctx context.Context) (uint64, error) {
	s, err := f.n.js.Stream(ctx, f.n.o.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, nil
	} else if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.LastSeq + 1, nil
}

func (f *natsFollow) stop() {
	f.cancel()
	<-f.done
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}

func (f *natsFollow) run() {
	defer close(f.done)
	failing := false
	for f.ctx.Err() == nil {
		cc, err := f.start()
		if err != nil {
			if f.ctx.Err() != nil {
				return
			}
			if !failing {
				f.log.Warn("bus: cannot follow the event stream yet; retrying", "err", err)
				failing = true
			}
			sleep(f.ctx, time.Second)
			continue
		}
		if failing {
			f.log.Info("bus: following the event stream")
			failing = false
		}
		select {
		case <-f.ctx.Done():
			cc.Stop()
			<-cc.Closed()
			return
		case <-cc.Closed():
			// The connection closed under the consumer: set it up again
			// (Close has cancelled ctx by then if that is why).
			sleep(f.ctx, time.Second)
		}
	}
}

// start creates the ordered consumer and subscribes.
func (f *natsFollow) start() (jetstream.ConsumeContext, error) {
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	f.mu.Lock()
	next := f.next
	f.mu.Unlock()
	if next == 0 {
		var err error
		if next, err = f.streamEnd(ctx); err != nil {
			return nil, err
		}
		f.mu.Lock()
		f.next = next
		f.mu.Unlock()
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   next,
	}
	switch {
	case len(f.subs) == 1 || len(f.subs) > 1 && serverAtLeast(f.n.nc.ConnectedServerVersion(), 2, 10):
		cfg.FilterSubjects = f.subs
	default:
		// Every type, or several on a server before 2.10 (one filter
		// subject only): take everything, handle() filters.
		cfg.FilterSubjects = []string{f.n.o.SubjectPrefix + ".>"}
	}
	cons, err := f.n.js.OrderedConsumer(ctx, f.n.o.Stream, cfg)
	if err != nil {
		return nil, err
	}
	return cons.Consume(f.handle,
		jetstream.PullHeartbeat(pullHeartbeat), // see consume.go
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			f.log.Debug("bus: follower", "err", err)
		}))
}

// handle runs the handler for one message.
func (f *natsFollow) handle(msg jetstream.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.ctx.Err() != nil {
		return
	}
	if md, err := msg.Metadata(); err == nil {
		f.next = md.Sequence.Stream + 1
	}
	var ev store.StoredEvent
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		f.log.Error("bus: undecodable message on the event stream; skipping it", "subject", msg.Subject(), "err", err)
		return
	}
	if f.types != nil && !f.types[ev.Type] {
		return
	}
	if err := f.h(f.ctx, &ev.Event); err != nil && f.ctx.Err() == nil {
		f.log.Warn("bus: follower failed", "event_id", ev.ID, "type", string(ev.Type), "seq", ev.Seq, "err", err)
	}
}
