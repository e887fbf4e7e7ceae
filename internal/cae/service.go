// Package cae is Ward's Continuous Access Evaluation transmitter: it turns
// critical domain events (a user disabled, a password changed, a session
// or device revoked, a risk level raised...) into Security Event Tokens
// (RFC 8417) of the OpenID Shared Signals Framework 1.0 — CAEP 1.0 and
// RISC events — and delivers them to the receivers' event streams.
//
// The service subscribes to the bus. For each domain event that matters
// it signs one SET per matching stream (one event per SET, "txn" = the
// domain event id, "jti" derived from it and the stream). The SETs of
// push streams this instance serves and that have nothing queued or in
// flight are pushed at once (direct.go); Publish waits for their answers
// at most Options.DirectWait. Every SET not acknowledged by then, and
// those of all other streams, is written to a durable outbox with one
// store call, together with the record that the event was handled,
// before Publish returns; a crash before that write leaves the event to
// Recover and CatchUp, which handle it again (same jti). Delivery reads
// the outbox in sequence order per stream:
//
//   - push (RFC 8935): a worker per instance POSTs the oldest queued SET
//     of each enabled push stream, one in flight per stream, retries
//     network errors, 5xx and 429 with exponential back-off and jitter,
//     and records a 400 as a permanent refusal. Instances sharing a
//     database take leases on streams, so one stream is pushed by one
//     instance at a time, each at most its fair share (share.go). A new
//     row wakes the worker in-process at once, or the holding instance
//     over NATS (Options.Notifier); a rescan every second is the fallback.
//   - poll (RFC 8936): Poll hands out queued SETs, deletes acknowledged
//     ones, returns unacknowledged ones again after a hold time, and long
//     polls. A long poll waiting on this instance is handed the new SETs
//     of its stream from memory, inserted as already handed out when the
//     store allows it (handoff.go); others are woken in-process, those of
//     other instances over NATS (Options.PollNotifier), and one rescan a
//     second per instance is the fallback.
//
// Delivery is at least once; "jti" lets receivers drop duplicates. The
// stream management operations (SSF 1.0 §8) are methods of Service;
// package internal/ssf serves them over HTTP.
package cae

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Signer signs SET claims with the current signing key
// (tokens.KeyManager.MintSET).
type Signer interface {
	MintSET(claims any) (string, error)
}

// Defaults for Options fields left zero.
const (
	DefaultMaxStreamsPerClient     = 10
	DefaultLongPollTimeout         = 30 * time.Second
	DefaultPollHold                = 30 * time.Second
	DefaultMinBackoff              = time.Second
	DefaultMaxBackoff              = 5 * time.Minute
	DefaultPushTimeout             = 10 * time.Second
	DefaultDirectWait              = 250 * time.Millisecond
	DefaultRescanInterval          = time.Second
	DefaultLeaseDuration           = 15 * time.Second
	DefaultPushConcurrency         = 64
	DefaultMinVerificationInterval = 5 * time.Second
	DefaultRefusedRetention        = 7 * 24 * time.Hour
	// HandledRetention is how long an event is remembered as handled:
	// longer than the bus keeps events (bus.nats.stream_max_age, 7 days
	// by default), which bounds how late a catch-up can see one.
	HandledRetention = 8 * 24 * time.Hour
)

