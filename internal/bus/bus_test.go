package bus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// The Local bus's delivery and origin rules are in the conformance suite
// (bustest), which every bus runs.

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestEmitterStamps(t *testing.T) {
	b := NewLocal()
	rec := &Recorder{}
	b.Subscribe("rec", rec.Handle)
	em := NewEmitter(b, func() time.Time { return t0 })
	ctx := WithOrigin(context.Background(), Origin{IP: "192.0.2.1", UserAgent: "ua", CorrelationID: "corr"})
	if err := em.Emit(ctx, &model.Event{Type: model.EventUserCreated}); err != nil {
		t.Fatal(err)
	}
	explicit := &model.Event{ID: "keep", Type: model.EventSignInFailed, Time: t0.Add(-time.Hour), Outcome: model.OutcomeFailure, IP: "198.51.100.1"}
	if err := em.Emit(ctx, explicit); err != nil {
		t.Fatal(err)
	}
	evs := rec.Events()
	if len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	e := evs[0]
	if len(e.ID) != 36 || strings.Count(e.ID, "-") != 4 || e.ID[14] != '4' || !e.Time.Equal(t0) ||
		e.Outcome != model.OutcomeSuccess || e.IP != "192.0.2.1" || e.UserAgent != "ua" || e.CorrelationID != "corr" {
		t.Errorf("stamped %+v; want a v4 UUID, the clock, success and the origin", e)
	}
	if e := evs[1]; e.ID != "keep" || !e.Time.Equal(t0.Add(-time.Hour)) || e.Outcome != model.OutcomeFailure || e.IP != "198.51.100.1" || e.UserAgent != "ua" {
		t.Errorf("overwrote what was set: %+v", e)
	}
	if NewEventID() == NewEventID() {
		t.Error("two equal ids")
	}
}

func TestEmitterWithoutBus(t *testing.T) {
	em := NewEmitter(nil, nil)
	ctx := context.Background()
	e := &model.Event{Type: model.EventUserCreated}
	if em.Enabled() || em.Emit(ctx, e) != nil || e.ID != "" {
		t.Errorf("an emitter without a bus recorded: %+v", e)
	}
	if em.Pending(ctx, e, nil) != ctx || em.PendingEvents(ctx, func([]string) []*model.Event { return []*model.Event{e} }) != ctx {
		t.Error("an emitter without a bus made a pending event")
	}
	var nilEm *Emitter
	if nilEm.Enabled() {
		t.Error("a nil emitter is enabled")
	}
}

// Pending stamps the event before the store write; PendingEvents stamps
// each event it builds, inside the write.
func TestEmitterPending(t *testing.T) {
	em := NewEmitter(NewLocal(), func() time.Time { return t0 })
	ctx := WithOrigin(context.Background(), Origin{CorrelationID: "corr"})
	e := &model.Event{Type: model.EventUserDisabled}
	ectx := em.Pending(ctx, e, nil)
	if e.ID == "" || !e.Time.Equal(t0) || e.CorrelationID != "corr" || e.Outcome != model.OutcomeSuccess {
		t.Errorf("not stamped before the write: %+v", e)
	}
	p := store.TakeEvent(ectx)
	if evs := p.Events(nil); len(evs) != 1 || evs[0] != e {
		t.Errorf("pending events %v", evs)
	}
	var built *model.Event
	ectx = em.PendingEvents(ctx, func(ids []string) []*model.Event {
		built = &model.Event{Type: model.EventSessionRevoked, SessionID: ids[0]}
		return []*model.Event{built}
	})
	evs := store.TakeEvent(ectx).Events([]string{"s1"})
	if len(evs) != 1 || evs[0] != built || built.ID == "" || !built.Time.Equal(t0) || built.CorrelationID != "corr" {
		t.Errorf("built events not stamped: %+v", built)
	}
}

// A failed emit is returned (wrapping the subscriber's error) and, with
// Logging, logged with the event's type, id and correlation id.
func TestEmitterFailure(t *testing.T) {
	b := NewLocal()
	b.Subscribe("audit", func(context.Context, *model.Event) error { return errors.New("disk full") })
	var logs bytes.Buffer
	em := NewEmitter(b, nil).Logging(slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := WithOrigin(context.Background(), Origin{CorrelationID: "corr-9"})
	err := em.Emit(ctx, &model.Event{Type: model.EventUserCreated, Data: map[string]string{"secretish": "value-not-logged"}})
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "user.created") {
		t.Fatalf("Emit = %v", err)
	}
	l := logs.String()
	if !strings.Contains(l, "correlation_id=corr-9") || !strings.Contains(l, "type=user.created") || strings.Contains(l, "value-not-logged") {
		t.Errorf("log: %s", l)
	}
	if err := NewEmitter(b, nil).Emit(ctx, &model.Event{Type: model.EventUserCreated}); err == nil {
		t.Error("without Logging, Emit dropped the error")
	}
}
