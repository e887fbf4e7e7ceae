package bustest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- synchronous delivery (every bus) ----

// Publish runs the subscribers in registration order before it returns,
// and returns their errors joined; an unsubscribed handler runs no more.
func testSubscribersInOrder(t *testing.T, b Backend) {
	in := b.New(t).Open(t, OpenStore(t)) // no persister: only this test's subscribers
	var got []string
	in.Bus.Subscribe("a", func(_ context.Context, e *model.Event) error { got = append(got, "a:"+string(e.Type)); return nil })
	unsub := in.Bus.Subscribe("b", func(context.Context, *model.Event) error { return errors.New("disk full") })
	in.Bus.Subscribe("c", func(_ context.Context, e *model.Event) error { got = append(got, "c:"+string(e.Type)); return nil })
	err := in.Bus.Publish(context.Background(), &model.Event{ID: "e1", Type: model.EventUserCreated})
	if err == nil || len(got) != 2 || got[0] != "a:user.created" || got[1] != "c:user.created" {
		t.Fatalf("Publish = %v, delivered %v; want both others run and the error", err, got)
	}
	unsub()
	if err := in.Bus.Publish(context.Background(), &model.Event{ID: "e2", Type: model.EventUserDeleted}); err != nil || len(got) != 4 {
		t.Fatalf("after unsubscribe: %v, %v", err, got)
	}
}

// The request origin on the context fills the empty IP, user agent and
// correlation id of an event, and nothing else.
func testOrigin(t *testing.T, b Backend) {
	in := b.New(t).Open(t, OpenStore(t))
	rec := &bus.Recorder{}
	in.Bus.Subscribe("rec", rec.Handle)
	ctx := bus.WithOrigin(context.Background(), bus.Origin{IP: "203.0.113.9", UserAgent: "ua", CorrelationID: "c1"})
	in.Bus.Publish(ctx, &model.Event{ID: "e1", Type: model.EventUserUpdated})
	in.Bus.Publish(ctx, &model.Event{ID: "e2", Type: model.EventUserUpdated, IP: "198.51.100.1"})
	in.Bus.Publish(context.Background(), &model.Event{ID: "e3", Type: model.EventUserUpdated})
	evs := rec.Events()
	if len(evs) != 3 {
		t.Fatalf("recorded %d events", len(evs))
	}
	if evs[0].IP != "203.0.113.9" || evs[0].UserAgent != "ua" || evs[0].CorrelationID != "c1" {
		t.Errorf("origin not filled: %+v", evs[0])
	}
	if evs[1].IP != "198.51.100.1" || evs[1].UserAgent != "ua" {
		t.Errorf("explicit IP overwritten or the rest not filled: %+v", evs[1])
	}
	if evs[2].IP != "" || evs[2].CorrelationID != "" {
		t.Errorf("origin invented without a request: %+v", evs[2])
	}
}

