package bus

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/model"
)

func TestBound(t *testing.T) {
	ok := &model.Event{Type: model.EventTokenRequestFailed, ClientID: "spa", UserAgent: "Mozilla/5.0 (X11; Linux x86_64)",
		Reason: "invalid_client", Data: map[string]string{"error": "invalid_client", "endpoint": "/token"}}
	if Bound(ok) || ok.Data["truncated"] != "" || ok.ClientID != "spa" {
		t.Errorf("a normal event was changed: %+v", ok)
	}

	data := map[string]string{}
	for i := range 50 {
		data[fmt.Sprintf("k%02d", i)] = "v"
	}
	data["big"] = strings.Repeat("x", 5000)
	e := &model.Event{
		ClientID:  strings.Repeat("A", 60<<10),       // a 60 KB client_id
		UserAgent: "evil\x1b[31m\r\nforged log line", // control characters
		Actor:     "bad\xff\xfeutf8",                 // invalid UTF-8
		Reason:    strings.Repeat("é", 300),          // multi-byte runes
		Data:      data,
	}
	if !Bound(e) {
		t.Fatal("Bound reported no change")
	}
	for name, f := range map[string]struct {
		v   string
		max int
	}{"client_id": {e.ClientID, MaxEventField}, "user_agent": {e.UserAgent, MaxEventUserAgent}, "actor": {e.Actor, MaxEventField}, "reason": {e.Reason, MaxEventField}} {
		if len(f.v) > f.max || !utf8.ValidString(f.v) || !printable(f.v) {
			t.Errorf("%s = %q (%d bytes), want printable UTF-8 within %d", name, f.v, len(f.v), f.max)
		}
	}
	if !strings.HasSuffix(e.ClientID, truncatedMark) || strings.ContainsAny(e.UserAgent, "\x1b\r\n") || e.Actor != "bad??utf8" {
		t.Errorf("bounded fields: client %q… ua %q actor %q", e.ClientID[:10], e.UserAgent, e.Actor)
	}
	if len(e.Data) > MaxEventData+1 || e.Data["truncated"] != "true" {
		t.Errorf("%d data entries, truncated=%q", len(e.Data), e.Data["truncated"])
	}
	if v, present := e.Data["big"]; present && len(v) > MaxEventDataValue {
		t.Errorf("data value of %d bytes", len(v))
	}
	size := len(e.ClientID) + len(e.UserAgent) + len(e.Actor) + len(e.Reason)
	for k, v := range e.Data {
		size += len(k) + len(v)
	}
	if size > 8<<10 {
		t.Errorf("a bounded event still holds %d bytes", size)
	}
}

func FuzzBound(f *testing.F) {
	f.Add("spa", "Mozilla/5.0", "k", "v")
	f.Add(strings.Repeat("a", 300), "\x00\x1b", "\xff", strings.Repeat("é", 2000))
	f.Fuzz(func(t *testing.T, client, ua, k, v string) {
		e := &model.Event{ClientID: client, UserAgent: ua, Data: map[string]string{k: v}}
		Bound(e)
		for _, s := range []string{e.ClientID, e.UserAgent} {
			if !printable(s) {
				t.Fatalf("not printable after Bound: %q", s)
			}
		}
		if len(e.ClientID) > MaxEventField || len(e.UserAgent) > MaxEventUserAgent {
			t.Fatalf("too long after Bound: %d, %d", len(e.ClientID), len(e.UserAgent))
		}
		for k, v := range e.Data {
			if len(k) > MaxEventDataKey || len(v) > MaxEventDataValue || !printable(k) || !printable(v) {
				t.Fatalf("data entry after Bound: %q=%q", k, v)
			}
		}
		if again := *e; Bound(&again) && e.Data["truncated"] == "" {
			t.Fatal("Bound changed an event twice")
		}
	})
}
