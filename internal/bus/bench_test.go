package bus

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ward-idp/ward/internal/model"
)

// Benchmarks of the whole path an event takes, with the SQLite store:
//
//	WARD_TEST_NATS_URL=nats://127.0.0.1:4222 \
//	go test -run '^$' -bench 'Publish|OpenEmbedded' -benchtime 2000x -count 5 ./internal/bus
//
// Local: Publish -> audit persister (SQLite) -> a synchronous subscriber.
// JetStream: Publish -> audit persister -> relay -> stream -> durable
// consumer; the clock stops when the consumer has received every event.

// cpuMeter reports the process's CPU time (user + system) per operation:
// on a shared machine, less noisy than wall time, and it includes the
// relay's and the embedded server's goroutines.
func cpuMeter(b *testing.B) func() {
	var r0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	return func() {
		var r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

func benchEvent(i int) *model.Event {
	return &model.Event{ID: uuid.NewString(), Type: testTypes[i%len(testTypes)], UserID: "u1", SessionID: "s1",
		IP: "203.0.113.9", Outcome: model.OutcomeSuccess}
}

func BenchmarkPublishLocal(b *testing.B) {
	st := openStore(b)
	l := NewLocal()
	l.Subscribe("audit", persister(st))
	var got atomic.Int64
	l.Subscribe("consumer", func(context.Context, *model.Event) error { got.Add(1); return nil })
	ctx := context.Background()
	b.ResetTimer()
	defer cpuMeter(b)()
	for i := range b.N {
		if err := l.Publish(ctx, benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	if got.Load() != int64(b.N) {
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
}

func benchJetStream(b *testing.B, o NATSOptions, consume bool) {
	st := openStore(b)
	in := openInstance(b, st, o)
	var got atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	if consume {
		stop, err := in.Consume(context.Background(), "bench", nil, func(context.Context, *model.Event) error {
			if got.Add(1) == int64(b.N) {
				once.Do(func() { close(done) })
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
	}
	ctx := context.Background()
	b.ResetTimer()
	defer cpuMeter(b)()
	for i := range b.N {
		if err := in.Publish(ctx, benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	if !consume { // until the relay has published everything
		deadline := time.Now().Add(2 * time.Minute)
		for in.relay.Published() < int64(b.N) {
			if time.Now().After(deadline) {
				b.Fatalf("relayed %d of %d", in.relay.Published(), b.N)
			}
			time.Sleep(100 * time.Microsecond)
		}
		return
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
}

func BenchmarkPublishJetStream(b *testing.B) {
	b.Run("embedded", func(b *testing.B) { benchJetStream(b, embeddedBackend.base(b), true) })
	b.Run("external", func(b *testing.B) { benchJetStream(b, externalBackend.base(b), true) })
	// relay-only: no consumer; the cost every event adds to the request
	// path's process (what the token endpoint pays).
	b.Run("embedded-relay-only", func(b *testing.B) { benchJetStream(b, embeddedBackend.base(b), false) })
}

// BenchmarkPublishJetStreamLatency publishes one event at a time and
// waits for the durable consumer: the propagation delay of one event.
func BenchmarkPublishJetStreamLatency(b *testing.B) {
	b.Run("embedded", func(b *testing.B) { benchLatency(b, embeddedBackend.base(b)) })
	b.Run("external", func(b *testing.B) { benchLatency(b, externalBackend.base(b)) })
}

func benchLatency(b *testing.B, o NATSOptions) {
	st := openStore(b)
	in := openInstance(b, st, o)
	recv := make(chan struct{}, 1)
	stop, err := in.Consume(context.Background(), "bench", nil, func(context.Context, *model.Event) error {
		recv <- struct{}{}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := in.Publish(ctx, benchEvent(i)); err != nil {
			b.Fatal(err)
		}
		select {
		case <-recv:
		case <-time.After(10 * time.Second):
			b.Fatal("no delivery")
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkOpenEmbedded is the start-up and shutdown cost of the
// embedded server with its stream (what every Ward instance and every
// wardtest instance pays).
func BenchmarkOpenEmbedded(b *testing.B) {
	dir := b.TempDir()
	for i := range b.N {
		n, err := OpenNATS(context.Background(), NATSOptions{Embedded: EmbeddedOptions{StoreDir: filepath.Join(dir, uuid.NewString())}})
		if err != nil {
			b.Fatal(err)
		}
		_ = i
		n.Close()
	}
}
