// Package export sends Ward's audit log to SIEMs as OCSF records
// (package ocsf): to a JSON-lines file with rotation, an HTTPS webhook
// (batches signed with HMAC-SHA256) and syslog over TLS (RFC 5424 messages
// in RFC 5425 framing).
//
// Each sink follows the events table with a cursor of its own, a row in
// export_cursors (store.ExportCursors), rather than a durable consumer of
// the event stream:
//
//   - the events table is the outbox already; reading it in batches of
//     hundreds keeps up with thousands of events a second and lets a
//     webhook send a batch in one request, where a stream consumer holds
//     one event in flight at a time;
//   - the cursor moves only after the sink has the batch (the file
//     synced, the webhook answered 2xx, the syslog frames written), in
//     the same database as the events, so a kill -9 repeats at most the
//     batch in flight and never skips one;
//   - a sink down for hours only lets its cursor fall behind: the events
//     stay in the table (audit.retention, at least 8 days), nothing waits
//     in memory, and nothing on the request path notices;
//   - it works with every bus driver, including bus.driver local.
//
// Export runs behind the outbox: a worker per sink reads committed
// events, woken by the local bus and a poll; a sign-in never waits for
// it. With several instances, the cursor's lease gives each sink one
// exporting instance at a time; another takes over when it expires.
//
// Delivery is at least once and in sequence order. A record delivered
// again (after a crash, a lost answer, a lost lease) has the same
// metadata.uid, Ward's event id, for receivers to drop; the file sink,
// which can read what it wrote, skips the records after its cursor that
// its file already holds (FileSink.Warm). As the event
// relay does (internal/bus), a sequence number missing on PostgreSQL is
// waited for (GapWait) before the events after it go out; one that
// commits later than that is still exported, out of order, within ten
// minutes of being skipped.
package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/audit/ocsf"
	"github.com/ward-idp/ward/internal/store"
)

// Item is one record to deliver.
type Item struct {
	Seq  int64
	ID   string // Ward's event id
	Code string // Ward's event code (W2005E)
	Time time.Time
	// Severity is the record's OCSF severity_id.
	Severity int
	// JSON is the OCSF record, one line of ASCII JSON (nil for a raw
	// sink).
	JSON []byte
	// Event is the stored event itself, for a raw sink (SinkConfig.Raw);
	// nil otherwise.
	Event *store.StoredEvent
}

// Sink delivers records to one destination.
type Sink interface {
	// Deliver sends items, in order. nil means the destination has all of
	// them (as far as its transport can tell, see each sink); an error
	// means the batch is sent again later, whole.
	Deliver(ctx context.Context, items []Item) error
	// Close releases the sink's resources.
	Close() error
}

// Warmer is implemented by a sink that keeps state built from the events
// it was given (the online detectors): Warm is called each time this
// instance takes the sink's cursor, with the position it resumes after,
// before anything after it is delivered. Its error is logged; delivery
// goes on.
type Warmer interface {
	Warm(ctx context.Context, cursor int64) error
}

// Batching bounds a sink's batches: a batch goes out when it has
// MaxEvents records or MaxBytes of JSON, or when its oldest record has
// waited MaxWait (0: at once, whatever is there).
type Batching struct {
	MaxEvents int
	MaxBytes  int
	MaxWait   time.Duration
}

// Start positions of a new cursor.
const (
	StartOldest = "oldest" // every event the audit log still holds
	StartNow    = "now"    // the events stored from the sink's first start on
)

// SinkConfig is one sink with its name (the cursor's key), batching,
// retry back-off and where a new cursor starts.
type SinkConfig struct {
	Name  string
	Sink  Sink
	Batch Batching
	// MinBackoff and MaxBackoff bound the wait between failed deliveries:
	// exponential with jitter.
	MinBackoff, MaxBackoff time.Duration
	Start                  string
	// Raw gives the sink the stored events themselves (Item.Event) and no
	// OCSF record: a follower of the audit log inside Ward, such as the
	// online detectors, rather than a SIEM.
	Raw bool
}

