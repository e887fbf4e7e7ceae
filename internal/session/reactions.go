package session

import (
	"context"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
)

// revokeOn lists the account changes after which none of the user's
// sessions may go on: the account is gone or disabled, or its password
// changed (the old sessions may belong to whoever knew the old one).
var revokeOn = map[model.EventType]model.RevocationCause{
	model.EventUserDisabled:    model.CauseUserDisabled,
	model.EventUserDeleted:     model.CauseUserDeleted,
	model.EventPasswordChanged: model.CausePasswordChanged,
}

// Subscribe registers the session revoker on b: a synchronous subscriber
// that revokes every session of a user whose account was disabled,
// deleted or given a new password, before the publish of that change
// returns (so before the call that made it does). Services never call each
// other for this; they meet through the event.
func (s *Service) Subscribe(b bus.Bus) (unsubscribe func()) {
	return b.Subscribe("session-revoker", s.onAccountChange)
}

// onAccountChange revokes the sessions of the user of an account change,
// attributed to the change's actor and origin.
func (s *Service) onAccountChange(ctx context.Context, e *model.Event) error {
	cause, ok := revokeOn[e.Type]
	if !ok || e.UserID == "" {
		return nil
	}
	ctx = bus.WithOrigin(ctx, bus.Origin{IP: e.IP, UserAgent: e.UserAgent, CorrelationID: e.CorrelationID})
	_, err := s.RevokeUser(ctx, e.Actor, e.UserID, cause)
	return err
}