// Options configures a Service. Issuer, Store, Keys and KEK are required.
type Options struct {
	// Issuer is the "iss" of every SET (Ward's issuer URL).
	Issuer string
	Store  store.Store
	Keys   Signer
	// KEK seals the push authorization headers receivers supply.
	KEK *secret.KEK
	Now func() time.Time
	Log *slog.Logger

	// InstanceID names this instance in push leases (random if empty).
	InstanceID string
	// HTTPClient sends push requests (default: a client with its own
	// transport that follows no redirects).
	HTTPClient *http.Client
	// MaxStreamsPerClient bounds the streams one receiver may create; one
	// more is refused with 409.
	MaxStreamsPerClient int
	// LongPollTimeout is how long a poll request without
	// returnImmediately waits for an event.
	LongPollTimeout time.Duration
	// PollHold is how long a polled SET waits for its acknowledgement
	// before a poll returns it again.
	PollHold time.Duration
	// MinBackoff and MaxBackoff bound the push retry delay (exponential,
	// with jitter).
	MinBackoff, MaxBackoff time.Duration
	// PushTimeout bounds one push request.
	PushTimeout time.Duration
	// DirectWait is how long HandleEvent waits for the receivers of the
	// SETs it pushes directly (direct.go) before it writes those not yet
	// acknowledged to the outbox; the pushes go on. Negative: every SET
	// is written to the outbox first and pushed by the worker.
	DirectWait time.Duration
	// RescanInterval is how often the push worker renews its leases and
	// looks for SETs queued by other instances; long polls check the
	// database as often.
	RescanInterval time.Duration
	// LeaseDuration is how long a push lease lasts without renewal (an
	// instance that dies holds its streams this long).
	LeaseDuration time.Duration
	// PushConcurrency bounds the streams pushed at the same time.
	PushConcurrency int
	// MinVerificationInterval is the min_verification_interval of
	// streams: verification requests closer together get 429.
	MinVerificationInterval time.Duration
	// RefusedRetention is how long SETs a receiver refused are kept.
	RefusedRetention time.Duration
	// PushAllowedNetworks are the non-public networks push endpoints may
	// be in (loopback and private ranges are refused otherwise; see
	// netguard.go). Only for the default HTTPClient.
	PushAllowedNetworks []netip.Prefix
	// Notifier wakes the other instances sharing the database: the one
	// holding a push stream this instance queued SETs for, and all of
	// them when one joins or leaves (see share.go). Nil: they find new
	// SETs and changes by their rescan.
	Notifier Notifier
	// PollNotifier wakes the long polls other instances sharing the
	// database hold on poll streams this instance queued SETs for
	// (handoff.go). Nil: they find the SETs by their rescan.
	PollNotifier Notifier
	// UserEmailAlias names users in SETs as RFC 9493 aliases of their
	// iss_sub and their email address (ssf.user_email_alias), for
	// receivers that know people by email, another Ward among them. Off,
	// users are iss_sub only: an email is personal data every receiver
	// would get.
	UserEmailAlias bool
}

// Service is the SSF transmitter. Create and connect it with the
// package's Start (or, in tests, with New, subscribing HandleEvent to a
// bus and calling the Start method to deliver by push), and Close it when
// done.
type Service struct {
	o       Options
	events  *bus.Emitter // records transmitter-side changes (nil without a bus)
	issuer  string
	issJSON []byte

	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex
	// dirtyVersion forces a reload after a local change (a stream
	// created, updated or deleted here).
	dirtyVersion atomic.Bool
	// versionRead shares the version reads of pushes and polls that
	// check a stream's current status (currentStream).
	versionRead sharedRead

	pusher  *pusher
	waiters waiters
	// handOffs are the long polls waiting with nothing to return, to
	// which an enqueue hands its SETs (handoff.go).
	handOffs      handOffs
	unlistenPolls func()

	vmu      sync.Mutex
	verified map[string]time.Time

	closing    chan struct{}
	pollOnce   sync.Once
	closeOnce  sync.Once
	listenOnce sync.Once

	pollCh      chan *pollCall
	batcherOnce sync.Once
	rescanOnce  sync.Once
	batcherStop chan struct{}

	stats Stats
	guard netGuard

	// beforeWrite (tests) runs between the direct pushes of an event and
	// the write of the rest; an error stops the handler there, like a
	// process killed in between.
	beforeWrite func() error

	// stops ends what Start connected (bus subscription, durable
	// consumers), last first, before Close stops the push worker.
	stops []func()
}

// Stats counts deliveries since the service started.
type Stats struct {
	Enqueued  atomic.Int64 // SETs written to the outbox
	Delivered atomic.Int64 // pushed and answered 2xx
	Direct    atomic.Int64 // of those, pushed before (and never) written to the outbox
	Refused   atomic.Int64 // pushed and answered 400 (permanent)
	Retried   atomic.Int64 // push attempts that failed and will be retried
	Polled    atomic.Int64 // SETs handed out by polls
	HandedOff atomic.Int64 // of those, handed to a waiting long poll as they were queued
	Acked     atomic.Int64 // SETs acknowledged by polls
	CaughtUp  atomic.Int64 // events whose SETs CatchUp queued
}

