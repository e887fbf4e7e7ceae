package cae

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Deliver first, persist only what failed.
//
// HandleEvent pushes the SETs of the push streams this instance holds and
// that have nothing queued or in flight directly, without writing them to
// the outbox, and waits for their receivers at most Options.DirectWait.
// The SETs of the event's other streams (held by another instance, poll
// streams, this instance's busy ones) are written as soon as the pushes
// have started, so their holders start at once rather than after this
// instance's slowest receiver. Once the wait is over, it writes, in one
// transaction with the record that the event was handled, every SET
// pushed here that was not acknowledged by then (failed, refused, timed
// out, still in flight).
// A push still in flight when that bound passes goes on; when it is
// answered its row is deleted (delivered) or marked (refused, failed) like
// a push of the worker.
//
// A stream is pushed directly only when nothing else can come before the
// SET: this instance holds its lease (with the margin the worker needs),
// it is not being pushed (by the worker or directly), this instance knows
// of nothing queued for it and the outbox holds no queued SET of it (read
// once per event, after the event, so a SET another instance queued for
// an earlier event is seen). An event that finds one of its streams held
// by another event's direct push that is not resolved yet (neither
// acknowledged nor written) waits for that resolution, at most the other
// event's DirectWait and write: its SET must get the later sequence.
//
// This instance's streams among the early ones are held until they are
// written (pushState.early): a later event does not push them directly,
// ahead of this event's SET.
//
// A process that dies after the pushes (or the early write) and before
// the final write leaves the event unrecorded: Recover (at the next
// start) or CatchUp (another instance) handles it again; rows still
// queued are not queued twice (DedupKey), and SETs already delivered go
// out a second time with the same jti (eventJTI), which receivers drop.

// directBatch is the direct pushes of one event.
type directBatch struct {
	p     *pusher
	items []*directItem
	// answered receives one value per finished push.
	answered chan struct{}
	mu       sync.Mutex
	// persisted is closed once the handler has written the SETs that were
	// not acknowledged in time (err: the write failed, or never happened).
	persisted chan struct{}
	err       error
	once      sync.Once
	// started: the pushes run (deliver); otherwise abort frees the streams.
	started bool
	// checked (under mu) is when the last status read of the batch that
	// found the snapshot current began (zero: none did).
	checked time.Time
	// early is closed once the event's SETs for streams not pushed
	// directly are written (or will never be): the streams of this
	// instance among them are held until then (pushState.early).
	early     chan struct{}
	earlyOnce sync.Once
}

// directQuiet is how long after a SET for a stream the next one is
// written rather than pushed directly.
const directQuiet = 50 * time.Millisecond

// directFresh is how old the batch's last status read may be when a push
// starts.
const directFresh = 50 * time.Millisecond

// statusCurrent reports whether the configuration version, read at most
// directFresh ago (or now, shared with the other pushes that ask at the
// same time), is the snapshot's: then the snapshot's stream status is
// current. The worker reads it before each push; a batch of direct pushes
// that start together shares the reads (one per directFresh at most).
// False: the caller reads the stream itself (stillEnabled).
func (d *directBatch) statusCurrent() bool {
	d.mu.Lock()
	last := d.checked
	d.mu.Unlock()
	if !last.IsZero() && time.Since(last) < directFresh {
		return true
	}
	s := d.p.s
	start := time.Now()
	v, err := s.versionRead.do(context.Background(), s.readVersion)
	if err != nil {
		return false
	}
	if snap := s.snap.Load(); snap == nil || snap.version != v || s.dirtyVersion.Load() {
		return false
	}
	d.mu.Lock()
	if start.After(d.checked) {
		d.checked = start
	}
	d.mu.Unlock()
	return true
}

type directItem struct {
	ps *pushState
	st *stream
	e  *store.SETEntry
	// Under directBatch.mu: the push's result, once answered, and whether
	// the handler included the SET in its write (answered too late, or
	// not delivered).
	res      pushResult
	answered bool
	persist  bool
}

