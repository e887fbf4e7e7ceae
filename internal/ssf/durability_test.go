package ssf_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/server"
	"github.com/ward-idp/ward/rs"
)

// node is one running `ward serve` (app + HTTP) on a fixed address, so a
// test can stop it and start it again on the same database and issuer.
type node struct {
	app *app.App
	srv *http.Server
	url string
}

// wardSetup is what every node of one deployment shares.
type wardSetup struct {
	dir, addr, pgDSN string
	// issuerLn serves the issuer's address for the whole test: a node
	// started again takes its connections from the same socket.
	issuerLn *sharedListener
}

// sharedListener keeps a port bound across node restarts. Binding the
// address again after a node closed it can fail: the system may have
// handed the freed port to another process in between (an outgoing
// connection's ephemeral port, another test's listener), which happens
// when a restart comes minutes later on a busy machine.
type sharedListener struct {
	ln    net.Listener
	conns chan net.Conn // closed when ln fails (closed at the end of the test)
}

func newSharedListener(t *testing.T) *sharedListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sharedListener{ln: ln, conns: make(chan net.Conn)}
	go func() {
		defer close(s.conns)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

// listener returns a listener for one node: closing it (the node's
// shutdown) leaves the socket bound for the next node.
func (s *sharedListener) listener() net.Listener {
	return &nodeListener{s: s, done: make(chan struct{})}
}

type nodeListener struct {
	s    *sharedListener
	done chan struct{}
	once sync.Once
}

func (l *nodeListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c, ok := <-l.s.conns:
		if !ok {
			return nil, net.ErrClosed
		}
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *nodeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *nodeListener) Addr() net.Addr { return l.s.ln.Addr() }

func newSetup(t *testing.T, pgDSN string) *wardSetup {
	t.Helper()
	dir := t.TempDir()
	kek := make([]byte, 32)
	rand.Read(kek)
	if err := os.WriteFile(filepath.Join(dir, "kek.key"), []byte(base64.StdEncoding.EncodeToString(kek)), 0o600); err != nil {
		t.Fatal(err)
	}
	ln := newSharedListener(t)
	return &wardSetup{dir: dir, addr: ln.ln.Addr().String(), pgDSN: pgDSN, issuerLn: ln}
}

// start opens a node serving on addr ("" for the setup's issuer address;
// the issuer is always the setup's).
func (w *wardSetup) start(t *testing.T, addr string) *node {
	t.Helper()
	if addr == "" {
		addr = w.addr
	}
	cfg := config.Default()
	cfg.Issuer, cfg.Listen, cfg.DataDir = "http://"+w.addr, addr, w.dir
	cfg.Passwords.Argon2MemoryKiB, cfg.Passwords.Argon2Time = 8*1024, 1
	if addr != w.addr {
		// Another instance: its own embedded NATS (one process owns a
		// store directory); the database is what the instances share.
		cfg.Bus.NATS.Embedded.StoreDir = filepath.Join(w.dir, "nats-"+strings.NewReplacer(":", "_", ".", "_").Replace(addr))
	}
	cfg.ResolvePaths()
	cfg.KEK.File, cfg.KEK.Env = filepath.Join(w.dir, "kek.key"), "WARD_TEST_UNSET_KEK"
	ssfClients(cfg)
	if w.pgDSN != "" {
		cfg.Storage.Driver = config.DriverPostgres
		cfg.Storage.Postgres.DSN = secret.String(w.pgDSN)
		cfg.Storage.Postgres.MaxConns = 4
	}
	a, err := app.OpenWith(context.Background(), cfg, slog.New(slog.DiscardHandler),
		app.Options{LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("open app: %v", err)
	}
	h, err := server.New(a)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if addr == w.addr {
		ln = w.issuerLn.listener()
	} else if ln, err = net.Listen("tcp", addr); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	n := &node{app: a, srv: &http.Server{Handler: h}, url: "http://" + ln.Addr().String()}
	go n.srv.Serve(ln)
	return n
}

// stop shuts the node down gracefully: the HTTP server, then the app
// (which lets pushes in flight finish and releases its leases).
func (n *node) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx)
	if err := n.app.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// countingReceiver is a push endpoint with the real rs.Receiver that
// counts, per jti, how many deliveries it acknowledged (202), and records
// the order of the sessions per user.
type countingReceiver struct {
	srv   *httptest.Server
	delay time.Duration
	// slowAfter makes every request after that many take 20 ms (0: off),
	// so a backlog builds up whatever the machine's speed.
	slowAfter atomic.Int64

	mu      sync.Mutex
	perJTI  map[string]int
	perUser map[string][]string
	total   int
}

func newCountingReceiver(t *testing.T, issuer string, delay time.Duration) *countingReceiver {
	c := &countingReceiver{delay: delay, perJTI: map[string]int{}, perUser: map[string][]string{}}
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: issuer, Audience: receiverID,
		State: rs.NewRevocationState(rs.StateConfig{})})
	if err != nil {
		t.Fatal(err)
	}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.delay > 0 {
			time.Sleep(c.delay)
		}
		if n := c.slowAfter.Load(); n > 0 && int64(c.unique()) >= n {
			time.Sleep(20 * time.Millisecond)
		}
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		set, err := recv.Verify(r.Context(), b.String())
		if err != nil {
			t.Errorf("receiver refused a SET: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.perJTI[set.JTI]++
		c.total++
		if set.Subject != nil && set.Subject.User != nil && set.Subject.Session != nil {
			u := set.Subject.User.Sub
			c.perUser[u] = append(c.perUser[u], set.Subject.Session.ID)
		}
		c.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *countingReceiver) unique() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.perJTI)
}

