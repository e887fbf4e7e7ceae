package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Two instances of one deployment serve token requests from many clients
// at once (each token is an audit event) while the sealer of each runs:
// the audit log comes out as one chain that verifies, with every event in
// it, on SQLite and (with WARD_TEST_POSTGRES_DSN) PostgreSQL.
func TestAuditChainTwoInstances(t *testing.T) {
	for name, dsn := range raceBackends(t) {
		t.Run(name, func(t *testing.T) {
			a := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
			b := wardtest.Start(t, wardtest.Options{Join: a})
			var issued, failed atomic.Int64
			var wg sync.WaitGroup
			for i := range 12 {
				in := []*wardtest.Instance{a, b}[i%2]
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Timeout: 30 * time.Second}
					for j := range 25 {
						secret := wardtest.ServiceSecret
						if j%10 == 9 {
							secret = "wrong" // a failed authentication is recorded too
						}
						req, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
						req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
						req.SetBasicAuth("service", secret)
						resp, err := c.Do(req)
						if err != nil {
							t.Error(err)
							return
						}
						resp.Body.Close()
						switch {
						case resp.StatusCode == http.StatusOK:
							issued.Add(1)
						case secret != wardtest.ServiceSecret && resp.StatusCode == http.StatusUnauthorized:
							failed.Add(1)
						default:
							t.Errorf("token: %d", resp.StatusCode)
						}
					}
				}()
			}
			wg.Wait()
			ctx := context.Background()
			// Both sealers run; wait for them, then sign.
			deadline := time.Now().Add(30 * time.Second)
			for {
				head, err := a.App.Store.AuditChainHead(ctx)
				if err == nil {
					if n, err := a.App.Store.CountEventsAfter(ctx, head.Seq); err == nil && n == 0 {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatal("events still unsealed after 30s")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := b.App.Sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			rep, err := chain.Verify(ctx, a.App.Store, chain.VerifyOptions{KEK: a.App.KEK})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK() {
				t.Fatalf("the audit log does not verify: %v", rep.Problems)
			}
			if rep.Records < issued.Load()+failed.Load() || rep.Unsealed != 0 || rep.Latest == nil || rep.Latest.Seq != rep.To {
				t.Errorf("verified %+v; %d tokens issued, %d refused", rep, issued.Load(), failed.Load())
			}
		})
	}
}
