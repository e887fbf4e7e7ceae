// Package online runs the token-theft detectors (internal/risk/detect)
// over Ward's activity as it is recorded, and records what they find as
// risk.detected events, which the risk service turns into levels and a
// response.
//
// It follows the audit log (the events table) with a cursor of its own,
// the way the SIEM exporters do (internal/audit/export), rather than a
// durable consumer of the event stream:
//
//   - the detectors are stateful (a session's origin, its recent network
//     contexts, the tokens issued, failures per source), so one instance
//     must see every event, in commit order: the cursor's lease gives the
//     detectors to one instance at a time, where a shared stream consumer
//     would deal the events out among instances;
//   - reading the table in batches of hundreds keeps up with thousands of
//     events a second where a stream consumer holds one in flight;
//   - the cursor moves only after a batch's findings are recorded, in the
//     same database as the events, so a kill -9 repeats at most the batch
//     in flight (a repeated finding has the same id and is counted once);
//   - it works with every bus driver, including bus.driver local.
//
// When an instance takes the cursor (at start, or over from another
// instance) it first replays the recent past (Options.Warm) into the
// engine without recording anything, so that the state the detectors rest
// on survives a restart or a takeover.
//
// Successful sign-ins and SSO sign-ins were judged before their code was
// issued (the risk service's AssessSignIn, with the same detectors): they
// are learned here, not judged again (detect.Engine.ObserveJudged).
package online

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/audit/export"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/risk/detect"
	"github.com/ward-idp/ward/internal/store"
)

// ActorDetectors is the actor of the online detectors' events.
const ActorDetectors = "system:risk-detect"

// CursorName is the name of the detectors' cursor over the audit log (a
// row of export_cursors, beside the SIEM sinks').
const CursorName = "risk-detect"

// Options configure the online detectors.
type Options struct {
	// Store is read (events, the cursor) and holds the cursor's lease.
	Store export.Source
	// Engine runs the detectors (required).
	Engine *detect.Engine
	// Geo places addresses before the detectors see them (nil: only what
	// the events carry).
	Geo *geo.DB
	// Bus records the findings as risk.detected events (required).
	Bus bus.Bus
	// Owner names this instance in the cursor's lease (required).
	Owner string
	Log   *slog.Logger
	Now   func() time.Time
	// PollInterval is how often events stored by other instances are
	// looked for (default 200ms); this instance's own wake it at once.
	PollInterval time.Duration
	// GapWait is how long a sequence number missing on PostgreSQL holds
	// back the events after it (default 500ms).
	GapWait time.Duration
	// LeaseTTL is the cursor's lease (default 15s).
	LeaseTTL time.Duration
	// Warm is how far back the state is rebuilt when this instance takes
	// the cursor (default 1h), and MaxWarm the most events replayed for it
	// (default 200,000).
	Warm    time.Duration
	MaxWarm int
}

// Stats are the online detectors' counters.
type Stats struct {
	Observed int64 // activities given to the detectors
	Findings int64 // findings recorded (again after a retry counts again)
	Warmed   int64 // events replayed into the state on taking the cursor
	Failures int64 // failed attempts to record findings
	Refused  int64 // events the detectors failed on (skipped, logged)
}

// Detector is the running online detectors.
type Detector struct {
	exp  *export.Exporter
	sink *sink
}