// abort frees the streams of a batch whose pushes were never started
// (the handler failed before, or the worker is stopping): the worker
// reads their queues.
func (d *directBatch) abort() {
	if d == nil || d.started {
		return
	}
	p := d.p
	p.mu.Lock()
	for _, it := range d.items {
		it.ps.running = false
		it.ps.dirty, it.ps.needRead = true, true
		if it.ps.direct == d {
			it.ps.direct = nil
		}
	}
	p.mu.Unlock()
	d.items = nil
	p.wake()
}

// resolved reports whether d no longer holds its streams' order: its
// unacknowledged SETs are written (or will never be).
func (d *directBatch) resolved() bool {
	select {
	case <-d.persisted:
		return true
	default:
		return false
	}
}

// done records the outcome of the handler's write and lets the pushes
// finish; safe to call more than once (the first call counts).
func (d *directBatch) done(err error) {
	if d == nil {
		return
	}
	d.once.Do(func() {
		d.err = err
		close(d.persisted)
	})
	d.earlyDone()
}

// earlyDone releases the streams held until the early write; safe to
// call more than once.
func (d *directBatch) earlyDone() {
	d.earlyOnce.Do(func() { close(d.early) })
}

// split returns the entries of streams d does not push (written at once,
// while the pushes run) and those of streams it does (written after
// them, if not acknowledged), each in the order of entries.
func (d *directBatch) split(entries []*store.SETEntry) (early, rest []*store.SETEntry) {
	claimed := make(map[string]bool, len(d.items))
	for _, it := range d.items {
		claimed[it.ps.id] = true
	}
	for _, e := range entries {
		if claimed[e.StreamID] {
			rest = append(rest, e)
		} else {
			early = append(early, e)
		}
	}
	return early, rest
}

// claimDirect picks the entries (already built, not yet signed) that can
// be pushed directly and marks their streams as in flight. It returns nil
// when there are none. The caller must call done on the result.
func (p *pusher) claimDirect(ctx context.Context, snap *snapshot, entries []*store.SETEntry) *directBatch {
	if p.s.o.DirectWait < 0 || len(entries) == 0 || !p.started.Load() || p.stopping.Load() {
		return nil
	}
	p.mu.Lock()
	mine := false
	for _, e := range entries {
		if _, ok := p.owned[e.StreamID]; ok {
			mine = true
			break
		}
	}
	p.mu.Unlock()
	if !mine {
		return nil
	}
	// SETs queued by anyone (another instance, a command-line tool, an
	// earlier failure) come first: those streams are not pushed directly.
	queued, err := p.s.o.Store.SSFStreamsWithQueuedSETs(ctx)
	if err != nil {
		p.s.o.Log.WarnContext(ctx, "cae: queued streams; queueing every SET", "err", err)
		return nil
	}
	q := make(map[string]bool, len(queued))
	for _, id := range queued {
		q[id] = true
	}
	d := &directBatch{p: p, persisted: make(chan struct{}), early: make(chan struct{})}
	for {
		var waits []chan struct{}
		p.mu.Lock()
		if p.stopping.Load() {
			p.mu.Unlock()
			return nil
		}
		for _, e := range entries {
			ps := p.owned[e.StreamID]
			if ps == nil {
				continue
			}
			if ps.direct != nil && ps.direct != d && !ps.direct.resolved() {
				waits = append(waits, ps.direct.persisted)
			}
			if ps.early != nil && ps.early != d && !isClosed(ps.early.early) {
				waits = append(waits, ps.early.early)
			}
		}
		if len(waits) > 0 {
			p.mu.Unlock()
			for _, w := range waits {
				select {
				case <-w:
				case <-ctx.Done():
					return nil
				}
			}
			continue
		}
		now := time.Now()
		margin := p.s.o.LeaseDuration / 5
		for _, e := range entries {
			ps := p.owned[e.StreamID]
			if ps == nil {
				continue
			}
			if q[e.StreamID] {
				ps.lastSET = now
				// Written behind the queued SETs: the seq gap, or the
				// cursor of a stream not read yet, makes the worker read
				// the queue (takeHints).
				continue
			}
			// A stream that got a SET a moment ago is in a burst: writing
			// lets the worker pipeline the burst, where direct pushes would
			// hold each event for the receiver's round trip.
			recent := now.Sub(ps.lastSET) < directQuiet
			ps.lastSET = now
			if recent {
				continue
			}
			st := snap.byID[e.StreamID]
			// dirty and needRead (the queue may hold rows) are answered by
			// the read above; hints are rows of this instance that may not
			// be committed yet.
			if ps.running || len(ps.hints) > 0 || ps.failures > 0 || now.Before(ps.retryAt) ||
				!now.Add(margin).Before(ps.leaseUntil) || st == nil || st.Method != model.DeliveryPush || st.Status != model.StreamEnabled {
				continue
			}
			// Later SETs of this event for the stream are written and
			// follow this one (running holds the worker back).
			ps.running, ps.direct = true, d
			d.items = append(d.items, &directItem{ps: ps, st: st, e: e})
		}
		if len(d.items) > 0 {
			// This instance's other streams of the event are written while
			// the pushes run: until then no later event may push them
			// directly, ahead of this event's SET (the queue read above
			// cannot see a row not written yet).
			for _, e := range entries {
				if ps := p.owned[e.StreamID]; ps != nil && ps.direct != d {
					ps.early = d
				}
			}
		}
		p.mu.Unlock()
		break
	}
	if len(d.items) == 0 {
		return nil
	}
	return d
}

