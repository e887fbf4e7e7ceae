package identity

import (
	"context"
	"fmt"

	"github.com/ward-idp/ward/internal/model"
)

// GetUser returns the user with id; an error matching ErrNotFound when
// there is none.
func (s *Service) GetUser(ctx context.Context, id string) (*model.User, error) {
	u, err := s.store.GetUser(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("identity: user %s: %w", id, notFound(err))
	}
	return u, nil
}

// ListUsers returns every user.
func (s *Service) ListUsers(ctx context.Context) ([]*model.User, error) {
	us, err := s.store.ListUsers(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: list users: %w", err)
	}
	return us, nil
}

// GetGroup returns the group with id and its members; an error matching
// ErrNotFound when there is none.
func (s *Service) GetGroup(ctx context.Context, id string) (*model.Group, error) {
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("identity: group %s: %w", id, notFound(err))
	}
	return g, nil
}

// ListGroups returns every group with its members.
func (s *Service) ListGroups(ctx context.Context) ([]*model.Group, error) {
	gs, err := s.store.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: list groups: %w", err)
	}
	return gs, nil
}

// GetUserByUsername returns the user with this username (normalised as
// at sign-in); an error matching ErrNotFound when there is none.
func (s *Service) GetUserByUsername(ctx context.Context, username string) (*model.User, error) {
	u, err := s.store.GetUserByUsername(ctx, NormalizeUsername(username))
	if err != nil {
		return nil, fmt.Errorf("identity: user %q: %w", username, notFound(err))
	}
	return u, nil
}
