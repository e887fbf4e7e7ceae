package ssf_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/wardtest"
)

// BenchmarkPropagationReplicas is BenchmarkPropagation's push case with
// 1 and 2 `ward serve` instances sharing one PostgreSQL database
// (WARD_TEST_POSTGRES_DSN) and one external NATS (WARD_TEST_NATS_URL):
// the push streams are spread over the instances, the event is handled
// by the first, which wakes the other for the streams it serves.
//
//	go test ./internal/ssf/ -run '^$' -bench 'PropagationReplicas' -benchtime 50x -timeout 60m
func BenchmarkPropagationReplicas(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, r := range []int{1, 2} {
			b.Run(fmt.Sprintf("push/receivers=%d/replicas=%d", n, r), func(b *testing.B) { benchPropagation(b, "push", n, r, 0) })
		}
	}
	// Ten receivers that take 200 ms to answer, spread over the replicas.
	for _, r := range []int{1, 2} {
		b.Run(fmt.Sprintf("push-slow10/receivers=1000/replicas=%d", r), func(b *testing.B) { benchPropagation(b, "push", 1000, r, 10) })
	}
}

// benchReplicas starts replicas instances of one deployment on a fresh
// PostgreSQL database and a fresh stream on the external NATS, and
// returns the first.
func benchReplicas(b *testing.B, streams, replicas int) *wardtest.Instance {
	b.Helper()
	dsn, natsURL := os.Getenv("WARD_TEST_POSTGRES_DSN"), os.Getenv("WARD_TEST_NATS_URL")
	if dsn == "" || natsURL == "" {
		b.Skip("set WARD_TEST_POSTGRES_DSN and WARD_TEST_NATS_URL for the replicas benchmark")
	}
	var rb [6]byte
	rand.Read(rb[:])
	id := hex.EncodeToString(rb[:])
	stream := "WARDBENCH_SSF_" + strings.ToUpper(id)
	b.Cleanup(func() {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			return
		}
		defer nc.Close()
		if js, err := jetstream.New(nc); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = js.DeleteStream(ctx, stream)
		}
	})
	configure := func(c *config.Config) {
		ssfClients(c)
		c.SSF.MaxStreamsPerClient = streams + 1
		c.SSF.RescanInterval = time.Second
		c.Log.Level = "info"
		c.Storage.Postgres.MaxConns = 16
		c.Bus.NATS.URL = secret.String(natsURL)
		c.Bus.NATS.Stream, c.Bus.NATS.SubjectPrefix = stream, "wardbench.ssf."+id
	}
	first := wardtest.Start(b, wardtest.Options{RealClock: true, PostgresDSN: dsn, Configure: configure})
	for range replicas - 1 {
		wardtest.Start(b, wardtest.Options{RealClock: true, Join: first, Configure: func(c *config.Config) {
			configure(c)
			c.Issuer = first.URL
		}})
	}
	return first
}

// waitSpread waits until the n push streams are leased to the replicas,
// at most ceil(n/replicas) each, and logs the split.
func waitSpread(b *testing.B, in *wardtest.Instance, n, replicas int) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, in.PostgresDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	limit := (n + replicas - 1) / replicas
	var counts []int
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		rows, err := conn.Query(ctx, `SELECT count(*) FROM ssf_streams WHERE method = $2 AND lease_owner <> ''
			AND lease_until > $1 GROUP BY lease_owner`, time.Now().UnixMicro(), model.DeliveryPush)
		if err != nil {
			b.Fatal(err)
		}
		counts = counts[:0]
		total, ok := 0, true
		for rows.Next() {
			var c int
			if err := rows.Scan(&c); err != nil {
				b.Fatal(err)
			}
			counts = append(counts, c)
			total += c
			ok = ok && c <= limit
		}
		rows.Close()
		if ok && total == n && len(counts) == replicas {
			b.Logf("%d push streams over %d replicas: %v", n, replicas, counts)
			return
		}
	}
	b.Fatalf("push streams not spread over %d replicas: %v", replicas, counts)
}
