package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/store"
)

// Outbox is the part of the store the relay reads: the events table.
type Outbox interface {
	EventsAfter(ctx context.Context, seq int64, limit int) ([]*store.StoredEvent, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]*store.StoredEvent, error)
}

// Headers of relayed messages.
const (
	// HeaderSeq carries the event's store sequence number. The relay
	// resumes after the Ward-Seq of the stream's last message, so its
	// cursor needs no table of its own and cannot disagree with the stream.
	HeaderSeq = "Ward-Seq"
)

const (
	relayBatch = 500
	// gapRetry is how often the relay looks again at a gap it waits for.
	gapRetry = 20 * time.Millisecond
	// lateWatch is how long sequence numbers skipped over a gap are still
	// looked for: an insert that commits later than that is not expected.
	lateWatch = 10 * time.Minute
	// maxLateSpan bounds how many skipped numbers are watched; a larger
	// jump (a sequence reset, a restored backup) is logged, not watched.
	maxLateSpan    = 1000
	publishTimeout = 5 * time.Second
	// relayWindow bounds the messages published but not yet
	// acknowledged: the stream's round trip (a replicated write in a
	// cluster) is paid once per window instead of once per event.
	relayWindow = 256
	// maxRejected bounds how often one step relearns the stream's
	// position after a refused expectation before it waits a little.
	maxRejected = 8
	// DefaultRelayWakeInterval is the shortest time between two outbox
	// reads that wake-ups cause (NATSOptions.RelayWakeInterval). Every
	// stored event wakes the relay; under a stream of events a read per
	// wake-up costs a query per event or two, while a read per interval
	// takes all that committed meanwhile (as the audit log's followers
	// do). A wake-up after a quiet spell reads at once.
	DefaultRelayWakeInterval = 20 * time.Millisecond
)

// relay publishes stored events to the stream in sequence order.
//
// Sequence numbers are handed out at insert and become visible at
// commit. On SQLite (one writer) they become visible in order; on
// PostgreSQL a concurrent writer can commit seq 9 after seq 10 is
// visible, and a rolled-back insert leaves 9 missing for good. So at a gap
// the relay waits (GapWait) for the missing number before it publishes
// the events after it, which keeps the stream in sequence order in all
// but pathological cases; numbers it skips are watched for lateWatch and
// published (out of order, but not lost) if they appear. Under a lease
// the watched numbers are stored with it before the relay passes the gap
// and taken over by the next holder (lease.go: saveLate, claim).
//
// Events are published in windows (publishWindow) whose messages carry
// the stream sequence they expect to follow, so the stream, not the
// order of acknowledgements, keeps them in order.
//
// With several instances on one database and one NATS, one relay
// publishes: the holder of a lease in the store (lease.go); the others
// stand by and take it over when it ends. Should two ever publish at
// once (a holder past its fence whose last messages are still in
// flight), JetStream drops the copies by Nats-Msg-Id (the event id)
// within the duplicate window, the expected sequence refuses a copy
// that another relay's message overtook, and a relay that finds the
// stream ahead of itself jumps forward, so copies never arrive after
// the window.
type relay struct {
	n   *NATS
	src Outbox
	log *slog.Logger

	// The lease (nil: none, this relay always publishes). held,
	// leaseUntil and nextClaim are owned by the run goroutine; holding
	// mirrors held for other goroutines.
	lease      Leaser
	owner      string
	ttl        time.Duration
	held       bool
	leaseUntil time.Time
	nextClaim  time.Time
	// leaseFailing: the last claim failed (log once per outage).
	leaseFailing bool
	holding      atomic.Bool
	// abandon, when set (tests), makes the relay stop without releasing
	// its lease, as a crashed process would.
	abandon atomic.Bool

	wakeC chan struct{}

	// State below is owned by the run goroutine.
	ready  bool
	cursor int64 // every seq <= cursor was published or is in late
	gap    struct {
		from  int64
		since time.Time
	}
	// late holds the numbers skipped at a gap and still watched, with
	// when they were skipped. Under a lease it is stored with the lease
	// before the relay publishes past a gap (saveLate), so a new holder
	// takes it over; savedLate is what was last stored.
	late      map[int64]time.Time
	savedLate string
	// missing holds the numbers above the cursor seen missing (a higher
	// one was visible), with when that was first seen: a gap's wait runs
	// from then, not from when the relay reaches it, so that gaps behind
	// one another are waited for together rather than one after the
	// other (else frequent rolled-back inserts make the relay fall
	// further behind at every gap).
	missing map[int64]time.Time
	failing bool // the last step failed (log once per outage)
	// streamSeq is the stream sequence of the stream's last message as
	// far as this relay knows (seqKnown): each publication expects it
	// (Nats-Expected-Last-Sequence), so the stream refuses a message
	// whose predecessor in a window failed, or that another relay
	// overtook, instead of storing it out of order.
	streamSeq uint64
	seqKnown  bool
	// lastMsgSeq is the stream sequence of the message lastStream read
	// (0: none).
	lastMsgSeq uint64
	// deletedWarned is the stream sequence last reported as following
	// deleted messages (log once).
	deletedWarned uint64
	stream        jetstream.Stream // cached handle, nil after an error

	// hold, when set (tests), makes the relay skip its work, as if it
	// were down.
	hold atomic.Bool
	// beforePublish, when set (tests), runs before each publication.
	beforePublish atomic.Pointer[func(*store.StoredEvent)]
	// spoil, when set (tests), makes the stream refuse the events it
	// returns true for (a wrong expected stream name).
	spoil atomic.Pointer[func(*store.StoredEvent) bool]
	// window, when set (benchmarks), replaces relayWindow; 1 publishes
	// one event at a time.
	window int
	// polls counts the steps of poll ticks (tests).
	polls atomic.Int64

	mu        sync.Mutex
	published int64 // messages acknowledged by the stream (including duplicates)
	failed    int64 // publish attempts the stream did not acknowledge (but refused)
	// refused counts messages the stream refused because their expected
	// predecessor was not its last message: the rest of a window after a
	// failure, or another relay's progress. Not failures: they are
	// expected with several relays, and the relay relearns and goes on.
	refused int64
}

