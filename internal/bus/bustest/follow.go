package bustest

import (
	"context"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
)

// ---- following (every bus) ----

// follow starts a follower of in for types, stopped when the test ends.
func follow(t testing.TB, in Instance, types []model.EventType) *got {
	t.Helper()
	g := &got{}
	stop, err := in.Follower.Follow(context.Background(), types, g.handle)
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	t.Cleanup(stop)
	return g
}

// Two instances on one database and a command-line tool writing to it
// directly: each instance's follower gets every event, its own included,
// in the store's order (a repeat allowed).
func testFollowEverywhere(t *testing.T, b Backend) {
	st := OpenStore(t)
	d := b.New(t)
	a, c := open(t, d, st), open(t, d, st)
	ga, gc := follow(t, a, nil), follow(t, c, nil)
	tool := bus.NewLocal() // events go to the database only
	audit.Subscribe(tool, audit.Options{Store: st})

	publishN(t, a.Bus, 5)
	publishN(t, tool, 5)
	publishN(t, c.Bus, 5)
	stored, err := st.EventsAfter(context.Background(), 0, 100)
	if err != nil || len(stored) != 15 {
		t.Fatalf("%d events stored (%v), want 15", len(stored), err)
	}
	var want []string
	for _, e := range stored {
		want = append(want, e.ID)
	}
	for name, g := range map[string]*got{"first instance": ga, "second instance": gc} {
		waitFor(t, 10*time.Second, "15 events at the "+name, func() bool { return g.uniqueIDs() == 15 })
		evs, _ := g.events()
		dedupInOrder(t, evs, want)
	}
}

// A follower gets what is stored after Follow, not the history before
// (an event stored just before the call may come too: its relay may
// still be under way).
func testFollowStartsNow(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	witness := follow(t, in, nil)
	before := publishN(t, in.Bus, 5)
	waitFor(t, 10*time.Second, "the history to be delivered", func() bool { return witness.uniqueIDs() == 5 })
	g := follow(t, in, nil)
	after := publishN(t, in.Bus, 3)
	waitFor(t, 10*time.Second, "the events stored after Follow", func() bool { return g.uniqueIDs() >= 3 })
	evs, _ := g.events()
	old := map[string]bool{}
	for _, id := range before {
		old[id] = true
	}
	for _, e := range evs {
		if old[e.ID] {
			t.Fatalf("event %s, stored before Follow, was delivered", e.ID)
		}
	}
	dedupInOrder(t, evs, after)
}

// A follower gets only the types it names.
func testFollowTypes(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	one := follow(t, in, []model.EventType{model.EventSessionRevoked})
	two := follow(t, in, []model.EventType{model.EventUserCreated, model.EventUserDisabled})
	all := follow(t, in, nil)
	publishN(t, in.Bus, 20) // five of each of testTypes
	waitFor(t, 10*time.Second, "every event at the unfiltered follower", func() bool { return all.uniqueIDs() == 20 })
	waitFor(t, 10*time.Second, "the filtered followers", func() bool { return one.uniqueIDs() == 5 && two.uniqueIDs() == 10 })
	for name, c := range map[string]struct {
		g    *got
		want map[model.EventType]bool
	}{
		"one type":  {one, map[model.EventType]bool{model.EventSessionRevoked: true}},
		"two types": {two, map[model.EventType]bool{model.EventUserCreated: true, model.EventUserDisabled: true}},
	} {
		evs, _ := c.g.events()
		for _, e := range evs {
			if !c.want[e.Type] {
				t.Errorf("%s: got a %s event", name, e.Type)
			}
		}
	}
}

// After stop returns, the handler runs no more.
func testFollowStop(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	g := &got{}
	stop, err := in.Follower.Follow(context.Background(), nil, g.handle)
	if err != nil {
		t.Fatal(err)
	}
	// A second follower shows when later events have been delivered: a
	// first one that kept running would have had them too.
	witness := follow(t, in, nil)
	publishN(t, in.Bus, 5)
	waitFor(t, 10*time.Second, "5 events", func() bool { return g.uniqueIDs() == 5 })
	stop()
	stop() // idempotent
	before, _ := g.events()
	publishN(t, in.Bus, 5)
	waitFor(t, 10*time.Second, "the witness follower", func() bool { return witness.uniqueIDs() == 10 })
	if evs, _ := g.events(); len(evs) != len(before) {
		t.Fatalf("%d deliveries after stop", len(evs)-len(before))
	}
}
