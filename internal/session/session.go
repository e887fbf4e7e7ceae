// Package session owns the end of sign-in sessions: every revocation, for
// whatever cause, goes through its Service, which commits the revocation
// and the events that record it in one store transaction and reports
// whether the call changed anything. A revocation that finds the session
// revoked already (another request, instance or administrator got there
// first) records nothing, so a race produces one record, not one per
// contender.
//
// Which events record a revocation depends on its cause (see the methods):
// a session.revoked with the cause as reason, or the event of the cause
// itself (session.logged_out, token.revoked, session.refresh_reuse_detected,
// code.reuse_detected). The causes are model.RevocationCause values.
//
// A revocation that committed but whose events a bus subscriber failed to
// take reports true with an error: the session is ended and its record
// stored; the failure is logged (with the correlation id) and returned.
//
// The service is also a bus subscriber (Subscribe): it revokes every
// session of a user whose account was disabled, deleted or given a new
// password.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ActorSystem is the actor of revocations Ward makes on its own.
const ActorSystem = "system"

// ErrNotFound: no such session. It wraps store.ErrNotFound.
var ErrNotFound error = notFoundError{}

type notFoundError struct{}

func (notFoundError) Error() string { return "session not found" }
func (notFoundError) Unwrap() error { return store.ErrNotFound }

// Options configure a Service.
type Options struct {
	Store store.Store // required
	// Bus records the events (nil: revocations are recorded nowhere).
	Bus bus.Bus
	Now func() time.Time
	Log *slog.Logger
}

// Service revokes sessions. It is safe for concurrent use.
type Service struct {
	store  store.Store
	events *bus.Emitter // logs what it fails to deliver
	now    func() time.Time
}

