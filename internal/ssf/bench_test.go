package ssf_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
	"github.com/ward-idp/ward/rs/caenats"
)

// Benchmarks of the SSF transmitter (docs/benchmarks.md, "Continuous
// Access Evaluation"):
//
//	go test ./internal/ssf/ -run '^$' -bench 'Enqueue' -benchtime 200x
//	go test ./internal/ssf/ -run '^$' -bench 'Propagation' -benchtime 200x -timeout 60m
//
// WARD_SSF_TRIAL_PROFILE=<file> writes a CPU profile of the propagation
// trials (without the setup of streams and receivers).
//
// SET signing alone against a raw ES256 signature is in internal/tokens
// (BenchmarkMintSET, BenchmarkECDSAP256Sign).

func benchWard(b *testing.B, streams int, more ...func(*config.Config)) *wardtest.Instance {
	b.Helper()
	return wardtest.Start(b, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		ssfClients(c)
		c.SSF.MaxStreamsPerClient = streams + 1
		c.SSF.RescanInterval = time.Second
		c.Log.Level = "info"
		for _, f := range more {
			f(c)
		}
	}})
}

// BenchmarkEnqueue measures what one critical domain event costs the
// transmitter inside Publish: mapping, one signed SET per stream, and the
// single store call that queues them all (SQLite), with 1, 100 and 1000
// (poll) streams. sets/op and µs/SET put it against the signature cost.
func BenchmarkEnqueue(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			in := benchWard(b, n)
			ctx := context.Background()
			for range n {
				if _, err := in.App.CAE.CreateStream(ctx, receiverID, cae.StreamRequest{}); err != nil {
					b.Fatal(err)
				}
			}
			bob := userID(b, in, "bob")
			ev := &model.Event{Type: model.EventUserDisabled, Actor: "admin-1", UserID: bob, Time: time.Now()}
			before := in.App.CAE.Stats().Enqueued.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ev.ID = uuid.NewString()
				if err := in.App.CAE.HandleEvent(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			sets := in.App.CAE.Stats().Enqueued.Load() - before
			if sets != int64(b.N*n) {
				b.Fatalf("queued %d SETs for %d events and %d streams", sets, b.N, n)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(sets), "µs/SET")
		})
	}
}

// BenchmarkPropagation measures, over b.N trials, the time from the
// identity-service call that disables a user until each receiver has
// applied the RISC account-disabled SET to its rs.RevocationState
// (verified with the rs package), with 1, 100 and 1000 receivers, by push
// (one httptest server per receiver), by long polling (an rs.Poller
// per receiver) and directly over NATS (an rs/caenats Follower per
// receiver, each with its own TCP connection to the embedded server's
// listener and its own ordered consumer). Reported: p50 and p99 over every (trial, receiver)
// delivery, and p99 of the slowest receiver per trial.
func BenchmarkPropagation(b *testing.B) {
	for _, mode := range []string{"push", "poll", "nats"} {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/receivers=%d", mode, n), func(b *testing.B) { benchPropagation(b, mode, n, 0, 0) })
		}
	}
}

// benchPropagation runs trials with n receivers; replicas > 0 runs that
// many instances on PostgreSQL and the external NATS instead of one on
// SQLite and the embedded server (BenchmarkPropagationReplicas).
// slowReceiverDelay is how long a slow receiver of benchPropagation takes
// to answer a push after it has applied the SET.
const slowReceiverDelay = 200 * time.Millisecond

