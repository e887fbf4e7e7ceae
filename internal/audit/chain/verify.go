package chain

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Kinds of problems Verify reports.
const (
	// Changed: a record (or its link) does not match its chain hash.
	Changed = "changed"
	// Removed: sequence numbers of the sealed log hold no record.
	Removed = "removed"
	// Inserted: a record that is not in the chain, holds a number twice,
	// or was not written by Ward (no valid record MAC when sealed).
	Inserted = "inserted"
	// Rewritten: records were changed and their hashes recomputed: the
	// chain does not match a signed checkpoint.
	Rewritten = "rewritten"
	// BadCheckpoint: a checkpoint whose signature does not verify.
	BadCheckpoint = "bad_checkpoint"
	// Truncated: records after the last one were removed, past a signed
	// checkpoint that covers them.
	Truncated = "truncated"
	// UntrustedKey: a recorded checkpoint key that Ward did not record.
	UntrustedKey = "untrusted_key"
)

// Problem is one finding of Verify.
type Problem struct {
	// Seq is the first sequence number concerned (0: none, for a key).
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	if p.Seq == 0 {
		return p.Kind + ": " + p.Detail
	}
	return "seq " + strconv.FormatInt(p.Seq, 10) + ": " + p.Kind + ": " + p.Detail
}

// Report is what Verify found.
type Report struct {
	// From and To are the first and last sequence numbers verified
	// (0, 0: none).
	From, To int64
	// Records counts the records verified.
	Records int64
	// AnchorSeq is the signed checkpoint verification started from
	// (0 with Genesis: the chain's first record).
	AnchorSeq int64
	Genesis   bool
	// Checkpoints counts the signed checkpoints the chain matched or not
	// (signature verified).
	Checkpoints int
	// Latest is the newest checkpoint whose signature verified (nil:
	// none).
	Latest *Checkpoint
	// Unsigned counts the verified records after Latest: the hash chain
	// protects them, no signature yet.
	Unsigned int64
	// Unsealed counts the records the sealer has not linked yet.
	Unsealed int64
	// Legacy counts the records written before the chain existed.
	Legacy int64
	// Problems, ordered by Seq; the first is the first bad record.
	Problems []Problem
	// More reports that MaxProblems were found and verification stopped.
	More bool
}

// OK reports that nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// VerifyOptions select what Verify checks.
type VerifyOptions struct {
	// KEK opens the recorded checkpoint keys (required).
	KEK *secret.KEK
	// From and To bound the sequence numbers to verify (0: the log's
	// start, its end). Verification starts at the newest checkpoint
	// before From and goes on to the first checkpoint at or after To,
	// so that every record asked for is covered by a signature when one
	// exists.
	From, To int64
	// Retention is the configured audit retention (0: none): a log that
	// starts after the start the newest checkpoint states is explained
	// by retention only when its anchor is older than that.
	Retention time.Duration
	Now       func() time.Time
	// MaxProblems stops verification after this many (default 100).
	MaxProblems int
}

// Log is what Verify reads.
type Log interface {
	store.AuditLog
	EventsAfter(ctx context.Context, seq int64, limit int) ([]*store.StoredEvent, error)
}

var errEnough = errors.New("chain: enough problems")

// minSegment is the fewest sequence numbers verified as one piece;
// segmentSize, when set (tests), is the size of every piece.
var (
	minSegment  int64 = 10000
	segmentSize int64
)

// cpState is a stored checkpoint and what its verification found.
type cpState struct {
	row *store.AuditCheckpoint
	cp  *Checkpoint // nil: did not verify
}

