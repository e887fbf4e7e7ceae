package rs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// usageSink is the IdP's usage endpoint.
type usageSink struct {
	mu      sync.Mutex
	batches [][]UsageRecord
	dropped []uint64
	bodies  []string
	down    atomic.Bool
	token   string
}

func (s *usageSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+s.token || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if s.down.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var b struct {
		Records []UsageRecord `json:"records"`
		Dropped uint64        `json:"dropped"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.batches = append(s.batches, b.Records)
	s.dropped = append(s.dropped, b.Dropped)
	s.bodies = append(s.bodies, string(body))
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *usageSink) records() (n int, maxBatch int, batches int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.batches {
		n += len(b)
		maxBatch = max(maxBatch, len(b))
	}
	return n, maxBatch, len(s.batches)
}

func newSink(t *testing.T) (*usageSink, *httptest.Server) {
	s := &usageSink{token: "usage-token"}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func TestUsageBatching(t *testing.T) {
	sink, srv := newSink(t)
	u, err := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), MaxBatch: 10, FlushInterval: 50 * time.Millisecond,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close(context.Background())
	for i := range 25 {
		u.Report(UsageRecord{Time: t0, TokenID: "jti-" + string(rune('a'+i)), Result: ResultAllowed})
	}
	waitFor(t, "25 records", func() bool { n, _, _ := sink.records(); return n == 25 })
	_, maxBatch, batches := sink.records()
	if maxBatch > 10 || batches < 3 {
		t.Fatalf("%d batches, largest %d; want ≥3 batches of ≤10", batches, maxBatch)
	}
	// A single record goes out with the timed flush.
	u.Report(UsageRecord{Time: t0, Result: ResultRejected, Reason: "expired"})
	waitFor(t, "the timed flush", func() bool { n, _, _ := sink.records(); return n == 26 })
	// The sink has the record before the reporter has read the answer
	// and counted it: wait for the count, then check everything.
	waitFor(t, "the reporter's count", func() bool { return u.Stats().Sent == 26 })
	if s := u.Stats(); s.Sent != 26 || s.Dropped != 0 || s.Buffered != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// Full batches go out at once; the remainder waits for the flush interval
// (here an hour, so it can only leave with Close): no timing is measured.
func TestUsageRemainderWaitsForTheInterval(t *testing.T) {
	sink, srv := newSink(t)
	u, err := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), MaxBatch: 10, FlushInterval: time.Hour,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		// Distinct tokens: repeats of one would be merged.
		u.Report(UsageRecord{Time: t0, TokenID: fmt.Sprint("jti-", i), Result: ResultAllowed})
	}
	waitFor(t, "the full batch", func() bool { n, _, _ := sink.records(); return n == 10 })
	time.Sleep(100 * time.Millisecond) // room for a wrong early flush
	if n, _, _ := sink.records(); n != 10 {
		t.Fatalf("%d records sent before the interval, want the full batch (10)", n)
	}
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sink.records(); n != 12 {
		t.Errorf("%d records after Close, want 12", n)
	}
}

func TestUsageBoundedWhenIdPDown(t *testing.T) {
	sink, srv := newSink(t)
	sink.down.Store(true)
	u, _ := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), MaxBatch: 5, MaxBuffered: 20,
		FlushInterval: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	for i := range 50 {
		u.Report(UsageRecord{Time: t0.Add(time.Duration(i) * time.Second), TokenID: fmt.Sprint("jti-", i), Result: ResultAllowed, UserAgent: strings.Repeat("x", 1000)})
	}
	s := u.Stats()
	if s.Dropped != 30 || s.Buffered != 20 {
		t.Fatalf("stats while down = %+v, want 30 dropped, 20 buffered", s)
	}
	waitFor(t, "a failed attempt", func() bool { return u.Stats().Failures > 0 })
	sink.down.Store(false)
	waitFor(t, "recovery", func() bool { n, _, _ := sink.records(); return n == 20 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// The newest 20 survived (drop-oldest), and the IdP learns about the
	// loss.
	if first := sink.batches[0][0].Time; !first.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("first delivered record from %v, want the 31st", first)
	}
	if sink.dropped[0] != 30 {
		t.Errorf("dropped reported = %v", sink.dropped)
	}
	if ua := sink.batches[0][0].UserAgent; len(ua) != maxUserAgent {
		t.Errorf("user agent kept %d bytes", len(ua))
	}
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestUsageCloseFlushes(t *testing.T) {
	sink, srv := newSink(t)
	u, _ := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), FlushInterval: time.Hour,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	for i := range 3 {
		u.Report(UsageRecord{TokenID: fmt.Sprint("jti-", i), Result: ResultAllowed})
	}
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sink.records(); n != 3 {
		t.Fatalf("close delivered %d records", n)
	}
	u.Report(UsageRecord{}) // after Close: ignored, no panic
	// Close gives up when ctx ends while the IdP is down.
	sink.down.Store(true)
	u2, _ := NewUsageReporter(UsageConfig{Endpoint: srv.URL, HTTPClient: srv.Client(), Token: func(context.Context) (string, error) { return "usage-token", nil }})
	u2.Report(UsageRecord{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := u2.Close(ctx); err == nil {
		t.Fatal("Close with the IdP down returned nil")
	}
}

// TestUsageFromValidator checks what the middleware reports, and that no
// token or proof is ever in it.
func TestUsageFromValidator(t *testing.T) {
	sink, srv := newSink(t)
	u, _ := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), FlushInterval: 10 * time.Millisecond,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	defer u.Close(context.Background())
	f := newFixture(t, func(c *Config) { c.Usage = u })
	var secrets []string
	send := func(r *http.Request) {
		r.RemoteAddr = "198.51.100.7:4321"
		r.Header.Set("User-Agent", "docs-cli/1.0")
		secrets = append(secrets, strings.TrimPrefix(r.Header.Get("Authorization"), "DPoP "), r.Header.Get("DPoP"))
		f.serve(r)
	}
	tok := f.token()
	send(f.dpopRequest(tok)) // allowed
	thief := newClient(t)
	send(request("GET", resURL, "DPoP "+tok, thief.proof("GET", resURL, tok, "", t0))) // stolen token, thief's key
	send(request("GET", resURL, "DPoP "+tok+"x", ""))                                  // forged: no claims reported
	send(request("GET", resURL, "", ""))                                               // no token: not reported
	waitFor(t, "3 records", func() bool { n, _, _ := sink.records(); return n == 3 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	var recs []UsageRecord
	for _, b := range sink.batches {
		recs = append(recs, b...)
	}
	if r := recs[0]; r.Result != ResultAllowed || r.Subject != "user-1" || r.SessionID != "sess-1" || r.ClientID != "app" ||
		r.DeviceID != "dev-1" || r.TokenID == "" || r.ClientIP != "198.51.100.7" || r.UserAgent != "docs-cli/1.0" || r.JKT != f.c.jkt {
		t.Errorf("allowed record = %+v", r)
	}
	if r := recs[1]; r.Result != ResultRejected || r.Reason != "dpop_jkt_mismatch" || r.TokenID != recs[0].TokenID {
		t.Errorf("theft record = %+v", r)
	}
	if r := recs[0]; r.Proof != ProofOK || r.BoundJKT != f.c.jkt {
		t.Errorf("allowed record proof = %q bound %q", r.Proof, r.BoundJKT)
	}
	if r := recs[1]; r.Proof != ProofWrongKey || r.JKT != thief.jkt || r.BoundJKT != f.c.jkt {
		t.Errorf("theft record proof = %q jkt %q bound %q, want wrong_key by the thief's key", r.Proof, r.JKT, r.BoundJKT)
	}
	if r := recs[2]; r.Proof != "" || r.JKT != "" {
		t.Errorf("forged-token record names a proof: %+v", r)
	}
	if r := recs[2]; r.Result != ResultRejected || r.Reason != "bad_signature" || r.Subject != "" || r.TokenID != "" {
		t.Errorf("forged-token record = %+v", r)
	}
	for _, body := range sink.bodies {
		for _, s := range secrets {
			for _, part := range strings.Split(s, ".") {
				if len(part) > 20 && strings.Contains(body, part) {
					t.Fatalf("usage report contains token or proof material: %s", body)
				}
			}
		}
	}
}

// Uses of one token from one context with one result within a flush
// window are one record with a count; another context, result or token
// is a record of its own; a use while a batch is being sent starts a new
// record instead of being lost in the one already sent.
func TestUsageAggregates(t *testing.T) {
	sink, srv := newSink(t)
	u, err := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), FlushInterval: time.Hour,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	use := UsageRecord{Time: t0, TokenID: "jti-1", SessionID: "s1", ClientIP: "192.0.2.1", UserAgent: "ua", JKT: "k1", BoundJKT: "k1", Proof: ProofOK, Result: ResultAllowed}
	for i := range 1000 {
		r := use
		r.Time = t0.Add(time.Duration(i) * time.Millisecond)
		u.Report(r)
	}
	other := use
	other.ClientIP = "198.51.100.7"
	u.Report(other)
	thief := use
	thief.JKT, thief.Proof, thief.Result, thief.Reason = "k2", ProofWrongKey, ResultRejected, "dpop_jkt_mismatch"
	u.Report(thief)
	u.Report(thief)
	pre := use
	pre.TokenID, pre.Count = "jti-2", 5 // an already aggregated record
	u.Report(pre)
	u.Report(pre)
	if s := u.Stats(); s.Buffered != 4 || s.Merged != 999+1+5 {
		t.Fatalf("stats %+v, want 4 records and 1005 merged uses", s)
	}
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	var got []UsageRecord
	for _, b := range sink.batches {
		got = append(got, b...)
	}
	if len(got) != 4 || got[0].Count != 1000 || !got[0].Time.Equal(t0) || got[1].Count != 0 || got[1].ClientIP != "198.51.100.7" ||
		got[2].Count != 2 || got[2].Proof != ProofWrongKey || got[3].Count != 10 {
		t.Fatalf("records: %+v", got)
	}
	if !strings.Contains(sink.bodies[0], `"count":1000`) || strings.Count(sink.bodies[0], `"count"`) != 3 {
		t.Errorf("count on the wire: %s", sink.bodies[0])
	}
}

// A failed POST keeps its records, which go on taking merges, and nothing
// is counted twice.
func TestUsageAggregatesAcrossFailures(t *testing.T) {
	sink, srv := newSink(t)
	sink.down.Store(true)
	u, _ := NewUsageReporter(UsageConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), FlushInterval: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Token: func(context.Context) (string, error) { return "usage-token", nil },
	})
	use := UsageRecord{Time: t0, TokenID: "jti-1", Result: ResultAllowed}
	total := 0
	for i := 0; i < 200; i++ {
		u.Report(use)
		total++
		if i == 100 {
			waitFor(t, "a failed POST", func() bool { return u.Stats().Failures > 0 })
		}
	}
	sink.down.Store(false)
	if err := u.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	sum := 0
	for _, b := range sink.batches {
		for _, r := range b {
			sum += max(r.Count, 1)
		}
	}
	if sum != total {
		t.Fatalf("the IdP was told of %d uses, want %d", sum, total)
	}
}
