// Package incident owns incidents: risk detections correlated by user,
// session, device, network address and time window, with a severity,
// a status (new, active, resolved, false positive), an assignee, a
// timeline, the entities involved, the triggering events, MITRE ATT&CK
// tactics and techniques, comments, merge and split, and the response
// actions an operator takes from an incident.
//
// Its input is the risk.detected domain event, whoever publishes it. A
// durable bus consumer ("incidents") correlates each detection: the
// decision (join an open incident, reopen a recently resolved one, or
// open a new one) and its write are one store transaction under the
// incidents' lock row, so redeliveries, restarts and several instances
// consuming at once make the same incidents (docs/secops.md, "Incidents").
// Every change is a domain event (incident.*), committed with it.
//
// Response actions go through the services that own them (sessions,
// devices, users, risk), reached through small interfaces of this
// package, and are recorded as incident.action_taken.
package incident

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ConsumerName is the durable consumer of risk.detected events; every
// instance shares it.
const ConsumerName = "incidents"

// ActorSystem is the actor of what Ward does on its own.
const ActorSystem = "system"

// DefaultWindow is the correlation window when Options.Window is zero.
const DefaultWindow = 24 * time.Hour

// DefaultRetention is how long closed incidents are kept when
// Options.Retention is zero.
const DefaultRetention = 365 * 24 * time.Hour

// Errors.
var (
	// ErrNotFound: no such incident (or detection). It wraps
	// store.ErrNotFound.
	ErrNotFound error = notFoundError{}
	// ErrReasonRequired: closing an incident (resolved, false positive)
	// or reopening it needs a reason.
	ErrReasonRequired = errors.New("incident: a reason is required")
	// ErrInvalid: a request the service refuses (an unknown status or
	// action, a target that is not an entity of the incident, a comment
	// too long, ...). The message says which.
	ErrInvalid = errors.New("incident: invalid request")
	// ErrConflict: the change does not fit the incident's state (merged
	// already, merging an incident into itself, splitting off every
	// detection, ...).
	ErrConflict = errors.New("incident: conflict")
)

type notFoundError struct{}

func (notFoundError) Error() string { return "incident: not found" }
func (notFoundError) Unwrap() error { return store.ErrNotFound }

func notFound(what string) error { return fmt.Errorf("%w: %s", ErrNotFound, what) }

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

func conflict(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConflict, fmt.Sprintf(format, a...))
}

// Sessions is what response actions need of the session service (the
// only owner of revocation).
type Sessions interface {
	Revoke(ctx context.Context, actor, id string, cause model.RevocationCause) (bool, error)
	RevokeUser(ctx context.Context, actor, userID string, cause model.RevocationCause) ([]string, error)
}

// Devices is what response actions need of the device service.
type Devices interface {
	Disable(ctx context.Context, actor, id string) (*model.Device, error)
}

// Users is what the service needs of the identity service: checking an
// assignee, and disabling a user (a response action). Its not-found
// errors wrap store.ErrNotFound.
type Users interface {
	GetUser(ctx context.Context, id string) (*model.User, error)
	SetDisabled(ctx context.Context, actor, userID string, disabled bool) error
}

// Risk is what response actions need of the risk service.
type Risk interface {
	// SetUserLevel sets a user's risk level as an administrator decides.
	SetUserLevel(ctx context.Context, actor, userID, level, reason string) error
	// ConfirmCompromised confirms a compromise (level high, every
	// session revoked) and returns the sessions revoked.
	ConfirmCompromised(ctx context.Context, actor, userID, reason string) ([]string, error)
	// DismissDetection dismisses one detection as a false positive;
	// false when it is unknown or no longer active.
	DismissDetection(ctx context.Context, actor, detectionID, reason string) (bool, error)
}

// Options configure a Service.
type Options struct {
	Store store.Store // required
	// Bus records the events (nil: recorded nowhere).
	Bus bus.Bus
	Now func() time.Time
	Log *slog.Logger
	// Window is how far apart in time detections may be and still be
	// correlated (0: DefaultWindow), and how long after its resolution a
	// detection reopens an incident.
	Window time.Duration
	// Retention is how long closed incidents are kept after they closed
	// (0: DefaultRetention); open incidents are kept however old.
	Retention time.Duration
	// PurgeInterval is how often closed incidents past the retention are
	// deleted (0: an hour).
	PurgeInterval time.Duration
	// The services response actions go through; an action whose service
	// is nil is refused.
	Sessions Sessions
	Devices  Devices
	Users    Users
	Risk     Risk
}

