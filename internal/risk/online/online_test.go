package online_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/detect"
	"github.com/ward-idp/ward/internal/risk/online"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

var ctx = context.Background()

// instance is one Ward instance's view: its store handle, its bus with
// the audit persister, and its online detectors.
type instance struct {
	st  store.Store
	b   bus.Bus
	det *online.Detector
}

// failingBus fails every publish while fail is set.
type failingBus struct {
	bus.Bus
	fail atomic.Bool
}

func (f *failingBus) Publish(ctx context.Context, e *model.Event) error {
	if f.fail.Load() && e.Type == model.EventRiskDetected {
		return errors.New("bus down")
	}
	return f.Bus.Publish(ctx, e)
}

func start(t *testing.T, st store.Store, owner string, wrap func(bus.Bus) bus.Bus) *instance {
	t.Helper()
	var b bus.Bus = bus.NewLocal()
	audit.Subscribe(b, audit.Options{Store: st})
	if wrap != nil {
		b = wrap(b)
	}
	d, err := online.Start(ctx, online.Options{Store: st, Engine: detect.New(detect.DefaultConfig()), Bus: b, Owner: owner,
		PollInterval: 20 * time.Millisecond, LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return &instance{st: st, b: b, det: d}
}

// replay stores the refused refresh of a token bound to the victim's key
// presented with another key: what a thief's replay records. Each replay
// is of another session (one finding per session and type is reported
// within the suppression window).
func replay(t *testing.T, st store.Store, id string) {
	t.Helper()
	_, err := st.AppendEvent(ctx, &model.Event{ID: id, Type: model.EventTokenRequestFailed, Time: time.Now(),
		Actor: "alice", UserID: "alice", SessionID: "s-" + id, ClientID: "app", IP: "198.51.100.7", UserAgent: "curl/8",
		Outcome: model.OutcomeFailure, Reason: "invalid_grant",
		Data: map[string]string{activity.DataGrant: "refresh_token", activity.DataProof: string(activity.ProofWrongKey),
			activity.DataJKT: "attacker-key-thumbprint-000000000000000000000", activity.DataBoundJKT: "victim-key-thumbprint-0000000000000000000000"}})
	if err != nil {
		t.Fatal(err)
	}
}

// noise stores n events that are not activity (the detectors skip them).
func noise(t *testing.T, st store.Store, n int) {
	t.Helper()
	for range n {
		if _, err := st.AppendEvent(ctx, &model.Event{Type: model.EventGroupCreated, Time: time.Now(), Actor: "admin"}); err != nil {
			t.Fatal(err)
		}
	}
}

// detections returns the risk.detected events of the online detectors,
// oldest first.
func detections(t *testing.T, st store.Store) []*store.StoredEvent {
	t.Helper()
	evs, err := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventRiskDetected}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.StoredEvent
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Data[model.DataDetectionSource] == model.DetectionSourceOnline {
			out = append(out, evs[i])
		}
	}
	return out
}

// distinct maps the online detections' ids to their evidence.
func distinct(t *testing.T, st store.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range detections(t, st) {
		out[d.Data[model.DataDetectionID]] = d.Data[model.DataDetectionEvidence]
	}
	return out
}