// New returns a Service. It starts nothing; see Start.
func New(o Options) (*Service, error) {
	var errs []error
	if o.Issuer == "" {
		errs = append(errs, errors.New("Issuer is required"))
	}
	if o.Store == nil {
		errs = append(errs, errors.New("Store is required"))
	}
	if o.Keys == nil {
		errs = append(errs, errors.New("Keys is required"))
	}
	if o.KEK == nil {
		errs = append(errs, errors.New("KEK is required"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("cae: %w", errors.Join(errs...))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("component", "cae")
	if o.InstanceID == "" {
		o.InstanceID = secret.RandomString(12)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.LongPollTimeout, DefaultLongPollTimeout)
	def(&o.PollHold, DefaultPollHold)
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.PushTimeout, DefaultPushTimeout)
	if o.DirectWait == 0 {
		o.DirectWait = DefaultDirectWait
	}
	def(&o.RescanInterval, DefaultRescanInterval)
	def(&o.LeaseDuration, DefaultLeaseDuration)
	def(&o.MinVerificationInterval, DefaultMinVerificationInterval)
	def(&o.RefusedRetention, DefaultRefusedRetention)
	if o.MaxStreamsPerClient <= 0 {
		o.MaxStreamsPerClient = DefaultMaxStreamsPerClient
	}
	if o.PushConcurrency <= 0 {
		o.PushConcurrency = DefaultPushConcurrency
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	iss, _ := json.Marshal(o.Issuer)
	s := &Service{o: o, issuer: o.Issuer, issJSON: iss, verified: map[string]time.Time{}, closing: make(chan struct{}),
		pollCh: make(chan *pollCall), batcherStop: make(chan struct{})}
	s.waiters.m = map[string]chan struct{}{}
	s.guard = netGuard{allowed: o.PushAllowedNetworks}
	s.pusher = newPusher(s)
	return s, nil
}

// Now returns the service's clock reading.
func (s *Service) Now() time.Time { return s.o.Now() }

// Issuer returns the transmitter's issuer.
func (s *Service) Issuer() string { return s.issuer }

// Stats returns the delivery counters.
func (s *Service) Stats() *Stats { return &s.stats }

// Start runs the push worker until Close and listens for the other
// instances' long-poll wake-ups. Calling it twice does nothing.
func (s *Service) Start() {
	s.pusher.start()
	s.listenOnce.Do(s.listenPolls)
}

// Close stops the push worker after the requests in flight have been
// answered and recorded, ends long polls, and gives up this instance's
// push leases so another instance can take over at once.
func (s *Service) Close() error {
	s.StopPolling()
	var err error
	s.closeOnce.Do(func() {
		for i := len(s.stops) - 1; i >= 0; i-- {
			s.stops[i]()
		}
		s.listenOnce.Do(func() {}) // no listening after Close
		if s.unlistenPolls != nil {
			s.unlistenPolls()
		}
		err = s.pusher.stop()
		close(s.batcherStop)
	})
	return err
}

// StopPolling ends the long polls in progress (they answer at once with
// what is queued) and makes new ones return immediately; register it with
// http.Server.RegisterOnShutdown so a graceful shutdown does not wait for
// them. Close does it too.
func (s *Service) StopPolling() {
	s.pollOnce.Do(func() {
		close(s.closing)
		s.waiters.notifyAll()
	})
}

// ---- stream snapshot ----

// stream is a stream as delivery sees it.
type stream struct {
	*model.SSFStream
	wants      map[string]bool
	excluded   []subjectMatcher
	authHeader secret.String
	audJSON    []byte
}

type snapshot struct {
	version int64
	list    []*stream
	byID    map[string]*stream
}

// streams returns the current streams, reloading them when their
// version in the store changed (one indexed read per call).
func (s *Service) streams(ctx context.Context) (*snapshot, error) {
	v, err := s.o.Store.SSFStreamsVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("cae: streams version: %w", err)
	}
	if cur := s.snap.Load(); cur != nil && cur.version == v && !s.dirtyVersion.Load() {
		return cur, nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if cur := s.snap.Load(); cur != nil && cur.version >= v && !s.dirtyVersion.Load() {
		return cur, nil
	}
	s.dirtyVersion.Store(false)
	all, err := s.o.Store.ListSSFStreams(ctx, "")
	if err != nil {
		s.dirtyVersion.Store(true)
		return nil, fmt.Errorf("cae: load streams: %w", err)
	}
	snap := &snapshot{version: v, byID: make(map[string]*stream, len(all))}
	for _, st := range all {
		x, err := s.prepare(st)
		if err != nil {
			// A stream whose header cannot be opened (a different KEK) is
			// skipped rather than stopping every other stream.
			s.o.Log.ErrorContext(ctx, "cae: stream unusable", "stream_id", st.ID, "err", err)
			continue
		}
		snap.list = append(snap.list, x)
		snap.byID[st.ID] = x
	}
	s.snap.Store(snap)
	return snap, nil
}

func (s *Service) prepare(st *model.SSFStream) (*stream, error) {
	x := &stream{SSFStream: st, wants: make(map[string]bool, len(st.EventsDelivered))}
	for _, e := range st.EventsDelivered {
		x.wants[e] = true
	}
	for _, c := range st.Excluded {
		_, m, err := parseSubject(json.RawMessage(c))
		if err == nil {
			x.excluded = append(x.excluded, m)
		}
	}
	if len(st.AuthHeaderEnc) > 0 {
		h, err := s.openHeader(st.ID, st.AuthHeaderEnc)
		if err != nil {
			return nil, err
		}
		x.authHeader = h
	}
	x.audJSON = audJSON(st.Audience)
	return x, nil
}

func audJSON(aud []string) []byte {
	var b []byte
	if len(aud) == 1 {
		b, _ = json.Marshal(aud[0])
	} else {
		b, _ = json.Marshal(aud)
	}
	return b
}

// AuthorizationHeaderAAD is the associated data that binds a stream's
// sealed push authorization header (SSFStream.AuthHeaderEnc) to the
// stream: what a KEK rotation re-seals it with.
func AuthorizationHeaderAAD(streamID string) []byte {
	return []byte("ward/ssf-push-authorization:" + streamID)
}

func (s *Service) sealHeader(streamID, h string) ([]byte, error) {
	ct, err := s.o.KEK.Seal([]byte(h), AuthorizationHeaderAAD(streamID))
	if err != nil {
		return nil, fmt.Errorf("cae: seal authorization header: %w", err)
	}
	return ct, nil
}

func (s *Service) openHeader(streamID string, ct []byte) (secret.String, error) {
	pt, err := s.o.KEK.Open(ct, AuthorizationHeaderAAD(streamID))
	if err != nil {
		return "", fmt.Errorf("cae: open authorization header of stream %s: %w", streamID, err)
	}
	return secret.String(pt), nil
}

// changed records a local change of stream configuration.
func (s *Service) changed() { s.dirtyVersion.Store(true) }

// ---- domain events -> outbox ----

// HandleEvent is the bus consumer: it maps e to SETs, signs one per
// matching stream and queues them all with one store call. An error
// (the outbox cannot be written) fails the publish, like the audit log.
func (s *Service) HandleEvent(ctx context.Context, e *model.Event) error {
	_, err := s.handle(ctx, e, s.templates(ctx, e), false)
	return err
}

// catchUpDelay is how old an event must be before CatchUp looks at it.
const catchUpDelay = 2 * time.Second

// RecoveryWindow is how far before the last recorded event Recover looks
// for events stored without their SETs.
const RecoveryWindow = time.Minute

// Recover queues the SETs of events stored without them by a process that
// stopped between the two (see CatchUp), oldest first. Run before serving,
// it keeps each subject's SETs in order: nothing newer can have been
// queued yet. It looks from RecoveryWindow before the last event recorded
// as handled; it returns how many events it handled.
func (s *Service) Recover(ctx context.Context) (int, error) {
	last, err := s.o.Store.LastSSFHandled(ctx)
	if err != nil || last.IsZero() {
		return 0, err
	}
	done := 0
	for {
		evs, err := s.o.Store.UnhandledSSFEvents(ctx, SourceEventTypes, last.Add(-RecoveryWindow), 500)
		if err != nil {
			return done, fmt.Errorf("cae: recover: %w", err)
		}
		progress := false
		for _, ev := range evs {
			n, err := s.handle(ctx, &ev.Event, s.templates(ctx, &ev.Event), true)
			if err != nil {
				return done, fmt.Errorf("cae: recover event %s: %w", ev.ID, err)
			}
			if n > 0 {
				done++
			}
			// handle records nothing when there is no stream at all;
			// record the event so the next Recover does not look again.
			if handled, _ := s.o.Store.SSFEventHandled(ctx, ev.ID); !handled {
				if _, err := s.o.Store.EnqueueEventSETs(ctx, ev.ID, nil); err != nil {
					return done, fmt.Errorf("cae: recover event %s: %w", ev.ID, err)
				}
			}
			progress = true
		}
		if len(evs) < 500 || !progress {
			break
		}
	}
	if done > 0 {
		s.stats.CaughtUp.Add(int64(done))
		s.o.Log.WarnContext(ctx, "cae: queued the SETs of events stored without them (the previous process stopped in between)", "events", done)
	}
	return done, nil
}

// handle is HandleEvent for the SETs ts of e (templates); late (a
// catch-up) leaves out streams created after the event, which the event
// did not concern when it happened.
func (s *Service) handle(ctx context.Context, e *model.Event, ts []template, late bool) (int, error) {
	if len(ts) == 0 {
		return 0, nil
	}
	snap, err := s.streams(ctx)
	if err != nil {
		return 0, err
	}
	if len(snap.list) == 0 {
		return 0, nil
	}
	txn := e.ID
	if txn == "" {
		txn = secret.RandomString(16)
	}
	var (
		entries  []*store.SETEntry
		payloads [][]byte
	)
	now := s.o.Now()
	for i, t := range ts {
		tail, err := s.claimsTail(now, txn, t)
		if err != nil {
			return 0, err
		}
		var evm subjectMatcher
		evmDone := false
		for _, st := range snap.list {
			if st.Status == model.StreamDisabled || !st.wants[t.typ] || late && st.CreatedAt.After(e.Time) {
				continue
			}
			if len(st.excluded) > 0 {
				if !evmDone {
					evm, evmDone = matcherOf(t.subject), true
				}
				if excludedBy(st.excluded, evm) {
					continue
				}
			}
			jti := eventJTI(txn, i, st.ID)
			entries = append(entries, &store.SETEntry{StreamID: st.ID, JTI: jti, DedupKey: fmt.Sprintf("%s/%d", txn, i),
				SubjectKey: t.subjectKey, EventType: t.typ, CreatedAt: now})
			payloads = append(payloads, claimsJSON(s.issJSON, st.audJSON, jti, tail))
		}
	}
	if len(entries) == 0 && e.ID == "" {
		return 0, nil
	}
	// Push first what can be (direct.go); a catch-up only queues.
	var direct *directBatch
	if !late {
		direct = s.pusher.claimDirect(ctx, snap, entries)
		defer func() {
			direct.abort()
			direct.done(errNotWritten)
		}()
	}
	if err := s.sign(entries, payloads); err != nil {
		return 0, err
	}
	written := 0
	if direct != nil && direct.start() {
		// The SETs of streams not pushed here (another instance's, poll
		// streams, this instance's busy ones) are written now, while the
		// pushes run, so that their holders need not wait for the slowest
		// receiver of this one. Until the final write records the event,
		// they are rows of an event not yet handled: a crash in between
		// handles it again, and what is still queued is not queued twice
		// (DedupKey) while what was delivered goes out again with its jti.
		early, rest := direct.split(entries)
		if len(early) > 0 {
			n, err := s.enqueue(ctx, "", early)
			direct.earlyDone()
			if err != nil {
				return 0, err
			}
			written, entries = n, rest
		}
		entries = direct.collect(entries, s.o.DirectWait)
		if len(entries) == 0 && e.ID == "" {
			return written, nil
		}
	}
	if s.beforeWrite != nil && !late {
		if err := s.beforeWrite(); err != nil {
			return written, err
		}
	}
	n, err := s.enqueue(ctx, e.ID, entries)
	direct.done(err)
	return written + n, err
}

// errNotWritten is the outcome of direct pushes whose handler stopped
// before writing what they did not deliver.
var errNotWritten = errors.New("cae: SETs not written")

// CatchUp is the transmitter's durable bus consumer. HandleEvent runs
// synchronously after the audit persister stored the event, in a
// transaction of its own; a process that dies in between leaves the event
// stored and its SETs never queued. CatchUp, seeing every stored event
// once more through the bus, queues the SETs of an event that
// EnqueueEventSETs did not record. A race with HandleEvent queues nothing
// twice (entries are de-duplicated per stream by event id while queued).
//
// It gives the synchronous path a head start (catchUpDelay): the event is
// stored, and may reach the bus, a moment before HandleEvent has queued
// its SETs in the same process.
//
// An event caught up here after later events of its subject were queued
// reaches receivers out of order; on a single node Recover, which runs
// before the server serves, leaves nothing for CatchUp to find. With
// several instances CatchUp is what handles the events of an instance
// that died and does not come back.
func (s *Service) CatchUp(ctx context.Context, e *model.Event) error {
	if e.ID == "" {
		return nil
	}
	ts := s.templates(ctx, e)
	if len(ts) == 0 {
		return nil
	}
	if wait := catchUpDelay - s.o.Now().Sub(e.Time); wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(wait, catchUpDelay)):
		}
	}
	done, err := s.o.Store.SSFEventHandled(ctx, e.ID)
	if err != nil || done {
		return err
	}
	n, err := s.handle(ctx, e, ts, true)
	if err != nil || n == 0 {
		return err
	}
	s.stats.CaughtUp.Add(1)
	s.o.Log.WarnContext(ctx, "cae: queued the SETs of an event stored without them (an earlier process stopped in between)",
		"event_id", e.ID, "type", string(e.Type))
	return nil
}

