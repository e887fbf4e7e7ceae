package risk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ConsumerName is the durable consumer of risk.detected events; every
// instance shares it (each detection goes to one of them).
const ConsumerName = "risk-levels"

// Wiring is what Start connects the service to.
type Wiring struct {
	// Bus is the synchronous bus: the remediation subscriber (password
	// changes, sign-ins with a second factor) runs on it in every process.
	Bus bus.Bus
	// Durable delivers risk.detected across instances and restarts. A bus
	// without durable delivery (bus.driver local) gets an in-process
	// subscriber instead, which sees this process's events only.
	Durable bus.Durable
	// Serve runs the consumer and the expiry sweep (a server; a
	// command-line tool only remediates and administers).
	Serve bool
	// SweepInterval is how often expired detections are looked for (0: a
	// minute).
	SweepInterval time.Duration
}

// Start subscribes the service and, for a server, starts consuming
// risk.detected and sweeping expired detections. Close stops it.
func (s *Service) Start(ctx context.Context, w Wiring) error {
	if w.Bus == nil {
		return errors.New("risk: Wiring.Bus is required")
	}
	s.addStop(w.Bus.Subscribe("risk-remediation", s.onAccountEvent))
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
		s.log.InfoContext(ctx, "risk detections are handled in-process (no durable delivery)")
		s.addStop(w.Bus.Subscribe("risk-levels", s.HandleDetection))
	case err != nil:
		return fmt.Errorf("risk: consumer: %w", err)
	default:
		s.addStop(stop)
	}
	interval := w.SweepInterval
	if interval <= 0 {
		interval = time.Minute
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go s.sweepLoop(sctx, interval, done)
	s.addStop(func() { cancel(); <-done })
	return nil
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

// HandleDetection records the detection of a risk.detected event once,
// updates the levels and responds (the durable consumer's handler).
// Events it refuses (malformed, hostile, naming no user or a user that no
// longer exists) are logged, counted and acknowledged: they never stop
// the consumer. An error means the event is to be delivered again.
func (s *Service) HandleDetection(ctx context.Context, e *model.Event) error {
	if e.Type != model.EventRiskDetected {
		return nil
	}
	d, err := parseDetection(e)
	if err == nil {
		err = s.attribute(ctx, d)
	}
	if errors.Is(err, errRefused) {
		s.stats.refused.Add(1)
		s.log.WarnContext(ctx, "risk.detected refused", "event_id", e.ID, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	d.ExpiresAt = time.Time{}
	if lt := s.lifetime(s.o.Rules.Weight(d)); lt > 0 {
		d.ExpiresAt = d.DetectedAt.Add(lt)
	}
	return s.record(ctx, d)
}

// attribute checks the detection's session against its user and fills in
// the user of a detection that names only a session.
func (s *Service) attribute(ctx context.Context, d *model.RiskDetection) error {
	if d.SessionID != "" {
		se, err := s.o.Sessions.Get(ctx, d.SessionID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Purged already: the detection is about the user.
			s.log.InfoContext(ctx, "risk detection for a session that no longer exists", "detection_id", d.ID)
			d.SessionID = ""
		case err != nil:
			return err
		case d.UserID == "":
			d.UserID = se.UserID
		case d.UserID != se.UserID:
			return refused("session %s is not a session of the user the detection names", d.SessionID)
		}
	}
	if d.UserID == "" {
		return refused("the detection names no user")
	}
	return nil
}

// record stores d, recomputes and responds in one transaction; a repeat
// finishes a response that an older version recorded apart and did not
// complete.
func (s *Service) record(ctx context.Context, d *model.RiskDetection) error {
	cause := store.RiskCause{Reason: d.Type, Actor: ActorSystem, DetectionID: d.ID, At: s.o.Now()}
	_, err := s.change(ctx, d.UserID, d, cause, nil, func(st *store.RiskState) {
		if st.Added == nil {
			return
		}
		// Handled with its response, which commits with it (or with
		// nothing to do).
		st.Added.Handled = true
		s.respond(st, ActorSystem, d.DetectedAt, d.SessionID)
	})
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		s.stats.repeats.Add(1)
		return s.finish(ctx, d.ID)
	case errors.Is(err, store.ErrNotFound):
		s.stats.unknownUser.Add(1)
		s.log.WarnContext(ctx, "risk detection for a user that does not exist", "detection_id", d.ID)
		return nil
	case err != nil:
		return err
	}
	s.stats.recorded.Add(1)
	return nil
}

// finish completes the response to a detection recorded before and not
// handled: one recorded by an older version, which responded in a
// transaction of its own after recording it and may have stopped in
// between. The response and the mark commit together.
func (s *Service) finish(ctx context.Context, id string) error {
	old, err := s.o.Store.GetRiskDetection(ctx, id)
	if err != nil {
		return err
	}
	if old.Handled || old.State != model.DetectionActive {
		return nil
	}
	cause := store.RiskCause{Reason: old.Type, Actor: ActorSystem, DetectionID: old.ID, At: s.o.Now()}
	var marked bool
	_, err = s.change(ctx, old.UserID, nil, cause, func(st *store.RiskState) ([]*model.Event, error) {
		marked = false
		for _, d := range st.Active {
			if d.ID == id && !d.Handled {
				d.Handled, marked = true, true
			}
		}
		return nil, nil
	}, func(st *store.RiskState) {
		if marked {
			s.respond(st, ActorSystem, old.DetectedAt, old.SessionID)
		}
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// due reports whether the levels call for the automatic response: the
// user's level reached the revocation level. (A session's level never
// exceeds its user's: the user's counts every detection of its sessions.)
func (s *Service) due(st *store.RiskState) bool {
	return s.revoke > 0 && model.RiskRank(st.UserLevel) >= s.revoke
}

// respond makes the change st is about to save revoke, in its own
// transaction, the sessions of a user whose level reached the revocation
// level: those created up to now, unless the user remediated after the
// activity the detection is about (at activity): then those created up
// to that first remediation. The sessions that existed when the activity
// happened, and any created since that may be the attacker's, end; a
// session the user signed in to after changing the password, or after an
// administrator ended every session, is the user's and is judged by its
// own sign-in. The session the detection names (subject) ends in any
// case. The bound is looked up by the statement that revokes
// (store.RemediationEvents). The session service plans the revocation and
// its records (and the CAE transmitter tells resources once they are
// published). It runs inside UpdateRisk's function: it only computes.
func (s *Service) respond(st *store.RiskState, actor string, activity time.Time, subject string) {
	if s.due(st) {
		st.Revoke = s.o.Sessions.PlanRevokeUserUnremediated(actor, st.UserID, model.CauseUserRisk, activity, subject)
	}
}

// change runs one UpdateRisk: mutate (may be nil) changes detections and
// returns events of its own, the levels are recomputed, after (may be
// nil) looks at the result and may set a revocation (st.Revoke) that
// commits with the change; the level changes' events, mutate's and the
// revocation's commit with the change and are published afterwards. The
// level changes' reason and actor are cause's.
func (s *Service) change(ctx context.Context, userID string, add *model.RiskDetection, cause store.RiskCause,
	mutate func(*store.RiskState) ([]*model.Event, error), after func(*store.RiskState)) (*store.RiskState, error) {
	if cause.At.IsZero() {
		cause.At = s.o.Now()
	}
	var (
		base, evs []*model.Event // fn's; with the revocation's
		cur       *store.RiskState
	)
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		// Built in the transaction after the revocation ran: its
		// records name the sessions it ended.
		evs = slices.Clip(base)
		if r := cur.Revoke; r != nil && r.Events != nil {
			evs = append(evs, r.Events(r.Revoked)...)
		}
		return evs
	})
	st, err := s.o.Store.UpdateRisk(ectx, userID, add, func(st *store.RiskState) error {
		base, evs, cur = nil, nil, st // fn may run again: start afresh
		st.Cause = cause
		var own []*model.Event
		if mutate != nil {
			var err error
			if own, err = mutate(st); err != nil {
				return err
			}
		}
		changes := s.recompute(st, cause.At)
		if after != nil {
			after(st)
		}
		var activity time.Time
		if add != nil {
			// As respond: a time ahead of this clock counts as now.
			activity = add.DetectedAt
			if activity.IsZero() || activity.After(cause.At) {
				activity = cause.At
			}
		}
		base = append(own, changeEvents(userID, cause.Actor, cause.Reason, cause.DetectionID, activity, changes)...)
		evs = base // without a bus the builder never runs
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.Revoke != nil {
		s.stats.responses.Add(1)
		s.log.InfoContext(ctx, "user risk response: sessions revoked", "user_id", st.UserID, "level", st.UserLevel,
			"cause", st.Revoke.Cause, "sessions", len(st.Revoke.Revoked))
	}
	var errs []error
	for _, e := range evs {
		if err := s.events.Emit(ectx, e); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return st, fmt.Errorf("risk: changed, but its events were not all delivered: %w", err)
	}
	return st, nil
}

// sweepLoop expires detections past their lifetime and purges old
// records until ctx ends.
func (s *Service) sweepLoop(ctx context.Context, every time.Duration, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	var lastPurge time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "risk expiry sweep", "err", err)
		}
		if now := s.o.Now(); now.Sub(lastPurge) >= time.Hour {
			lastPurge = now
			if _, err := s.o.Store.PurgeRisk(ctx, now.Add(-s.o.Retention)); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "risk purge", "err", err)
			}
		}
	}
}

// Sweep expires the detections past their lifetime and lowers the levels
// they held up; it returns how many users it looked at.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	users, err := s.o.Store.RiskExpiries(ctx, s.o.Now(), 100)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, u := range users {
		_, err := s.change(ctx, u, nil, store.RiskCause{Reason: "expired", Actor: ActorSystem}, nil, nil)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return len(users), errors.Join(errs...)
}