func waitDetections(t *testing.T, st store.Store, n int, within time.Duration) []*store.StoredEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := detections(t, st)
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) < n {
				t.Fatalf("%d online detections within %v, want %d", len(got), within, n)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFollowsTheLog: a replay stored by anyone (another instance, a
// tool) is found within a second and recorded as a risk.detected with
// its evidence, once, even when the detectors restart; events stored
// while they were down are found when they come back.
func TestFollowsTheLog(t *testing.T) {
	for _, be := range backendtest.All(t) {
		t.Run(be.Name, func(t *testing.T) {
			st := be.Open(t, nil)
			in := start(t, st, "i1", nil)
			waitHolding(t, in.det)
			noise(t, st, 3)
			t0 := time.Now()
			replay(t, st, "ev-replay-1")
			in.det.Wake()
			got := waitDetections(t, st, 1, 2*time.Second)
			took := time.Since(t0)
			d := got[0]
			if d.Reason != detect.TypeTokenReplayWrongKey || d.UserID != "alice" || d.SessionID != "s-ev-replay-1" ||
				d.Data[model.DataDetectionSeverity] != "high" || d.Data[model.DataDetectionEvidence] != "ev-replay-1" ||
				d.Data[model.DataDetectionTechnique] == "" || d.Data[model.DataDetectionID] == "" {
				t.Fatalf("detection: %+v", d.Event)
			}
			t.Logf("found %v after the replay was stored", took)
			first := d.Data[model.DataDetectionID]

			// Restart: a new process, a new engine. What was stored
			// meanwhile is found. A finding may be recorded again (the
			// process stopped after recording it and before its cursor
			// moved: at least once), always under the same detection id,
			// which the risk service counts once.
			in.det.Close()
			replay(t, st, "ev-replay-2")
			st2 := be.Open(t, nil)
			in2 := start(t, st2, "i1", nil)
			waitHolding(t, in2.det)
			deadline := time.Now().Add(3 * time.Second)
			for len(distinct(t, st2)) < 2 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			ids := distinct(t, st2)
			if len(ids) != 2 || ids[first] != "ev-replay-1" {
				t.Fatalf("after a restart: %v, want the two replays' detections, the first under its id %s", ids, first)
			}
			if ev := slices.Sorted(maps.Values(ids)); ev[1] != "ev-replay-2" {
				t.Fatalf("after a restart: %v", ids)
			}
		})
	}
}

// TestOneInstanceDetects: two instances on one database; one holds the
// cursor and records each finding once; when it stops, the other takes
// over and goes on from where it stopped.
func TestOneInstanceDetects(t *testing.T) {
	for _, be := range backendtest.All(t) {
		t.Run(be.Name, func(t *testing.T) {
			a := start(t, be.Open(t, nil), "a", nil)
			waitHolding(t, a.det)
			b := start(t, be.Open(t, nil), "b", nil)
			time.Sleep(100 * time.Millisecond)
			if b.det.Holding() {
				t.Fatal("both instances run the detectors")
			}
			replay(t, a.st, "ev-1")
			replay(t, b.st, "ev-2")
			waitDetections(t, a.st, 2, 2*time.Second)
			a.det.Close() // releases the cursor
			waitHolding(t, b.det)
			replay(t, a.st, "ev-3")
			waitDetections(t, b.st, 3, 3*time.Second)
			time.Sleep(200 * time.Millisecond)
			// Three findings (a finding in flight when a stopped may be
			// recorded again by b, under its id).
			if ids := distinct(t, b.st); len(ids) != 3 {
				t.Fatalf("%d distinct detections, want 3: %v", len(ids), ids)
			}
		})
	}
}

// TestRecordingFailureRetried: when the finding cannot be recorded (the
// bus is down), the cursor does not move and the finding is recorded
// once the bus is back: nothing is lost, nothing doubled.
func TestRecordingFailureRetried(t *testing.T) {
	be := backendtest.All(t)[0]
	st := be.Open(t, nil)
	var fb *failingBus
	in := start(t, st, "i1", func(b bus.Bus) bus.Bus {
		fb = &failingBus{Bus: b}
		fb.fail.Store(true)
		return fb
	})
	waitHolding(t, in.det)
	replay(t, st, "ev-1")
	deadline := time.Now().Add(2 * time.Second)
	for in.det.Stats().Failures == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if in.det.Stats().Failures == 0 || len(detections(t, st)) != 0 {
		t.Fatalf("the failing bus was not used: %+v", in.det.Stats())
	}
	fb.fail.Store(false)
	waitDetections(t, st, 1, 3*time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := len(detections(t, st)); n != 1 {
		t.Fatalf("%d detections after the retry, want 1", n)
	}
}

func waitHolding(t *testing.T, d *online.Detector) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !d.Holding() {
		if time.Now().After(deadline) {
			t.Fatal("the detectors never took the cursor")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