// Every published event is in the store when Publish returns, once,
// including one committed with its change (store.WithEvent).
func testStoredOnce(t *testing.T, b Backend) {
	ctx := context.Background()
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	ids := publishN(t, in.Bus, 10)
	if err := st.CreateUser(ctx, &model.User{ID: "u1", Username: "u1", Roles: []string{}, CreatedAt: time.Now(), UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	em := bus.NewEmitter(in.Bus, nil)
	e := &model.Event{Type: model.EventUserDisabled, UserID: "u1"}
	ectx := em.Pending(ctx, e, nil)
	if _, err := st.UpdateUser(ectx, "u1", func(u *model.User) error { u.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ectx, e); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, e.ID)
	stored, err := st.EventsAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(ids) {
		t.Fatalf("%d events stored, want %d", len(stored), len(ids))
	}
	for i, s := range stored {
		if s.ID != ids[i] {
			t.Errorf("stored event %d is %s, want %s", i, s.ID, ids[i])
		}
	}
}

// Concurrent publishers and subscribers: every event reaches every
// subscriber that was subscribed throughout, and is stored once.
func testConcurrent(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	var mu sync.Mutex
	seen := map[string]int{}
	in.Bus.Subscribe("count", func(_ context.Context, e *model.Event) error {
		mu.Lock()
		seen[e.ID]++
		mu.Unlock()
		return nil
	})
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			publishN(t, in.Bus, each)
		}()
		go func() { // subscribers come and go meanwhile
			defer wg.Done()
			for range each {
				unsub := in.Bus.Subscribe(fmt.Sprintf("churn-%d", w), func(context.Context, *model.Event) error { return nil })
				unsub()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != writers*each {
		t.Errorf("%d events delivered, want %d", len(seen), writers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	stored, err := st.EventsAfter(context.Background(), 0, 1000)
	if err != nil || len(stored) != writers*each {
		t.Errorf("%d events stored (%v), want %d", len(stored), err, writers*each)
	}
}

// A bus without durable delivery says so (bus.ErrNoDurable) and still
// stores what is published.
func testNoDurable(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	stop, err := in.Durable.Consume(context.Background(), "any", nil, (&got{}).handle)
	if !errors.Is(err, bus.ErrNoDurable) {
		if stop != nil {
			stop()
		}
		t.Fatalf("Consume = %v, want bus.ErrNoDurable", err)
	}
	publishN(t, in.Bus, 3)
	if stored, err := st.EventsAfter(context.Background(), 0, 10); err != nil || len(stored) != 3 {
		t.Errorf("%d events stored (%v), want 3", len(stored), err)
	}
}

// ---- durable delivery ----

func testPublishConsumeInOrder(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	g := &got{}
	stop, err := in.Durable.Consume(context.Background(), "audit-export", nil, g.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ids := publishN(t, in.Bus, 60)
	waitFor(t, 10*time.Second, "60 deliveries", func() bool { return g.uniqueIDs() == 60 })
	evs, dels := g.events()
	if dups := dedupInOrder(t, evs, ids); dups != 0 {
		t.Errorf("%d repeated deliveries without a failure", dups)
	}
	stored, err := st.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		want := stored[i]
		if dels[i].Seq != want.Seq || dels[i].Attempt != 1 || dels[i].StreamSeq == 0 {
			t.Errorf("delivery %d: %+v, want seq %d, attempt 1", i, dels[i], want.Seq)
		}
		gotJSON, _ := json.Marshal(store.StoredEvent{Seq: want.Seq, Event: e})
		wantJSON, _ := json.Marshal(want)
		if !bytes.Equal(gotJSON, wantJSON) {
			t.Errorf("event %d:\n got %s\nwant %s", i, gotJSON, wantJSON)
		}
	}
}

func testConsumeTypes(t *testing.T, b Backend) {
	in := open(t, b.New(t), OpenStore(t))
	one, two := &got{}, &got{}
	stop1, err := in.Durable.Consume(context.Background(), "one-type", []model.EventType{model.EventSessionRevoked}, one.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop1()
	stop2, err := in.Durable.Consume(context.Background(), "two-types",
		[]model.EventType{model.EventUserDisabled, model.EventRefreshReuseDetected, model.EventUserDisabled}, two.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	publishN(t, in.Bus, 40) // 10 of each test type
	waitFor(t, 10*time.Second, "filtered deliveries", func() bool { return one.uniqueIDs() == 10 && two.uniqueIDs() == 20 })
	time.Sleep(100 * time.Millisecond)
	for _, c := range []struct {
		g     *got
		types map[model.EventType]bool
	}{
		{one, map[model.EventType]bool{model.EventSessionRevoked: true}},
		{two, map[model.EventType]bool{model.EventUserDisabled: true, model.EventRefreshReuseDetected: true}},
	} {
		evs, _ := c.g.events()
		for _, e := range evs {
			if !c.types[e.Type] {
				t.Errorf("got %s, not subscribed", e.Type)
			}
		}
	}
}

// A failing handler gets its event again, with a growing attempt
// number, and the events behind it wait.
func testRedelivery(t *testing.T, b Backend) {
	in := open(t, b.New(t), OpenStore(t))
	ids := publishN(t, in.Bus, 5)
	var (
		mu       sync.Mutex
		attempts []string // id@attempt in handling order
	)
	done := make(chan struct{})
	stop, err := in.Durable.Consume(context.Background(), "flaky", nil, func(ctx context.Context, e *model.Event) error {
		d, _ := bus.DeliveryFrom(ctx)
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, e.ID+"@"+strconv.FormatUint(d.Attempt, 10))
		if e.ID == ids[2] && d.Attempt < 3 {
			return errors.New("downstream unavailable")
		}
		if e.ID == ids[4] {
			close(done)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case <-done:
	case <-time.After(b.RedeliveryMax):
		t.Fatal("timed out")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{ids[0] + "@1", ids[1] + "@1", ids[2] + "@1", ids[2] + "@2", ids[2] + "@3", ids[3] + "@1", ids[4] + "@1"}
	if len(attempts) != len(want) {
		t.Fatalf("handled %v, want %v", attempts, want)
	}
	for i := range want {
		if attempts[i] != want[i] {
			t.Fatalf("handled %v, want %v (the failing event must hold up the ones after it)", attempts, want)
		}
	}
}

func testDifferentNames(t *testing.T, b Backend) {
	in := open(t, b.New(t), OpenStore(t))
	x, y := &got{}, &got{}
	ids := publishN(t, in.Bus, 30)
	for name, g := range map[string]*got{"cae-transmitter": x, "risk-engine": y} {
		stop, err := in.Durable.Consume(context.Background(), name, nil, g.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	ids = append(ids, publishN(t, in.Bus, 30)...)
	waitFor(t, 10*time.Second, "both consumers", func() bool { return x.uniqueIDs() == 60 && y.uniqueIDs() == 60 })
	for _, g := range []*got{x, y} {
		evs, _ := g.events()
		dedupInOrder(t, evs, ids)
	}
}

// Two instances consuming under one name share the work: each event is
// handled once, in order across them, and both get some.
func testSameNameSharesWork(t *testing.T, b Backend) {
	st := OpenStore(t)
	d := b.New(t)
	first := open(t, d, st)
	second := open(t, d, st)
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		by     = map[string]int{}
		order  []string
	)
	handler := func(who string) bus.Handler {
		return func(_ context.Context, e *model.Event) error {
			mu.Lock()
			counts[e.ID]++
			by[who]++
			order = append(order, e.ID)
			mu.Unlock()
			time.Sleep(time.Millisecond) // some work, so that both instances get a share
			return nil
		}
	}
	for _, in := range []struct {
		n   Instance
		who string
	}{{first, "first"}, {second, "second"}} {
		stop, err := in.n.Durable.Consume(context.Background(), "cae-transmitter", nil, handler(in.who))
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	ids := publishN(t, first.Bus, 100)
	ids = append(ids, publishN(t, second.Bus, 100)...)
	waitFor(t, 20*time.Second, "200 events", func() bool { mu.Lock(); defer mu.Unlock(); return len(counts) == 200 })
	time.Sleep(200 * time.Millisecond) // would-be duplicates
	mu.Lock()
	defer mu.Unlock()
	for id, c := range counts {
		if c != 1 {
			t.Errorf("event %s handled %d times, want once", id, c)
		}
	}
	for i := range ids {
		if order[i] != ids[i] {
			t.Fatalf("shared consumer: event %d is %s, want %s (order across instances)", i, order[i], ids[i])
		}
	}
	t.Logf("handled by first: %d, second: %d", by["first"], by["second"])
	if by["first"] == 0 || by["second"] == 0 {
		t.Errorf("one instance did all the work: %v", by)
	}
}

// Events another process wrote to the database (a command-line tool, an
// instance without a relay) are delivered too.
func testOtherWriters(t *testing.T, b Backend) {
	st := OpenStore(t)
	in := open(t, b.New(t), st)
	g := &got{}
	stop, err := in.Durable.Consume(context.Background(), "others", nil, g.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	tool := bus.NewLocal() // a command-line tool: events go to the database only
	audit.Subscribe(tool, audit.Options{Store: st})
	ids := publishN(t, tool, 10)
	waitFor(t, 10*time.Second, "events written elsewhere", func() bool { return g.uniqueIDs() == 10 })
	evs, _ := g.events()
	dedupInOrder(t, evs, ids)
}

// After stop returns, the handler runs no more; a consumer started
// again under the same name resumes after what was acknowledged.
func testStop(t *testing.T, b Backend) {
	in := open(t, b.New(t), OpenStore(t))
	g := &got{}
	stop, err := in.Durable.Consume(context.Background(), "stopping", nil, g.handle)
	if err != nil {
		t.Fatal(err)
	}
	ids := publishN(t, in.Bus, 10)
	waitFor(t, 10*time.Second, "10 deliveries", func() bool { return g.uniqueIDs() == 10 })
	stop()
	before, _ := g.events()
	n := len(before)
	ids = append(ids, publishN(t, in.Bus, 10)...)
	time.Sleep(300 * time.Millisecond)
	if evs, _ := g.events(); len(evs) != n {
		t.Fatalf("%d deliveries after stop", len(evs)-n)
	}
	stop, err = in.Durable.Consume(context.Background(), "stopping", nil, g.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitFor(t, 10*time.Second, "the events published while stopped", func() bool { return g.uniqueIDs() == 20 })
	evs, _ := g.events()
	dedupInOrder(t, evs, ids)
}

func testConsumeInvalid(t *testing.T, b Backend) {
	in := open(t, b.New(t), OpenStore(t))
	for _, name := range []string{"", "a.b", "a b", "a*", "a>", "a/b"} {
		if stop, err := in.Durable.Consume(context.Background(), name, nil, (&got{}).handle); err == nil {
			stop()
			t.Errorf("Consume(%q): no error", name)
		}
	}
}