func newRelay(n *NATS, src Outbox, lease Leaser, owner string, ttl time.Duration) *relay {
	r := &relay{n: n, src: src, log: n.log.With("part", "relay"), wakeC: make(chan struct{}, 1), late: map[int64]time.Time{},
		missing: map[int64]time.Time{}, lease: lease, owner: owner, ttl: ttl}
	if lease == nil {
		r.holding.Store(true)
	}
	return r
}

func (r *relay) windowSize() int {
	if r.window > 0 {
		return r.window
	}
	return relayWindow
}

// wake asks the relay to look for new events now. Safe on a nil relay.
func (r *relay) wake() {
	if r == nil {
		return
	}
	select {
	case r.wakeC <- struct{}{}:
	default:
	}
}

func (r *relay) run(ctx context.Context) {
	tick := time.NewTicker(r.n.o.PollInterval)
	defer tick.Stop()
	defer r.release()
	polled := true // first step: learn the cursor, then publish
	for {
		last := time.Now()
		var (
			retry <-chan time.Time
			t     *time.Timer
		)
		var d time.Duration
		if r.ensureLease(ctx) {
			d = r.step(ctx, polled)
		}
		if w := r.leaseWait(); w > 0 && (d == 0 || w < d) {
			d = w
		}
		if d > 0 {
			t = time.NewTimer(d)
			retry = t.C
		}
		select {
		case <-ctx.Done():
		case <-r.wakeC:
			polled = false
			// Wake-ups in quick succession: wait out the interval since
			// the last read began, and read what they announced together.
			// A step that waits for a gap or the lease (retry) is not
			// delayed beyond its own time.
			if w := r.wakeInterval() - time.Since(last); w > 0 {
				if t == nil || d > w {
					if t != nil {
						t.Stop()
					}
					t = time.NewTimer(w)
				}
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			}
		case <-tick.C:
			polled = true
		case <-retry:
			polled = false
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (r *relay) wakeInterval() time.Duration {
	if r.n.o.RelayWakeInterval > 0 {
		return r.n.o.RelayWakeInterval
	}
	return DefaultRelayWakeInterval
}

// step publishes what is new and returns when to look again if sooner
// than the next wake-up or poll (0: no need).
func (r *relay) step(ctx context.Context, polled bool) time.Duration {
	if r.hold.Load() || ctx.Err() != nil {
		return 0
	}
	if !r.n.nc.IsConnected() {
		r.fail("relay: NATS unreachable; events stay in the outbox", nats.ErrConnectionReconnecting)
		return 0 // the reconnect handler wakes us
	}
	if !r.ready {
		if err := r.init(ctx); err != nil {
			r.fail("relay: cannot reach the stream; events stay in the outbox", err)
			return 0
		}
	} else if polled {
		r.polls.Add(1)
		// Another instance's relay may be ahead (we were partitioned, or
		// it just runs faster): continue where the stream is, if that is
		// where this database is. A stream ahead of the database (a
		// restored backup, see init) holds other events under the same
		// numbers; jumping there would skip the database's new events.
		if last, id, ok, err := r.lastStream(ctx); err == nil && ok && last > r.cursor && r.stored(ctx, last, id) {
			r.cursor = last
			r.seqKnown = false
		}
	}
	rejected := 0
	for {
		evs, err := r.src.EventsAfter(ctx, r.cursor, relayBatch)
		if err != nil {
			r.fail("relay: reading the outbox failed", err)
			return 0
		}
		r.noteMissing(evs, time.Now())
		reread := false
		for i := 0; i < len(evs); {
			if ev := evs[i]; ev.Seq > r.cursor+1 {
				if wait := r.overGap(ctx, ev.Seq); wait > 0 {
					return wait
				}
			}
			if r.hold.Load() || !r.ensureLease(ctx) {
				return 0
			}
			// A window: consecutive events, published without waiting
			// for each acknowledgement.
			j := i + 1
			for j < len(evs) && j-i < r.windowSize() && evs[j].Seq == evs[j-1].Seq+1 {
				j++
			}
			err := r.publishWindow(ctx, evs[i:j], false)
			if isWrongLastSeq(err) && rejected < maxRejected {
				// Another relay published meanwhile, or a message of
				// the window failed and the ones after it were refused:
				// relearn where the stream is and read on from there.
				rejected++
				r.log.Debug("relay: the stream moved; relearning its position", "after_seq", r.cursor, "err", err)
				if err := r.resync(ctx); err != nil {
					r.fail("relay: cannot reach the stream; events stay in the outbox", err)
					return 0
				}
				reread = true
				break
			} else if isWrongLastSeq(err) {
				// Still racing another relay: let it run a little.
				r.log.Debug("relay: the stream keeps moving; looking again shortly", "after_seq", r.cursor, "err", err)
				return gapRetry
			} else if errors.Is(err, errFenced) {
				return 0 // the next step renews the lease first
			} else if err != nil {
				r.fail("relay: publishing failed; events stay in the outbox", err)
				return 0
			}
			i = j
		}
		if !reread && len(evs) < relayBatch {
			break
		}
	}
	if polled && r.ensureLease(ctx) {
		r.publishLate(ctx)
	}
	if r.failing {
		r.failing = false
		r.log.Info("relay: publishing again", "seq", r.cursor)
	}
	return 0
}

// noteMissing records when the numbers missing between the cursor and
// the events just read were first seen missing, and forgets those the
// cursor has passed.
func (r *relay) noteMissing(evs []*store.StoredEvent, now time.Time) {
	if r.missing == nil {
		r.missing = map[int64]time.Time{}
	}
	for s := range r.missing {
		if s <= r.cursor {
			delete(r.missing, s)
		}
	}
	prev := r.cursor
	for _, ev := range evs {
		if n := ev.Seq - prev - 1; n > 0 && n <= maxLateSpan {
			for s := prev + 1; s < ev.Seq; s++ {
				if _, ok := r.missing[s]; !ok {
					r.missing[s] = now
				}
			}
		}
		prev = ev.Seq
	}
}

// overGap decides about the missing numbers before next: wait for them
// (returns how long until the next look) or skip them (returns 0). The
// wait runs from when the gap was first seen (noteMissing).
func (r *relay) overGap(ctx context.Context, next int64) time.Duration {
	from, now := r.cursor+1, time.Now()
	if r.gap.from != from {
		r.gap.from, r.gap.since = from, now
		if seen, ok := r.missing[from]; ok && seen.Before(now) {
			r.gap.since = seen
		}
	}
	if waited := now.Sub(r.gap.since); waited < r.n.o.GapWait {
		return min(gapRetry, r.n.o.GapWait-waited)
	}
	if next-from <= maxLateSpan {
		for s := from; s < next; s++ {
			r.late[s] = now
		}
		// Durable before the stream moves past them: a holder that
		// crashes after publishing beyond the gap leaves them to the next.
		if !r.saveLate(ctx) {
			for s := from; s < next; s++ {
				delete(r.late, s)
			}
			return gapRetry
		}
		r.log.Debug("relay: sequence numbers missing; publishing past them", "from", from, "to", next-1)
	} else {
		r.log.Warn("relay: large jump in event sequence numbers; not watching the gap", "from", from, "to", next-1)
	}
	r.gap.from = 0
	return 0
}

// publishLate publishes skipped events that have appeared since.
func (r *relay) publishLate(ctx context.Context) {
	if len(r.late) == 0 {
		// Forget, in the lease's copy too, what a previous holder
		// watched above where the stream ended (init): the cursor
		// passes those in order, a next holder must not publish them again.
		r.saveLate(ctx)
		return
	}
	seqs := make([]int64, 0, len(r.late))
	for s := range r.late {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	now := time.Now()
	// Forget the published and the expired ones in the lease's copy too
	// (best effort: a number published but still stored is published
	// again by a next holder, and the stream drops that copy by its
	// message id within the duplicate window).
	defer r.saveLate(ctx)
	for _, s := range seqs {
		if now.Sub(r.late[s]) > lateWatch {
			delete(r.late, s)
			continue
		}
		evs, err := r.src.EventsAfter(ctx, s-1, 1)
		if err != nil {
			return
		}
		if len(evs) == 1 && evs[0].Seq == s {
			if err := r.publish(ctx, evs[0]); err != nil {
				return
			}
			r.log.Warn("relay: published an event that committed late (out of sequence order)", "seq", s, "event_id", evs[0].ID)
			delete(r.late, s)
		}
	}
}

// init makes sure the stream exists and learns where to resume.
func (r *relay) init(ctx context.Context) error {
	if !r.n.streamOK.Load() {
		if err := r.n.ensureStream(ctx); err != nil {
			return err
		}
	}
	last, _, ok, err := r.lastStream(ctx)
	if err != nil {
		return err
	}
	newest, err := r.src.ListEvents(ctx, store.EventFilter{Limit: 1})
	if err != nil {
		return fmt.Errorf("read newest event: %w", err)
	}
	var newestSeq int64
	if len(newest) == 1 {
		newestSeq = newest[0].Seq
	}
	switch {
	case ok && last > newestSeq:
		// A restored backup, or another database relaying into the same
		// stream: follow this database.
		r.log.Warn("relay: the stream is ahead of the database; relaying from the database's newest event",
			"stream", r.n.o.Stream, "stream_seq", last, "database_seq", newestSeq)
		r.cursor = newestSeq
	case ok:
		r.cursor = last
	default:
		// Empty stream (new, or everything aged out): relay what it would
		// still hold, not the whole history.
		old, err := r.src.ListEvents(ctx, store.EventFilter{Until: time.Now().Add(-r.n.o.MaxAge), Limit: 1})
		if err != nil {
			return fmt.Errorf("read events older than the stream's max age: %w", err)
		}
		r.cursor = 0
		if len(old) == 1 {
			r.cursor = old[0].Seq
		}
	}
	// Numbers watched from the previous holder that lie beyond where the
	// stream ends are ordinary gaps again: the cursor reaches them in order.
	for s := range r.late {
		if s > r.cursor {
			delete(r.late, s)
		}
	}
	r.ready, r.seqKnown = true, false
	r.log.Debug("relay: resuming", "after_seq", r.cursor, "watched", len(r.late))
	return nil
}

// lastStream returns the Ward-Seq and the message id (the event id) of
// the stream's last message.
func (r *relay) lastStream(ctx context.Context) (int64, string, bool, error) {
	if r.stream == nil {
		s, err := r.n.js.Stream(ctx, r.n.o.Stream)
		if err != nil {
			return 0, "", false, err
		}
		r.stream = s
	}
	r.lastMsgSeq = 0
	m, err := r.stream.GetLastMsgForSubject(ctx, r.n.o.SubjectPrefix+".>")
	if err == nil {
		r.lastMsgSeq = m.Sequence
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, "", false, nil
	} else if err != nil {
		r.stream = nil
		return 0, "", false, err
	}
	seq, err := strconv.ParseInt(m.Header.Get(HeaderSeq), 10, 64)
	if err != nil {
		r.log.Warn("relay: the stream's last message has no Ward-Seq header; treating the stream as empty", "stream_seq", m.Sequence)
		return 0, "", false, nil
	}
	return seq, m.Header.Get(jetstream.MsgIDHeader), true, nil
}

// stored reports whether the database holds, under seq, the event a
// message with id was published for.
func (r *relay) stored(ctx context.Context, seq int64, id string) bool {
	evs, err := r.src.EventsAfter(ctx, seq-1, 1)
	return err == nil && len(evs) == 1 && evs[0].Seq == seq && msgID(evs[0]) == id
}

// msgID is the Nats-Msg-Id of an event's message.
func msgID(ev *store.StoredEvent) string {
	if ev.ID == "" {
		return "ward-seq-" + strconv.FormatInt(ev.Seq, 10)
	}
	return ev.ID
}

// message builds an event's message.
func (r *relay) message(ev *store.StoredEvent) (*nats.Msg, error) {
	data, err := json.Marshal(ev) // the documented event JSON (store/eventjson.go)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: r.n.Subject(ev.Type), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, msgID(ev))
	msg.Header.Set(HeaderSeq, strconv.FormatInt(ev.Seq, 10))
	return msg, nil
}

// resync learns the stream's last message and, if the stream holds this
// database's events beyond the cursor (another relay published them),
// moves the cursor there. The sequence expected next and the cursor come
// from the same message: were the sequence older than the cursor (read
// before it, say), the message k places into a window would expect the
// sequence the stream has after k more messages and could be stored
// while the k before it are refused, leaving a hole. With the pair from
// one message, a message that matches late follows the event before it.
func (r *relay) resync(ctx context.Context) error {
	last, id, ok, err := r.lastStream(ctx)
	if err != nil {
		r.seqKnown = false
		return err
	}
	// The stream's last sequence can be past its last message: the
	// messages after it were deleted (an operator removed the newest
	// one), or everything aged out. A message must then expect that
	// sequence, or the stream refuses it for ever.
	info, err := r.stream.Info(ctx)
	if err != nil {
		r.stream = nil
		r.seqKnown = false
		return err
	}
	r.streamSeq = r.lastMsgSeq
	if info.State.LastSeq > r.lastMsgSeq {
		// Deleted, or published after lastStream read: read the last
		// message again. Unchanged, nothing was published between the
		// two reads (a message stored after Info would be newer), so
		// what lies between was deleted.
		msgSeq := r.lastMsgSeq
		if last, id, ok, err = r.lastStream(ctx); err != nil {
			r.seqKnown = false
			return err
		}
		if r.lastMsgSeq == msgSeq {
			if msgSeq > 0 && r.deletedWarned != info.State.LastSeq {
				r.deletedWarned = info.State.LastSeq
				r.log.Warn("relay: the stream's newest messages were deleted; publishing after them",
					"stream", r.n.o.Stream, "last_message", msgSeq, "last_seq", info.State.LastSeq)
			}
			r.streamSeq = info.State.LastSeq
		} else {
			r.streamSeq = r.lastMsgSeq // another relay's: go on after it
		}
	}
	r.seqKnown = true
	if ok && last > r.cursor && r.stored(ctx, last, id) {
		r.cursor = last
	}
	return nil
}

// publishWindow publishes consecutive events without waiting for each
// acknowledgement, each expecting the stream sequence the one before it
// gets. If one is not stored, the stream refuses the later ones (their
// expected sequence is then wrong; one that matches later, because
// another relay stored the events before it, follows them in order), so
// the stream never holds a later event without the earlier ones: the
// cursor advances over the
// acknowledged prefix only. All acknowledgements are awaited before it
// returns, so nothing of this window is in flight when the next starts.
func (r *relay) publishWindow(ctx context.Context, evs []*store.StoredEvent, late bool) error {
	if !r.seqKnown {
		if err := r.resync(ctx); err != nil {
			return err
		}
		// resync may have moved the cursor past some of evs.
		for !late && len(evs) > 0 && evs[0].Seq <= r.cursor {
			evs = evs[1:]
		}
		if len(evs) == 0 {
			return nil
		}
	}
	futs := make([]jetstream.PubAckFuture, 0, len(evs))
	var sendErr error
	for i, ev := range evs {
		if f := r.beforePublish.Load(); f != nil {
			(*f)(ev)
		}
		if !r.sendable() {
			sendErr = errFenced
			break
		}
		msg, err := r.message(ev)
		if err != nil {
			sendErr = err
			break
		}
		// Each message expects the stream sequence its predecessor gets.
		// Not the predecessor's message id: a replicated stream checks
		// that only when it applies the message, and a mismatch there
		// is a write error that stops the stream replica (nats-server
		// 2.15); the sequence is checked before the proposal, against
		// the proposals in flight.
		expect := jetstream.WithExpectLastSequence(r.streamSeq + uint64(i))
		opts := []jetstream.PublishOpt{jetstream.WithExpectStream(r.n.o.Stream), expect}
		if f := r.spoil.Load(); f != nil && (*f)(ev) {
			opts[0] = jetstream.WithExpectStream(r.n.o.Stream + "-not-this-one")
		}
		fut, err := r.n.js.PublishMsgAsync(msg, opts...)
		if err != nil {
			sendErr = err
			break
		}
		futs = append(futs, fut)
	}
	var first error // the first failure; what follows it is not counted as progress
	var ok, failed, refused int64
	timer := time.NewTimer(r.ackDeadline())
	defer timer.Stop()
	for i, fut := range futs {
		var err error
		select {
		case ack := <-fut.Ok():
			ok++
			if first != nil {
				continue
			}
			r.cursor = max(r.cursor, evs[i].Seq) // a late event stays behind it
			if ack.Duplicate {
				// Already in the stream (another relay, or this one
				// before a lost acknowledgement): the stream did not
				// move, so the expectations of the rest are wrong.
				first = &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "duplicate in the window"}
				r.seqKnown = false
				continue
			}
			r.streamSeq = ack.Sequence
		case err = <-fut.Err():
		case <-timer.C:
			err = jetstream.ErrAsyncPublishTimeout
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			if isWrongLastSeq(err) {
				refused++ // another relay was first, or an earlier one failed
			} else {
				failed++
			}
			if first == nil {
				first = err
				r.seqKnown = false
			}
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
				r.ready = false // recreate the stream and relearn the cursor
				r.n.streamOK.Store(false)
			}
			if errors.Is(err, jetstream.ErrAsyncPublishTimeout) || ctx.Err() != nil {
				break // the rest will not come in time either
			}
		}
	}
	if sendErr != nil {
		if sendErr != errFenced {
			failed++
		}
		r.seqKnown = false
		if first == nil {
			first = sendErr
		}
	}
	r.mu.Lock()
	r.published += ok
	r.failed += failed
	r.refused += refused
	r.mu.Unlock()
	return first
}

// publish publishes one event (one committed late, out of order) and
// waits for its acknowledgement.
func (r *relay) publish(ctx context.Context, ev *store.StoredEvent) error {
	err := r.publishWindow(ctx, []*store.StoredEvent{ev}, true)
	if isWrongLastSeq(err) {
		if err = r.resync(ctx); err == nil {
			err = r.publishWindow(ctx, []*store.StoredEvent{ev}, true)
		}
	}
	return err
}

// errFenced: the relay's lease ends too soon to send more.
var errFenced = errors.New("bus: the relay lease ends; not sending")

// JetStream error codes the client library has no names for.
const (
	errCodeDuplicateInProcess jetstream.ErrorCode = 10158 // duplicate message id is in process
)

// isWrongLastSeq reports whether err is the stream refusing a message
// whose expected predecessor was not the stream's last message, or one
// whose copy another relay is publishing at this moment (a replicated
// stream refuses it until that copy is stored).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant ||
		apiErr.ErrorCode == errCodeDuplicateInProcess)
}

func (r *relay) fail(msg string, err error) {
	if r.n.ctx.Err() != nil {
		return // closing
	}
	if !r.failing {
		r.log.Warn(msg, "after_seq", r.cursor, "err", err)
		r.failing = true
	} else {
		r.log.Debug(msg, "after_seq", r.cursor, "err", err)
	}
}

// counts returns the published and failed counters.
func (r *relay) counts() (published, failed int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.published, r.failed
}

// Published returns how many events the relay has had acknowledged by
// the stream (duplicates included).
func (r *relay) Published() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.published
}
