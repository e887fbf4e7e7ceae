package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// natsURLEnv names the external NATS (with JetStream) the tests use.
// .ci/run starts one and sets it; under CI (CI=true) a missing or
// unreachable server fails the tests, elsewhere they skip with a hint.
const natsURLEnv = "WARD_TEST_NATS_URL"

func externalURL(t testing.TB) string {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	u := os.Getenv(natsURLEnv)
	if u == "" {
		if ci {
			t.Fatalf("%s is not set under CI; .ci/run starts nats-server and exports it", natsURLEnv)
		}
		t.Skipf("%s is not set; skipping the external NATS run (e.g. nats-server -js -p 4222 and %s=nats://127.0.0.1:4222)", natsURLEnv, natsURLEnv)
	}
	nc, err := nats.Connect(u, nats.Timeout(3*time.Second))
	if err != nil {
		if ci {
			t.Fatalf("%s=%s is unreachable: %v", natsURLEnv, u, err)
		}
		t.Skipf("%s=%s is unreachable (%v); start nats-server -js", natsURLEnv, u, err)
	}
	nc.Close()
	return u
}

// backend is where a test's NATS runs: the embedded server or the
// external one. Every test gets its own stream and subject prefix, so
// parallel runs and leftovers of earlier runs do not meet.
type backend struct {
	name string
	// base returns options for the first instance of a test.
	base func(t testing.TB) NATSOptions
	// peer returns options for another instance on the same NATS as
	// first (the embedded server is shared through its listener).
	peer func(t testing.TB, first *NATS, base NATSOptions) NATSOptions
}

func uniqueNames() (stream, prefix string) {
	b := make([]byte, 6)
	rand.Read(b)
	id := hex.EncodeToString(b)
	return "WARDTEST_" + strings.ToUpper(id), "wardtest." + id
}

var embeddedBackend = backend{
	name: "embedded",
	base: func(t testing.TB) NATSOptions {
		stream, prefix := uniqueNames()
		return NATSOptions{
			Embedded: EmbeddedOptions{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: "127.0.0.1:0"},
			Token:    "test-token-" + stream, Stream: stream, SubjectPrefix: prefix,
		}
	},
	peer: func(t testing.TB, first *NATS, base NATSOptions) NATSOptions {
		o := base
		o.Embedded = EmbeddedOptions{}
		o.URL = first.clientURL()
		return o
	},
}

var externalBackend = backend{
	name: "external",
	base: func(t testing.TB) NATSOptions {
		u := externalURL(t)
		stream, prefix := uniqueNames()
		t.Cleanup(func() { deleteStream(u, stream) })
		return NATSOptions{URL: u, Stream: stream, SubjectPrefix: prefix, ReconnectWait: 100 * time.Millisecond}
	},
	peer: func(t testing.TB, _ *NATS, base NATSOptions) NATSOptions { return base },
}

func deleteStream(url, stream string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteStream(ctx, stream)
}

// forBackends runs fn once per backend as subtests.
func forBackends(t *testing.T, fn func(t *testing.T, be backend)) {
	for _, be := range []backend{embeddedBackend, externalBackend} {
		t.Run(be.name, func(t *testing.T) { fn(t, be) })
	}
}

// testLog writes the bus's log to the test log (warnings and up).
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = tWriter{}

// openStore opens a SQLite store in a temp dir.
func openStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// instance is one Ward process as far as the bus is concerned: a store
// (shared between instances of a test, like one database) and a bus whose
// synchronous audit persister writes every published event to it.
type instance struct {
	*NATS
	st store.Store
}

