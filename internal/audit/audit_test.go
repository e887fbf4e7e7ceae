package audit_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestPersister(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	b := bus.NewLocal()
	unsub := audit.Subscribe(b, audit.Options{Store: st, Now: func() time.Time { return t0 }})

	// An unstamped event is stamped and stored, with the request origin.
	octx := bus.WithOrigin(ctx, bus.Origin{IP: "192.0.2.1", UserAgent: "ua", CorrelationID: "corr-1"})
	e := &model.Event{Type: model.EventUserCreated, UserID: "u1"}
	if err := b.Publish(octx, e); err != nil {
		t.Fatal(err)
	}
	evs, err := st.EventsAfter(ctx, 0, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("stored %v, %v", evs, err)
	}
	if got := evs[0]; got.ID == "" || got.ID != e.ID || !got.Time.Equal(t0) || got.Outcome != model.OutcomeSuccess ||
		got.IP != "192.0.2.1" || got.CorrelationID != "corr-1" || got.UserID != "u1" {
		t.Errorf("stored %+v", got.Event)
	}

	// An event committed with its change is not stored again.
	committed := &model.Event{ID: "ev-committed", Type: model.EventUserDisabled, Time: t0, UserID: "u1", Outcome: model.OutcomeSuccess}
	if err := st.CreateUser(ctx, &model.User{ID: "u1", Username: "u1", Roles: []string{}, CreatedAt: t0, UpdatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	ectx := store.WithEvent(ctx, committed)
	if _, err := st.UpdateUser(ectx, "u1", func(u *model.User) error { u.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ectx, committed); err != nil {
		t.Fatal(err)
	}
	if evs, _ := st.EventsAfter(ctx, 0, 10); len(evs) != 2 {
		t.Errorf("%d events stored, want 2 (the committed one once)", len(evs))
	}

	// A store that cannot take the event fails the publish.
	st.Close()
	if err := b.Publish(ctx, &model.Event{Type: model.EventUserUpdated}); err == nil {
		t.Error("publish succeeded although the event could not be recorded")
	}
	unsub()
	if err := b.Publish(ctx, &model.Event{Type: model.EventUserUpdated}); err != nil {
		t.Errorf("after unsubscribe: %v", err)
	}
}

func TestRegistryAccessors(t *testing.T) {
	types := audit.EventTypes()
	if len(types) != len(model.EventCodes) {
		t.Fatalf("%d types, %d codes", len(types), len(model.EventCodes))
	}
	for i, typ := range types {
		if audit.Code(typ) == "" || audit.Code(typ) != model.EventCodes[typ] {
			t.Errorf("%s: code %q", typ, audit.Code(typ))
		}
		if i > 0 && audit.Code(types[i-1]) >= audit.Code(typ) {
			t.Errorf("not ordered by code: %s before %s", audit.Code(types[i-1]), audit.Code(typ))
		}
	}
	if audit.Code("no.such_event") != "" {
		t.Error("a code for an unknown type")
	}
	if audit.Code(model.EventRefreshReuseDetected) != "W2005E" {
		t.Errorf("session.refresh_reuse_detected is %s, documented as W2005E", audit.Code(model.EventRefreshReuseDetected))
	}
}

// Retention deletes the events older than it (no less than MinRetention)
// whole checkpointed segments at a time, keeps the checkpoint at the cut
// as the anchor, keeps what no checkpoint covers yet, and keeps
// everything with 0.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"), sqlite.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// One segment per event, each closed by a checkpoint signed when the
	// event was; the last, old event is in no segment yet.
	var links []store.ChainLink
	for i, age := range []time.Duration{100 * 24 * time.Hour, 91 * 24 * time.Hour, 89 * 24 * time.Hour, 7 * 24 * time.Hour, time.Hour, 200 * 24 * time.Hour} {
		seq, err := st.AppendEvent(ctx, &model.Event{Type: model.EventSignInFailed, Time: now.Add(-age)})
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, store.ChainLink{Seq: seq, Origin: 1, Hash: []byte{byte(seq)}})
		if i < 5 {
			if err := st.CreateAuditCheckpoint(ctx, &store.AuditCheckpoint{Seq: seq, Hash: []byte{byte(seq)}, CreatedAt: now.Add(-age), KID: "k", JWS: "j"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.SealEvents(ctx, links); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		evs, err := st.ListEvents(ctx, store.EventFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	anchor := func() int64 {
		cps, err := st.AuditCheckpoints(ctx, 0, 0, 0)
		if err != nil || len(cps) == 0 {
			t.Fatalf("checkpoints: %v, %v", cps, err)
		}
		return cps[0].Seq
	}
	if n, err := audit.Prune(ctx, st, now, 0); n != 0 || err != nil || count() != 6 {
		t.Fatalf("retention 0: deleted %d, %v; %d left", n, err, count())
	}
	if n, err := audit.Prune(ctx, st, now, 90*24*time.Hour); n != 2 || err != nil || count() != 4 {
		t.Fatalf("90 days: deleted %d, %v; %d left", n, err, count())
	}
	if a := anchor(); a != links[1].Seq {
		t.Errorf("the oldest checkpoint left is at seq %d, want the anchor at the cut, %d", a, links[1].Seq)
	}
	// Shorter than the minimum: the minimum applies.
	if n, err := audit.Prune(ctx, st, now, time.Hour); n != 1 || err != nil || count() != 3 {
		t.Fatalf("1 hour (8 days applied): deleted %d, %v; %d left", n, err, count())
	}
	if a := anchor(); a != links[2].Seq {
		t.Errorf("anchor at seq %d, want %d", a, links[2].Seq)
	}
	// The 200-day-old event after the last checkpoint stays.
	evs, err := st.EventsAfter(ctx, links[4].Seq, 10)
	if err != nil || len(evs) != 1 || evs[0].Seq != links[5].Seq {
		t.Errorf("the event no checkpoint covers: %v, %v", evs, err)
	}
}