// New returns a Service. It panics without a Store (a configuration
// error).
func New(o Options) *Service {
	if o.Store == nil {
		panic("session: Options.Store is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	events := bus.NewEmitter(o.Bus, o.Now).Logging(o.Log.With("component", "session"))
	return &Service{store: o.Store, events: events, now: o.Now}
}

// Revoke ends one session for cause on behalf of actor and records
// session.revoked. It reports whether this call revoked it (false: it was
// revoked before, and nothing is recorded); ErrNotFound when there is no
// such session.
func (s *Service) Revoke(ctx context.Context, actor, id string, cause model.RevocationCause) (bool, error) {
	se, err := s.store.GetSession(ctx, id)
	if err != nil {
		return false, s.wrap(err, "revoke session "+id)
	}
	if !se.RevokedAt.IsZero() {
		return false, nil
	}
	return s.revokeOne(ctx, id, cause, &model.Event{Type: model.EventSessionRevoked, Actor: actor,
		UserID: se.UserID, SessionID: id, Reason: string(cause)})
}

// Logout ends the session its user signed out of through clientID (""
// when unknown) and records session.logged_out. It reports whether this
// call ended it.
func (s *Service) Logout(ctx context.Context, id, clientID string) (bool, error) {
	se, err := s.store.GetSession(ctx, id)
	if err != nil {
		return false, s.wrap(err, "log out of session "+id)
	}
	if !se.RevokedAt.IsZero() {
		return false, nil
	}
	return s.revokeOne(ctx, id, model.CauseLogout, &model.Event{Type: model.EventSessionLoggedOut, Actor: se.UserID,
		UserID: se.UserID, SessionID: id, ClientID: clientID, Reason: model.ReasonUserLogout})
}

// AccessTokenRevoked ends the grant of a client that revoked one of its
// access tokens (jti, valid until exp) in session id (RFC 7009): the
// client's refresh tokens of the session are deleted and the token is
// recorded as revoked until it expires, so that Ward's own resources refuse
// it and resources following CAE learn of it (token-claims-change for the
// jwt_id). The session and other clients' grants go on: a client cannot
// sign its user out of everything by revoking a token. token.revoked is
// recorded once; it reports whether this call revoked the token.
func (s *Service) AccessTokenRevoked(ctx context.Context, clientID, userID, id, jti string, exp time.Time) (bool, error) {
	e := &model.Event{Type: model.EventTokenRevoked, Actor: clientID, ClientID: clientID, UserID: userID, SessionID: id,
		TokenID: jti, Reason: model.ReasonClientRevokedAccessToken}
	ectx := s.events.PendingEvents(ctx, func(ids []string) []*model.Event {
		if len(ids) == 0 {
			return nil // revoked before: nothing happened here
		}
		return []*model.Event{e}
	})
	fresh, err := s.store.RevokeClientGrant(ectx, id, clientID, model.RevokedAccessTokenKey(jti), exp)
	if err != nil {
		return false, s.wrap(err, "revoke the grant of "+clientID+" in session "+id)
	}
	if !fresh {
		return false, nil
	}
	return true, s.emit(ectx, []*model.Event{e})
}

// RefreshTokenReused ends the session of a rotated refresh token that
// clientID presented again (with a DPoP key of thumbprint jkt; "" for
// none): the token was stolen or replayed. It records the theft signal,
// session.refresh_reuse_detected, and session.revoked, once per session
// however many requests present the token at once; it reports whether
// this call ended the session.
func (s *Service) RefreshTokenReused(ctx context.Context, clientID string, rt *model.RefreshToken, jkt string) (bool, error) {
	reuse := &model.Event{Type: model.EventRefreshReuseDetected, Outcome: model.OutcomeFailure, Reason: string(model.CauseRefreshReuse),
		Actor: clientID, ClientID: clientID, UserID: rt.UserID, SessionID: rt.SessionID, DeviceID: rt.DeviceID,
		Data: reuseData(rt, jkt)}
	revoked := &model.Event{Type: model.EventSessionRevoked, Actor: ActorSystem, UserID: rt.UserID, SessionID: rt.SessionID,
		Reason: string(model.CauseRefreshReuse)}
	return s.revokeOne(ctx, rt.SessionID, model.CauseRefreshReuse, reuse, revoked)
}

// reuseData is what the record of a refresh token presented again says of
// the presentation: the key that made its proof, the key the token is
// bound to, the proof's status against it (activity.Proof values) and the
// generation presented.
func reuseData(rt *model.RefreshToken, jkt string) map[string]string {
	d := map[string]string{activity.DataGrant: model.GrantRefreshToken}
	proof := activity.ProofOK
	switch {
	case jkt == "" && rt.JKT != "":
		proof = activity.ProofMissing
	case jkt == "":
		proof = activity.ProofNone
	case rt.JKT != "" && jkt != rt.JKT:
		proof = activity.ProofWrongKey
	}
	d[activity.DataProof] = string(proof)
	if jkt != "" {
		d[activity.DataJKT] = jkt
	}
	if rt.JKT != "" {
		d[activity.DataBoundJKT] = rt.JKT
	}
	if rt.Generation > 0 {
		d[activity.DataRTGenIn] = strconv.Itoa(rt.Generation)
	}
	return d
}

// CodeReused ends the session of an authorization code that clientID
// presented again (RFC 6749 §4.1.2) and records code.reuse_detected, once
// per session; it reports whether this call ended the session.
func (s *Service) CodeReused(ctx context.Context, clientID string, ac *model.AuthCode) (bool, error) {
	return s.revokeOne(ctx, ac.SessionID, model.CauseCodeReuse, &model.Event{Type: model.EventCodeReuseDetected,
		Outcome: model.OutcomeFailure, Reason: string(model.CauseCodeReuse), Actor: clientID, ClientID: clientID,
		UserID: ac.UserID, SessionID: ac.SessionID})
}

// revokeOne revokes session id for cause with evs committed in the same
// transaction, and emits them when this call revoked it.
func (s *Service) revokeOne(ctx context.Context, id string, cause model.RevocationCause, evs ...*model.Event) (bool, error) {
	ectx := s.events.PendingEvents(ctx, func(ids []string) []*model.Event {
		if len(ids) == 0 {
			return nil // revoked before: nothing happened here
		}
		return evs
	})
	revoked, err := s.store.RevokeSession(ectx, id, s.now(), string(cause))
	if err != nil {
		return false, s.wrap(err, "revoke session "+id)
	}
	if !revoked {
		return false, nil
	}
	return true, s.emit(ectx, evs)
}

// RevokeUser ends every session of a user for cause on behalf of actor
// and returns their ids. Each gets a session.revoked. An administrator's
// revocation (CauseAdminRevoked) also records one user.sessions_revoked,
// even when no session was active (the administrator means every token
// of the user), which the CAE transmitter turns into a single SET for the
// user; its session.revoked events are marked model.DataAllSessions. A
// confirmed compromise (CauseCompromiseConfirmed) does the same; a risk
// response (CauseUserRisk) too, but records user.sessions_revoked only
// when it ended a session. The causes of account changes record nothing
// more: the account's own event (user.disabled, ...) speaks for the user.
func (s *Service) RevokeUser(ctx context.Context, actor, userID string, cause model.RevocationCause) ([]string, error) {
	r := s.PlanRevokeUser(actor, userID, cause)
	ids, err := s.revokeMany(ctx, func(ctx context.Context) ([]string, error) {
		return s.store.RevokeUserSessions(ctx, userID, r.At, r.Cause)
	}, r.Events)
	if err != nil {
		return nil, fmt.Errorf("session: revoke sessions of user %s: %w", userID, err)
	}
	return ids, nil
}

// PlanRevokeUser is RevokeUser for a store write of another service that
// carries it out in its own transaction (store.RiskState.Revoke: a
// confirmed compromise commits with the level it sets): what it ends and
// the events recording it are RevokeUser's. The caller emits the events
// after the commit.
func (s *Service) PlanRevokeUser(actor, userID string, cause model.RevocationCause) *store.UserRevocation {
	// An administrator means every token of the user even when no
	// session is active; a risk response only records what it ended.
	userLevel := cause == model.CauseAdminRevoked || cause == model.CauseUserRisk || cause == model.CauseCompromiseConfirmed
	always := cause == model.CauseAdminRevoked || cause == model.CauseCompromiseConfirmed
	return &store.UserRevocation{At: s.now(), Cause: string(cause), Events: func(ids []string) []*model.Event {
		evs := make([]*model.Event, 0, len(ids)+1)
		for _, id := range ids {
			e := &model.Event{Type: model.EventSessionRevoked, Actor: actor, UserID: userID, SessionID: id, Reason: string(cause)}
			if userLevel {
				e.Data = map[string]string{model.DataAllSessions: "true"}
			}
			evs = append(evs, e)
		}
		if userLevel && (always || len(ids) > 0) {
			evs = append(evs, &model.Event{Type: model.EventUserSessionsRevoked, Actor: actor, UserID: userID,
				Reason: string(cause), Data: map[string]string{"sessions_revoked": strconv.Itoa(len(ids))}})
		}
		return evs
	}}
}

// RevokeUserUnremediated is the response to what happened at activity:
// it ends the user's sessions created up to now, or up to the user's
// first remediation after activity when there was one (a password change,
// an administrator's or a confirmed compromise's revocation of every
// session: store.RemediationEvents), and the session subject ("" for
// none) whenever it was created. A session the user signed in to after
// remediating is the user's own, not the one the finding is about; one
// created between the activity and the response, with no remediation in
// between, may be the attacker's and is ended. The remediation is looked
// up by the statement that revokes. Each revoked session gets a
// session.revoked (no all_sessions mark: later sessions live on) and one
// user.sessions_revoked says where the bound was (created_until).
func (s *Service) RevokeUserUnremediated(ctx context.Context, actor, userID string, cause model.RevocationCause, activity time.Time, subject string) ([]string, error) {
	r := s.PlanRevokeUserUnremediated(actor, userID, cause, activity, subject)
	ids, err := s.revokeMany(ctx, func(ctx context.Context) ([]string, error) {
		return s.store.RevokeUserSessionsUnremediated(ctx, userID, r.At, r.Cause, r.Bound)
	}, r.Events)
	if err != nil {
		return nil, fmt.Errorf("session: revoke sessions of user %s: %w", userID, err)
	}
	return ids, nil
}

// PlanRevokeUserUnremediated is RevokeUserUnremediated for a store write
// of another service that carries it out in its own transaction
// (store.RiskState.Revoke: the risk response commits with the level that
// calls for it). Its time, the bound's Until, is now: planned inside that
// transaction, it is the response's moment. The caller emits the events
// after the commit.
func (s *Service) PlanRevokeUserUnremediated(actor, userID string, cause model.RevocationCause, activity time.Time, subject string) *store.UserRevocation {
	now := s.now()
	if activity.After(now) {
		activity = now // a clock ahead of ours finds no remediation after now
	}
	b := &store.RemediationBound{Activity: activity, Until: now, Now: true, Subject: subject}
	return &store.UserRevocation{At: now, Cause: string(cause), Bound: b, Events: func(ids []string) []*model.Event {
		if len(ids) == 0 {
			return nil
		}
		evs := make([]*model.Event, 0, len(ids)+1)
		for _, id := range ids {
			evs = append(evs, &model.Event{Type: model.EventSessionRevoked, Actor: actor, UserID: userID, SessionID: id, Reason: string(cause)})
		}
		// Built inside the revoking transaction, after the statement set
		// b.Applied.
		return append(evs, &model.Event{Type: model.EventUserSessionsRevoked, Actor: actor, UserID: userID, Reason: string(cause),
			Data: map[string]string{"sessions_revoked": strconv.Itoa(len(ids)),
				model.DataCreatedUntil: b.Applied.UTC().Format(time.RFC3339Nano)}})
	}}
}

// RevokeDevice ends every session holding a refresh token bound to the
// registered device deviceID (of user userID) for cause on behalf of
// actor, records session.revoked for each and returns their ids.
func (s *Service) RevokeDevice(ctx context.Context, actor, deviceID, userID string, cause model.RevocationCause) ([]string, error) {
	ids, err := s.revokeMany(ctx, func(ctx context.Context) ([]string, error) {
		return s.store.RevokeDeviceSessions(ctx, deviceID, s.now(), string(cause))
	}, func(ids []string) []*model.Event {
		evs := make([]*model.Event, 0, len(ids))
		for _, id := range ids {
			evs = append(evs, &model.Event{Type: model.EventSessionRevoked, Actor: actor, UserID: userID,
				SessionID: id, DeviceID: deviceID, Reason: string(cause)})
		}
		return evs
	})
	if err != nil {
		return nil, fmt.Errorf("session: revoke sessions of device %s: %w", deviceID, err)
	}
	return ids, nil
}

// revokeMany runs a store write that revokes several sessions with the
// events build makes of their ids committed in its transaction, and emits
// them.
func (s *Service) revokeMany(ctx context.Context, write func(context.Context) ([]string, error),
	build func(ids []string) []*model.Event) ([]string, error) {
	var evs []*model.Event
	ectx := s.events.PendingEvents(ctx, func(ids []string) []*model.Event {
		evs = build(ids) // the run that commits is the last one
		return evs
	})
	ids, err := write(ectx)
	if err != nil {
		return nil, err
	}
	return ids, s.emit(ectx, evs)
}

// emit hands the committed events to the bus's subscribers (the audit
// persister finds them stored; the CAE transmitter queues their SETs).
// The revocation stands when that fails; the error says so.
func (s *Service) emit(ctx context.Context, evs []*model.Event) error {
	var errs []error
	for _, e := range evs {
		if err := s.events.Emit(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("session: revoked, but its events were not all delivered: %w", err)
	}
	return nil
}

func (s *Service) wrap(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("session: %s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("session: %s: %w", what, err)
}