func excludedBy(ex []subjectMatcher, ev subjectMatcher) bool {
	for _, x := range ex {
		if x.matches(ev) {
			return true
		}
	}
	return false
}

// enqueue writes entries to the outbox, recording eventID (if any) as
// handled, wakes delivery and returns how many were stored.
func (s *Service) enqueue(ctx context.Context, eventID string, entries []*store.SETEntry) (int, error) {
	var (
		n   int
		err error
	)
	ho := s.startHandOff(entries)
	if eventID != "" {
		n, err = s.o.Store.EnqueueEventSETs(ctx, eventID, entries)
	} else {
		n, err = s.o.Store.EnqueueSETs(ctx, entries)
	}
	s.finishHandOff(ctx, ho, entries, err)
	if err != nil {
		s.o.Log.ErrorContext(ctx, "cae: queueing SETs failed", "sets", len(entries), "err", err)
		return 0, fmt.Errorf("cae: queue SETs: %w", err)
	}
	s.stats.Enqueued.Add(int64(n))
	// Hand the stored entries (in sequence order per stream) to delivery,
	// so the push worker need not read back what was just written.
	byStream := make(map[string][]*store.SETEntry)
	var order []string
	for _, e := range entries {
		if e.Seq == 0 {
			continue // not stored (stream gone or disabled, or a duplicate)
		}
		if _, ok := byStream[e.StreamID]; !ok {
			order = append(order, e.StreamID)
		}
		byStream[e.StreamID] = append(byStream[e.StreamID], e)
	}
	var elsewhere []string
	for _, id := range order {
		s.waiters.notify(id)
		if s.pusher.markDirty(id, byStream[id]) {
			elsewhere = append(elsewhere, id)
		}
	}
	s.pusher.wake()
	// Streams another instance pushes: wake it rather than wait for its
	// rescan.
	s.pusher.notify(elsewhere)
	return n, nil
}

