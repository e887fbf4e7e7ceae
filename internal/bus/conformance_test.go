package bus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/bus/bustest"
	"github.com/ward-idp/ward/internal/store"
)

// The conformance suite on the three buses Ward runs with: in-process
// (bus.driver local, command-line tools), the embedded NATS server and an
// external NATS (WARD_TEST_NATS_URL).

func TestConformanceLocal(t *testing.T) {
	bustest.Run(t, bustest.Backend{New: func(testing.TB) bustest.Deployment { return localDeployment{} }})
}

func TestConformanceEmbeddedNATS(t *testing.T) {
	bustest.Run(t, bustest.Backend{Durable: true, Peers: true, New: func(t testing.TB) bustest.Deployment {
		return newNATSDeployment(t, "")
	}})
}

func TestConformanceExternalNATS(t *testing.T) {
	url := bustest.NATSURL(t)
	bustest.Run(t, bustest.Backend{Durable: true, Peers: true, New: func(t testing.TB) bustest.Deployment {
		return newNATSDeployment(t, url)
	}})
}

type localDeployment struct{}

func (localDeployment) Open(_ testing.TB, st store.Store) bustest.Instance {
	return bustest.Instance{Bus: bus.NewLocal(), Durable: bus.NoDurable{Reason: "in-process bus"},
		Follower: bus.NewPoller(st, bus.PollerOptions{Interval: 50 * time.Millisecond})}
}

// natsDeployment is one NATS (the embedded server, started by its first
// instance, or the external one) with a stream and subject prefix of its
// own, so tests and leftovers of earlier runs do not meet.
type natsDeployment struct {
	url            string // external; "" embedded
	stream, prefix string
	token          string
	first          *bus.NATS
}

func newNATSDeployment(t testing.TB, url string) *natsDeployment {
	b := make([]byte, 6)
	rand.Read(b)
	id := hex.EncodeToString(b)
	d := &natsDeployment{url: url, stream: "WARDTEST_" + strings.ToUpper(id), prefix: "wardtest." + id, token: "test-token-" + id}
	if url != "" {
		t.Cleanup(func() { deleteStream(url, d.stream) })
	}
	return d
}

func (d *natsDeployment) Open(t testing.TB, st store.Store) bustest.Instance {
	t.Helper()
	o := bus.NATSOptions{
		Stream: d.stream, SubjectPrefix: d.prefix, Outbox: st,
		PollInterval: 50 * time.Millisecond, RedeliveryMin: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	switch {
	case d.url != "":
		o.URL, o.ReconnectWait = d.url, 100*time.Millisecond
	case d.first == nil:
		o.Embedded = bus.EmbeddedOptions{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: "127.0.0.1:0"}
		o.Token = d.token
	default:
		o.URL, o.Token = d.first.ClientURL(), d.token
	}
	n, err := bus.OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatalf("OpenNATS: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	if d.first == nil {
		d.first = n
	}
	return bustest.Instance{Bus: n, Durable: n, Follower: n}
}

func deleteStream(url, stream string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteStream(ctx, stream)
}

// tWriter writes the bus's log to the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
