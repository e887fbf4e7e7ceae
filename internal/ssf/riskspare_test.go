package ssf_test

import (
	"context"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/rs"
)

// nextSecond waits for the next whole second (token and SET times are
// whole seconds).
func nextSecond() { time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) }

// TestRiskResponseSparesSessionsAtResource: a detection about an activity
// before the user's password change, handled after it, raises the user to
// high; Ward's response spares the session signed in after the change,
// and so does a resource applying the risk-level-change with rs: the
// SET's event_timestamp is the password change, so the spared session's
// token stays valid while a token from before the change is refused.
func TestRiskResponseSparesSessionsAtResource(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	st := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPoll}})
	endpoint := st["delivery"].(map[string]any)["endpoint_url"].(string)
	state := rs.NewRevocationState(rs.StateConfig{})
	applied := make(chan *rs.SET, 64)
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: in.URL, Audience: receiverID, State: state,
		OnEvent: func(_ context.Context, s *rs.SET, _ []rs.Action) error { applied <- s; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	poller, err := recv.NewPoller(rs.PollConfig{Endpoint: endpoint, Token: func(context.Context) (string, error) { return tok, nil },
		RequestTimeout: 10 * time.Second, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { poller.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	wait := func(typ string, ok func(*rs.SET) bool) *rs.SET {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-applied:
				if s.Event.Type == typ && ok(s) {
					return s
				}
			case <-deadline:
				t.Fatalf("the resource did not receive %s", typ)
			}
		}
	}

	bob := userID(t, in, "bob")
	activity := time.Now().Add(-time.Minute)
	nextSecond()
	before := time.Now() // a token of bob's issued before the change
	nextSecond()
	if err := in.App.Identity.SetPassword(context.Background(), bob, bob, bobNewPassword); err != nil {
		t.Fatal(err)
	}
	wait(cae.EventCredentialChange, func(*rs.SET) bool { return true })
	nextSecond()
	spared := claimsOf(t, userToken(t, in, "bob", bobNewPassword))
	sid, _ := spared["sid"].(string)
	sparedIssued := time.Unix(int64(spared["iat"].(float64)), 0)
	nextSecond()
	det := &model.Event{Type: model.EventRiskDetected, Time: activity, Actor: "system", UserID: bob, IP: "198.51.100.9",
		Reason: "token_replay_wrong_key", Data: map[string]string{
			model.DataDetectionID: "late-1", model.DataDetectionSeverity: "high", model.DataDetectionConfidence: "1.00",
			model.DataDetectionTechnique: "T1550.001", model.DataDetectionDetail: "replayed before the password change",
			model.DataDetectionSource: "online"}}
	if err := in.App.Bus.Publish(context.Background(), det); err != nil {
		t.Fatal(err)
	}
	high := wait(cae.EventRiskLevelChange, func(s *rs.SET) bool { return s.Event.CurrentLevel == "HIGH" })
	if ts := high.Event.Timestamp; !ts.After(activity) || !ts.Before(sparedIssued) || !ts.Before(high.IssuedAt) {
		t.Errorf("risk-level-change event_timestamp %v, want the password change (after the activity %v, before the spared token %v and the SET %v)",
			ts, activity, sparedIssued, high.IssuedAt)
	}
	if d := state.Check(&rs.TokenInfo{Issuer: in.URL, Subject: bob, SessionID: sid, IssuedAt: sparedIssued}); d != nil {
		t.Errorf("the spared session's token: %+v, want accepted", d)
	}
	if d := state.Check(&rs.TokenInfo{Issuer: in.URL, Subject: bob, SessionID: "earlier", IssuedAt: before}); d == nil || d.Kind != rs.Revoked {
		t.Errorf("a token from before the change: %+v, want revoked", d)
	}
	// Ward spared the session too.
	if s, err := in.App.Store.GetSession(context.Background(), sid); err != nil || !s.RevokedAt.IsZero() {
		t.Errorf("session %s: %+v %v, want active", sid, s, err)
	}
}