// start pushes d's SETs (signed by now) concurrently. False: the
// pusher is stopping, nothing was pushed and every SET is to be written.
func (d *directBatch) start() bool {
	p := d.p
	d.answered = make(chan struct{}, len(d.items))
	p.mu.Lock()
	d.started = !p.stopping.Load()
	if d.started {
		p.drains.Add(len(d.items)) // stop waits for them
	}
	p.mu.Unlock()
	if !d.started {
		d.abort() // nothing pushed: all written
		return false
	}
	d.statusCurrent() // one status read for the batch before its pushes start
	for _, it := range d.items {
		go p.pushDirect(d, it)
	}
	return true
}

// collect waits for the answers of the pushes start began, at most wait
// from when it is called, and returns the entries to write: all of
// entries but those acknowledged in time.
func (d *directBatch) collect(entries []*store.SETEntry, wait time.Duration) []*store.SETEntry {
	timer := time.NewTimer(wait)
	defer timer.Stop()
wait:
	for range d.items {
		select {
		case <-d.answered:
		case <-timer.C:
			break wait
		}
	}
	skip := make(map[*store.SETEntry]bool, len(d.items))
	d.mu.Lock()
	for _, it := range d.items {
		if it.answered && it.res.kind == delivered {
			skip[it.e] = true
		} else {
			it.persist = true
		}
	}
	d.mu.Unlock()
	if len(skip) == 0 {
		return entries
	}
	rest := make([]*store.SETEntry, 0, len(entries)-len(skip))
	for _, e := range entries {
		if !skip[e] {
			rest = append(rest, e)
		}
	}
	return rest
}

// pushDirect pushes one SET of d and, once the handler's write is done
// (or at once when it was acknowledged in time), records the outcome.
func (p *pusher) pushDirect(d *directBatch, it *directItem) {
	defer p.drains.Done()
	ctx := context.Background()
	res := pushResult{kind: retry, reason: "not pushed"}
	pushed := false
	p.sem <- struct{}{}
	// As before every push of the worker: the lease and the stream's
	// current status (a pause or disable by any instance a moment ago).
	if !p.stopping.Load() && p.leaseValid(it.ps) {
		if cur := p.s.snap.Load().byID[it.ps.id]; cur != nil && cur.Status == model.StreamEnabled && cur.Method == model.DeliveryPush &&
			(d.statusCurrent() || p.stillEnabled(ctx, it.ps.id)) {
			res, pushed = p.post(cur, it.e), true
		}
	}
	<-p.sem
	d.mu.Lock()
	it.res, it.answered = res, true
	mustWait := it.persist || res.kind != delivered
	d.mu.Unlock()
	if !mustWait {
		// Delivered in time: free the stream before the handler returns,
		// so that the next event finds it idle.
		p.finishDirect(ctx, d, it, pushed)
		d.answered <- struct{}{}
		return
	}
	d.answered <- struct{}{}
	<-d.persisted
	p.finishDirect(ctx, d, it, pushed)
}

