package chain_test

// Verification speed over a real SQLite database of 1,000,000 events,
// written through the store (record MACs) and sealed by the sealer with
// its default checkpoints (one per 10,000 events):
//
//	go test -run '^$' -bench 'Verify1M' -benchtime 3x ./internal/audit/chain/
//
// Building the database takes a while; WARD_BENCH_AUDIT_DB=/path/ward.db
// keeps it between runs (it is built there when missing).

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
)

const benchEvents = 1_000_000

func BenchmarkVerify1M(b *testing.B) {
	path := os.Getenv("WARD_BENCH_AUDIT_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "ward.db")
	}
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if n, err := st.CountEventsAfter(ctx, 0); err != nil {
		b.Fatal(err)
	} else if n < benchEvents {
		buildBenchLog(b, st, benchEvents-int(n))
	}
	b.ResetTimer()
	var records int64
	start, cpu0 := time.Now(), processCPU()
	for b.Loop() {
		rep, err := chain.Verify(ctx, st, chain.VerifyOptions{KEK: testKEK})
		if err != nil {
			b.Fatal(err)
		}
		if !rep.OK() || rep.Records < benchEvents {
			b.Fatalf("verified %d records, problems %v", rep.Records, rep.Problems)
		}
		records += rep.Records
	}
	b.ReportMetric(float64(records)/time.Since(start).Seconds(), "records/s")
	// CPU time per record (all cores): steadier than wall time on a
	// shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(records), "cpu-ns/record")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// buildBenchLog appends n events as the audit persister does (8 writers,
// so that they share commits) and seals them.
func buildBenchLog(b *testing.B, st store.Store, n int) {
	b.Helper()
	t0 := time.Now()
	if _, err := chain.Configure(ctx, st, testKEK); err != nil {
		b.Fatal(err)
	}
	keys, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: testKEK})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				ev := &model.Event{ID: fmt.Sprintf("0190a0b1-7c3d-7e4f-8a9b-%012d", i), Type: model.EventTokenIssued,
					Time: t0.Add(time.Duration(i) * time.Millisecond), Actor: "service", ClientID: "service", TokenID: fmt.Sprintf("jti-%d", i),
					IP: "203.0.113.7", UserAgent: "Go-http-client/1.1", Outcome: model.OutcomeSuccess, Binding: model.BindingDPoP,
					CorrelationID: "corr-0123456789abcdef", Data: map[string]string{"scope": "docs.read", "grant_type": "client_credentials"}}
				if i%7 == 3 {
					ev.Type, ev.UserID, ev.SessionID = model.EventSignInSucceeded, "user-1", "session-1"
				}
				if _, err := st.AppendEvent(ctx, ev); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s, err := chain.New(ctx, chain.Options{Store: st, KEK: testKEK, Signer: keys})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Seal(ctx); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a log of %d events in %s", n, time.Since(t0).Round(time.Second))
}
