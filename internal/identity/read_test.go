package identity

import (
	"context"
	"errors"
	"testing"
)

// GetUserByUsername normalises the name as sign-in does, and an unknown
// name is ErrNotFound.
func TestGetUserByUsername(t *testing.T) {
	e := newEnv(t, nil)
	u := e.mustCreate(t, "carol")
	for _, name := range []string{"carol", "Carol", " CAROL "} {
		got, err := e.svc.GetUserByUsername(context.Background(), name)
		if err != nil || got.ID != u.ID {
			t.Errorf("GetUserByUsername(%q) = %v, %v", name, got, err)
		}
	}
	if _, err := e.svc.GetUserByUsername(context.Background(), "dave"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown name: %v", err)
	}
}
