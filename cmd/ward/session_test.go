package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// receiverID is the SSF receiver of the CLI tests' poll streams.
const receiverID = "cli-test-receiver"

// createPollStream creates a poll stream that receives every event and
// returns its id.
func createPollStream(t *testing.T, a *app.App) string {
	t.Helper()
	st, err := a.CAE.CreateStream(context.Background(), receiverID, cae.StreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.ID
}

// queuedSET is a SET a tool queued: its event type and event, subject and
// txn.
type queuedSET struct {
	typ     string
	event   map[string]any
	subject map[string]any
	txn     string
}

// pollSETs takes (and acknowledges) every SET queued on the stream.
func pollSETs(t *testing.T, h *harness, streamID string) []queuedSET {
	t.Helper()
	a := h.openApp()
	defer a.Close()
	ctx := context.Background()
	var out []queuedSET
	var ack []string
	for {
		resp, err := a.CAE.Poll(ctx, receiverID, streamID, cae.PollRequest{ReturnImmediately: true, Ack: ack})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Sets) == 0 {
			return out
		}
		ack = nil
		for _, s := range resp.Sets {
			parts := strings.Split(s.SET, ".")
			if len(parts) != 3 {
				t.Fatalf("SET %q", s.SET)
			}
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				Events map[string]map[string]any `json:"events"`
				SubID  map[string]any            `json:"sub_id"`
				TXN    string                    `json:"txn"`
			}
			if err := json.Unmarshal(payload, &c); err != nil {
				t.Fatal(err)
			}
			for typ, ev := range c.Events {
				out = append(out, queuedSET{typ: typ, event: ev, subject: c.SubID, txn: c.TXN})
			}
			ack = append(ack, s.JTI)
		}
	}
}

