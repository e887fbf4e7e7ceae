package cae

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/bus/bustest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/tokens"
)

// spreadEnv is a deployment of transmitter instances on one PostgreSQL
// database and one external NATS, pushing to one test receiver.
type spreadEnv struct {
	dsn        string
	sqlitePath string // instead of dsn
	nc         *nats.Conn
	subject    string
	kek        *secret.KEK
	recv       *spreadReceiver
}

func newSpreadEnv(t *testing.T) *spreadEnv {
	t.Helper()
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN (and WARD_TEST_NATS_URL) to run the multi-instance push tests")
	}
	nc, err := nats.Connect(bustest.NATSURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	kek, err := secret.NewKEK(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	r := &spreadReceiver{got: map[string][]string{}}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return &spreadEnv{dsn: freshDatabase(t, dsn), nc: nc, kek: kek, recv: r,
		subject: "ward-test-" + strings.ToLower(secret.RandomString(8)) + "-cae-push.wake"}
}

// freshDatabase creates an empty database for the test.
func freshDatabase(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	name := "ward_cae_" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(secret.RandomString(9)))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close(context.Background())
	})
	u, _ := url.Parse(dsn)
	u.Path = "/" + name
	return u.String()
}

// instance starts a transmitter instance (its own connection pool, as a
// separate process would have) named name.
func (e *spreadEnv) instance(t *testing.T, name string, rescan, lease time.Duration) *Service {
	t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: e.kek})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Issuer: "https://ward.example", Store: st, Keys: keys, KEK: e.kek, InstanceID: name,
		RescanInterval: rescan, LeaseDuration: lease, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		MaxStreamsPerClient: 1000, PushAllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Notifier: bus.NewSignal(e.nc, e.subject)})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

// crash stops s without giving anything up: its leases and its
// membership run out on their own.
func crash(t *testing.T, s *Service) {
	t.Helper()
	s.pusher.abandon.Store(true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// createStreams creates n push streams (one receiver each) through s.
func (e *spreadEnv) createStreams(t *testing.T, s *Service, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		st, err := s.CreateStream(context.Background(), "rcv", StreamRequest{Delivery: &Delivery{
			Method: model.DeliveryPush, EndpointURL: fmt.Sprintf("%s/r/%d", e.recv.srv.URL, i)}})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = st.ID
	}
	return ids
}

// spreadReceiver records, per endpoint path, the txn (domain event id) of
// every SET pushed to it, in arrival order.
type spreadReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string][]string
	// jtis: per endpoint path, the jti of every SET recorded in got.
	jtis map[string][]string
	// answer (optional) decides the status for a request to a path
	// (it may block); anything but 202 records nothing.
	answer func(path string) int
}

