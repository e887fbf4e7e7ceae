package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// The risk response end to end: a high-severity, confident detection
// about one of the victim's sessions (a token replayed with another key)
// arrives on the bus as risk.detected; Ward's risk service makes the
// user's risk high and revokes every session of the user in the same
// commit, so the moment the gateway refuses, Ward refuses to refresh; the CAE
// transmitter tells the gateway, which refuses the victim's tokens — the
// other session's too — while another user goes on;
// and the audit log shows, for that user, the detection and the response.
//
// Only the source of the risk.detected event is the test's own
// (publishDetection): with the detectors in place, the replayed request
// publishes the same event.
func TestRiskResponseEndToEnd(t *testing.T) {
	for _, mode := range []string{SSFPush, SSFNATS} {
		t.Run(mode, func(t *testing.T) { testRiskResponse(t, startCAEChain(t, mode)) })
	}
}

// publishDetection publishes the risk.detected a detector publishes for a
// refresh token presented with another key in session sid.
func publishDetection(t *testing.T, f *caeFixture, userID, sid string) {
	t.Helper()
	e := &model.Event{
		Type: model.EventRiskDetected, Actor: "system", UserID: userID, SessionID: sid, IP: "198.51.100.66",
		Reason: "token_replay_wrong_key",
		Data: map[string]string{
			model.DataDetectionID: "e2e-" + sid, model.DataDetectionSeverity: model.RiskHigh,
			model.DataDetectionConfidence: "0.95", model.DataDetectionTechnique: "T1550.001",
			model.DataDetectionEvidence: "replayed-request-1", model.DataDetectionSource: model.DetectionSourceOnline,
			model.DataDetectionDetail: "refresh token of the session presented with a key it is not bound to",
		},
	}
	if err := bus.NewEmitter(f.in.App.Bus, time.Now).Emit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

func testRiskResponse(t *testing.T, f *caeFixture) {
	ctx := context.Background()
	victim, pw := f.newUser(t, "victor")
	_, gpw := f.newUser(t, "grace")
	c1 := f.signIn(t, "victor", pw, nil) // the session whose token was replayed
	c2 := f.signIn(t, "victor", pw, nil) // another of the victim's sessions
	g := f.signIn(t, "grace", gpw, nil)
	for _, c := range []*session{c1, c2, g} {
		if r := c.read(); r.Status != http.StatusOK {
			t.Fatalf("read before: %d %s", r.Status, r.Body)
		}
	}
	sid, _ := jwtClaims(t, c1.at)["sid"].(string)
	if sid == "" {
		t.Fatal("access token without sid")
	}
	nextSecond() // the tokens' iat falls before the revocation

	start := time.Now()
	publishDetection(t, f, victim, sid)
	// The gateway refuses the victim's other session. How fast is measured
	// by BenchmarkTheftResponseUnderUsageLoad (docs/benchmarks.md), not
	// here: a loaded machine stretches wall-clock time. The bound only
	// says the refusal comes at all.
	deadline := start.Add(20 * time.Second)
	for {
		r := c2.read()
		if r.Status == http.StatusUnauthorized {
			break
		}
		if r.Status != http.StatusOK {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		if time.Now().After(deadline) {
			u, _ := f.in.App.Store.GetUser(ctx, victim)
			t.Fatalf("the gateway still serves the victim's other session %v after the detection (user risk %q)", time.Since(start), u.RiskLevel)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("refused %v after the detection was published", time.Since(start))
	// Whatever SET made the gateway refuse (the risk-level-change, pushed
	// directly, or a session-revoked), Ward's revocation committed with
	// it: no wait here. A stolen refresh token would otherwise mint a new
	// access token in between.
	ss, err := f.in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: victim})
	if err != nil || len(ss) != 2 {
		t.Fatalf("sessions %v %v", ss, err)
	}
	for _, se := range ss {
		if se.RevokedAt.IsZero() {
			t.Errorf("the gateway refuses the victim but session %s is live at Ward", se.ID)
		}
	}
	if st, code := c1.follow(`{"access_token":{"xms_cc":{"values":["cp1"]}}}`); st != 400 || code != "invalid_grant" {
		t.Errorf("refreshing the attacked session as soon as the gateway refuses: %d %s, want invalid_grant", st, code)
	}
	if r := c1.read(); r.Status != http.StatusUnauthorized {
		t.Errorf("the replayed session's token: %d", r.Status)
	}
	if st, code := c2.follow(`{"access_token":{"xms_cc":{"values":["cp1"]}}}`); st != 400 || code != "invalid_grant" {
		t.Errorf("refreshing the revoked session: %d %s, want invalid_grant", st, code)
	}
	if r := g.read(); r.Status != http.StatusOK {
		t.Errorf("another user was refused: %d", r.Status)
	}

	u, err := f.in.App.Store.GetUser(ctx, victim)
	if err != nil || u.RiskLevel != model.RiskHigh {
		t.Fatalf("user risk %q (%v), want high", u.RiskLevel, err)
	}
	ss, err = f.in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: victim})
	if err != nil || len(ss) != 2 {
		t.Fatalf("sessions %v %v", ss, err)
	}
	for _, se := range ss {
		if se.RevokedAt.IsZero() || se.RevokeCause != string(model.CauseUserRisk) {
			t.Errorf("session %s: revoked at %v for %q, want user_risk", se.ID, se.RevokedAt, se.RevokeCause)
		}
	}

	// `ward logs --user victor` reads this: the detection with its type and
	// detail, then the response.
	evs, err := f.in.App.Store.ListEvents(ctx, store.EventFilter{UserID: victim, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[model.EventType]*store.StoredEvent{}
	for _, e := range evs {
		if seen[e.Type] == nil {
			seen[e.Type] = e
		}
	}
	det := seen[model.EventRiskDetected]
	if det == nil || det.Reason != "token_replay_wrong_key" || !strings.Contains(det.Data[model.DataDetectionDetail], "not bound") || det.SessionID != sid {
		t.Fatalf("risk.detected in the victim's log: %+v", det)
	}
	for _, typ := range []model.EventType{model.EventUserRiskChanged, model.EventSessionRiskChanged, model.EventSessionRevoked, model.EventUserSessionsRevoked} {
		e := seen[typ]
		if e == nil {
			t.Errorf("%s missing from the victim's log", typ)
			continue
		}
		if e.Seq < det.Seq {
			t.Errorf("%s recorded before the detection", typ)
		}
	}
	if e := seen[model.EventUserRiskChanged]; e != nil && (e.Data["level"] != "high" || e.Data[model.DataDetectionID] != "e2e-"+sid) {
		t.Errorf("user.risk_changed %+v", e.Data)
	}
}
