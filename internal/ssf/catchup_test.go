package ssf_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
)

// TestCatchUpAfterCrashWindow: an event stored without its SETs (the
// process died between the audit persister and the transmitter) gets
// them from the catch-up consumer; an event the transmitter handled gets
// none again, even after its SETs were delivered and deleted.
func TestCatchUpAfterCrashWindow(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	bob := userID(t, in, "bob")
	ctx := context.Background()

	poll := func() map[string]int { // txn -> SETs, acknowledging them
		t.Helper()
		r := call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"returnImmediately": true, "maxEvents": 100})
		wantStatus(t, "poll", r, http.StatusOK)
		sets, _ := r.json(t)["sets"].(map[string]any)
		out := map[string]int{}
		var ack []string
		for jti, s := range sets {
			c := claimsOf(t, s.(string))
			if txn, _ := c["txn"].(string); txn != "" {
				out[txn]++
			}
			ack = append(ack, jti)
		}
		if len(ack) > 0 {
			wantStatus(t, "ack", call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"returnImmediately": true, "maxEvents": 0, "ack": ack}), http.StatusOK)
		}
		return out
	}
	consumerIdle := func() {
		t.Helper()
		nb := in.App.Bus.(*bus.NATS)
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			if c, err := nb.JetStream().Consumer(ctx, nb.Stream(), "cae-ssf"); err == nil {
				if i, err := c.Info(ctx); err == nil && i.NumPending == 0 && i.NumAckPending == 0 && i.Delivered.Stream > 0 {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("the cae-ssf consumer did not catch up")
	}

	// Handled synchronously: one SET, acknowledged and deleted; the
	// catch-up consumer sees the event and queues nothing.
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "high", "test"); err != nil {
		t.Fatal(err)
	}
	if got := poll(); len(got) != 1 {
		t.Fatalf("SETs after SetRisk: %v", got)
	}
	consumerIdle()
	if got := poll(); len(got) != 0 {
		t.Fatalf("the catch-up queued the handled event again: %v", got)
	}

	// Stored without its SETs: the catch-up queues them.
	ev := &model.Event{ID: uuid.NewString(), Type: model.EventUserDisabled, Actor: "admin-1", UserID: bob, Time: time.Now()}
	if _, err := in.App.Store.AppendEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	var got map[string]int
	for got = poll(); got[ev.ID] == 0 && time.Now().Before(deadline); got = poll() {
		time.Sleep(50 * time.Millisecond)
	}
	if got[ev.ID] != 1 {
		t.Fatalf("SETs of the event stored without them: %v (caught up %d)", got, in.App.CAE.Stats().CaughtUp.Load())
	}
	if n := in.App.CAE.Stats().CaughtUp.Load(); n != 1 {
		t.Errorf("CaughtUp = %d, want 1", n)
	}
	consumerIdle()
	if got := poll(); len(got) != 0 {
		t.Fatalf("more SETs: %v", got)
	}
}

// TestRecoverBeforeServing: what a crashed process stored without SETs is
// queued by Recover (run before serving), ahead of anything newer of the
// same subject, and the catch-up consumer then finds nothing to add.
func TestRecoverBeforeServing(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	bob := userID(t, in, "bob")
	ctx := context.Background()
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "medium", "first"); err != nil {
		t.Fatal(err)
	}
	lost := &model.Event{ID: uuid.NewString(), Type: model.EventUserDisabled, Actor: "admin-1", UserID: bob, Time: time.Now()}
	if _, err := in.App.Store.AppendEvent(ctx, lost); err != nil {
		t.Fatal(err)
	}
	n, err := in.App.CAE.Recover(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Recover = %d, %v; want 1", n, err)
	}
	if n, err := in.App.CAE.Recover(ctx); err != nil || n != 0 {
		t.Fatalf("Recover again = %d, %v; want 0", n, err)
	}
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "high", "after"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the catch-up consumer's delay
	r := call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"returnImmediately": true, "maxEvents": 100})
	wantStatus(t, "poll", r, http.StatusOK)
	sets, _ := r.json(t)["sets"].(map[string]any)
	var order []string
	byType := map[string]int{}
	for _, s := range sets {
		c := claimsOf(t, s.(string))
		for typ := range c["events"].(map[string]any) {
			byType[typ]++
		}
		if txn, _ := c["txn"].(string); txn == lost.ID {
			order = append(order, "lost")
		}
	}
	if len(sets) != 3 || byType["https://schemas.openid.net/secevent/risc/event-type/account-disabled"] != 1 || len(order) != 1 {
		t.Fatalf("SETs: %d (%v)", len(sets), byType)
	}
	// Queue order: the recovered SET sits between the two risk changes.
	q, err := in.App.Store.QueuedSETs(ctx, id, 0, 10)
	if err != nil || len(q) != 3 {
		t.Fatalf("queue: %d %v", len(q), err)
	}
	if q[1].EventType != "https://schemas.openid.net/secevent/risc/event-type/account-disabled" {
		t.Fatalf("queue order: %s, %s, %s", q[0].EventType, q[1].EventType, q[2].EventType)
	}
	if c := in.App.CAE.Stats().CaughtUp.Load(); c != 1 {
		t.Fatalf("CaughtUp = %d, want 1 (Recover only)", c)
	}
}
