package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/rs"
)

// BenchmarkTheftResponseUnderUsageLoad measures, while resources report
// token uses to Ward at a steady rate (-uses, 5,000 a second by default,
// spread over 250 tokens, each used from its own address), how long after
// a thief's replayed refresh token (another key) the detection is
// recorded and the victim's other token is refused at the gateway (the
// CAE revocation applied). Each iteration is one theft of a new user's
// session; the p50 and p99 of both are reported.
//
//	go test ./internal/gateway -run '^$' -bench TheftResponse -benchtime 100x
func BenchmarkTheftResponseUnderUsageLoad(b *testing.B) {
	f := startCAEWardWith(b, SSFPush, func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: usageClient, Name: "usage reports",
			AuthMethod: "client_secret_basic", Secret: secret.String(usageClientPW), GrantTypes: []string{"client_credentials"},
			Scopes: []string{"ward:usage"}})
		for i := range c.StaticClients {
			if c.StaticClients[i].ID == "service" {
				c.StaticClients[i].Audience = []string{audDocs}
			}
		}
	})
	f.gw = f.startGateway(b, "", gwOptions{})
	f.registerPush(b)

	// The background: a resource's usage reporter (rs, as the gateway
	// and any Go resource use it) reporting 5,000 uses a second of real
	// tokens.
	usageTok := bearerToken(b, f.in.URL, usageClient, usageClientPW, "ward:usage")
	rep, err := rs.NewUsageReporter(rs.UsageConfig{Endpoint: f.in.URL + "/usage",
		Token: func(context.Context) (string, error) { return usageTok, nil }})
	if err != nil {
		b.Fatal(err)
	}
	const tokens = 250
	recs := make([]rs.UsageRecord, tokens)
	for i := range recs {
		s := newSigner(b)
		tok := serviceToken(b, f.in, s, "")
		c := jwtClaims(b, tok)
		recs[i] = rs.UsageRecord{TokenID: c["jti"].(string), ClientID: "service", JKT: s.Thumbprint(), BoundJKT: s.Thumbprint(),
			Proof: rs.ProofOK, Audience: audDocs, ClientIP: fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), UserAgent: "load/1",
			Result: rs.ResultAllowed}
	}
	uses := 5000
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		began, i := time.Now(), 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// Paced by the clock, not the ticks: a late tick catches up.
			owed := int(time.Since(began).Seconds()*float64(uses)) - i
			for range owed {
				r := recs[i%tokens]
				r.Time = time.Now()
				rep.Report(r)
				i++
				sent.Add(1)
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		rep.Close(context.Background())
	}()
	time.Sleep(2 * time.Second) // the load reaches a steady state

	var detect, refuse []time.Duration
	startUses := sent.Load()
	start := time.Now()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		name := fmt.Sprintf("victim%04d", i)
		id, pw := f.newUser(b, name)
		laptop := f.signIn(b, name, pw, nil)
		phone := f.signIn(b, name, pw, nil)
		if r := phone.read(); r.Status != 200 {
			b.Fatalf("read: %d %s", r.Status, r.Body)
		}
		nextSecond()
		b.StartTimer()
		replayed := time.Now()
		if st, code := f.refreshWith(b, newSigner(b), laptop.rt); st != 400 || code != "invalid_grant" {
			b.Fatalf("replay: %d %s", st, code)
		}
		detected := make(chan time.Duration, 1)
		go func() {
			for time.Since(replayed) < 10*time.Second {
				evs, err := f.in.App.Store.ListEvents(context.Background(), store.EventFilter{UserID: id, Types: []model.EventType{model.EventRiskDetected}, Limit: 1})
				if err == nil && len(evs) == 1 {
					detected <- time.Since(replayed) // seen in the audit log
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
			detected <- -1
		}()
		refuse = append(refuse, phone.waitRefused(replayed))
		d := <-detected
		if d < 0 {
			b.Fatal("no detection within 10 s")
		}
		detect = append(detect, max(d, 0))
	}
	b.StopTimer()
	rate := float64(sent.Load()-startUses) / time.Since(start).Seconds()
	b.ReportMetric(rate, "uses/s")
	b.ReportMetric(pct(detect, 50), "detect-p50-ms")
	b.ReportMetric(pct(detect, 99), "detect-p99-ms")
	b.ReportMetric(pct(refuse, 50), "refused-p50-ms")
	b.ReportMetric(pct(refuse, 99), "refused-p99-ms")
	if st := rep.Stats(); st.Dropped > 0 || st.Failures > 0 {
		b.Logf("usage reporter: %+v", st)
	}
	if ds := f.in.App.Detectors; ds != nil {
		b.Logf("online detectors: %+v", ds.Stats())
	}
}

// pct is the p-th percentile of ds in milliseconds.
func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return float64(s[i]) / float64(time.Millisecond)
}
