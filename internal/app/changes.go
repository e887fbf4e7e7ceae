package app

import (
	"context"
	"strings"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
)

// ChangeEventTypes are the events that state a server keeps in memory
// depends on: client registrations (the OAuth client cache), signing keys
// (the key manager) and the Conditional Access version in force.
func ChangeEventTypes() []model.EventType {
	var out []model.EventType
	for _, t := range audit.EventTypes() {
		if s := string(t); strings.HasPrefix(s, "client.") || strings.HasPrefix(s, "key.") || t == model.EventAccessPolicyChanged {
			out = append(out, t)
		}
	}
	return out
}

// followChanges sets a.Changes and starts following the ChangeEventTypes
// stored by every process (bus.Follower): the JetStream bus follows its
// stream, bus.driver local polls the events table. It runs before anything
// is loaded into memory, so a change stored while the server starts is
// either loaded or delivered. A command-line tool follows nothing: it
// lives for one change, which its own services see in-process.
func (a *App) followChanges(o Options) error {
	changes := bus.NewLocal()
	a.Changes = changes
	var f bus.Follower
	switch b := a.Bus.(type) {
	case *bus.NATS:
		f = b
	default:
		if o.Tool {
			f = bus.NoFollow{}
		} else {
			f = bus.NewPoller(a.Store, bus.PollerOptions{Log: a.Log})
		}
	}
	stop, err := f.Follow(context.Background(), ChangeEventTypes(), changes.Publish)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, func() error { stop(); return nil })
	return nil
}

// subscribeChanges makes the signing keys and the Conditional Access
// policies follow changes stored by other processes: `ward keys rotate`
// signs and appears in /jwks at once, `ward policy apply` is in force at
// once. The maintenance round and the policy poll stay as a safety net.
func (a *App) subscribeChanges() {
	a.Changes.Subscribe("signing-keys", func(ctx context.Context, e *model.Event) error {
		if strings.HasPrefix(string(e.Type), "key.") {
			return a.Keys.Reload(ctx)
		}
		return nil
	})
	a.Changes.Subscribe("conditional-access", func(ctx context.Context, e *model.Event) error {
		if e.Type == model.EventAccessPolicyChanged {
			return a.Access.Refresh(ctx)
		}
		return nil
	})
}
