package session

import (
	"context"
	"fmt"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Get returns the session with id, revoked or not; ErrNotFound when there
// is none.
func (s *Service) Get(ctx context.Context, id string) (*model.Session, error) {
	se, err := s.store.GetSession(ctx, id)
	if err != nil {
		return nil, s.wrap(err, "get session "+id)
	}
	return se, nil
}

// Filter selects sessions in List.
type Filter struct {
	UserID string // "": every user's
	// ActiveOnly keeps only sessions in use now: not revoked, not past
	// their absolute lifetime and not idle for longer than their idle
	// timeout (model.Session.Active).
	ActiveOnly bool
	Limit      int // 0: 100
}

// List returns the sessions f selects, newest first. Limit applies
// before the idle timeout is, so with ActiveOnly a page may hold fewer.
func (s *Service) List(ctx context.Context, f Filter) ([]*model.Session, error) {
	now := s.now()
	ss, err := s.store.ListSessions(ctx, store.SessionFilter{UserID: f.UserID, ActiveOnly: f.ActiveOnly, Now: now, Limit: f.Limit})
	if err != nil {
		return nil, fmt.Errorf("session: list: %w", err)
	}
	if !f.ActiveOnly {
		return ss, nil
	}
	out := ss[:0]
	for _, se := range ss {
		if se.Active(now) {
			out = append(out, se)
		}
	}
	return out, nil
}

// Binding is what a session's live refresh tokens are bound to
// (store.SessionBinding).
type Binding = store.SessionBinding

// Bindings returns what the live refresh tokens of each of ids (at most
// 1000) are bound to: registered devices, DPoP keys of no registered
// device, or nothing. Sessions without live refresh tokens are absent.
func (s *Service) Bindings(ctx context.Context, ids []string) (map[string]*Binding, error) {
	m, err := s.store.SessionBindings(ctx, ids, s.now())
	if err != nil {
		return nil, fmt.Errorf("session: bindings: %w", err)
	}
	return m, nil
}