func (r *spreadReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	parts := strings.Split(string(b), ".")
	var claims struct {
		Txn string `json:"txn"`
	}
	if len(parts) != 3 {
		http.Error(w, `{"err":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(p, &claims) != nil || claims.Txn == "" {
		http.Error(w, `{"err":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if r.answer != nil {
		if status := r.answer(req.URL.Path); status != http.StatusAccepted {
			http.Error(w, `{"err":"invalid_request","description":"test"}`, status)
			return
		}
	}
	var jti struct {
		JTI string `json:"jti"`
	}
	_ = json.Unmarshal(p, &jti)
	r.mu.Lock()
	r.got[req.URL.Path] = append(r.got[req.URL.Path], claims.Txn)
	if r.jtis == nil {
		r.jtis = map[string][]string{}
	}
	r.jtis[req.URL.Path] = append(r.jtis[req.URL.Path], jti.JTI)
	r.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// complete reports whether every one of n endpoints got events (in
// this order, each at least once, duplicates allowed but never out of
// order); it returns what is wrong otherwise.
func (r *spreadReceiver) complete(n int, events []string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range n {
		path := fmt.Sprintf("/r/%d", i)
		var distinct []string
		for j, txn := range r.got[path] {
			switch {
			case slices.Contains(distinct, txn):
				// A copy: only of the last one sent (a SET pushed again
				// after a takeover), never of an older one after a newer.
				if txn != distinct[len(distinct)-1] && txn != r.got[path][j-1] {
					return fmt.Sprintf("%s: %s again after %v", path, txn, distinct)
				}
			default:
				distinct = append(distinct, txn)
			}
		}
		if len(distinct) > len(events) || !slices.Equal(distinct, events[:len(distinct)]) {
			return fmt.Sprintf("%s: got %v, want a prefix of %v (in order)", path, distinct, events)
		}
		if len(distinct) < len(events) {
			return fmt.Sprintf("%s: %d of %d events so far", path, len(distinct), len(events))
		}
	}
	return ""
}

// held returns the streams s holds with a live lease.
func held(s *Service) []string {
	p := s.pusher
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id, ps := range p.owned {
		if time.Now().Before(ps.leaseUntil) {
			ids = append(ids, id)
		}
	}
	return ids
}

// waitSplit waits until the instances hold all n streams between them,
// none twice, each between floor(n/k) and ceil(n/k)+1.
func waitSplit(t *testing.T, n int, ins ...*Service) {
	t.Helper()
	k := len(ins)
	lo, hi := n/k, (n+k-1)/k+1
	var last string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		seen := map[string]int{}
		var counts []int
		dup := false
		for _, s := range ins {
			h := held(s)
			counts = append(counts, len(h))
			for _, id := range h {
				seen[id]++
				dup = dup || seen[id] > 1
			}
		}
		if dup {
			t.Fatalf("a stream is held by two instances at once: %v", seen)
		}
		ok := len(seen) == n
		for _, c := range counts {
			ok = ok && c >= lo && c <= hi
		}
		if ok {
			t.Logf("%d streams over %d instances: %v", n, k, counts)
			return
		}
		last = fmt.Sprintf("held %v (of %d streams), want each in [%d, %d]", counts, len(seen), lo, hi)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the streams were not split: %s", last)
}

// publish has s handle one domain event (one SET per stream) and
// returns its id.
func publish(t *testing.T, s *Service, i int) string {
	t.Helper()
	id := fmt.Sprintf("ev-%03d", i)
	e := &model.Event{ID: id, Type: model.EventUserDisabled, Time: time.Now(), Actor: "admin", UserID: fmt.Sprintf("u%d", i)}
	if err := s.HandleEvent(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *spreadEnv) waitDelivered(t *testing.T, n int, events []string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if last = e.recv.complete(n, events); last == "" {
			return
		}
		if strings.Contains(last, "want a prefix") || strings.Contains(last, "again after") {
			t.Fatal(last)
		}
	}
	t.Fatalf("not delivered: %s", last)
}

// Two, then three instances split 30 push streams; every SET reaches
// its receiver in order; when one instance dies without giving its
// streams up, the others take them over once its leases expire and
// deliver everything.
func TestPushStreamsSpreadOverInstances(t *testing.T) {
	e := newSpreadEnv(t)
	const n = 30
	lease := 3 * time.Second
	a := e.instance(t, "inst-a", 100*time.Millisecond, lease)
	e.createStreams(t, a, n)
	waitSplit(t, n, a)
	b := e.instance(t, "inst-b", 100*time.Millisecond, lease)
	waitSplit(t, n, a, b)

	var events []string
	for i := range 6 {
		events = append(events, publish(t, []*Service{a, b}[i%2], i))
	}
	e.waitDelivered(t, n, events)
	for _, s := range []*Service{a, b} {
		if s.stats.Delivered.Load() == 0 {
			t.Errorf("%s delivered nothing", s.o.InstanceID)
		}
	}

	c := e.instance(t, "inst-c", 100*time.Millisecond, lease)
	waitSplit(t, n, a, b, c)
	for i := 6; i < 12; i++ {
		events = append(events, publish(t, []*Service{a, b, c}[i%3], i))
	}
	e.waitDelivered(t, n, events)
	if c.stats.Delivered.Load() == 0 {
		t.Error("the third instance delivered nothing")
	}

	// b dies holding its streams, with SETs queued for them.
	crash(t, b)
	for i := 12; i < 18; i++ {
		events = append(events, publish(t, []*Service{a, c}[i%2], i))
	}
	waitSplit(t, n, a, c)
	e.waitDelivered(t, n, events)
}

// A SET queued by one instance for a stream another holds is pushed by
// the holder at once, woken over NATS: the holder's rescan (an hour
// here) never runs during the test.
func TestPushWakesTheHoldingInstance(t *testing.T) {
	e := newSpreadEnv(t)
	const n = 6
	a := e.instance(t, "inst-a", 100*time.Millisecond, time.Minute)
	e.createStreams(t, a, n)
	waitSplit(t, n, a)
	// b claims only when woken: its first scan, a's announcements.
	b := e.instance(t, "inst-b", time.Hour, time.Minute)
	waitSplit(t, n, a, b)
	if len(held(b)) == 0 {
		t.Fatal("b holds no stream")
	}

	var events []string
	for i := range 3 {
		events = append(events, publish(t, a, i))
	}
	e.waitDelivered(t, n, events)
	if got, want := b.stats.Delivered.Load(), int64(3*len(held(b))); got < want {
		t.Errorf("b delivered %d SETs, want at least %d (its streams')", got, want)
	}
}
