// Package bustest is the conformance suite of Ward's event buses: what
// every bus.Bus (synchronous, in-process delivery), every bus.Durable
// (cross-instance, at-least-once delivery of stored events) and every
// bus.Follower (every stored event to every instance) must do, whatever
// carries the events. Run it with a Backend that opens the
// implementation under test; bus.Local, the embedded NATS server and an
// external NATS cluster pass it (internal/bus/conformance_test.go).
//
// Every instance a test opens gets Ward's audit persister
// (internal/audit) as its first subscriber, as in `ward serve`: the
// events table it fills is the outbox a durable bus relays.
package bustest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// Instance is one Ward process as far as the bus is concerned.
type Instance struct {
	Bus bus.Bus
	// Durable is the instance's durable delivery (bus.NoDurable for a
	// bus without).
	Durable bus.Durable
	// Follower delivers to this instance the events every process
	// stores (the bus itself, or a bus.Poller of the events table).
	Follower bus.Follower
}

// Deployment is what the instances of one test share besides their
// database: one messaging system (a NATS server or cluster and its
// stream), or nothing for an in-process bus.
type Deployment interface {
	// Open starts an instance whose outbox is st (a database the
	// instances of a test share); it is closed when the test ends. The
	// first instance of a deployment may differ from later ones (the
	// embedded server runs in the first, later ones connect to it).
	Open(t testing.TB, st store.Store) Instance
}

// Backend describes a bus implementation under test.
type Backend struct {
	// New returns a fresh deployment for one test. A test's events,
	// streams and consumers must not meet another test's.
	New func(t testing.TB) Deployment
	// Durable reports whether the bus delivers durably. Without, Consume
	// must answer bus.ErrNoDurable and the durable tests are skipped.
	Durable bool
	// Peers reports whether two instances of one deployment share
	// durable consumers by name (several processes on one NATS); false
	// skips the tests that need two.
	Peers bool
	// RedeliveryMax bounds the back-off before an event whose handler
	// failed comes again (how long the redelivery test waits); default
	// 15s.
	RedeliveryMax time.Duration
}

// Run runs the suite against b.
func Run(t *testing.T, b Backend) {
	if b.RedeliveryMax <= 0 {
		b.RedeliveryMax = 15 * time.Second
	}
	syncTests := []struct {
		name string
		fn   func(t *testing.T, b Backend)
	}{
		{"SubscribersInOrderErrorsJoined", testSubscribersInOrder},
		{"OriginFillsOnlyEmptyFields", testOrigin},
		{"PublishedEventsStoredOnce", testStoredOnce},
		{"ConcurrentPublishAndSubscribe", testConcurrent},
		{"FollowEveryInstanceEveryEvent", testFollowEverywhere},
		{"FollowStartsNow", testFollowStartsNow},
		{"FollowTypes", testFollowTypes},
		{"FollowStop", testFollowStop},
	}
	durable := []struct {
		name  string
		fn    func(t *testing.T, b Backend)
		peers bool
	}{
		{"PublishConsumeInOrder", testPublishConsumeInOrder, false},
		{"ConsumeTypes", testConsumeTypes, false},
		{"RedeliveryAfterHandlerError", testRedelivery, false},
		{"DifferentNamesEachGetEverything", testDifferentNames, false},
		{"SameNameSharesWork", testSameNameSharesWork, true},
		{"RelaysEventsOfOtherWriters", testOtherWriters, false},
		{"StopEndsDelivery", testStop, false},
		{"ConsumeInvalidNames", testConsumeInvalid, false},
	}
	for _, tc := range syncTests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, b) })
	}
	if !b.Durable {
		t.Run("NoDurable", func(t *testing.T) { testNoDurable(t, b) })
		return
	}
	for _, tc := range durable {
		t.Run(tc.name, func(t *testing.T) {
			if tc.peers && !b.Peers {
				t.Skip("the backend runs one instance per deployment")
			}
			tc.fn(t, b)
		})
	}
}

// open opens an instance of d on st with the audit persister.
func open(t testing.TB, d Deployment, st store.Store) Instance {
	t.Helper()
	in := d.Open(t, st)
	if in.Bus == nil || in.Durable == nil || in.Follower == nil {
		t.Fatal("the deployment opened an instance without Bus, Durable or Follower")
	}
	audit.Subscribe(in.Bus, audit.Options{Store: st})
	return in
}

// OpenStore opens a SQLite store in a temp dir, closed when the test ends.
func OpenStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// NATSURLEnv names the external NATS (with JetStream) the tests use.
const NATSURLEnv = "WARD_TEST_NATS_URL"

// NATSURL returns the external NATS server's URL. Under CI (CI=true) a
// missing or unreachable server fails the test; elsewhere the test is
// skipped with a hint.
func NATSURL(t testing.TB) string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	u := os.Getenv(NATSURLEnv)
	if u == "" {
		if ci {
			t.Fatalf("%s is not set under CI; .ci/run starts nats-server and exports it", NATSURLEnv)
		}
		t.Skipf("%s is not set; skipping the external NATS run (e.g. nats-server -js -p 4222 and %s=nats://127.0.0.1:4222)", NATSURLEnv, NATSURLEnv)
	}
	nc, err := nats.Connect(u, nats.Timeout(3*time.Second))
	if err != nil {
		if ci {
			t.Fatalf("%s=%s is unreachable: %v", NATSURLEnv, u, err)
		}
		t.Skipf("%s=%s is unreachable (%v); start nats-server -js", NATSURLEnv, u, err)
	}
	nc.Close()
	return u
}

var testTypes = []model.EventType{model.EventUserCreated, model.EventUserDisabled, model.EventSessionRevoked, model.EventRefreshReuseDetected}

// publishN publishes n events of rotating types and returns their ids in
// publication (= store sequence) order.
func publishN(t testing.TB, b bus.Bus, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		e := &model.Event{ID: uuid.NewString(), Type: testTypes[i%len(testTypes)], UserID: fmt.Sprintf("u%d", i),
			Outcome: model.OutcomeSuccess, Data: map[string]string{"i": fmt.Sprint(i)}}
		if err := b.Publish(context.Background(), e); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		ids[i] = e.ID
	}
	return ids
}

// got records durable deliveries.
type got struct {
	mu   sync.Mutex
	evs  []model.Event
	dels []bus.Delivery
}

func (g *got) handle(ctx context.Context, e *model.Event) error {
	d, _ := bus.DeliveryFrom(ctx)
	g.mu.Lock()
	g.evs = append(g.evs, *e)
	g.dels = append(g.dels, d)
	g.mu.Unlock()
	return nil
}

func (g *got) events() ([]model.Event, []bus.Delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]model.Event(nil), g.evs...), append([]bus.Delivery(nil), g.dels...)
}

// uniqueIDs is the number of distinct event ids received.
func (g *got) uniqueIDs() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range g.evs {
		seen[e.ID] = true
	}
	return len(seen)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dedupInOrder checks that the deliveries, after dropping repeated ids,
// are exactly want in order, and returns how many repeats there were.
func dedupInOrder(t testing.TB, evs []model.Event, want []string) int {
	t.Helper()
	seen := map[string]bool{}
	var ids []string
	for _, e := range evs {
		if !seen[e.ID] {
			seen[e.ID] = true
			ids = append(ids, e.ID)
		}
	}
	if len(ids) != len(want) {
		t.Fatalf("got %d distinct events, want %d", len(ids), len(want))
	}
	for i := range want {
		if ids[i] != want[i] {
			t.Fatalf("event %d: got %s, want %s (out of order or wrong event)", i, ids[i], want[i])
		}
	}
	return len(evs) - len(ids)
}