// newSession stores an active session of userID with a refresh token.
func newSession(t *testing.T, a *app.App, userID string) string {
	t.Helper()
	ctx := context.Background()
	now := a.Now()
	s := &model.Session{ID: "s-" + secret.RandomString(9), UserID: userID, AuthTime: now, AMR: []string{"pwd", "otp"},
		IP: "192.0.2.9", UserAgent: "test-agent/1", CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(24 * time.Hour), IdleTimeout: time.Hour}
	if err := a.Store.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := a.Store.CreateRefreshToken(ctx, &model.RefreshToken{Hash: []byte(s.ID), SessionID: s.ID, ClientID: "web", UserID: userID,
		AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// Sessions from the command line: list, show, revoke one, revoke all of a
// user. Revocations go through the session service like the admin API's:
// the same events (actor cli, cause admin_revoked) and the same SETs.
func TestSessionCommands(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "bob", "--password-stdin")
	h.ok("correct horse battery\n", "user", "add", "carol", "--password-stdin")
	a := h.openApp()
	ctx := context.Background()
	bob, _ := a.Store.GetUserByUsername(ctx, "bob")
	carol, _ := a.Store.GetUserByUsername(ctx, "carol")
	s1, s2, s3 := newSession(t, a, bob.ID), newSession(t, a, bob.ID), newSession(t, a, carol.ID)
	stream := createPollStream(t, a)
	a.Close()

	out := h.ok("", "session", "list")
	for _, id := range []string{s1, s2, s3} {
		if !regexp.MustCompile(`(?m)^` + id + `\s+(bob|carol)\s+active\s+pwd,otp\s+192\.0\.2\.9\s`).MatchString(out) {
			t.Errorf("list lacks %s:\n%s", id, out)
		}
	}
	if out := h.ok("", "session", "list", "--user", "carol"); strings.Contains(out, s1) || !strings.Contains(out, s3) {
		t.Errorf("list --user carol:\n%s", out)
	}
	out = h.ok("", "session", "show", s1)
	for _, re := range []string{`(?m)^ID:\s+` + s1 + `$`, `(?m)^User:\s+bob$`, `(?m)^Status:\s+active$`, `(?m)^User agent:\s+test-agent/1$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("show lacks %s:\n%s", re, out)
		}
	}
	if _, errs, code := h.run("", "session", "show", "nope"); code != exitFailure || !strings.Contains(errs, `no session "nope"`) {
		t.Errorf("show unknown: %d %q", code, errs)
	}

	// Revoke one.
	if out := h.ok("", "session", "revoke", s1); !strings.Contains(out, "revoked session "+s1+" of bob") {
		t.Errorf("revoke: %q", out)
	}
	out = h.ok("", "session", "show", s1)
	if !regexp.MustCompile(`(?m)^Status:\s+revoked$`).MatchString(out) || !regexp.MustCompile(`(?m)^Revoke cause:\s+admin_revoked$`).MatchString(out) {
		t.Errorf("show revoked:\n%s", out)
	}
	if out := h.ok("", "session", "list", "--active"); strings.Contains(out, s1) || !strings.Contains(out, s2) {
		t.Errorf("list --active:\n%s", out)
	}
	sets := pollSETs(t, h, stream)
	if len(sets) != 1 || sets[0].typ != cae.EventSessionRevoked {
		t.Fatalf("SETs of one revocation: %+v", sets)
	}
	sess, _ := sets[0].subject["session"].(map[string]any)
	user, _ := sets[0].subject["user"].(map[string]any)
	if sets[0].subject["format"] != "complex" || sess["id"] != s1 || user["sub"] != bob.ID || sets[0].event["initiating_entity"] != cae.InitiatorAdmin {
		t.Errorf("session-revoked SET: %+v", sets[0])
	}
	// Again: nothing changes, nothing is recorded.
	if out := h.ok("", "session", "revoke", s1); !strings.Contains(out, "revoked already") {
		t.Errorf("revoke again: %q", out)
	}
	if sets := pollSETs(t, h, stream); len(sets) != 0 {
		t.Errorf("a second revocation queued %+v", sets)
	}
	if _, errs, code := h.run("", "session", "revoke", "nope"); code != exitFailure || !strings.Contains(errs, "no session") {
		t.Errorf("revoke unknown: %d %q", code, errs)
	}

	// Revoke every session of bob: one user-level SET.
	if out := h.ok("", "user", "revoke-sessions", "bob"); !strings.Contains(out, "revoked 1 session(s) of bob") {
		t.Errorf("revoke-sessions: %q", out)
	}
	sets = pollSETs(t, h, stream)
	if len(sets) != 1 || sets[0].typ != cae.EventSessionRevoked || sets[0].subject["format"] != "iss_sub" || sets[0].subject["sub"] != bob.ID {
		t.Fatalf("SETs of revoke-sessions: %+v", sets)
	}
	if out := h.ok("", "session", "list", "--user", "bob", "--active"); strings.Contains(out, s2) {
		t.Errorf("bob still has an active session:\n%s", out)
	}
	if out := h.ok("", "session", "list", "--active"); !strings.Contains(out, s3) {
		t.Errorf("carol's session was revoked:\n%s", out)
	}

	a = h.openApp()
	defer a.Close()
	for _, id := range []string{s1, s2} {
		if _, err := a.Store.GetRefreshToken(ctx, []byte(id)); err == nil {
			t.Errorf("refresh token of revoked session %s survives", id)
		}
	}
	evs, err := a.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSessionRevoked, model.EventUserSessionsRevoked}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[model.EventType]int{model.EventSessionRevoked: 2, model.EventUserSessionsRevoked: 1}
	for _, ev := range evs {
		want[ev.Type]--
		if ev.Actor != actorCLI || ev.Reason != string(model.CauseAdminRevoked) || ev.UserID != bob.ID {
			t.Errorf("%s: actor %q reason %q user %q", ev.Type, ev.Actor, ev.Reason, ev.UserID)
		}
	}
	for typ, n := range want {
		if n != 0 {
			t.Errorf("%s: %d more or fewer than expected", typ, n)
		}
	}
}