// benchPropagation measures, per trial, the time from a domain event to
// each of n receivers applying its SET; with replicas > 0 on that many
// instances on PostgreSQL and NATS. slow receivers (push), spread evenly,
// answer slowReceiverDelay after applying: their own latency is measured
// on arrival, so what the figures show is what they cost the others.
func benchPropagation(b *testing.B, mode string, n, replicas, slow int) {
	var more []func(*config.Config)
	kp, err := nkeys.CreateUser()
	if err != nil {
		b.Fatal(err)
	}
	subPub, _ := kp.PublicKey()
	if mode == "nats" {
		more = append(more, func(c *config.Config) {
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:0"
			c.SSF.NATS.SubscriberNKeys = []string{subPub}
		})
	}
	var in *wardtest.Instance
	if replicas > 0 {
		in = benchReplicas(b, n, replicas)
	} else {
		in = benchWard(b, n, more...)
	}
	ctx := context.Background()
	keys, err := rs.NewKeySet(rs.KeySetConfig{JWKSURL: in.URL + "/jwks"})
	if err != nil {
		b.Fatal(err)
	}
	var (
		trialStart atomic.Int64
		got        atomic.Int64
		mu         sync.Mutex
		lat        []time.Duration
		done       = make(chan struct{}, 1)
	)
	onEvent := func(_ context.Context, set *rs.SET, _ []rs.Action) error {
		if set.Event.Type != cae.EventAccountDisabled {
			return nil
		}
		d := time.Duration(time.Now().UnixNano() - trialStart.Load())
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		if got.Add(1) == int64(n) {
			done <- struct{}{}
		}
		return nil
	}
	aud := receiverID
	if mode == "nats" {
		aud = config.DefaultCAEAudience
	}
	newReceiver := func(slow bool) *rs.Receiver {
		on := onEvent
		if slow {
			on = func(ctx context.Context, set *rs.SET, a []rs.Action) error {
				err := onEvent(ctx, set, a)
				time.Sleep(slowReceiverDelay)
				return err
			}
		}
		r, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: in.URL, Audience: aud, Keys: keys,
			State: rs.NewRevocationState(rs.StateConfig{}), OnEvent: on})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	only := []string{cae.EventAccountDisabled}
	switch mode {
	case "push":
		for i := range n {
			bearer := fmt.Sprintf("bench-push-%d", i)
			srv := httptest.NewServer(newReceiver(slow > 0 && i%(n/slow) == 0).PushHandler(rs.RequireBearer(bearer)))
			b.Cleanup(srv.Close)
			h := "Bearer " + bearer
			if _, err := in.App.CAE.CreateStream(ctx, receiverID, cae.StreamRequest{EventsRequested: &only,
				Delivery: &cae.Delivery{Method: model.DeliveryPush, EndpointURL: srv.URL + "/events", AuthorizationHeader: &h}}); err != nil {
				b.Fatal(err)
			}
		}
	case "nats":
		url := in.App.Bus.(*bus.NATS).ClientURL()
		for range n {
			nc, err := nats.Connect(url, nats.Nkey(subPub, kp.Sign))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(nc.Close)
			f, err := caenats.Follow(ctx, caenats.Config{Conn: nc, Receiver: newReceiver(false),
				Subjects: []string{"ward.cae.risc.account-disabled"}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
		}
	case "poll":
		tok := receiverToken(b, in) // 10 minutes: refreshed below
		var tokMu sync.Mutex
		tokAt := time.Now()
		tokenFn := func(context.Context) (string, error) {
			tokMu.Lock()
			defer tokMu.Unlock()
			if time.Since(tokAt) > 5*time.Minute {
				tok, tokAt = receiverToken(b, in), time.Now()
			}
			return tok, nil
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost, tr.MaxIdleConns = 2*n, 2*n
		client := &http.Client{Transport: tr}
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		b.Cleanup(func() { cancel(); wg.Wait() })
		for range n {
			st, err := in.App.CAE.CreateStream(ctx, receiverID, cae.StreamRequest{EventsRequested: &only})
			if err != nil {
				b.Fatal(err)
			}
			p, err := newReceiver(false).NewPoller(rs.PollConfig{Endpoint: in.URL + "/ssf/poll/" + st.ID, Token: tokenFn,
				HTTPClient: client, MaxEvents: 10, MinBackoff: 100 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.Run(pctx) }()
		}
	}
	if replicas > 0 {
		waitSpread(b, in, n, replicas)
	}
	bob := userID(b, in, "bob")
	trial := func() []time.Duration {
		mu.Lock()
		lat = lat[:0]
		mu.Unlock()
		got.Store(0)
		trialStart.Store(time.Now().UnixNano())
		if err := in.App.Identity.SetDisabled(ctx, "admin-1", bob, true); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatalf("trial: %d of %d receivers applied the SET within 60 s", got.Load(), n)
		}
		if err := in.App.Identity.SetDisabled(ctx, "admin-1", bob, false); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lat)
	}
	// Warm up: keys fetched, connections open, long polls waiting.
	time.Sleep(500 * time.Millisecond)
	trial()
	time.Sleep(200 * time.Millisecond)
	var all, slowest []time.Duration
	if f := os.Getenv("WARD_SSF_TRIAL_PROFILE"); f != "" && b.N > 1 {
		// A CPU profile of the trials alone (setup excluded).
		fh, _ := os.Create(f)
		pprof.StartCPUProfile(fh)
		defer pprof.StopCPUProfile()
	}
	b.ResetTimer()
	for range b.N {
		l := trial()
		all = append(all, l...)
		slowest = append(slowest, slices.Max(l))
		if mode == "poll" {
			// Let the pollers send their acknowledgements and wait again
			// before the next change, as steady state would have it.
			time.Sleep(20 * time.Millisecond)
		}
	}
	b.StopTimer()
	pct := func(l []time.Duration, p float64) float64 {
		slices.Sort(l)
		return float64(l[min(len(l)-1, int(float64(len(l))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(all, 0.50), "p50_ms")
	b.ReportMetric(pct(all, 0.99), "p99_ms")
	b.ReportMetric(pct(slowest, 0.50), "last_p50_ms")
	b.ReportMetric(pct(slowest, 0.99), "last_p99_ms")
	st := in.App.CAE.Stats()
	b.Logf("%s receivers=%d trials=%d: delivered=%d (direct=%d, written=%d) polled=%d retried=%d refused=%d", mode, n, b.N,
		st.Delivered.Load(), st.Direct.Load(), st.Enqueued.Load(), st.Polled.Load(), st.Retried.Load(), st.Refused.Load())
}
