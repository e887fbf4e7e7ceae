package chain

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Defaults of Options.
const (
	DefaultInterval           = time.Second
	DefaultCheckpointEvents   = 10000
	DefaultCheckpointInterval = 10 * time.Minute
	DefaultGapWait            = time.Second
	defaultBatch              = 2000
)

const (
	// maxFill is how many skipped numbers of one gap get a record each;
	// the rest of a longer run (a sequence reset by hand) gets one record
	// that says where the run ends. Transactions in flight hold numbers
	// near the start of a gap, never a thousand numbers in.
	maxFill = 1000
	// holderWait bounds how long filling a number waits for an
	// uncommitted transaction holding it; the next round tries again.
	holderWait = 10 * time.Second
	// closeTimeout bounds the final round of Close.
	closeTimeout = 5 * time.Second
)

// DataSkippedThrough is the Data key of an audit.sequence_skipped record
// that stands for a run of skipped numbers: the last of them.
const DataSkippedThrough = "skipped_through"

// Options configure a Sealer.
type Options struct {
	Store  store.AuditLog // required
	KEK    *secret.KEK    // required: opens the record MAC key, seals checkpoint keys
	Signer Signer         // required: signs checkpoints
	Now    func() time.Time
	Log    *slog.Logger
	// Interval is how often the sealer looks for committed events
	// (DefaultInterval): the longest an event waits to be sealed, unless
	// a sequence number is missing before it (GapWait more).
	Interval time.Duration
	// CheckpointEvents and CheckpointInterval: a checkpoint is signed
	// when this many events were sealed since the last one, or this long
	// after it if any were (DefaultCheckpointEvents,
	// DefaultCheckpointInterval).
	CheckpointEvents   int64
	CheckpointInterval time.Duration
	// GapWait is how long a missing sequence number is waited for before
	// it is filled (DefaultGapWait). Filling waits for a transaction
	// holding the number anyway; this only spares one that is between
	// taking its number and writing its row.
	GapWait time.Duration
	// Batch is how many events one transaction seals (default 2000).
	Batch int
}

// Sealer links committed events into the chain and signs checkpoints.
// Every server process runs one; sealers of one database take turns by
// the primary key of the links (a sealer that finds a link taken reads
// the head again).
type Sealer struct {
	o      Options
	mac    func([]byte) []byte
	legacy int64
	known  map[string]bool // kids recorded in audit_keys by this process

	mu  sync.Mutex // one round at a time
	gap struct {
		from  int64
		since time.Time
	}
	failing bool
	stats   struct{ sealErrors, problems atomic.Int64 }
	// mine is the last link this sealer stored: a checkpoint is signed
	// only while it is still there, unchanged.
	mine store.ChainLink
	// trusted caches the checkpoint keys (reloaded for an unknown kid).
	trusted Keys
	// reported holds the sequence numbers of problems already logged;
	// after one, checkpoints are tried again only after retryAt.
	reported map[int64]bool
	retryAt  time.Time

	running    bool // Start ran the background loop, which closes done
	stop, done chan struct{}
	closed     sync.Once
}