// Verify checks the audit log: it recomputes the hash chain from a signed
// anchor (or the chain's first record), compares it with every record's
// stored hash and with every signed checkpoint on the way, and reports,
// in sequence order, every record changed, removed or inserted, every
// checkpoint that does not verify, and a tail truncated past the newest
// checkpoint. It reads the records in a stream; memory does not grow
// with the log.
func Verify(ctx context.Context, st Log, o VerifyOptions) (*Report, error) {
	if o.KEK == nil {
		return nil, errors.New("chain: VerifyOptions.KEK is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxProblems <= 0 {
		o.MaxProblems = 100
	}
	v := &verifier{st: st, o: o, rep: &Report{}}
	err := v.run(ctx)
	if err == nil && !v.rep.OK() {
		// Retention may have deleted the oldest segment while we read:
		// then the log's start moved, and what was found there is not a
		// finding. Look again, once.
		if first, ferr := v.firstRecord(ctx); ferr == nil && first != v.first {
			v = &verifier{st: st, o: o, rep: &Report{}}
			err = v.run(ctx)
		}
	}
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	v.rep.More = errors.Is(err, errEnough)
	sort.SliceStable(v.rep.Problems, func(i, j int) bool { return v.rep.Problems[i].Seq < v.rep.Problems[j].Seq })
	return v.rep, nil
}

type verifier struct {
	st  Log
	o   VerifyOptions
	rep *Report

	mu     sync.Mutex // guards rep.Problems (segments are verified in parallel)
	cps    []cpState  // ascending
	legacy int64
	first  int64               // the log's first sequence number when verification began
	mac    func([]byte) []byte // the record MAC, for records read with their body
}

func (v *verifier) problem(seq int64, kind, format string, args ...any) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rep.Problems = append(v.rep.Problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	if len(v.rep.Problems) >= v.o.MaxProblems {
		return errEnough
	}
	return nil
}

func (v *verifier) run(ctx context.Context) error {
	keys, untrusted, err := TrustedKeys(ctx, v.st, v.o.KEK)
	if err != nil {
		return err
	}
	for _, kid := range untrusted {
		if err := v.problem(0, UntrustedKey, "the checkpoint key %s was not recorded by Ward (it does not open under the key-encryption key)", kid); err != nil {
			return err
		}
	}
	if err := v.loadCheckpoints(ctx, keys); err != nil {
		return err
	}
	var latest *Checkpoint
	for _, c := range v.cps {
		if c.cp != nil {
			latest = c.cp
		}
	}
	v.rep.Latest = latest

	sealedHead := int64(0)
	if h, err := v.st.AuditChainHead(ctx); err == nil {
		sealedHead = h.Seq
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, v.legacy, err = v.st.AuditChainStart(ctx); err != nil {
		return err
	}
	firstSeq, err := v.firstRecord(ctx)
	if err != nil {
		return err
	}
	v.first = firstSeq
	if firstSeq == 0 {
		// An empty log: everything a checkpoint covered was removed.
		if latest != nil && latest.Seq > latest.Start {
			return v.problem(latest.Start+1, Truncated, "the log is empty, but the checkpoint signed at seq %d (%s) covers seq %d to %d",
				latest.Seq, stamp(latest.Time()), latest.Start+1, latest.Seq)
		}
		return nil
	}
	logStart := firstSeq - 1

	// Where the chain starts: the anchor at the log's start (retention
	// left it), or the chain's first record.
	startSeq, prev := logStart, Genesis
	resync := false
	anchored := false
	if c := v.checkpointAt(logStart); c != nil {
		prev, anchored = c.row.Hash, true
	}
	if v.o.From == 0 && latest != nil {
		// The newest checkpoint says where the log started when it was
		// signed; a later start is retention only if the anchor there is
		// older than the retention.
		switch {
		case logStart > latest.Start && !v.retentionCut(logStart):
			if err := v.problem(latest.Start+1, Removed, "%s missing: the checkpoint signed at seq %d (%s) says the log started after seq %d, and retention does not explain it",
				records(latest.Start+1, logStart), latest.Seq, stamp(latest.Time()), latest.Start); err != nil {
				return err
			}
			resync = !anchored // the first record was linked on a hash that is gone
		case logStart < latest.Start:
			if err := v.problem(firstSeq, Inserted, "%s before the start of the log that the checkpoint signed at seq %d (%s) states (after seq %d)",
				records(firstSeq, latest.Start), latest.Seq, stamp(latest.Time()), latest.Start); err != nil {
				return err
			}
		}
	}
	if v.o.From > 0 && v.o.From-1 > logStart {
		for i := len(v.cps) - 1; i >= 0; i-- {
			c := v.cps[i]
			if c.cp != nil && c.row.Seq <= v.o.From-1 && c.row.Seq >= logStart {
				startSeq, prev, anchored, resync = c.row.Seq, c.cp.ChainHash(), true, false
				break
			}
		}
	}
	v.rep.Genesis = !anchored
	if anchored {
		v.rep.AnchorSeq = startSeq
	}

	through := sealedHead
	if v.o.To > 0 && v.o.To < sealedHead {
		through = sealedHead
		for _, c := range v.cps {
			if c.cp != nil && c.row.Seq >= v.o.To && c.row.Seq <= sealedHead {
				through = c.row.Seq
				break
			}
		}
	}

	// Up to the newest checkpoint the signatures vouch for every link
	// (the sealer verified each record MAC before signing); after it
	// only the hash chain does, which anyone can compute: there every
	// record's MAC is checked again.
	signed := startSeq
	if latest != nil {
		signed = min(max(latest.Seq, startSeq), through)
	}
	segs := v.segments(startSeq, prev, resync, signed)
	if through > signed {
		key, err := RecordKey(ctx, v.st, v.o.KEK)
		if err != nil {
			return err
		}
		v.mac = RecordMAC(key)
		tailPrev, tailResync := prev, resync
		if len(segs) > 0 {
			// The tail starts at the newest checkpoint: its signed value.
			tailPrev, tailResync = latest.ChainHash(), false
		}
		segs = append(segs, &stream{from: signed, to: through, prev: [HashSize]byte(tailPrev), resync: tailResync, body: true})
	}
	if err := v.verifySegments(ctx, segs); err != nil {
		return err
	}
	s := &stream{lastSeq: startSeq, expected: startSeq + 1}
	if len(segs) > 0 {
		s = segs[len(segs)-1]
	}
	for _, seg := range segs {
		v.rep.Records += seg.records
		v.rep.Checkpoints += seg.checkpoints
		v.rep.Legacy += seg.legacy
	}
	v.rep.From, v.rep.To = startSeq+1, s.lastSeq
	if s.lastSeq == startSeq {
		v.rep.From, v.rep.To = 0, 0
	}

	if v.o.To == 0 || v.o.To >= sealedHead {
		// Records removed from the end: a signed checkpoint or the links
		// still name them.
		for i := len(v.cps) - 1; i >= 0; i-- {
			if c := v.cps[i]; c.cp != nil && c.row.Seq > s.lastSeq {
				if err := v.problem(s.lastSeq+1, Truncated, "the records after seq %d are missing: the checkpoint signed at seq %d (%s) covers them",
					s.lastSeq, c.row.Seq, stamp(c.cp.Time())); err != nil {
					return err
				}
				break
			}
		}
		if sealedHead > s.lastSeq && s.expected <= sealedHead {
			if err := v.problem(s.expected, Removed, "%s missing: the chain links them", records(s.expected, sealedHead)); err != nil {
				return err
			}
		}
	}
	if latest != nil && s.lastSeq > latest.Seq {
		v.rep.Unsigned = s.lastSeq - latest.Seq
	}
	n, err := v.st.CountEventsAfter(ctx, max(sealedHead, s.lastSeq))
	if err != nil {
		return err
	}
	v.rep.Unsealed = n
	return nil
}

// segments cuts (from, to] at verified checkpoints into pieces that can
// be verified at once, each from its checkpoint's signed chain value.
func (v *verifier) segments(from int64, prev []byte, resync bool, to int64) []*stream {
	if to <= from {
		return nil
	}
	workers := int64(runtime.GOMAXPROCS(0))
	target := max((to-from)/(4*workers), minSegment)
	if segmentSize > 0 {
		target = segmentSize
	}
	var segs []*stream
	cur := &stream{from: from, prev: [HashSize]byte(prev), resync: resync}
	for _, c := range v.cps {
		if c.cp == nil || c.row.Seq <= cur.from || c.row.Seq >= to {
			continue
		}
		if c.row.Seq-cur.from >= target {
			cur.to = c.row.Seq
			segs = append(segs, cur)
			cur = &stream{from: c.row.Seq, prev: [HashSize]byte(c.cp.ChainHash())}
		}
	}
	cur.to = to
	return append(segs, cur)
}

// verifySegments verifies the segments, on every core.
func (v *verifier) verifySegments(ctx context.Context, segs []*stream) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *stream)
	errs := make(chan error, len(segs))
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(segs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seg := range work {
				if err := v.verifySegment(ctx, seg); err != nil {
					errs <- err
					cancel()
				}
			}
		}()
	}
	for _, seg := range segs {
		select {
		case work <- seg:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	var first error
	for err := range errs {
		if first == nil || errors.Is(first, context.Canceled) || errors.Is(first, errEnough) && !errors.Is(err, errEnough) {
			first = err
		}
	}
	if first != nil && errors.Is(first, context.Canceled) && ctx.Err() != nil {
		return errEnough
	}
	return first
}

// verifySegment verifies the records in (seg.from, seg.to].
func (v *verifier) verifySegment(ctx context.Context, seg *stream) error {
	seg.ctx, seg.v = ctx, v
	seg.expected, seg.lastSeq, seg.segStart = seg.from+1, seg.from, seg.from+1
	seg.cpIdx = sort.Search(len(v.cps), func(i int) bool { return v.cps[i].row.Seq > seg.from })
	if err := v.st.ScanEventRecords(ctx, store.EventScan{After: seg.from, Through: seg.to, Body: seg.body}, seg.record); err != nil {
		return err
	}
	if c := v.checkpointAt(seg.to); c != nil && c.cp != nil && seg.lastSeq < seg.to {
		// A segment that ends at a checkpoint ends with a record.
		return v.problem(seg.expected, Removed, "%s missing (the record before is seq %d)", records(seg.expected, seg.to), seg.lastSeq)
	}
	return nil
}

// loadCheckpoints reads every checkpoint and verifies the signatures,
// on every core.
func (v *verifier) loadCheckpoints(ctx context.Context, keys Keys) error {
	rows, err := v.st.AuditCheckpoints(ctx, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("chain: list checkpoints: %w", err)
	}
	v.cps = make([]cpState, len(rows))
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(rows); i += workers {
				v.cps[i].row = rows[i]
				v.cps[i].cp, errs[i] = VerifyCheckpoint(rows[i], keys)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			if err := v.problem(rows[i].Seq, BadCheckpoint, "the checkpoint does not verify: %v", unwrapCheckpoint(err)); err != nil {
				return err
			}
		}
	}
	return nil
}

