package cae_test

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
	"github.com/ward-idp/ward/internal/tokens"
)

// transmitter starts a transmitter (not serving) on st.
func transmitter(t *testing.T, st store.Store) *cae.Service {
	t.Helper()
	ctx := context.Background()
	kek, err := secret.NewKEK(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cae.Start(ctx, cae.Options{Issuer: "https://ward.example", Store: st, Keys: keys, KEK: kek, RescanInterval: time.Hour},
		cae.Wiring{Bus: bus.NewLocal()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// statusChanges returns the stored ssf.stream_status_changed, oldest
// first.
func statusChanges(t *testing.T, st store.Store) []*store.StoredEvent {
	t.Helper()
	evs, err := st.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.StoredEvent
	for _, e := range evs {
		if e.Type == model.EventSSFStreamStatusChanged {
			out = append(out, e)
		}
	}
	return out
}

func pollStream() *model.SSFStream {
	now := time.Now()
	return &model.SSFStream{ID: "st1", ClientID: "c1", Audience: []string{"c1"}, Method: model.DeliveryPoll,
		Status: model.StreamEnabled, CreatedAt: now, UpdatedAt: now}
}

// A status change by an administrator whose ssf.stream_status_changed the
// database refuses changes nothing: the stream keeps its status and no
// stream-updated SET tells the receiver otherwise. Accepted, the change
// commits with exactly one event naming the status it replaced.
func TestTransmitterStatusCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st := b.Open(t, nil)
			svc := transmitter(t, st)
			if err := st.CreateSSFStream(ctx, pollStream()); err != nil {
				t.Fatal(err)
			}
			lift := b.RefuseEvents(t, model.EventSSFStreamStatusChanged)
			if _, err := svc.SetStatusAsTransmitter(ctx, "admin-1", "st1", model.StreamPaused, "maintenance"); err == nil {
				t.Fatal("status change with its record refused: got nil")
			}
			got, err := st.GetSSFStream(ctx, "st1")
			if err != nil || got.Status != model.StreamEnabled {
				t.Fatalf("stream after a refused change: %+v, %v; want it enabled", got, err)
			}
			if q, err := st.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 0 {
				t.Fatalf("%d SETs queued after a refused change (%v), want none", len(q), err)
			}
			if evs := statusChanges(t, st); len(evs) != 0 {
				t.Fatalf("%d status changes recorded after the refusal, want none", len(evs))
			}
			lift()
			if _, err := svc.SetStatusAsTransmitter(ctx, "admin-1", "st1", model.StreamPaused, "maintenance"); err != nil {
				t.Fatal(err)
			}
			got, err = st.GetSSFStream(ctx, "st1")
			if err != nil || got.Status != model.StreamPaused {
				t.Fatalf("stream after the change: %+v, %v; want it paused", got, err)
			}
			evs := statusChanges(t, st)
			if len(evs) != 1 || evs[0].Actor != "admin-1" || evs[0].Data["previous"] != model.StreamEnabled || evs[0].Data["status"] != model.StreamPaused {
				t.Fatalf("status changes recorded: %+v, want one enabled -> paused by admin-1", evs)
			}
			if q, err := st.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 1 || q[0].EventType != cae.EventStreamUpdated {
				t.Errorf("queued after the change: %v, %v; want the stream-updated SET", q, err)
			}
			// The same status again is no change: nothing recorded.
			if _, err := svc.SetStatusAsTransmitter(ctx, "admin-1", "st1", model.StreamPaused, "again"); err != nil {
				t.Fatal(err)
			}
			if n := len(statusChanges(t, st)); n != 1 {
				t.Errorf("%d status changes recorded after repeating one, want 1", n)
			}
		})
	}
}

// Administrators on two instances change one stream's status at once:
// each recorded change names the status it actually replaced (read and
// written in its transaction), so the records form one chain ending at
// the stored status, and a change to the status already in force records
// nothing.
func TestTransmitterStatusTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			sts := []store.Store{b.Open(t, nil), b.Open(t, nil)}
			svcs := []*cae.Service{transmitter(t, sts[0]), transmitter(t, sts[1])}
			if err := sts[0].CreateSSFStream(ctx, pollStream()); err != nil {
				t.Fatal(err)
			}
			statuses := []string{model.StreamPaused, model.StreamEnabled, model.StreamDisabled}
			const n = 12
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					if _, err := svcs[i%2].SetStatusAsTransmitter(ctx, "admin-"+strconv.Itoa(i), "st1", statuses[i%3], ""); err != nil {
						t.Errorf("change %d: %v", i, err)
					}
				})
			}
			close(start)
			wg.Wait()
			cur := model.StreamEnabled
			evs := statusChanges(t, sts[1])
			for _, e := range evs {
				if e.Data["previous"] != cur || e.Data["status"] == cur {
					t.Fatalf("a change recorded as %s -> %s while the status was %s", e.Data["previous"], e.Data["status"], cur)
				}
				cur = e.Data["status"]
			}
			got, err := sts[1].GetSSFStream(ctx, "st1")
			if err != nil || got.Status != cur {
				t.Errorf("stream status %+v, %v; the recorded changes end at %s", got, err, cur)
			}
			if len(evs) == 0 {
				t.Error("no change recorded")
			}
		})
	}
}

// A receiver's own status change (pausing its stream stops CAE at that
// resource: what an attacker holding its credentials would do) commits
// with its ssf.stream_status_changed, the client as actor; refused, it
// changes nothing. Another client cannot change it and records nothing.
func TestReceiverStatusCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st := b.Open(t, nil)
			svc := transmitter(t, st)
			if err := st.CreateSSFStream(ctx, pollStream()); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.SetStatus(ctx, "c2", "st1", model.StreamPaused, ""); err == nil {
				t.Fatal("another client paused the stream")
			}
			lift := b.RefuseEvents(t, model.EventSSFStreamStatusChanged)
			if _, err := svc.SetStatus(ctx, "c1", "st1", model.StreamPaused, "going away"); err == nil {
				t.Fatal("status change with its record refused: got nil")
			}
			if got, err := st.GetSSFStream(ctx, "st1"); err != nil || got.Status != model.StreamEnabled {
				t.Fatalf("stream after a refused change: %+v, %v; want it enabled", got, err)
			}
			if evs := statusChanges(t, st); len(evs) != 0 {
				t.Fatalf("%d status changes recorded, want none", len(evs))
			}
			lift()
			if _, err := svc.SetStatus(ctx, "c1", "st1", model.StreamPaused, "going away"); err != nil {
				t.Fatal(err)
			}
			evs := statusChanges(t, st)
			if len(evs) != 1 || evs[0].Actor != "c1" || evs[0].ClientID != "c1" || evs[0].Reason != "receiver" ||
				evs[0].Data["previous"] != model.StreamEnabled || evs[0].Data["status"] != model.StreamPaused || evs[0].Data["status_reason"] != "going away" {
				t.Fatalf("status changes recorded: %+v, want one enabled -> paused by c1 (receiver)", evs)
			}
			if q, err := st.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 1 || q[0].EventType != cae.EventStreamUpdated {
				t.Errorf("queued after the change: %v, %v; want the stream-updated SET", q, err)
			}
		})
	}
}
