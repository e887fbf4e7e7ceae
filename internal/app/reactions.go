package app

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/ward-idp/ward/internal/model"
)

// revokeOn lists the account changes after which none of the user's
// sessions may go on: the account is gone or disabled, or its password
// changed (the old sessions may belong to whoever knew the old one).
var revokeOn = map[model.EventType]string{
	model.EventUserDisabled:    "user_disabled",
	model.EventUserDeleted:     "user_deleted",
	model.EventPasswordChanged: "password_changed",
}

// revokeSessionsOnAccountChange is a bus consumer: it revokes every session
// of a user whose account was disabled, deleted or given a new password,
// and records session.revoked for each. Services never call each other;
// they meet through events like this one.
func (a *App) revokeSessionsOnAccountChange(ctx context.Context, e *model.Event) error {
	reason, ok := revokeOn[e.Type]
	if !ok || e.UserID == "" {
		return nil
	}
	ids, err := a.Store.RevokeUserSessions(ctx, e.UserID, a.Now(), reason)
	if err != nil {
		return fmt.Errorf("revoke sessions of %s: %w", e.UserID, err)
	}
	for _, sid := range ids {
		ev := &model.Event{ID: uuid.NewString(), Type: model.EventSessionRevoked, Time: a.Now(), Actor: e.Actor,
			UserID: e.UserID, SessionID: sid, Outcome: model.OutcomeSuccess, Reason: reason,
			IP: e.IP, UserAgent: e.UserAgent, CorrelationID: e.CorrelationID}
		if err := a.Bus.Publish(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}
