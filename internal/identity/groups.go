package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

const maxGroupNameLen = 128

// errNoChange aborts an UpdateGroup that would change nothing.
var errNoChange = errors.New("no change")

// CreateGroup creates an empty group. Names are unique, 1..128 printable
// characters, trimmed. It publishes group.created.
func (s *Service) CreateGroup(ctx context.Context, actor, name string) (*model.Group, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, fmt.Errorf("%w: group name is empty", ErrInvalidInput)
	}
	if err := validateText("group name", name, maxGroupNameLen); err != nil {
		return nil, err
	}
	g := &model.Group{ID: newID(), Name: name, Members: []string{}, CreatedAt: s.now()}
	ev := &model.Event{Type: model.EventGroupCreated, Actor: actor, Data: map[string]string{"group_id": g.ID, "name": g.Name}}
	ctx = s.events.Pending(ctx, ev, nil) // commits with the group
	if err := s.store.CreateGroup(ctx, g); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, fmt.Errorf("group %q: %w", name, ErrExists)
		}
		return nil, fmt.Errorf("identity: create group: %w", err)
	}
	s.log.InfoContext(ctx, "group created", "actor", actor, "group_id", g.ID, "name", g.Name)
	return g, s.events.Emit(ctx, ev)
}

// AddMember adds an existing user to a group. Adding a member again is a
// no-op without an event. It publishes group.updated with
// Data["change"]="member_added".
func (s *Service) AddMember(ctx context.Context, actor, groupID, userID string) error {
	if _, err := s.store.GetUser(ctx, userID); err != nil {
		return fmt.Errorf("identity: user %s: %w", userID, notFound(err))
	}
	return s.changeMembers(ctx, actor, groupID, userID, true)
}

// RemoveMember removes a user from a group. Removing a non-member is a
// no-op without an event. It publishes group.updated with
// Data["change"]="member_removed".
func (s *Service) RemoveMember(ctx context.Context, actor, groupID, userID string) error {
	return s.changeMembers(ctx, actor, groupID, userID, false)
}

func (s *Service) changeMembers(ctx context.Context, actor, groupID, userID string, add bool) error {
	change := "member_added"
	if !add {
		change = "member_removed"
	}
	// Commits with the membership change (a no-op rolls back: no event).
	ev := &model.Event{Type: model.EventGroupUpdated, Actor: actor, UserID: userID,
		Data: map[string]string{"group_id": groupID, "change": change}}
	ctx = s.events.Pending(ctx, ev, nil)
	_, err := s.store.UpdateGroup(ctx, groupID, func(g *model.Group) error {
		has := slices.Contains(g.Members, userID)
		switch {
		case add && has, !add && !has:
			return errNoChange
		case add:
			g.Members = append(g.Members, userID)
		default:
			g.Members = slices.DeleteFunc(g.Members, func(m string) bool { return m == userID })
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("identity: update group %s: %w", groupID, notFound(err))
	}
	s.log.InfoContext(ctx, "group membership changed", "actor", actor, "group_id", groupID, "user_id", userID, "change", change)
	return s.events.Emit(ctx, ev)
}

// DeleteGroup deletes a group. It publishes group.deleted.
func (s *Service) DeleteGroup(ctx context.Context, actor, groupID string) error {
	ev := &model.Event{Type: model.EventGroupDeleted, Actor: actor, Data: map[string]string{"group_id": groupID}}
	ctx = s.events.Pending(ctx, ev, nil) // commits with the deletion
	if err := s.store.DeleteGroup(ctx, groupID); err != nil {
		return fmt.Errorf("identity: delete group %s: %w", groupID, notFound(err))
	}
	s.log.InfoContext(ctx, "group deleted", "actor", actor, "group_id", groupID)
	return s.events.Emit(ctx, ev)
}

// GroupsOf returns the groups userID belongs to.
func (s *Service) GroupsOf(ctx context.Context, userID string) ([]*model.Group, error) {
	gs, err := s.store.GroupsOfUser(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("identity: groups of user %s: %w", userID, err)
	}
	return gs, nil
}