func unwrapCheckpoint(err error) string {
	msg := err.Error()
	prefix := ErrCheckpoint.Error() + ": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}

// checkpointAt returns the stored checkpoint at seq (nil: none).
func (v *verifier) checkpointAt(seq int64) *cpState {
	i := sort.Search(len(v.cps), func(i int) bool { return v.cps[i].row.Seq >= seq })
	if i < len(v.cps) && v.cps[i].row.Seq == seq {
		return &v.cps[i]
	}
	return nil
}

// retentionCut reports whether the log may start after seq because
// retention deleted what came before: a verified checkpoint there (the
// anchor) older than the retention.
func (v *verifier) retentionCut(seq int64) bool {
	c := v.checkpointAt(seq)
	return c != nil && c.cp != nil && v.o.Retention > 0 && c.cp.Time().Before(v.o.Now().Add(-v.o.Retention))
}

func (v *verifier) firstRecord(ctx context.Context) (int64, error) {
	first := int64(0)
	err := v.st.ScanEventRecords(ctx, store.EventScan{}, func(r *store.EventRecord) error {
		first = r.Seq
		return errStopScan
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return 0, err
	}
	return first, nil
}

// stream verifies the records of one segment, (from, to], in sequence
// order, from the chain value prev.
type stream struct {
	from, to int64
	body     bool // read records with their body and check record MACs
	ctx      context.Context
	v        *verifier
	prev     [HashSize]byte
	expected int64 // the next sequence number
	lastSeq  int64
	// resync: the chain value before the next record is not known (a
	// record before it is missing); its stored hash is taken as it is.
	resync   bool
	segStart int64 // first record after the last checkpoint passed
	cpIdx    int
	runTo    int64 // the end of the last run of skipped numbers passed

	records, legacy int64
	checkpoints     int
}

func (s *stream) record(r *store.EventRecord) error {
	v := s.v
	s.records++
	if r.Seq == s.lastSeq {
		return v.problem(r.Seq, Inserted, "held by more than one record")
	}
	if r.Seq > s.expected && r.Seq-1 > s.runTo && !s.skipped(r.Seq) {
		if err := v.problem(s.expected, Removed, "%s missing (the record before is seq %d)", records(s.expected, r.Seq-1), s.lastSeq); err != nil {
			return err
		}
		s.resync = true
	}
	// Checkpoints inside a gap were reported with it.
	for s.cpIdx < len(v.cps) && v.cps[s.cpIdx].row.Seq < r.Seq {
		s.cpIdx++
	}
	s.lastSeq, s.expected = r.Seq, r.Seq+1
	if r.Hash == nil {
		s.resync = true
		return v.problem(r.Seq, Inserted, "not in the chain (no link): it was inserted, or its link removed")
	}
	// The hash first: a record or link that does not match it says
	// nothing trustworthy about its origin.
	var h [HashSize]byte
	linkInto(&h, s.prev[:], r.Origin, &r.Leaf)
	matches := bytes.Equal(h[:], r.Hash)
	if !matches && !s.resync {
		if err := v.problem(r.Seq, Changed, "does not match its hash: the record or its link was changed (or the record before it was changed and its hash recomputed)"); err != nil {
			return err
		}
	}
	if matches {
		s.prev = h
	} else {
		copy(s.prev[:], r.Hash)
	}
	resynced := s.resync
	s.resync = !matches && len(r.Hash) != HashSize
	if matches || resynced {
		if err := s.origin(r); err != nil {
			return err
		}
	}
	if s.cpIdx < len(v.cps) && v.cps[s.cpIdx].row.Seq == r.Seq {
		c := v.cps[s.cpIdx]
		s.cpIdx++
		if c.cp != nil {
			s.checkpoints++
			if !bytes.Equal(s.prev[:], c.cp.ChainHash()) {
				if err := v.problem(s.segStart, Rewritten, "seq %d to %d do not match the checkpoint signed at seq %d (%s): records among them were changed and their hashes recomputed",
					s.segStart, r.Seq, r.Seq, stamp(c.cp.Time())); err != nil {
					return err
				}
			}
		}
		s.segStart = r.Seq + 1
	}
	return nil
}

// origin checks the link's origin: what the sealer found, and after the
// newest checkpoint (records read with their body) what the record MAC
// says now.
func (s *stream) origin(r *store.EventRecord) error {
	v := s.v
	if r.Body != nil {
		switch {
		case r.Origin == OriginWard && r.MAC == nil:
			return v.problem(r.Seq, Inserted, "has no record MAC, but its link says Ward wrote it: inserted with a link of its own")
		case r.Origin == OriginWard && !hmac.Equal(v.mac(r.Body), r.MAC):
			return v.problem(r.Seq, Changed, "does not match its record MAC: the record was changed (and its hash recomputed)")
		case r.Origin != OriginWard && r.MAC != nil && hmac.Equal(v.mac(r.Body), r.MAC):
			return v.problem(r.Seq, Changed, "its link's origin (%d) was changed", r.Origin)
		}
	}
	switch r.Origin {
	case OriginWard:
	case OriginUnknown:
		return v.problem(r.Seq, Inserted, "not written by Ward as it is: it had no valid record MAC when it was sealed (inserted, or changed before it was sealed)")
	case OriginLegacy:
		s.legacy++
		if r.Seq > v.legacy {
			return v.problem(r.Seq, Inserted, "sealed as written before the tamper-evident log, which ended at seq %d", v.legacy)
		}
	default:
		return v.problem(r.Seq, Changed, "its chain link was changed (origin %d)", r.Origin)
	}
	return nil
}

// skipped reports whether the numbers before seq are a run an
// audit.sequence_skipped record (Ward's, the record just verified)
// stands for, and remembers the run's end (a record inside the run has no
// link and is reported as inserted). Looked up only at a gap, which a
// log without one never has.
func (s *stream) skipped(seq int64) bool {
	evs, err := s.v.st.EventsAfter(s.ctx, s.lastSeq-1, 1)
	if err != nil || len(evs) != 1 || evs[0].Seq != s.lastSeq || evs[0].Type != model.EventAuditSequenceSkipped {
		return false
	}
	to, err := strconv.ParseInt(evs[0].Data[DataSkippedThrough], 10, 64)
	if err != nil || to < seq-1 {
		return false
	}
	s.runTo = to
	return true
}

// records names a range of sequence numbers with its verb.
func records(from, to int64) string {
	if from == to {
		return "seq " + strconv.FormatInt(from, 10) + " is"
	}
	return "seq " + strconv.FormatInt(from, 10) + " to " + strconv.FormatInt(to, 10) + " are"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