// New returns a sealer that seals only when asked (Seal, Close); Start
// also runs it in the background.
func New(ctx context.Context, o Options) (*Sealer, error) {
	if o.Store == nil || o.KEK == nil || o.Signer == nil {
		return nil, errors.New("chain: Options.Store, KEK and Signer are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("component", "audit-chain")
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.CheckpointEvents <= 0 {
		o.CheckpointEvents = DefaultCheckpointEvents
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.GapWait <= 0 {
		o.GapWait = DefaultGapWait
	}
	if o.Batch <= 0 {
		o.Batch = defaultBatch
	}
	key, err := RecordKey(ctx, o.Store, o.KEK)
	if err != nil {
		return nil, err
	}
	_, legacy, err := o.Store.AuditChainStart(ctx)
	if err != nil {
		return nil, fmt.Errorf("chain: %w", err)
	}
	return &Sealer{o: o, mac: RecordMAC(key), legacy: legacy, known: map[string]bool{}, reported: map[int64]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Start returns a sealer running in the background until Close.
func Start(ctx context.Context, o Options) (*Sealer, error) {
	s, err := New(ctx, o)
	if err != nil {
		return nil, err
	}
	s.running = true
	go s.run()
	return s, nil
}

func (s *Sealer) run() {
	defer close(s.done)
	// Instances started together do not all look at the same moment.
	first := time.NewTimer(rand.N(s.o.Interval) + time.Millisecond)
	defer first.Stop()
	select {
	case <-s.stop:
		return
	case <-first.C:
	}
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := s.Seal(ctx)
		cancel()
		if err != nil {
			s.stats.sealErrors.Add(1)
		}
		switch {
		case err != nil && !s.failing:
			s.o.Log.Warn("sealing the audit log failed; events stay unsealed until it works", "err", err)
			s.failing = true
		case err != nil:
			s.o.Log.Debug("sealing the audit log failed", "err", err)
		case s.failing:
			s.o.Log.Info("sealing the audit log again")
			s.failing = false
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// Close stops the background sealer, then seals what was committed and
// signs a checkpoint of it, so that a server that stops leaves no
// unsigned tail behind.
func (s *Sealer) Close() error {
	var err error
	s.closed.Do(func() {
		close(s.stop)
		if s.running {
			<-s.done
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if _, err = s.Seal(ctx); err == nil {
			err = s.Checkpoint(ctx)
		}
		if err != nil {
			s.o.Log.Warn("sealing the audit log at shutdown failed; the next start seals it", "err", err)
		}
	})
	return err
}

// Seal links every event committed after the chain's head, in batches,
// and signs a checkpoint if one is due. It returns how many events it
// linked. A sequence number missing below committed ones stops it there
// until the number appears or GapWait passed (then it is filled).
func (s *Sealer) Seal(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for {
		n, again, err := s.sealBatch(ctx)
		total += n
		if err != nil {
			return total, err
		}
		// A backlog (a server started after a while) is checkpointed as
		// it is sealed, so that its segments keep their size.
		if err := s.checkpoint(ctx, false); err != nil {
			return total, err
		}
		if !again {
			return total, nil
		}
	}
}

// Checkpoint signs a checkpoint of the head now, unless the newest one
// covers it.
func (s *Sealer) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkpoint(ctx, true)
}

// head returns the chain value after the last sealed event and the next
// sequence number to seal.
func (s *Sealer) head(ctx context.Context) ([]byte, int64, error) {
	l, err := s.o.Store.AuditChainHead(ctx)
	if err == nil {
		return l.Hash, l.Seq + 1, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, 0, err
	}
	// Retention deleted every link: the chain goes on from its anchor.
	cp, err := s.o.Store.LatestAuditCheckpoint(ctx)
	if err == nil {
		return cp.Hash, cp.Seq + 1, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, 0, err
	}
	// A new chain starts at the oldest event written before it existed,
	// or at the first number after those.
	first := int64(0)
	errStop := errors.New("stop")
	err = s.o.Store.ScanEventRecords(ctx, store.EventScan{}, func(r *store.EventRecord) error {
		first = r.Seq
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, 0, err
	}
	if first > 0 && first <= s.legacy {
		return Genesis, first, nil
	}
	return Genesis, s.legacy + 1, nil
}

var errStopScan = errors.New("chain: stop scan")

// sealBatch links one batch. again reports that there may be more to do
// at once (a full batch, a link another sealer took, a gap just filled).
func (s *Sealer) sealBatch(ctx context.Context) (sealed int, again bool, err error) {
	prev, expected, err := s.head(ctx)
	if err != nil {
		return 0, false, err
	}
	var (
		links          []store.ChainLink
		gapFrom, gapTo int64
		taken, skipped bool
		unknown        []int64
	)
	err = s.o.Store.ScanEventRecords(ctx, store.EventScan{After: expected - 1, Body: true}, func(r *store.EventRecord) error {
		switch {
		case r.Seq < expected:
			return nil // a number held twice, or inside a run of skipped numbers: Verify reports it
		case r.Seq > expected:
			gapFrom, gapTo = expected, r.Seq-1
			return errStopScan
		case r.Hash != nil:
			taken = true // another sealer linked it after we read the head
			return errStopScan
		}
		origin := s.origin(r)
		if origin == OriginUnknown {
			unknown = append(unknown, r.Seq)
		}
		h := Link(prev, origin, r.Leaf)
		links = append(links, store.ChainLink{Seq: r.Seq, Origin: origin, Hash: h})
		prev, expected = h, r.Seq+1
		if to := s.skippedThrough(origin, r.Body); to >= expected {
			expected = to + 1
			skipped = true
		}
		if len(links) >= s.o.Batch {
			return errStopScan
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return 0, false, err
	}
	if len(links) > 0 {
		if err := s.o.Store.SealEvents(ctx, links); errors.Is(err, store.ErrAlreadyExists) {
			return 0, true, nil
		} else if err != nil {
			return 0, false, err
		}
		s.mine = links[len(links)-1]
		for _, seq := range unknown {
			s.stats.problems.Add(1)
			s.o.Log.Error("audit log: an event without a valid record MAC was not written by Ward; sealed as such, `ward logs verify` reports it",
				"seq", seq)
		}
		s.gap.from = 0
		return len(links), len(links) >= s.o.Batch || gapFrom != 0 || taken || skipped, nil
	}
	if taken {
		return 0, true, nil
	}
	if gapFrom == 0 {
		return 0, false, nil
	}
	// A number is missing below committed events. Numbers written before
	// the chain existed are final; a recent one may belong to a
	// transaction that has not written its row yet: give it GapWait.
	if gapFrom > s.legacy {
		now := time.Now()
		if s.gap.from != gapFrom {
			s.gap.from, s.gap.since = gapFrom, now
		}
		if now.Sub(s.gap.since) < s.o.GapWait {
			return 0, false, nil
		}
	}
	if err := s.fill(ctx, gapFrom, gapTo); err != nil {
		return 0, false, err
	}
	s.gap.from = 0
	return 0, true, nil
}

// origin decides what an event is by its record MAC.
func (s *Sealer) origin(r *store.EventRecord) int {
	switch {
	case r.MAC != nil && hmac.Equal(s.mac(r.Body), r.MAC):
		return OriginWard
	case r.MAC == nil && r.Seq <= s.legacy:
		return OriginLegacy
	}
	return OriginUnknown
}

// skippedThrough returns the last number of the run an
// audit.sequence_skipped record Ward wrote stands for (0: itself only).
func (s *Sealer) skippedThrough(origin int, body []byte) int64 {
	if origin != OriginWard {
		return 0
	}
	return skippedThrough(body)
}

func skippedThrough(body []byte) int64 {
	typ, err := store.BodyValue(body, 1)
	if err != nil || typ != string(model.EventAuditSequenceSkipped) {
		return 0
	}
	data, err := store.BodyValue(body, len(store.EventBodyColumns)-1)
	text, ok := data.(string)
	if err != nil || !ok || text == "" {
		return 0
	}
	var m map[string]string
	if json.Unmarshal([]byte(text), &m) != nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[DataSkippedThrough], 10, 64)
	return n
}

// fill stores an audit.sequence_skipped record under each number of
// from..to that no transaction commits: InsertEventAt waits for an
// uncommitted holder, so a number is the event's if it commits and the
// record's otherwise, and nothing can commit under it afterwards.
func (s *Sealer) fill(ctx context.Context, from, to int64) error {
	last := min(to, from+maxFill-1)
	now := s.o.Now()
	filled := 0
	for seq := from; seq <= last; seq++ {
		e := &model.Event{ID: bus.NewEventID(), Type: model.EventAuditSequenceSkipped, Time: now, Actor: "system"}
		if seq == last && last < to {
			e.Data = map[string]string{DataSkippedThrough: strconv.FormatInt(to, 10)}
		}
		ictx, cancel := context.WithTimeout(ctx, holderWait)
		ok, err := s.o.Store.InsertEventAt(ictx, seq, e)
		cancel()
		if err != nil {
			return fmt.Errorf("chain: sequence number %d is missing and a transaction may still hold it: %w", seq, err)
		}
		if ok {
			filled++
		}
	}
	if filled > 0 {
		s.o.Log.Info("audit log: sequence numbers taken by transactions that rolled back were recorded as skipped",
			"from", from, "to", to, "records", filled)
	}
	return nil
}

// checkpoint signs a checkpoint of the head if one is due (or force).
// It signs only what it verified itself: from the newest checkpoint (its
// signature checked) it recomputes every link up to the head, each
// event's origin from its record MAC, and finds the last link it stored
// unchanged. So a record appended with a link of its own making (the
// chain is plain SHA-256: anyone can compute one) is never signed. On a
// problem it signs up to the last good link and logs it; later
// checkpoints wait until it is resolved.
func (s *Sealer) checkpoint(ctx context.Context, force bool) error {
	head, err := s.o.Store.AuditChainHead(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	now := s.o.Now()
	last, err := s.o.Store.LatestAuditCheckpoint(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		last = nil
	case err != nil:
		return err
	case head.Seq <= last.Seq:
		return nil
	}
	if !force && (now.Before(s.retryAt) || last != nil && head.Seq-last.Seq < s.o.CheckpointEvents && now.Sub(last.CreatedAt) < s.o.CheckpointInterval) {
		return nil
	}
	first, _, err := s.o.Store.AuditChainStart(ctx)
	if err != nil {
		return err
	}
	from, prev := first-1, Genesis
	if last != nil {
		cp, err := s.verifyCheckpoint(ctx, last)
		if err != nil {
			s.report(last.Seq, "the newest checkpoint does not verify; no checkpoint is signed on top of it", err)
			return nil
		}
		from, prev = cp.Seq, cp.ChainHash()
	}
	good, err := s.verifySegment(ctx, from, prev, head.Seq)
	if err != nil {
		return err
	}
	if good.Seq <= from {
		return nil
	}
	cp, err := sign(ctx, s.o.Store, s.o.Signer, s.o.KEK, s.known, good, first-1, now)
	if err != nil {
		return err
	}
	if err := s.o.Store.CreateAuditCheckpoint(ctx, cp); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("chain: store checkpoint: %w", err)
	}
	return nil
}

// verifyCheckpoint checks a stored checkpoint's signature.
func (s *Sealer) verifyCheckpoint(ctx context.Context, row *store.AuditCheckpoint) (*Checkpoint, error) {
	if _, ok := s.trusted[row.KID]; !ok {
		keys, _, err := TrustedKeys(ctx, s.o.Store, s.o.KEK)
		if err != nil {
			return nil, err
		}
		s.trusted = keys
	}
	return VerifyCheckpoint(row, s.trusted)
}

// verifySegment recomputes the links after from (whose chain value is
// prev) up to head and returns the last one that is right.
func (s *Sealer) verifySegment(ctx context.Context, from int64, prev []byte, head int64) (store.ChainLink, error) {
	good := store.ChainLink{Seq: from, Hash: prev}
	expected := from + 1
	var bad error
	mineFound := s.mine.Seq <= from
	err := s.o.Store.ScanEventRecords(ctx, store.EventScan{After: from, Through: head, Body: true}, func(r *store.EventRecord) error {
		if r.Seq < expected && r.Hash == nil {
			return nil // inside a run of skipped numbers, not linked: Verify reports it
		}
		origin := s.origin(r)
		switch {
		case r.Seq != expected:
			bad = fmt.Errorf("seq %d follows seq %d", r.Seq, expected-1)
		case r.Hash == nil:
			bad = fmt.Errorf("seq %d has no link", r.Seq)
		case r.Origin != origin:
			bad = fmt.Errorf("seq %d: its link says origin %d, its record MAC says %d", r.Seq, r.Origin, origin)
		case !hmac.Equal(Link(good.Hash, origin, r.Leaf), r.Hash):
			bad = fmt.Errorf("seq %d does not match its link", r.Seq)
		case r.Seq == s.mine.Seq && !hmac.Equal(r.Hash, s.mine.Hash):
			bad = fmt.Errorf("seq %d: the link this server stored was replaced", r.Seq)
		}
		if r.Seq == s.mine.Seq && bad == nil {
			mineFound = true
		}
		if bad != nil {
			s.report(r.Seq, "the audit log was tampered with; checkpoints stop before it until it is resolved (ward logs verify)", bad)
			return errStopScan
		}
		good = store.ChainLink{Seq: r.Seq, Origin: origin, Hash: bytes.Clone(r.Hash)}
		expected = r.Seq + 1
		if to := s.skippedThrough(origin, r.Body); to >= expected {
			expected = to + 1
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return store.ChainLink{}, err
	}
	if bad == nil && good.Seq < head {
		s.report(good.Seq+1, "the audit log was tampered with; checkpoints stop before it until it is resolved (ward logs verify)",
			fmt.Errorf("seq %d to %d are linked but hold no record", good.Seq+1, head))
	}
	if !mineFound {
		// The chain no longer holds the last link this server stored: it
		// was rebuilt after it, and nothing since the last checkpoint can
		// be vouched for.
		s.report(s.mine.Seq, "the audit log was tampered with; no checkpoint is signed until it is resolved (ward logs verify)",
			fmt.Errorf("seq %d: the last link this server stored is gone or was replaced", s.mine.Seq))
		return store.ChainLink{Seq: from, Hash: prev}, nil
	}
	return good, nil
}

// report logs a problem once, and puts the next checkpoint off by
// CheckpointInterval (verifying a growing tail every round would cost
// more and more).
func (s *Sealer) report(seq int64, msg string, err error) {
	s.retryAt = s.o.Now().Add(s.o.CheckpointInterval)
	if s.reported[seq] {
		return
	}
	s.reported[seq] = true
	s.stats.problems.Add(1)
	s.o.Log.Error("audit log: "+msg, "seq", seq, "problem", err.Error())
}

// Stats counts what went wrong since the start.
type Stats struct {
	// SealErrors are rounds that could not seal (the store failed).
	SealErrors int64
	// VerifyProblems are problems found in the chain (a broken link, a
	// bad checkpoint, an event without a valid record MAC), each once.
	VerifyProblems int64
}

// Stats returns the sealer's counters.
func (s *Sealer) Stats() Stats {
	return Stats{SealErrors: s.stats.sealErrors.Load(), VerifyProblems: s.stats.problems.Load()}
}