// wake tells delivery that a stream may have new SETs.
func (s *Service) wake(streamID string) {
	s.waiters.notify(streamID)
	elsewhere := s.pusher.markDirty(streamID, nil)
	s.pusher.wake()
	if elsewhere {
		s.pusher.notify([]string{streamID})
	}
}

// claimsTail is the part of a SET's claims shared by every stream: iat,
// txn, sub_id and events, closing the object.
func (s *Service) claimsTail(now time.Time, txn string, t template) ([]byte, error) {
	sub, err := json.Marshal(t.subject)
	if err != nil {
		return nil, fmt.Errorf("cae: marshal subject: %w", err)
	}
	body, err := json.Marshal(t.body)
	if err != nil {
		return nil, fmt.Errorf("cae: marshal event: %w", err)
	}
	typ, _ := json.Marshal(t.typ)
	b := make([]byte, 0, 64+len(txn)+len(sub)+len(body)+len(typ))
	b = append(b, `,"iat":`...)
	b = fmt.Appendf(b, "%d", now.Unix())
	if txn != "" {
		tx, _ := json.Marshal(txn)
		b = append(b, `,"txn":`...)
		b = append(b, tx...)
	}
	b = append(b, `,"sub_id":`...)
	b = append(b, sub...)
	b = append(b, `,"events":{`...)
	b = append(b, typ...)
	b = append(b, ':')
	b = append(b, body...)
	b = append(b, "}}"...)
	return b, nil
}