// Source is what the exporter reads and writes: the events and the
// cursors.
type Source interface {
	EventsAfter(ctx context.Context, seq int64, limit int) ([]*store.StoredEvent, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]*store.StoredEvent, error)
	store.ExportCursors
}

// Options configure an Exporter.
type Options struct {
	Store  Source
	Mapper *ocsf.Mapper
	// Owner names this instance in the cursors' leases.
	Owner string
	Log   *slog.Logger
	// PollInterval is how often new events are looked for besides the
	// wake-ups of the local bus (default 1s): events stored by other
	// instances and command-line tools.
	PollInterval time.Duration
	// GapWait is how long a missing sequence number holds back the
	// events after it (default 2s).
	GapWait time.Duration
	// LeaseTTL is the cursors' lease (default 15s), renewed at a third.
	LeaseTTL time.Duration
	// WakeInterval is the shortest time between two reads that wake-ups
	// cause (default 20ms). Every stored event wakes the workers; under
	// a stream of events a read per event would cost a query (and a
	// cursor update) per event, while a read every interval takes all
	// that arrived meanwhile. A wake-up after a quiet spell reads at once.
	WakeInterval time.Duration
	Now          func() time.Time
}

const (
	readBatch = 500
	gapRetry  = 20 * time.Millisecond
	lateWatch = 10 * time.Minute
	// maxLateSpan bounds the skipped numbers watched; a larger jump
	// (events deleted by retention before they were exported, a
	// restored backup) is logged, not watched.
	maxLateSpan = 1000
	// maxRetryAfter caps the wait a receiver's Retry-After asks for.
	maxRetryAfter = 5 * time.Minute
)