// Service maintains incidents. It is safe for concurrent use.
type Service struct {
	o      Options
	events *bus.Emitter
	log    *slog.Logger

	stats struct {
		created, joined, reopened, repeats, refused atomic.Int64
	}
	mu    sync.Mutex
	stops []func()
}

// Stats counts what the consumer did since the service started.
type Stats struct {
	// Created incidents, detections Joined to open incidents, incidents
	// Reopened, Repeats recognised (same detection id), Refused events
	// (malformed or hostile).
	Created, Joined, Reopened, Repeats, Refused int64
}

// New returns a Service. It panics without Store.
func New(o Options) *Service {
	if o.Store == nil {
		panic("incident: Options.Store is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.PurgeInterval <= 0 {
		o.PurgeInterval = time.Hour
	}
	log := o.Log.With("component", "incident")
	return &Service{o: o, log: log, events: bus.NewEmitter(o.Bus, o.Now).Logging(log)}
}

// Stats returns the consumer's counters.
func (s *Service) Stats() Stats {
	return Stats{Created: s.stats.created.Load(), Joined: s.stats.joined.Load(), Reopened: s.stats.reopened.Load(),
		Repeats: s.stats.repeats.Load(), Refused: s.stats.refused.Load()}
}

// Wiring is what Start connects the service to.
type Wiring struct {
	// Bus is the synchronous bus: without durable delivery the consumer
	// subscribes to it (this process's detections only).
	Bus bus.Bus
	// Durable delivers risk.detected across instances and restarts.
	Durable bus.Durable
	// Serve runs the consumer (a server; a command-line tool only
	// administers).
	Serve bool
}

// Start starts consuming risk.detected and purging closed incidents past
// the retention, for a server. Close stops it.
func (s *Service) Start(ctx context.Context, w Wiring) error {
	if !w.Serve {
		return nil
	}
	durable := w.Durable
	if durable == nil {
		durable = bus.NoDurable{Reason: "no durable delivery configured"}
	}
	stop, err := durable.Consume(context.Background(), ConsumerName, []model.EventType{model.EventRiskDetected}, s.HandleDetection)
	switch {
	case errors.Is(err, bus.ErrNoDurable):
		if w.Bus == nil {
			return errors.New("incident: Wiring.Bus is required without durable delivery")
		}
		s.log.InfoContext(ctx, "risk detections are correlated in-process (no durable delivery)")
		s.addStop(w.Bus.Subscribe(ConsumerName, s.HandleDetection))
	case err != nil:
		return fmt.Errorf("incident: consumer: %w", err)
	default:
		s.addStop(stop)
	}
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go s.purgeLoop(pctx, done)
	s.addStop(func() { cancel(); <-done })
	return nil
}

// purgeLoop deletes closed incidents past the retention until ctx ends.
func (s *Service) purgeLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(s.o.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Purge(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "incident purge", "err", err)
		}
	}
}

// Purge deletes the incidents closed longer than the retention ago, with
// their detections and timelines, and returns how many.
func (s *Service) Purge(ctx context.Context) (int64, error) {
	n, err := s.o.Store.PurgeIncidents(ctx, s.o.Now().Add(-s.o.Retention))
	if n > 0 {
		s.log.InfoContext(ctx, "closed incidents purged", "incidents", n, "retention", s.o.Retention.String())
	}
	return n, err
}

// Close stops what Start started.
func (s *Service) Close() error {
	s.mu.Lock()
	stops := s.stops
	s.stops = nil
	s.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	return nil
}

func (s *Service) addStop(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops = append(s.stops, f)
}

// emitAll publishes events committed with a change.
func (s *Service) emitAll(ctx context.Context, evs []*model.Event) error {
	var errs []error
	for _, e := range evs {
		if err := s.events.Emit(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("incident: changed, but its events were not all delivered: %w", err)
	}
	return nil
}

// lazyEvents are the events of a change, made when the transaction
// commits them (after the store numbered new incidents), so that they
// describe the incidents as saved. The builder may run more than once;
// built keeps the last run's events for publishing.
type lazyEvents struct {
	fns   []func() *model.Event
	built []*model.Event
}

func (l *lazyEvents) add(f func() *model.Event) { l.fns = append(l.fns, f) }

func (l *lazyEvents) reset() { l.fns, l.built = nil, nil }

func (l *lazyEvents) build([]string) []*model.Event {
	l.built = l.built[:0]
	for _, f := range l.fns {
		l.built = append(l.built, f())
	}
	return l.built
}