// Start starts following the audit log. Close stops it.
func Start(ctx context.Context, o Options) (*Detector, error) {
	if o.Store == nil || o.Engine == nil || o.Bus == nil || o.Owner == "" {
		return nil, errors.New("online: Store, Engine, Bus and Owner are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.GapWait <= 0 {
		o.GapWait = 500 * time.Millisecond
	}
	if o.Warm <= 0 {
		o.Warm = time.Hour
	}
	if o.MaxWarm <= 0 {
		o.MaxWarm = 200_000
	}
	s := &sink{o: o, events: bus.NewEmitter(o.Bus, o.Now), log: o.Log.With("component", "risk-detect")}
	exp, err := export.Start(ctx, export.Options{Store: o.Store, Owner: o.Owner, Log: o.Log, Now: o.Now,
		PollInterval: o.PollInterval, GapWait: o.GapWait, LeaseTTL: o.LeaseTTL},
		[]export.SinkConfig{{Name: CursorName, Sink: s, Raw: true, Start: export.StartNow,
			Batch:      export.Batching{MaxEvents: 500},
			MinBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second}})
	if err != nil {
		return nil, err
	}
	return &Detector{exp: exp, sink: s}, nil
}

// Wake says events were stored (the local bus calls it); it never blocks.
func (d *Detector) Wake() { d.exp.Wake() }

// Close stops following the log and releases the cursor.
func (d *Detector) Close() error { return d.exp.Close() }

// Holding reports whether this instance runs the detectors now.
func (d *Detector) Holding() bool { return d.exp.Stats(CursorName).Holding }

// Stats returns the counters.
func (d *Detector) Stats() Stats {
	return Stats{Observed: d.sink.observed.Load(), Findings: d.sink.findings.Load(),
		Warmed: d.sink.warmed.Load(), Failures: d.sink.failures.Load(), Refused: d.sink.refused.Load()}
}

// sink is the exporter's view of the detectors: each batch of events is
// observed, and its findings are recorded before the cursor moves.
type sink struct {
	o      Options
	events *bus.Emitter
	log    *slog.Logger

	// mu serialises Deliver and Warm (the exporter calls them from one
	// goroutine; the lock documents and enforces it).
	mu sync.Mutex
	// unsent are findings observed but not yet recorded: a batch that
	// failed to record them is delivered again, and the engine ignores
	// the activities it has seen, so they are kept until recorded.
	unsent []*model.Event

	observed, findings, warmed, failures, refused atomic.Int64
}

// Deliver observes items and records their findings.
func (s *sink) Deliver(ctx context.Context, items []export.Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range items {
		if it.Event == nil {
			continue
		}
		a, judged, ok := s.activity(&it.Event.Event)
		if !ok {
			continue
		}
		s.observed.Add(1)
		fs, err := s.observe(a, judged)
		if err != nil {
			s.refused.Add(1)
			s.log.ErrorContext(ctx, "the detectors failed on an event; skipped", "event_id", it.ID, "err", err)
			continue
		}
		for _, f := range fs {
			s.unsent = append(s.unsent, findingEvent(f))
		}
	}
	return s.flush(ctx)
}

// observe runs the engine over a. A detector that panics (a bug an
// event's content triggers) costs that event's findings, not the
// consumer: the event is skipped, logged and counted.
func (s *sink) observe(a activity.Activity, judged bool) (fs []detect.Finding, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("detector panic: %v", r)
		}
	}()
	if judged {
		return s.o.Engine.ObserveJudged(a), nil
	}
	return s.o.Engine.Observe(a), nil
}

// flush records the unsent findings, in order; an error leaves the rest
// for the next attempt.
func (s *sink) flush(ctx context.Context) error {
	for len(s.unsent) > 0 {
		e := s.unsent[0]
		if err := s.events.Emit(ctx, e); err != nil {
			s.failures.Add(1)
			return err
		}
		s.findings.Add(1)
		s.log.InfoContext(ctx, "detection", "type", e.Reason, "detection_id", e.Data[model.DataDetectionID],
			"severity", e.Data[model.DataDetectionSeverity], "user_id", e.UserID, "session_id", e.SessionID)
		s.unsent[0] = nil
		s.unsent = s.unsent[1:]
	}
	s.unsent = nil
	return nil
}

// Warm replays the events of the last Options.Warm up to cursor into the
// engine, recording nothing: the state a restart or a takeover would
// otherwise lose.
func (s *sink) Warm(ctx context.Context, cursor int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsent = nil
	if cursor <= 0 {
		return nil
	}
	since := s.o.Now().Add(-s.o.Warm)
	var evs []*store.StoredEvent
	before := cursor + 1
	for len(evs) < s.o.MaxWarm {
		page, err := s.o.Store.ListEvents(ctx, store.EventFilter{Since: since, BeforeSeq: before, Limit: 1000})
		if err != nil {
			return err
		}
		evs = append(evs, page...)
		if len(page) < 1000 {
			break
		}
		before = page[len(page)-1].Seq
	}
	if len(evs) > s.o.MaxWarm {
		evs = evs[:s.o.MaxWarm]
	}
	slices.Reverse(evs) // oldest first
	for _, ev := range evs {
		a, judged, ok := s.activity(&ev.Event)
		if !ok {
			continue
		}
		if _, err := s.observe(a, judged); err != nil {
			s.refused.Add(1)
			continue
		}
		s.warmed.Add(1)
	}
	s.log.InfoContext(ctx, "detectors warmed up", "events", len(evs), "after_seq", cursor)
	return nil
}

func (s *sink) Close() error { return nil }

// activity is the activity an event records, placed on the map, and
// whether it is a sign-in already judged before its code was issued: a
// successful interactive sign-in, or an SSO sign-in whatever its outcome
// (the judgement comes before Conditional Access decides).
func (s *sink) activity(e *model.Event) (activity.Activity, bool, bool) {
	a, ok := activity.FromEvent(e)
	if !ok {
		return a, false, false
	}
	if s.o.Geo != nil {
		s.o.Geo.Enrich(&a)
	}
	judged := a.Kind == activity.KindSSOSignIn || (a.Kind == activity.KindSignIn && a.Result == activity.ResultSuccess)
	return a, judged, true
}

// findingEvent is the risk.detected event of an online finding. Its time
// is when it is recorded (the detection's time; the activity's own is in
// the events its evidence names).
func findingEvent(f detect.Finding) *model.Event {
	subject := activity.Activity{UserID: f.UserID, SessionID: f.SessionID, ClientID: f.ClientID,
		DeviceID: f.DeviceID, IP: f.IP}
	return assess.Event(subject, f.Detection, model.DetectionSourceOnline, ActorDetectors)
}
