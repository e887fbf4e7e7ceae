package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// An administrator sees every receiver's streams and pauses one on the
// transmitter's side: stored, recorded in the audit log, and the receiver
// gets a stream-updated SET; bad input changes nothing.
func TestSSFCommands(t *testing.T) {
	h := newHarness(t, "")
	a := h.openApp()
	ctx := context.Background()
	st, err := a.CAE.CreateStream(ctx, "receiver-1", cae.StreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()

	out := h.ok("", "ssf", "list")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(st.ID) + `\s+receiver-1\s+poll\s+enabled\s`).MatchString(out) {
		t.Errorf("ssf list:\n%s", out)
	}
	if out := h.ok("", "ssf", "status", st.ID, "paused", "--reason", "maintenance"); !strings.Contains(out, "is paused") {
		t.Errorf("ssf status: %q", out)
	}
	for _, bad := range [][]string{{"ssf", "status", st.ID, "asleep"}, {"ssf", "status", "no-such-stream", "paused"}} {
		if _, _, code := h.run("", bad...); code == 0 {
			t.Errorf("ward %v succeeded", bad)
		}
	}

	a = h.openApp()
	got, err := a.Store.GetSSFStream(ctx, st.ID)
	if err != nil || got.Status != model.StreamPaused || got.StatusReason != "maintenance" {
		t.Fatalf("stream after pausing: %+v %v", got, err)
	}
	evs, _ := a.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSSFStreamStatusChanged}})
	if len(evs) != 1 || evs[0].Actor != actorCLI || evs[0].Data["status"] != "paused" || evs[0].Data["previous"] != "enabled" {
		t.Errorf("audit events: %+v", evs)
	}
	q, err := a.Store.QueuedSETs(ctx, st.ID, 0, 10)
	if err != nil || len(q) == 0 {
		t.Fatalf("no stream-updated SET queued: %v", err)
	}
	last := q[len(q)-1]
	ev, _ := wardtest.JWTClaims(t, string(last.SET))["events"].(map[string]any)[cae.EventStreamUpdated].(map[string]any)
	if last.EventType != cae.EventStreamUpdated || ev["status"] != "paused" || ev["reason"] != "maintenance" {
		t.Errorf("last queued SET: %s %v", last.EventType, ev)
	}
}