func openInstance(t testing.TB, st store.Store, o NATSOptions) *instance {
	t.Helper()
	if o.Log == nil {
		o.Log = testLog(t)
	}
	if o.Outbox == nil {
		o.Outbox = st
	}
	if o.RedeliveryMin == 0 {
		o.RedeliveryMin = 20 * time.Millisecond
	}
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatalf("OpenNATS: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	n.Subscribe("audit", persister(st))
	return &instance{NATS: n, st: st}
}

// persister is the test twin of audit.Persister, which tests inside the
// bus package cannot import (it imports bus).
func persister(st store.Store) Handler {
	return func(ctx context.Context, e *model.Event) error {
		if store.EventStored(ctx, e) {
			return nil
		}
		Stamp(ctx, e, time.Now)
		_, err := st.AppendEvent(ctx, e)
		return err
	}
}

var testTypes = []model.EventType{model.EventUserCreated, model.EventUserDisabled, model.EventSessionRevoked, model.EventRefreshReuseDetected}

// publishN publishes n events of rotating types and returns their ids in
// publication (= seq) order.
func publishN(t testing.TB, b Bus, n int) []string {
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

// got is a channel-backed recorder of durable deliveries.
type got struct {
	mu    sync.Mutex
	evs   []model.Event
	dels  []Delivery
	added chan struct{}
}

func newGot() *got { return &got{added: make(chan struct{}, 1)} }

func (g *got) handle(ctx context.Context, e *model.Event) error {
	d, _ := DeliveryFrom(ctx)
	g.mu.Lock()
	g.evs = append(g.evs, *e)
	g.dels = append(g.dels, d)
	g.mu.Unlock()
	select {
	case g.added <- struct{}{}:
	default:
	}
	return nil
}

func (g *got) events() ([]model.Event, []Delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]model.Event(nil), g.evs...), append([]Delivery(nil), g.dels...)
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

// Progress-based waiting: a loaded machine (CI runs other suites beside
// this one on two shared cores) makes delivery slow, not stuck. A fixed
// deadline cannot tell the two apart; a deadline on progress can.
const (
	// progressStall is how long a count may stay unchanged. Longer than
	// AckWait (10s): an event the server sent to a closing instance just
	// as its subscription went away (nats-server checks the pull
	// request's interest before it routes the message) is redelivered
	// only after AckWait, with every event behind it waiting (one in
	// flight per consumer). Seen under load, after about 1 restart in 60.
	progressStall = 20 * time.Second
	// progressLimit bounds the whole wait, however steady the progress.
	progressLimit = 3 * time.Minute
	// progressReport: a pause this long is logged with the state.
	progressReport = 2 * time.Second
)

// waitCount waits until count() reaches want. It fails when count() has
// not grown for progressStall (something is stuck: that is a bug, not
// slowness) or after progressLimit, reporting state() (may be nil). It
// returns the longest time count() stood still.
func waitCount(t testing.TB, what string, want int, count func() int, state func() string) (longestPause time.Duration) {
	t.Helper()
	start := time.Now()
	last, lastAt := count(), start
	reported := false
	for last < want {
		time.Sleep(5 * time.Millisecond)
		n := count()
		now := time.Now()
		if n != last {
			longestPause = max(longestPause, now.Sub(lastAt))
			last, lastAt, reported = n, now, false
			continue
		}
		if !reported && now.Sub(lastAt) > progressReport && state != nil {
			t.Logf("waiting for %s: no progress for %v at %d of %d; %s", what, progressReport, last, want, state())
			reported = true
		}
		var why string
		switch {
		case now.Sub(lastAt) > progressStall:
			why = fmt.Sprintf("no progress for %v", progressStall)
		case now.Sub(start) > progressLimit:
			why = fmt.Sprintf("still not done after %v", progressLimit)
		default:
			continue
		}
		msg := fmt.Sprintf("%s waiting for %s: %d of %d after %v", why, what, last, want, now.Sub(start).Round(time.Millisecond))
		if state != nil {
			msg += "; " + state()
		}
		t.Fatal(msg)
	}
	return longestPause
}

// consumerState describes a durable consumer, its stream and the relay,
// for the message of a failed wait.
func consumerState(n *NATS, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := ""
	if n.relay != nil {
		out = fmt.Sprintf("relay published %d; ", n.relay.Published())
	}
	if s, err := n.js.Stream(ctx, n.o.Stream); err != nil {
		out += fmt.Sprintf("stream: %v; ", err)
	} else {
		st := s.CachedInfo().State
		out += fmt.Sprintf("stream: %d messages (seq %d-%d); ", st.Msgs, st.FirstSeq, st.LastSeq)
	}
	c, err := n.js.Consumer(ctx, n.o.Stream, name)
	if err != nil {
		return out + fmt.Sprintf("consumer %s: %v", name, err)
	}
	i := c.CachedInfo()
	return out + fmt.Sprintf("consumer %s: delivered stream seq %d, ack floor %d, %d pending, %d awaiting ack, %d redelivered, %d pull requests waiting",
		name, i.Delivered.Stream, i.AckFloor.Stream, i.NumPending, i.NumAckPending, i.NumRedelivered, i.NumWaiting)
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

// streamSeqs returns the Ward-Seq headers of every message in the stream,
// in stream order.
func streamSeqs(t testing.TB, n *NATS) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.js.OrderedConsumer(ctx, n.o.Stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := n.js.Stream(ctx, n.o.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for range info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Headers().Get(HeaderSeq))
	}
	return out
}

func streamMsgs(t testing.TB, n *NATS) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := n.js.Stream(ctx, n.o.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// deadPort returns a loopback address nothing listens on (yet).
func deadPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proxy forwards TCP connections from addr to target until closed: the
// NATS server "comes back" at a previously dead address.
func proxy(t testing.TB, addr, target string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
}

func hostPort(t testing.TB, url string) string {
	t.Helper()
	i := strings.Index(url, "://")
	if i < 0 {
		t.Fatalf("not a URL: %s", url)
	}
	return strings.TrimSuffix(url[i+3:], "/")
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