// check verifies that want distinct SETs arrived, each once, in order per
// user; dupOK allows duplicates (an instance that died without answering
// may push a SET again; receivers de-duplicate by jti).
func (c *countingReceiver) check(t *testing.T, want int, dupOK bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.perJTI) != want {
		t.Errorf("received %d distinct SETs, want %d", len(c.perJTI), want)
	}
	dups := 0
	for _, n := range c.perJTI {
		if n > 1 {
			dups += n - 1
		}
	}
	if dups > 0 && !dupOK {
		t.Errorf("%d duplicate deliveries after a graceful restart", dups)
	}
	for u, sids := range c.perUser {
		seen := map[string]bool{}
		last := ""
		for _, s := range sids {
			if seen[s] {
				continue // a duplicate of an earlier delivery
			}
			seen[s] = true
			if s < last {
				t.Errorf("user %s: session %s delivered after %s", u, s, last)
				return
			}
			last = s
		}
	}
}

func burstSize() int {
	if v, err := strconv.Atoi(os.Getenv("WARD_SSF_BURST")); err == nil && v > 0 {
		return v
	}
	if testing.Short() {
		return 2000
	}
	return 10000
}

// publishBurst publishes session.revoked events from..to through a node:
// 50 users, session ids increasing per user.
func publishBurst(t *testing.T, n *node, from, to int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < to; i++ {
		ev := &model.Event{Type: model.EventSessionRevoked, Actor: "admin-1", UserID: fmt.Sprintf("user-%02d", i%50),
			SessionID: fmt.Sprintf("s-%07d", i), Reason: "admin_revoked"}
		if err := n.app.Bus.Publish(ctx, ev); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func createPushStream(t *testing.T, issuer, pushURL string) {
	t.Helper()
	in := &instanceLike{url: issuer}
	tok := in.token(t)
	req := `{"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "` + pushURL + `"}}`
	r, err := http.NewRequest(http.MethodPost, issuer+"/ssf/stream", strings.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create stream: %d", resp.StatusCode)
	}
}

type instanceLike struct{ url string }

func (i *instanceLike) token(t *testing.T) string {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf.manage"}}
	req, _ := http.NewRequest(http.MethodPost, i.url+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(receiverID, receiverSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if out.AccessToken == "" {
		t.Fatalf("token: %d", resp.StatusCode)
	}
	return out.AccessToken
}

// waitUnique waits until the receiver has want distinct SETs.
func waitUnique(t *testing.T, c *countingReceiver, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for c.unique() < want {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d of %d SETs delivered", d, c.unique(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartDurability: a burst of domain events; Ward is shut down in
// the middle of delivering them (the receiver is slow, so SETs are still
// queued) and started again on the same database; the receiver gets every
// SET exactly once, in order per subject.
func TestRestartDurability(t *testing.T) {
	w := newSetup(t, "")
	n1 := w.start(t, "")
	total := burstSize()
	c := newCountingReceiver(t, n1.url, 0)
	c.slowAfter.Store(int64(total / 10))
	createPushStream(t, n1.url, c.srv.URL)
	start := time.Now()
	publishBurst(t, n1, 0, total/2)
	t.Logf("published %d events in %v; %d delivered so far", total/2, time.Since(start), c.unique())
	n1.stop(t)
	stoppedAt := c.unique()
	t.Logf("stopped with %d of %d delivered", stoppedAt, total/2)
	if stoppedAt >= total/2 {
		t.Fatal("everything was delivered before the stop: the test proves nothing")
	}
	c.slowAfter.Store(0)

	n2 := w.start(t, "")
	defer n2.stop(t)
	publishBurst(t, n2, total/2, total)
	waitUnique(t, c, total, 2*time.Minute)
	time.Sleep(200 * time.Millisecond) // anything extra would show up now
	c.check(t, total, false)
	t.Logf("%d SETs delivered across the restart in %v", total, time.Since(start))
}

// TestTwoInstancesShareStreams: two nodes on one PostgreSQL database
// publish alternately; the push lease makes exactly one of them deliver
// the stream, in order; when that one stops, the other takes over.
func TestTwoInstancesShareStreams(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run the multi-instance test")
	}
	w := newSetup(t, freshPostgres(t, dsn))
	a := w.start(t, "")
	// The second node serves on another port but has the same issuer.
	b := w.start(t, "127.0.0.1:0")
	defer b.stop(t)
	total := burstSize() / 2
	c := newCountingReceiver(t, a.url, 200*time.Microsecond)
	createPushStream(t, a.url, c.srv.URL)
	var wg sync.WaitGroup
	for i, n := range []*node{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for j := i; j < total; j += 2 {
				// Each node publishes its own users, so order per user is
				// the publishing order.
				ev := &model.Event{Type: model.EventSessionRevoked, Actor: "admin-1", UserID: fmt.Sprintf("user-%d-%02d", i, j%10),
					SessionID: fmt.Sprintf("s-%07d", j), Reason: "admin_revoked"}
				if err := n.app.Bus.Publish(ctx, ev); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for c.unique() < total/2 {
		time.Sleep(10 * time.Millisecond)
	}
	a.stop(t) // the other node takes over the stream's lease
	waitUnique(t, c, total, 2*time.Minute)
	time.Sleep(200 * time.Millisecond)
	c.check(t, total, false)
}

// freshPostgres creates an empty database for the test.
func freshPostgres(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	name := "ward_ssf_" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(secret.RandomString(9)))
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