// claimsJSON assembles one SET's claims: iss, aud, jti, then the tail.
func claimsJSON(iss, aud []byte, jti string, tail []byte) []byte {
	b := make([]byte, 0, 32+len(iss)+len(aud)+len(jti)+len(tail))
	b = append(b, `{"iss":`...)
	b = append(b, iss...)
	b = append(b, `,"aud":`...)
	b = append(b, aud...)
	b = append(b, `,"jti":"`...)
	b = append(b, jti...) // base64url: no escaping needed
	b = append(b, '"')
	return append(b, tail...)
}

// newJTI returns 128 random bits, base64url.
func newJTI() string { return secret.RandomString(16) }

// sign signs every payload into its entry, on all cores when there are
// many.
func (s *Service) sign(entries []*store.SETEntry, payloads [][]byte) error {
	workers := min(runtime.GOMAXPROCS(0), (len(entries)+15)/16)
	if workers <= 1 {
		for i, e := range entries {
			set, err := s.o.Keys.MintSET(json.RawMessage(payloads[i]))
			if err != nil {
				return fmt.Errorf("cae: sign SET: %w", err)
			}
			e.SET = set
		}
		return nil
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(entries) {
					return
				}
				set, err := s.o.Keys.MintSET(json.RawMessage(payloads[i]))
				if err != nil {
					mu.Lock()
					ferr = fmt.Errorf("cae: sign SET: %w", err)
					mu.Unlock()
					return
				}
				entries[i].SET = set
			}
		}()
	}
	wg.Wait()
	return ferr
}

