package bus

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRelayReplicas is the relay's work with 1, 2 and 3 instances
// on one database (SQLite, shared in the process) and the external NATS:
// events are stored round robin on the instances, and the clock stops
// when the stream holds them all. "every" runs a relay on every instance
// (no lease: how Ward relayed before the lease), "lease" one relay under
// the lease, woken through NATS by the others.
//
//	WARD_TEST_NATS_URL=nats://127.0.0.1:4222 \
//	go test -run '^$' -bench RelayReplicas -benchtime 3000x -count 3 ./internal/bus
//
// Besides events/s and cpu-µs/op (the whole process: every instance, the
// store), it reports the stream publications per event (acknowledged,
// duplicates included) and the refusals per event, over all relays.
func BenchmarkRelayReplicas(b *testing.B) {
	for n := 1; n <= 3; n++ {
		for _, mode := range []string{"every", "lease"} {
			b.Run(fmt.Sprintf("%d-%s", n, mode), func(b *testing.B) { benchRelayReplicas(b, mode == "lease", n) })
		}
	}
}

func benchRelayReplicas(b *testing.B, lease bool, n int) {
	base := externalBackend.base(b)
	st := openStore(b)
	var ins []*instance
	for i := range n {
		o := base
		if lease {
			o.RelayOwner = fmt.Sprintf("bench-%d", i)
		}
		ins = append(ins, openInstance(b, st, o))
	}
	waitFor(b, 20*time.Second, "the relays", func() bool {
		held := 0
		for _, in := range ins {
			if in.RelayHolding() {
				held++
			}
		}
		return lease && held == 1 || !lease && held == n
	})
	time.Sleep(100 * time.Millisecond)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	stopCPU := cpuMeter(b)
	for i := range b.N {
		if err := ins[i%n].Publish(ctx, benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for streamMsgs(b, ins[0].NATS) < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("the stream holds %d of %d events", streamMsgs(b, ins[0].NATS), b.N)
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.StopTimer()
	rate := float64(b.N) / time.Since(start).Seconds()
	// The other relays' copies still in flight are their work too.
	time.Sleep(300 * time.Millisecond)
	stopCPU()
	var published, refused int64
	for _, in := range ins {
		published += in.relay.Published()
		refused += in.RelayRefused()
	}
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(float64(published)/float64(b.N), "pubs/event")
	b.ReportMetric(float64(refused)/float64(b.N), "refused/event")
}
