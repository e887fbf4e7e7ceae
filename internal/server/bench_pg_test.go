package server_test

// The token endpoint benchmarks on PostgreSQL (skipped unless
// WARD_TEST_POSTGRES_DSN is set), which also report the round trips to
// the database per request (trips/op: statements sent alone, pipelined
// batches and statement preparations):
//
//	GOMAXPROCS=1 go test -run '^$' -bench 'PGTokenEndpoint' -benchtime 2000x ./internal/server/

import (
	"os"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/wardtest"
)

// pgBench runs the token endpoint benchmarks on a fresh PostgreSQL
// database with a pool of 16 (the default of a deployment) and 16
// goroutines per GOMAXPROCS in the parallel ones.
var pgBench = tokenBackend{start: startPG, par: 16, warm: true, trips: true}

func startPG(b *testing.B) *wardtest.Instance {
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
	benchClientCredentials(b, pgBench)
}

func BenchmarkPGTokenEndpointClientCredentialsDPoPParallel(b *testing.B) {
	benchClientCredentialsParallel(b, pgBench)
}

func BenchmarkPGTokenEndpointRefreshDPoP(b *testing.B) {
	benchRefresh(b, pgBench)
}

func BenchmarkPGTokenEndpointRefreshDPoPParallel(b *testing.B) {
	benchRefreshParallel(b, pgBench)
}
