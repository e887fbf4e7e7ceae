package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// createWrite is one write of RunCreateEventAtomicity: do makes the
// change with ctx, done reports whether the change is in the store.
type createWrite struct {
	name string
	typ  model.EventType
	do   func(ctx context.Context) error
	done func(t *testing.T) bool
}

// RunCreateEventAtomicity checks the writes that create or delete a row
// together with its record (store.WithEvent): the creation of a session
// (the sign-in's record), the registration and deletion of a device, the
// registration, update and deletion of a client, the creation, change
// and deletion of a group. Each write is made first with an event the
// database refuses, which fails it with nothing changed and nothing
// stored, then with one it accepts, which commits the change and exactly
// that event. The store's database must refuse every event whose Reason is RefusedAppend
// (a trigger the backend's test installs before calling it).
func RunCreateEventAtomicity(t *testing.T, s store.Store) {
	if _, err := s.AppendEvent(ctx, &model.Event{ID: "probe", Type: model.EventSignInSucceeded, Time: at(0),
		Reason: RefusedAppend}); err == nil {
		t.Fatalf("AppendEvent with Reason %q succeeded: the database does not refuse it", RefusedAppend)
	}
	u := fullUser("u1", "alice")
	u.Disabled = false
	must(t, "CreateUser", s.CreateUser(ctx, u))

	exists := func(err error) bool {
		if err == nil {
			return true
		}
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("lookup: %v", err)
		}
		return false
	}
	writes := []createWrite{
		{"create session", model.EventSignInSucceeded,
			func(ctx context.Context) error { return s.CreateSession(ctx, fullSession("s1", "u1")) },
			func(t *testing.T) bool { _, err := s.GetSession(ctx, "s1"); return exists(err) }},
		{"create device", model.EventDeviceRegistered,
			func(ctx context.Context) error { return s.CreateDevice(ctx, fullDevice("d1", "u1", "jkt-d1")) },
			func(t *testing.T) bool { _, err := s.GetDevice(ctx, "d1"); return exists(err) }},
		// Deleting is done when the device is gone.
		{"delete device", model.EventDeviceDeleted,
			func(ctx context.Context) error { return s.DeleteDevice(ctx, "d1") },
			func(t *testing.T) bool { _, err := s.GetDevice(ctx, "d1"); return !exists(err) }},
		{"create client", model.EventClientCreated,
			func(ctx context.Context) error { return s.CreateClient(ctx, fullClient("c1")) },
			func(t *testing.T) bool { _, err := s.GetClient(ctx, "c1"); return exists(err) }},
		{"rotate client secret", model.EventClientSecretRotated,
			func(ctx context.Context) error {
				_, err := s.UpdateClient(ctx, "c1", func(c *model.Client) error { c.SecretHash = []byte("new"); return nil })
				return err
			},
			func(t *testing.T) bool {
				c, err := s.GetClient(ctx, "c1")
				must(t, "GetClient", err)
				return string(c.SecretHash) == "new"
			}},
		{"delete client", model.EventClientDeleted,
			func(ctx context.Context) error { return s.DeleteClient(ctx, "c1") },
			func(t *testing.T) bool { _, err := s.GetClient(ctx, "c1"); return !exists(err) }},
		{"create group", model.EventGroupCreated,
			func(ctx context.Context) error {
				return s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "ops", CreatedAt: at(0)})
			},
			func(t *testing.T) bool { _, err := s.GetGroup(ctx, "g1"); return exists(err) }},
		{"add group member", model.EventGroupUpdated,
			func(ctx context.Context) error {
				_, err := s.UpdateGroup(ctx, "g1", func(g *model.Group) error { g.Members = append(g.Members, "u1"); return nil })
				return err
			},
			func(t *testing.T) bool {
				g, err := s.GetGroup(ctx, "g1")
				must(t, "GetGroup", err)
				return len(g.Members) == 1
			}},
		{"delete group", model.EventGroupDeleted,
			func(ctx context.Context) error { return s.DeleteGroup(ctx, "g1") },
			func(t *testing.T) bool { _, err := s.GetGroup(ctx, "g1"); return !exists(err) }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			before := len(storedEvents(t, s))
			e := pendingEvent("refused-"+string(w.typ), w.typ, "u1")
			e.Reason = RefusedAppend
			ectx := store.WithEvent(ctx, e)
			if err := w.do(ectx); err == nil {
				t.Fatal("with an event the database refuses: got nil, want an error")
			}
			if store.EventStored(ectx, e) {
				t.Error("EventStored after a failed append")
			}
			if w.done(t) {
				t.Error("the change was made although its event was refused")
			}
			if n := len(storedEvents(t, s)) - before; n != 0 {
				t.Errorf("%d events stored after the refused write, want none", n)
			}

			e = pendingEvent("accepted-"+string(w.typ), w.typ, "u1")
			ectx = store.WithEvent(ctx, e)
			must(t, w.name+" with an event the database accepts", w.do(ectx))
			if !w.done(t) {
				t.Error("the change is missing after the write")
			}
			if !store.EventStored(ectx, e) {
				t.Error("EventStored false after the write")
			}
			evs := storedEvents(t, s)
			if n := len(evs) - before; n != 1 {
				t.Errorf("%d events stored by the write, want 1", n)
			}
			if got := evs[e.ID]; got == nil {
				t.Errorf("event %s not stored", e.ID)
			} else {
				same(t, w.name+": stored event", &got.Event, e, normEvent)
			}
		})
	}
}
