package server_test

// The token endpoint benchmarks on PostgreSQL (skipped unless
// WARD_TEST_POSTGRES_DSN is set), which also report the round trips to
// the database per request (trips/op: statements sent alone, pipelined
// batches and statement preparations):
//
//	GOMAXPROCS=1 go test -run '^$' -bench 'PGTokenEndpoint' -benchtime 2000x ./internal/server/

import (
	"net/http"
	"net/url"
	"os"
	"runtime"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/wardtest"
)

// pgBench starts an instance on a fresh PostgreSQL database with a pool
// of 16 (the default of a deployment).
func pgBench(b *testing.B) *wardtest.Instance {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		b.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	return wardtest.Start(b, wardtest.Options{PostgresDSN: dsn, Configure: func(c *config.Config) {
		c.Storage.Postgres.MaxConns = 16
	}})
}

// tripsPerOp reports the database round trips per operation from now
// until the returned function is called.
func tripsPerOp(b *testing.B, in *wardtest.Instance) func() {
	st, ok := in.App.Store.(interface{ PoolStat() postgres.PoolStat })
	if !ok {
		b.Fatal("not a PostgreSQL store")
	}
	start := st.PoolStat().RoundTrips()
	return func() {
		b.ReportMetric(float64(st.PoolStat().RoundTrips()-start)/float64(b.N), "trips/op")
	}
}

func BenchmarkPGTokenEndpointClientCredentialsDPoP(b *testing.B) {
	in := pgBench(b)
	tc := &tokenCaller{in: in, s: newSigner(b)}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}
	tc.call(b, form, "service", wardtest.ServiceSecret) // the nonce, prepared statements
	b.ReportAllocs()
	defer cpuPerOp(b)()
	defer tripsPerOp(b, in)()
	for b.Loop() {
		if st, body := tc.call(b, form, "service", wardtest.ServiceSecret); st != http.StatusOK {
			b.Fatalf("token: %d %v", st, body)
		}
	}
}

func BenchmarkPGTokenEndpointClientCredentialsDPoPParallel(b *testing.B) {
	in := pgBench(b)
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}
	b.SetParallelism(16)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	defer tripsPerOp(b, in)()
	b.RunParallel(func(pb *testing.PB) {
		tc := &tokenCaller{in: in, s: newSigner(b)}
		for pb.Next() {
			if st, body := tc.call(b, form, "service", wardtest.ServiceSecret); st != http.StatusOK {
				b.Errorf("token: %d %v", st, body)
				return
			}
		}
	})
}

func BenchmarkPGTokenEndpointRefreshDPoP(b *testing.B) {
	in := pgBench(b)
	tc := &tokenCaller{in: in, s: newSigner(b)}
	rt := benchRefreshToken(b, in, tc, "offline_access docs.read")
	b.ReportAllocs()
	defer cpuPerOp(b)()
	defer tripsPerOp(b, in)()
	for b.Loop() {
		st, body := tc.call(b, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "web", wardtest.WebSecret)
		if st != http.StatusOK {
			b.Fatalf("refresh: %d %v", st, body)
		}
		rt = body["refresh_token"].(string)
	}
}

func BenchmarkPGTokenEndpointRefreshDPoPParallel(b *testing.B) {
	in := pgBench(b)
	const par = 16
	type chain struct {
		tc *tokenCaller
		rt string
	}
	chains := make(chan *chain, par*runtime.GOMAXPROCS(0))
	for range cap(chains) {
		tc := &tokenCaller{in: in, s: newSigner(b)}
		chains <- &chain{tc: tc, rt: benchRefreshToken(b, in, tc, "offline_access docs.read")}
	}
	b.SetParallelism(par)
	b.ReportAllocs()
	b.ResetTimer()
	defer cpuPerOp(b)()
	defer tripsPerOp(b, in)()
	b.RunParallel(func(pb *testing.PB) {
		c := <-chains
		for pb.Next() {
			st, body := c.tc.call(b, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.rt}}, "web", wardtest.WebSecret)
			if st != http.StatusOK {
				b.Errorf("refresh: %d %v", st, body)
				return
			}
			c.rt = body["refresh_token"].(string)
		}
	})
}