// streamEvent queues an SSF event (verification, stream-updated) on one
// stream, whatever its events_delivered.
func (s *Service) streamEvent(ctx context.Context, st *model.SSFStream, typ string, body eventBody) error {
	now := s.o.Now()
	t := template{typ: typ, subject: opaqueSubject(st.ID), subjectKey: "stream:" + st.ID, body: body}
	jti := newJTI()
	tail, err := s.claimsTail(now, "", t)
	if err != nil {
		return err
	}
	e := &store.SETEntry{StreamID: st.ID, JTI: jti, DedupKey: jti, SubjectKey: t.subjectKey, EventType: typ, CreatedAt: now}
	if err := s.sign([]*store.SETEntry{e}, [][]byte{claimsJSON(s.issJSON, audJSON(st.Audience), jti, tail)}); err != nil {
		return err
	}
	_, err = s.enqueue(ctx, "", []*store.SETEntry{e})
	return err
}

// ---- long-poll wake-ups ----

type waiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// wait returns a channel closed at the next notify of id.
func (w *waiters) wait(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.m[id]
	if !ok {
		ch = make(chan struct{})
		w.m[id] = ch
	}
	return ch
}

func (w *waiters) notify(id string) {
	w.mu.Lock()
	if ch, ok := w.m[id]; ok {
		close(ch)
		delete(w.m, id)
	}
	w.mu.Unlock()
}

func (w *waiters) notifyAll() {
	w.mu.Lock()
	for id, ch := range w.m {
		close(ch)
		delete(w.m, id)
	}
	w.mu.Unlock()
}
