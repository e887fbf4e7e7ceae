package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/rs"
)

// caeMessages is how many SETs on subject Ward's CAE stream holds, read
// with the subscriber key as a resource server would.
func (f *caeFixture) caeMessages(t *testing.T, subject string) uint64 {
	t.Helper()
	pub, _ := f.nkey.PublicKey()
	nc, err := nats.Connect(f.natsURL, nats.Nkey(pub, f.nkey.Sign))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, DefaultNATSStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// jwksGate serves Ward's JWKS, but holds every request until it is
// opened: while it is closed, a gateway cannot verify the SETs it
// replays.
type jwksGate struct {
	*httptest.Server
	hits    atomic.Int32
	open    chan struct{}
	release func()
}

func newJWKSGate(t *testing.T, issuer string) *jwksGate {
	t.Helper()
	resp, err := http.Get(issuer + "/.well-known/ssf-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil || meta.JWKSURI == "" {
		t.Fatalf("ssf-configuration: %v %+v", err, meta)
	}
	g := &jwksGate{open: make(chan struct{})}
	var once sync.Once
	g.release = func() { once.Do(func() { close(g.open) }) }
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		select {
		case <-g.open:
		case <-r.Context().Done():
			return
		}
		resp, err := http.Get(meta.JWKSURI)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.release) // runs first: a held request must not block Close
	return g
}

// TestGatewayNATSReplayBeforeReady: a gateway that starts after a user
// was disabled is not ready, and lets no request through, until it has
// replayed the CAE stream; then it refuses the user's old token.
func TestGatewayNATSReplayBeforeReady(t *testing.T) {
	f := startCAEWard(t, SSFNATS)
	id, pw := f.newUser(t, "carol")
	carol := f.signIn(t, "carol", pw, nil)
	_, gpw := f.newUser(t, "grace")
	grace := f.signIn(t, "grace", gpw, nil)
	nextSecond()
	const disabled = "ward.cae.risc.account-disabled"
	before := f.caeMessages(t, disabled)
	if err := f.in.App.Identity.SetDisabled(context.Background(), "admin", id, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the account-disabled SET in the CAE stream", func() bool { return f.caeMessages(t, disabled) > before })

	gate := newJWKSGate(t, f.in.URL)
	f.gw = f.startGateway(t, "  jwks_url: "+gate.URL+"\n", gwOptions{noWait: true})
	waitFor(t, "the issuer's keys", f.gw.G.keysReady.Load)
	waitFor(t, "the replay to ask for the transmitter keys", func() bool { return gate.hits.Load() > 0 })

	r := get(t, f.gw.URL+PathReadyz)
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(r.Body, "the CAE stream has not been replayed yet") {
		t.Fatalf("readyz during the replay: %d %s", r.Status, r.Body)
	}
	if f.gw.G.Ready() {
		t.Fatal("Ready during the replay")
	}
	// Not even a valid token gets through: it could be one revoked
	// before the gateway started.
	for _, c := range []*session{carol, grace} {
		r := c.read()
		if r.Status != http.StatusServiceUnavailable || r.JSON["error"] != "temporarily_unavailable" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s during the replay: %d %v %s", c.user, r.Status, r.Header, r.Body)
		}
	}
	page := get(t, f.gw.URL+PathMetrics).Body
	for sample, want := range map[string]float64{
		MetricReady: 0, MetricNATSReplayed: 0, MetricNATSConnected: 1,
		MetricRequests + `{route="docs",result="rejected",reason="cae_replaying"}`: 2,
	} {
		if v := metric(t, page, sample); v != want {
			t.Errorf("%s = %v, want %v", sample, v, want)
		}
	}
	if f.docs.count() != 0 {
		t.Fatal("the upstream was reached during the replay")
	}

	gate.release()
	waitFor(t, "the gateway ready", f.gw.G.Ready)
	if r := get(t, f.gw.URL+PathReadyz); r.Status != http.StatusOK {
		t.Fatalf("readyz after the replay: %d %s", r.Status, r.Body)
	}
	r = carol.read()
	ch, ok := rs.ParseClaimsChallenge(r.Header)
	if r.Status != http.StatusUnauthorized || !ok || ch.Error != rs.CodeInsufficientClaims || len(ch.Claims) == 0 {
		t.Fatalf("carol's old token after the replay: %d %q %s", r.Status, r.Header.Values("WWW-Authenticate"), r.Body)
	}
	if r := grace.read(); r.Status != http.StatusOK {
		t.Fatalf("grace after the replay: %d %s", r.Status, r.Body)
	}
	page = get(t, f.gw.URL+PathMetrics).Body
	if v := metric(t, page, MetricNATSSETs+`{result="applied"}`); v < 1 {
		t.Errorf("applied SETs %v", v)
	}
	if v := metric(t, page, MetricNATSSETs+`{result="refused"}`); v != 0 {
		t.Errorf("refused SETs %v", v)
	}
	if metric(t, page, MetricReady) != 1 || metric(t, page, MetricNATSReplayed) != 1 {
		t.Errorf("gauges after the replay:\n%s", page)
	}
	logs := f.gw.Logs.String()
	for _, want := range []string{"gateway: CAE stream replayed", "gateway: ready"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// TestGatewayNATSUnknownKey: with a key Ward does not know, the gateway
// keeps trying, stays not ready and says why, naming the public key to
// register but never printing the seed.
func TestGatewayNATSUnknownKey(t *testing.T) {
	f := startCAEWard(t, SSFNATS)
	f.seedFile, f.nkey = writeSeed(t) // not in ssf.nats.subscriber_nkeys
	seed, _ := f.nkey.Seed()
	pub, _ := f.nkey.PublicKey()
	f.gw = f.startGateway(t, "", gwOptions{noWait: true})
	waitFor(t, "the issuer's keys", f.gw.G.keysReady.Load)
	waitFor(t, "an authorization error in the log", func() bool {
		return strings.Contains(strings.ToLower(f.gw.Logs.String()), "authorization violation")
	})
	// Through a few reconnection rounds, still not ready.
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r := get(t, f.gw.URL+PathReadyz); r.Status != http.StatusServiceUnavailable || !strings.Contains(r.Body, "CAE stream") {
			t.Fatalf("readyz with an unknown key: %d %s", r.Status, r.Body)
		}
	}
	if r := f.gw.do(req{path: "/docs/x"}); r.Status != http.StatusServiceUnavailable {
		t.Errorf("a request with an unknown key: %d %s", r.Status, r.Body)
	}
	page := get(t, f.gw.URL+PathMetrics).Body
	if metric(t, page, MetricNATSConnected) != 0 || metric(t, page, MetricReady) != 0 {
		t.Errorf("gauges with an unknown key:\n%s", page)
	}
	logs := f.gw.Logs.String()
	if strings.Contains(logs, string(seed)) || strings.Contains(logs, string(seed[:20])) {
		t.Fatal("the seed reached the log")
	}
	if !strings.Contains(logs, pub) {
		t.Errorf("the log does not name the public key %s to register", pub)
	}
}