// finishDirect frees the stream for the worker and records the outcome
// of a direct push against the row the handler wrote, if any.
func (p *pusher) finishDirect(ctx context.Context, d *directBatch, it *directItem, pushed bool) {
	ps, res := it.ps, it.res
	d.mu.Lock()
	persist := it.persist
	d.mu.Unlock()
	// d.err and the Seq the write set are read only after persisted.
	written := persist && d.err == nil && it.e.Seq > 0
	key := store.SETKey{StreamID: ps.id, Seq: it.e.Seq}
	log := p.s.o.Log
	var retryIn time.Duration
	p.mu.Lock()
	ps.running = false
	if ps.direct == d {
		ps.direct = nil
	}
	switch {
	case res.kind == delivered || res.kind == refused:
		ps.failures = 0
		if written {
			// The worker must not push the row again: drop it from the
			// hints, and skip it if it reads it back before the delete.
			ps.dropHint(key.Seq)
			if ps.cursor != 0 && key.Seq == ps.cursor+1 {
				ps.cursor = key.Seq
			} else if res.kind == delivered {
				ps.markSent(key.Seq)
			}
		}
	case written:
		ps.dirty, ps.needRead = true, true
		if pushed {
			ps.failures++
			retryIn = backoff(p.s.o.MinBackoff, p.s.o.MaxBackoff, ps.failures)
			if res.retryAfter > retryIn {
				retryIn = min(res.retryAfter, p.s.o.MaxBackoff)
			}
			ps.retryAt = time.Now().Add(retryIn)
		}
	}
	p.mu.Unlock()
	switch res.kind {
	case delivered:
		p.s.stats.Delivered.Add(1)
		if !persist {
			p.s.stats.Direct.Add(1)
		}
		if written {
			p.acks <- ackMsg{key: key}
		}
	case refused:
		p.s.stats.Refused.Add(1)
		log.WarnContext(ctx, "cae: receiver refused a SET", "stream_id", ps.id, "jti", it.e.JTI, "reason", res.reason)
		if written {
			if err := p.s.o.Store.RefuseSET(ctx, key, res.reason); err != nil {
				log.WarnContext(ctx, "cae: record refused SET", "stream_id", ps.id, "err", err)
			}
		}
	default:
		if !pushed {
			break
		}
		p.s.stats.Retried.Add(1)
		log.WarnContext(ctx, "cae: push failed; will retry", "stream_id", ps.id, "jti", it.e.JTI,
			"reason", res.reason, "attempt", 1, "retry_in", retryIn)
		if written {
			if err := p.s.o.Store.RecordSETFailure(ctx, key, res.reason); err != nil {
				log.WarnContext(ctx, "cae: record push failure", "stream_id", ps.id, "err", err)
			}
		}
	}
	if retryIn > 0 {
		time.AfterFunc(retryIn, p.wake)
	}
	p.wake()
}

// dropHint removes seq from the hints. Called with pusher.mu held.
func (ps *pushState) dropHint(seq int64) {
	for i, h := range ps.hints {
		if h.Seq == seq {
			ps.hints = append(ps.hints[:i:i], ps.hints[i+1:]...)
			return
		}
	}
}

// maxSent bounds the remembered direct deliveries of a stream; past it
// they are forgotten (a row read back before its delete is then pushed
// again: a duplicate, never a loss).
const maxSent = 1024

// markSent remembers that the row seq was delivered directly. Called
// with pusher.mu held.
func (ps *pushState) markSent(seq int64) {
	if ps.sent == nil || len(ps.sent) >= maxSent {
		ps.sent = map[int64]bool{}
	}
	ps.sent[seq] = true
}

// wasSent reports (and forgets) whether the row seq was delivered
// directly.
func (p *pusher) wasSent(ps *pushState, seq int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ps.sent[seq] {
		return false
	}
	delete(ps.sent, seq)
	return true
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// eventJTI is the jti of the i-th SET of domain event txn for a stream:
// derived, so that the SETs of an event handled again after a crash
// carry the jti of those already delivered, and receivers drop them. 128
// bits of SHA-256 over values that identify the SET.
func eventJTI(txn string, i int, streamID string) string {
	h := sha256.New()
	h.Write([]byte("ward/ssf-set-jti\x00"))
	h.Write([]byte(txn))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(i), 10))
	h.Write([]byte{0})
	h.Write([]byte(streamID))
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(h.Sum(sum[:0])[:16])
}