// Exporter runs one worker per sink.
type Exporter struct {
	o       Options
	workers []*worker
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Start starts a worker for every sink; Close stops them.
func Start(ctx context.Context, o Options, sinks []SinkConfig) (*Exporter, error) {
	if o.Store == nil || o.Owner == "" {
		return nil, errors.New("export: Store and Owner are required")
	}
	for _, s := range sinks {
		if !s.Raw && o.Mapper == nil {
			return nil, fmt.Errorf("export: sink %q: a Mapper is required", s.Name)
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.GapWait <= 0 {
		o.GapWait = 2 * time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	if o.WakeInterval <= 0 {
		o.WakeInterval = 20 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	seen := map[string]bool{}
	for _, s := range sinks {
		if s.Name == "" || s.Sink == nil || seen[s.Name] {
			return nil, fmt.Errorf("export: sink %q: a unique name and a sink are required", s.Name)
		}
		seen[s.Name] = true
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e := &Exporter{o: o, cancel: cancel}
	for _, s := range sinks {
		s.Batch.MaxEvents = clamp(s.Batch.MaxEvents, 1, 10000, readBatch)
		if s.Batch.MaxBytes <= 0 {
			s.Batch.MaxBytes = 4 << 20
		}
		if s.MinBackoff <= 0 {
			s.MinBackoff = time.Second
		}
		if s.MaxBackoff < s.MinBackoff {
			s.MaxBackoff = max(s.MinBackoff, time.Minute)
		}
		w := &worker{e: e, cfg: s, wakeC: make(chan struct{}, 1), late: map[int64]time.Time{},
			log: o.Log.With("component", "export", "sink", s.Name)}
		e.workers = append(e.workers, w)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			w.run(ctx)
		}()
	}
	return e, nil
}

// Wake tells every worker that events were stored. It never blocks: the
// bus calls it on the request path.
func (e *Exporter) Wake() {
	for _, w := range e.workers {
		select {
		case w.wakeC <- struct{}{}:
		default:
		}
	}
}

// Close stops the workers (a delivery in progress is abandoned and sent
// again by the next holder of the cursor), releases their leases and
// closes the sinks.
func (e *Exporter) Close() error {
	e.cancel()
	e.wg.Wait()
	var errs []error
	for _, w := range e.workers {
		errs = append(errs, w.cfg.Sink.Close())
	}
	return errors.Join(errs...)
}

// Stats reports what a sink's worker has done.
type Stats struct {
	Delivered int64 // records delivered (again after a retry counts again)
	Batches   int64
	Failures  int64 // failed deliveries
	Cursor    int64
	Holding   bool // this instance holds the sink's lease
}

// Stats returns the counters of sink name.
func (e *Exporter) Stats(name string) Stats {
	for _, w := range e.workers {
		if w.cfg.Name == name {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.stats
		}
	}
	return Stats{}
}

// worker exports to one sink.
type worker struct {
	e     *Exporter
	cfg   SinkConfig
	log   *slog.Logger
	wakeC chan struct{}

	// owned by the run goroutine
	held       bool
	leaseUntil time.Time
	cursor     int64 // delivered (or skipped) up to here
	read       int64 // read into pending up to here
	pending    []Item
	pendingAt  time.Time // when the oldest pending record was read
	pendingLen int
	gapFrom    int64
	gapSince   time.Time
	late       map[int64]time.Time
	failing    bool

	mu    sync.Mutex
	stats Stats
}

func (w *worker) now() time.Time { return w.e.o.Now() }

func (w *worker) run(ctx context.Context) {
	tick := time.NewTicker(w.e.o.PollInterval)
	defer tick.Stop()
	defer w.release()
	polled := true
	for ctx.Err() == nil {
		last := time.Now()
		wait := w.step(ctx, polled)
		var (
			t     *time.Timer
			timer <-chan time.Time
		)
		if wait > 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		polled = false
		select {
		case <-ctx.Done():
		case <-w.wakeC:
			// Wake-ups in quick succession: wait out the interval (the
			// events of later wake-ups are read with this one's).
			if d := w.e.o.WakeInterval - time.Since(last); d > 0 {
				if t != nil {
					t.Stop()
				}
				t = time.NewTimer(d)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			}
		case <-tick.C:
			polled = true
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
	}
}

// step reads what is new, delivers full or due batches, and returns how
// soon to look again (0: at the next wake-up or poll).
func (w *worker) step(ctx context.Context, polled bool) time.Duration {
	if !w.ensureLease(ctx) {
		return w.e.o.LeaseTTL / 3
	}
	for ctx.Err() == nil {
		wait, more := w.fill(ctx)
		if w.due() {
			if !w.deliver(ctx) {
				return 0 // lost the lease or stopping
			}
			if more {
				continue
			}
		}
		if polled {
			w.deliverLate(ctx)
		}
		if len(w.pending) > 0 {
			due := w.cfg.Batch.MaxWait - w.now().Sub(w.pendingAt)
			if wait == 0 || due < wait {
				wait = max(due, time.Millisecond)
			}
		}
		return wait
	}
	return 0
}

// ensureLease claims the sink's cursor or renews the lease when a third
// of it is left; it reports whether this instance holds it.
func (w *worker) ensureLease(ctx context.Context) bool {
	now := w.now()
	if w.held && w.leaseUntil.Sub(now) > 2*w.e.o.LeaseTTL/3 {
		return true
	}
	start := int64(0)
	if w.cfg.Start == StartNow && !w.held {
		newest, err := w.e.o.Store.ListEvents(ctx, store.EventFilter{Limit: 1})
		if err != nil {
			w.fail("reading the newest event failed", err)
			return false
		}
		if len(newest) == 1 {
			start = newest[0].Seq
		}
	}
	until := now.Add(w.e.o.LeaseTTL)
	c, held, err := w.e.o.Store.ClaimExportCursor(ctx, w.cfg.Name, w.e.o.Owner, start, now, until)
	if err != nil {
		w.fail("claiming the export cursor failed", err)
		return false
	}
	if !held {
		if w.held {
			w.log.Warn("export: another instance took over the sink", "holder", c.Owner)
		}
		w.reset(false)
		return false
	}
	if !w.held {
		w.log.Info("export: exporting", "after_seq", c.Seq)
		w.cursor, w.read = c.Seq, c.Seq
		w.pending, w.pendingLen = nil, 0
		if wm, ok := w.cfg.Sink.(Warmer); ok {
			if err := wm.Warm(ctx, c.Seq); err != nil {
				w.log.Warn("export: warming the sink up failed", "err", err)
			}
		}
	}
	w.held, w.leaseUntil = true, until
	w.setStats(func(s *Stats) { s.Holding, s.Cursor = true, w.cursor })
	return true
}

func (w *worker) reset(held bool) {
	w.held = held
	w.pending, w.pendingLen = nil, 0
	w.setStats(func(s *Stats) { s.Holding = held })
}

func (w *worker) release() {
	if !w.held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.e.o.Store.ReleaseExportCursor(ctx, w.cfg.Name, w.e.o.Owner); err != nil {
		w.log.Debug("export: releasing the cursor failed", "err", err)
	}
}

// fill reads events after w.read into pending until a batch is full. It
// returns how soon to look again for a gap it waits for, and whether
// more events may be waiting.
func (w *worker) fill(ctx context.Context) (wait time.Duration, more bool) {
	for w.pendingRoom() > 0 {
		evs, err := w.e.o.Store.EventsAfter(ctx, w.read, min(readBatch, w.pendingRoom()))
		if err != nil {
			w.fail("reading the events failed", err)
			return 0, false
		}
		for _, ev := range evs {
			if ev.Seq > w.read+1 {
				if d := w.overGap(ev.Seq); d > 0 {
					return d, false
				}
			}
			it, err := w.item(ev)
			if err != nil {
				// Cannot happen with the record types; skipping would lose
				// the event, so stop here and say why.
				w.fail("mapping an event failed", err)
				return time.Second, false
			}
			if len(w.pending) == 0 {
				w.pendingAt = w.now()
			}
			w.pending = append(w.pending, it)
			w.pendingLen += len(it.JSON)
			w.read = ev.Seq
			if w.pendingRoom() == 0 {
				return 0, true
			}
		}
		if len(evs) == 0 || len(evs) < readBatch {
			return 0, false
		}
	}
	return 0, true
}

func (w *worker) pendingRoom() int {
	if w.pendingLen >= w.cfg.Batch.MaxBytes {
		return 0
	}
	return w.cfg.Batch.MaxEvents - len(w.pending)
}

// due reports whether the pending batch should go out now.
func (w *worker) due() bool {
	return len(w.pending) > 0 && (w.pendingRoom() <= 0 || w.now().Sub(w.pendingAt) >= w.cfg.Batch.MaxWait)
}

// overGap decides about the numbers missing before next: wait (returns
// how long) or skip them and watch for them (returns 0).
func (w *worker) overGap(next int64) time.Duration {
	from, now := w.read+1, w.now()
	if w.gapFrom != from {
		w.gapFrom, w.gapSince = from, now
	}
	if waited := now.Sub(w.gapSince); waited < w.e.o.GapWait {
		return min(gapRetry, w.e.o.GapWait-waited)
	}
	if next-from <= maxLateSpan {
		for s := from; s < next; s++ {
			w.late[s] = now
		}
		w.log.Debug("export: sequence numbers missing; exporting past them", "from", from, "to", next-1)
	} else {
		w.log.Warn("export: events missing from the audit log (deleted by audit.retention before they were exported, or a restored backup)",
			"from", from, "to", next-1)
	}
	w.gapFrom = 0
	return 0
}

func (w *worker) item(ev *store.StoredEvent) (Item, error) {
	if w.cfg.Raw {
		// Bounded by MaxEvents alone (the events are already bounded).
		return Item{Seq: ev.Seq, ID: ev.ID, Code: ev.Code(), Time: ev.Time, Event: ev}, nil
	}
	r := w.e.o.Mapper.Map(ev)
	b, err := ocsf.MarshalRecord(r)
	if err != nil {
		return Item{}, err
	}
	return Item{Seq: ev.Seq, ID: ev.ID, Code: ev.Code(), Time: ev.Time, Severity: r.SeverityID, JSON: b}, nil
}

// deliver sends the pending batch until it is delivered, retrying with
// back-off and renewing the lease meanwhile; it reports false when the
// lease was lost or the exporter stops (the batch is dropped from memory:
// the cursor has not moved past it).
func (w *worker) deliver(ctx context.Context) bool {
	batch := w.pending
	for attempt := 0; ; attempt++ {
		err := w.cfg.Sink.Deliver(ctx, batch)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		w.setStats(func(s *Stats) { s.Failures++ })
		d := backoff(w.cfg.MinBackoff, w.cfg.MaxBackoff, attempt)
		if ra, ok := RetryAfter(err, maxRetryAfter); ok && ra > d {
			d = ra
		}
		w.fail(fmt.Sprintf("delivery failed; retrying in %v", d.Round(time.Millisecond)), err)
		if !sleep(ctx, d) {
			return false
		}
		if !w.ensureLease(ctx) {
			return false
		}
	}
	last := batch[len(batch)-1].Seq
	ok, err := w.e.o.Store.AdvanceExportCursor(ctx, w.cfg.Name, w.e.o.Owner, last, w.now())
	if err != nil || !ok {
		// Delivered but not recorded: the next holder sends the batch
		// again (at least once).
		if err != nil {
			w.fail("recording the export position failed", err)
		} else {
			w.log.Warn("export: lost the sink's lease")
		}
		w.reset(false)
		return false
	}
	w.cursor = last
	w.pending, w.pendingLen = nil, 0
	if w.failing {
		w.failing = false
		w.log.Info("export: delivering again", "seq", last)
	}
	w.setStats(func(s *Stats) {
		s.Delivered += int64(len(batch))
		s.Batches++
		s.Cursor = last
	})
	return true
}

// deliverLate exports skipped numbers that have committed since, each on
// its own (out of sequence order).
func (w *worker) deliverLate(ctx context.Context) {
	if len(w.late) == 0 {
		return
	}
	seqs := make([]int64, 0, len(w.late))
	for s := range w.late {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	now := w.now()
	for _, s := range seqs {
		if now.Sub(w.late[s]) > lateWatch || s > w.read {
			delete(w.late, s)
			continue
		}
		evs, err := w.e.o.Store.EventsAfter(ctx, s-1, 1)
		if err != nil {
			return
		}
		if len(evs) != 1 || evs[0].Seq != s {
			continue
		}
		it, err := w.item(evs[0])
		if err != nil || w.cfg.Sink.Deliver(ctx, []Item{it}) != nil {
			return // tried again on the next poll
		}
		w.log.Warn("export: exported an event that committed late (out of sequence order)", "seq", s, "event_id", it.ID)
		delete(w.late, s)
		w.setStats(func(st *Stats) { st.Delivered++ })
	}
}

func (w *worker) fail(msg string, err error) {
	if !w.failing {
		w.log.Warn("export: "+msg, "after_seq", w.cursor, "err", err)
		w.failing = true
	} else {
		w.log.Debug("export: "+msg, "after_seq", w.cursor, "err", err)
	}
}

func (w *worker) setStats(f func(*Stats)) {
	w.mu.Lock()
	f(&w.stats)
	w.mu.Unlock()
}

// backoff is the wait before retry attempt+1: min doubling up to max,
// then a random half of it added or not (jitter in [d/2, d]), so that
// several instances or sinks recovering together do not retry in step.
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	d := minD
	for range min(attempt, 30) {
		d *= 2
		if d >= maxD {
			d = maxD
			break
		}
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func clamp(v, lo, hi, def int) int {
	if v <= 0 {
		return def
	}
	return min(max(v, lo), hi)
}
