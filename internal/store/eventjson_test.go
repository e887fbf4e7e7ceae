package store

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// The event JSON shape is a documented interface (SIEM export, `ward logs
// --json`, the admin API): field names must not drift.
func TestStoredEventJSONShape(t *testing.T) {
	e := StoredEvent{Seq: 7, Event: model.Event{ID: "e1", Type: model.EventRefreshReuseDetected,
		Time: time.Date(2026, 11, 27, 6, 0, 0, 0, time.FixedZone("x", 3600)), UserID: "u1", SessionID: "s1",
		ClientID: "c1", IP: "203.0.113.9", Outcome: model.OutcomeFailure, Reason: "refresh_reuse", Data: map[string]string{"jkt": "k"}}}
	b, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":7,"id":"e1","type":"session.refresh_reuse_detected","code":"W2005E","time":"2026-11-27T05:00:00Z","user_id":"u1","session_id":"s1","client_id":"c1","ip":"203.0.113.9","outcome":"failure","reason":"refresh_reuse","data":{"jkt":"k"}}`
	if got := strings.TrimSpace(string(b)); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestStoredEventJSONRoundTrip(t *testing.T) {
	in := StoredEvent{Seq: 42, Event: model.Event{ID: "e2", Type: model.EventSessionRevoked,
		Time: time.Date(2026, 11, 27, 6, 0, 0, 123456000, time.UTC), Actor: "admin", UserID: "u1", SessionID: "s1",
		ClientID: "c1", DeviceID: "d1", TokenID: "t1", IP: "203.0.113.9", UserAgent: "ua", Outcome: model.OutcomeSuccess,
		Reason: "user_disabled", Binding: model.BindingDPoP, BindingReason: "r", CorrelationID: "corr", Data: map[string]string{"k": "v"}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out StoredEvent
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("got  %+v\nwant %+v", out, in)
	}
}
