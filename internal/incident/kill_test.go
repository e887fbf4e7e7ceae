package incident_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// slowDurable delays each delivery, so that a kill lands mid-stream.
type slowDurable struct {
	bus.Durable
	delay time.Duration
}

func (d slowDurable) Consume(ctx context.Context, name string, types []model.EventType, h bus.Handler, opts ...bus.ConsumeOption) (func(), error) {
	return d.Durable.Consume(ctx, name, types, func(ctx context.Context, e *model.Event) error {
		time.Sleep(d.delay)
		return h(ctx, e)
	}, opts...)
}

// TestKilledConsumerHelper is the consumer process of
// TestKillNineMidStream (it runs only when that test starts it).
func TestKilledConsumerHelper(t *testing.T) {
	dbPath := os.Getenv("WARD_INCIDENT_HELPER_DB")
	if dbPath == "" {
		t.Skip("started by TestKillNineMidStream")
	}
	st := openSQLite(t, dbPath)
	nb, err := bus.OpenNATS(context.Background(), bus.NATSOptions{URL: os.Getenv("WARD_TEST_NATS_URL"),
		Stream: os.Getenv("WARD_INCIDENT_HELPER_STREAM"), SubjectPrefix: os.Getenv("WARD_INCIDENT_HELPER_PREFIX"), AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	audit.Subscribe(nb, audit.Options{Store: st})
	svc := incident.New(incident.Options{Store: st, Bus: nb})
	if err := svc.Start(context.Background(), incident.Wiring{Bus: nb, Durable: slowDurable{nb, 15 * time.Millisecond}, Serve: true}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("consuming")
	time.Sleep(time.Minute) // until killed
}

// TestKillNineMidStream: the process consuming detections is killed
// (SIGKILL) in the middle of a stream; another instance takes over the
// durable consumer. Every detection ends up in the one incident exactly
// once, and each change of the incident was recorded exactly once
// (incident.created once, incident.updated once per later detection):
// the correlation and its events commit together, and a redelivered
// detection is recognised by its id.
func TestKillNineMidStream(t *testing.T) {
	url := os.Getenv("WARD_TEST_NATS_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("WARD_TEST_NATS_URL is not set under CI")
		}
		t.Skip("WARD_TEST_NATS_URL is not set")
	}
	stream, prefix := uniqueStream()
	dbPath := filepath.Join(t.TempDir(), "ward.db")
	st := openSQLite(t, dbPath)
	// This process publishes (and relays); it consumes only after the kill.
	nb, err := bus.OpenNATS(context.Background(), bus.NATSOptions{URL: url, Stream: stream, SubjectPrefix: prefix,
		Outbox: st, PollInterval: 100 * time.Millisecond, AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	audit.Subscribe(nb, audit.Options{Store: st})
	em := bus.NewEmitter(nb, time.Now)

	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledConsumerHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "WARD_INCIDENT_HELPER_DB="+dbPath, "WARD_INCIDENT_HELPER_STREAM="+stream, "WARD_INCIDENT_HELPER_PREFIX="+prefix)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	const n = 120
	for i := range n {
		if err := em.Emit(context.Background(), liveDetection(fmt.Sprintf("k-%d", i), "victim")); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		l, err := st.ListIncidents(context.Background(), store.IncidentFilter{})
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, in := range l {
			total += in.Detections
		}
		return total
	}
	deadline := time.Now().Add(20 * time.Second)
	for count() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the helper correlated %d detections in 20 s; its output:\n%s", count(), out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	before := count()
	if before >= n {
		t.Fatalf("the helper finished (%d) before it was killed", before)
	}
	t.Logf("killed after %d of %d detections", before, n)

	svc := incident.New(incident.Options{Store: st, Bus: nb})
	if err := svc.Start(context.Background(), incident.Wiring{Bus: nb, Durable: nb, Serve: true}); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	deadline = time.Now().Add(30 * time.Second)
	for count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d detections correlated after the takeover", count(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // a redelivery of the killed one's last event would come now
	l, _ := st.ListIncidents(context.Background(), store.IncidentFilter{})
	if len(l) != 1 || l[0].Detections != n {
		t.Fatalf("incidents %d (first with %d detections), want one with %d", len(l), l[0].Detections, n)
	}
	evs := func(typ model.EventType) int {
		list, err := st.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{typ}, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	if c, u := evs(model.EventIncidentCreated), evs(model.EventIncidentUpdated); c != 1 || u != n-1 {
		t.Errorf("events: incident.created %d, incident.updated %d; want 1 and %d", c, u, n-1)
	}
	t.Logf("repeats recognised after the takeover: %d", svc.Stats().Repeats)
}
