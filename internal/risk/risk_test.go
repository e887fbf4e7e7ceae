package risk_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

func det(sev string, conf float64, src string) *model.RiskDetection {
	return &model.RiskDetection{Severity: sev, Confidence: conf, Source: src, State: model.DetectionActive}
}

// TestAggregate pins the aggregation documented in docs/risk-response.md.
func TestAggregate(t *testing.T) {
	r := risk.DefaultRules
	dismissed := det("high", 1, "online")
	dismissed.State = model.DetectionDismissed
	for _, tc := range []struct {
		name string
		ds   []*model.RiskDetection
		want string
	}{
		{"nothing", nil, "none"},
		{"high, confident", []*model.RiskDetection{det("high", 0.9, "online")}, "high"},
		{"high, unsure", []*model.RiskDetection{det("high", 0.5, "online")}, "medium"},
		{"high, barely", []*model.RiskDetection{det("high", 0.2, "online")}, "low"},
		{"medium", []*model.RiskDetection{det("medium", 0.8, "online")}, "medium"},
		{"medium, barely", []*model.RiskDetection{det("medium", 0.1, "online")}, "low"},
		{"two mediums", []*model.RiskDetection{det("medium", 1, "x"), det("medium", 1, "x")}, "medium"},
		{"three mediums", []*model.RiskDetection{det("medium", 1, "x"), det("medium", 1, "x"), det("medium", 1, "x")}, "high"},
		{"three lows", []*model.RiskDetection{det("low", 1, "x"), det("low", 1, "x"), det("low", 1, "x")}, "medium"},
		{"dismissed high", []*model.RiskDetection{dismissed, det("low", 1, "x")}, "low"},
		{"admin low stays low", []*model.RiskDetection{det("low", 0, model.DetectionSourceAdmin)}, "low"},
	} {
		if got := r.Aggregate(tc.ds); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestHighDetectionRevokes: a high, confident detection on one session
// makes the session and the user high, revokes every session of the user
// (cause user_risk), and commits user.risk_changed and
// session.risk_changed with the change.
func TestHighDetectionRevokes(t *testing.T) {
	in, _ := newEnv(t, nil)
	in.user("alice", "s1", "s2", "s3")
	in.user("bob", "b1")
	if err := in.publish(detection("d1", "alice", "s1", "high", 0.95)); err != nil {
		t.Fatal(err)
	}
	if in.level("alice") != "high" || in.sessionLevel("s1") != "high" || in.sessionLevel("s2") != "none" {
		t.Errorf("levels: user %s, s1 %s, s2 %s", in.level("alice"), in.sessionLevel("s1"), in.sessionLevel("s2"))
	}
	for _, s := range []string{"s1", "s2", "s3"} {
		if r, cause := in.revoked(s); !r || cause != string(model.CauseUserRisk) {
			t.Errorf("session %s: revoked %v (%s), want revoked for user_risk", s, r, cause)
		}
	}
	if r, _ := in.revoked("b1"); r || in.level("bob") != "none" {
		t.Errorf("another user's session was touched")
	}
	urc := in.events(model.EventUserRiskChanged)
	if len(urc) != 1 || urc[0].Data["level"] != "high" || urc[0].Data["previous"] != "none" || urc[0].Reason != "token_replay_wrong_key" ||
		urc[0].Data[model.DataDetectionID] != "d1" || !in.committed(urc[0]) {
		t.Errorf("user.risk_changed: %+v", urc)
	}
	src := in.events(model.EventSessionRiskChanged)
	if len(src) != 1 || src[0].SessionID != "s1" || src[0].Data["level"] != "high" || !in.committed(src[0]) {
		t.Errorf("session.risk_changed: %+v", src)
	}
	if usr := in.events(model.EventUserSessionsRevoked); len(usr) != 1 || usr[0].Reason != string(model.CauseUserRisk) || usr[0].Data["sessions_revoked"] != "3" {
		t.Errorf("user.sessions_revoked: %+v", usr)
	}
	d, err := in.st.GetRiskDetection(ctx, "d1")
	if err != nil || !d.Handled || d.Technique != "T1550.001" || len(d.Evidence) != 2 || !d.ExpiresAt.IsZero() {
		t.Errorf("stored detection %+v, %v", d, err)
	}
	// A medium one for bob does not revoke (auto_revoke_level high).
	if err := in.publish(detection("d2", "bob", "b1", "medium", 0.9)); err != nil {
		t.Fatal(err)
	}
	if r, _ := in.revoked("b1"); r || in.level("bob") != "medium" {
		t.Errorf("medium: revoked %v, level %s", r, in.level("bob"))
	}
	if st := in.svc.Stats(); st.Recorded != 2 || st.Responses != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestAutoRevokeLevel: "off" never revokes; "medium" revokes at medium.
func TestAutoRevokeLevel(t *testing.T) {
	off, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
	off.user("alice", "s1")
	if err := off.publish(detection("d1", "alice", "s1", "high", 1)); err != nil {
		t.Fatal(err)
	}
	if r, _ := off.revoked("s1"); r || off.level("alice") != "high" {
		t.Errorf("off: revoked %v, level %s", r, off.level("alice"))
	}
	med, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "medium" })
	med.user("alice", "s1")
	if err := med.publish(detection("d1", "alice", "s1", "medium", 1)); err != nil {
		t.Fatal(err)
	}
	if r, _ := med.revoked("s1"); !r {
		t.Errorf("medium: not revoked")
	}
}

// TestRepeatsAndRestart: the same event delivered again, the same
// detection id in another event, and a new instance on the same database
// handling it again record the detection once.
func TestRepeatsAndRestart(t *testing.T) {
	clk := clock.NewFake(t0)
	open := backendtest.Kinds(t)[0].Opener(t, clk.Now)
	a := newInstance(t, open(), clk, nil)
	a.user("alice", "s1")
	e := detection("d1", "alice", "s1", "medium", 0.9)
	for range 3 {
		if err := a.publish(e); err != nil {
			t.Fatal(err)
		}
	}
	again := detection("d1", "alice", "s1", "high", 1) // another event, same finding
	again.ID = "ev-other"
	if err := a.publish(again); err != nil {
		t.Fatal(err)
	}
	a.svc.Close()
	b := newInstance(t, open(), clk, nil) // restarted
	if err := b.svc.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	if st := a.svc.Stats(); st.Recorded != 1 || st.Repeats != 3 {
		t.Errorf("first instance: %+v", st)
	}
	if st := b.svc.Stats(); st.Recorded != 0 || st.Repeats != 1 {
		t.Errorf("restarted instance: %+v", st)
	}
	if a.level("alice") != "medium" {
		t.Errorf("level %s, want medium (the repeat with another severity is not counted)", a.level("alice"))
	}
	hist, _ := a.st.RiskHistory(ctx, "alice", "", 0)
	if len(hist) != 2 { // user and session, once
		t.Errorf("history: %d rows, want 2", len(hist))
	}
}

// TestResponseFinishesOlderRecord: a detection an older version recorded
// without its response (it responded in a transaction of its own and
// stopped in between: the level high, the detection not handled, the
// sessions live) is completed when the detection comes again: the
// sessions end and the detection is marked handled in one transaction,
// once.
func TestResponseFinishesOlderRecord(t *testing.T) {
	in, _ := newEnv(t, nil)
	in.user("alice", "s1", "s2")
	old := &model.RiskDetection{ID: "d1", Type: "token_replay_wrong_key", UserID: "alice", SessionID: "s1",
		Severity: model.RiskHigh, Confidence: 1, Source: model.DetectionSourceOnline, DetectedAt: t0.Add(time.Minute),
		State: model.DetectionActive}
	if _, err := in.st.UpdateRisk(ctx, "alice", old, func(st *store.RiskState) error {
		st.UserLevel = model.RiskHigh
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e := detection("d1", "alice", "s1", "high", 1)
	if err := in.svc.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"s1", "s2"} {
		if r, cause := in.revoked(s); !r || cause != string(model.CauseUserRisk) {
			t.Errorf("session %s: revoked %v (%q), want ended by the repeat", s, r, cause)
		}
	}
	if d, _ := in.st.GetRiskDetection(ctx, "d1"); d == nil || !d.Handled {
		t.Errorf("detection not marked handled: %+v", d)
	}
	if err := in.svc.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	usr := in.events(model.EventUserSessionsRevoked)
	if len(usr) != 1 || usr[0].Data["sessions_revoked"] != "2" || !in.committed(usr[0]) {
		t.Errorf("user.sessions_revoked: %+v, want once, for 2 sessions, committed with the response", usr)
	}
	if st := in.svc.Stats(); st.Repeats != 2 || st.Responses != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestTwoInstances: two instances on one database handling the same
// detections at once count each once.
func TestTwoInstances(t *testing.T) {
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			open := be.Opener(t, clk.Now)
			a := newInstance(t, open(), clk, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
			b := newInstance(t, open(), clk, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
			a.user("alice", "s1")
			const n = 12
			var wg sync.WaitGroup
			errs := make(chan error, 2*n)
			for i := range n {
				e := detection(fmt.Sprintf("d%d", i), "alice", "s1", "low", 1)
				for _, in := range []*instance{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- in.svc.HandleDetection(ctx, e)
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			sa, sb := a.svc.Stats(), b.svc.Stats()
			if sa.Recorded+sb.Recorded != n || sa.Repeats+sb.Repeats != n {
				t.Errorf("recorded %d+%d, repeats %d+%d, want %d and %d", sa.Recorded, sb.Recorded, sa.Repeats, sb.Repeats, n, n)
			}
			ds, _ := a.st.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: "alice", Limit: 100})
			if len(ds) != n {
				t.Errorf("%d detections stored, want %d", len(ds), n)
			}
			if a.level("alice") != "medium" { // many lows escalate to medium, not beyond
				t.Errorf("level %s", a.level("alice"))
			}
		})
	}
}

// TestDismissRacesDetection: a dismissal of the user racing a new
// detection never loses either: afterwards the new detection is either
// dismissed (it came first) or active and counted.
func TestDismissRacesDetection(t *testing.T) {
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			open := be.Opener(t, clk.Now)
			a := newInstance(t, open(), clk, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
			b := newInstance(t, open(), clk, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
			a.user("alice", "s1")
			for i := range 10 {
				if err := a.svc.HandleDetection(ctx, detection(fmt.Sprintf("old%d", i), "alice", "s1", "medium", 1)); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				var derr, herr error
				wg.Add(2)
				go func() { defer wg.Done(); _, derr = a.svc.Dismiss(ctx, "admin", risk.Target{UserID: "alice"}, "fp") }()
				go func() {
					defer wg.Done()
					herr = b.svc.HandleDetection(ctx, detection(fmt.Sprintf("new%d", i), "alice", "s1", "high", 1))
				}()
				wg.Wait()
				if derr != nil || herr != nil {
					t.Fatalf("dismiss %v, detection %v", derr, herr)
				}
				nd, err := a.st.GetRiskDetection(ctx, fmt.Sprintf("new%d", i))
				if err != nil {
					t.Fatal(err)
				}
				want := "none"
				if nd.State == model.DetectionActive {
					want = "high"
				}
				if got := a.level("alice"); got != want {
					t.Fatalf("round %d: new detection %s, level %s, want %s", i, nd.State, got, want)
				}
				if want == "high" { // leave nothing for the next round
					if _, err := a.svc.Dismiss(ctx, "admin", risk.Target{UserID: "alice"}, "fp"); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// TestRefused: hostile or malformed risk.detected events are refused,
// counted and acknowledged (no error: they never hold up the consumer),
// and change nothing; oversized free text is cut, not refused.
func TestRefused(t *testing.T) {
	in, _ := newEnv(t, nil)
	in.user("alice", "s1")
	in.user("bob", "b1")
	bad := map[string]func(e *model.Event){
		"severity":          func(e *model.Event) { e.Data[model.DataDetectionSeverity] = "critical" },
		"no severity":       func(e *model.Event) { delete(e.Data, model.DataDetectionSeverity) },
		"confidence NaN":    func(e *model.Event) { e.Data[model.DataDetectionConfidence] = "NaN" },
		"confidence 2":      func(e *model.Event) { e.Data[model.DataDetectionConfidence] = "2" },
		"confidence text":   func(e *model.Event) { e.Data[model.DataDetectionConfidence] = "very" },
		"no confidence":     func(e *model.Event) { delete(e.Data, model.DataDetectionConfidence) },
		"type":              func(e *model.Event) { e.Reason = "DROP TABLE users;" },
		"huge type":         func(e *model.Event) { e.Reason = strings.Repeat("a", 5000) },
		"huge id":           func(e *model.Event) { e.Data[model.DataDetectionID] = strings.Repeat("x", 129) },
		"id with newline":   func(e *model.Event) { e.Data[model.DataDetectionID] = "a\nb" },
		"source":            func(e *model.Event) { e.Data[model.DataDetectionSource] = "whoever" },
		"no user":           func(e *model.Event) { e.UserID, e.SessionID = "", "" },
		"another's session": func(e *model.Event) { e.SessionID = "b1" },
		"huge user id":      func(e *model.Event) { e.UserID = strings.Repeat("u", 300) },
		"not risk.detected": func(e *model.Event) { e.Type = model.EventUserUpdated },
	}
	i := 0
	for name, mod := range bad {
		e := detection(fmt.Sprintf("bad%d", i), "alice", "s1", "high", 1)
		i++
		mod(e)
		if err := in.svc.HandleDetection(ctx, e); err != nil {
			t.Errorf("%s: %v, want nil (acknowledged)", name, err)
		}
	}
	if st := in.svc.Stats(); st.Refused != int64(len(bad)-1) || st.Recorded != 0 { // another type is not counted
		t.Errorf("stats %+v, want %d refused", st, len(bad)-1)
	}
	if in.level("alice") != "none" {
		t.Errorf("a refused event changed the level")
	}
	// Oversized and dirty free text is cut and cleaned.
	e := detection("big", "alice", "", "low", 1)
	e.Data[model.DataDetectionDetail] = strings.Repeat("é", 1000) + "\x00\x1b[31m"
	var ev []string
	for i := range 100 {
		ev = append(ev, fmt.Sprintf("ev%d", i))
	}
	e.Data[model.DataDetectionEvidence] = strings.Join(ev, " ")
	e.Data[model.DataDetectionTechnique] = "<script>"
	if err := in.svc.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	d, err := in.st.GetRiskDetection(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Detail) > 512 || !utf8.ValidString(d.Detail) || strings.ContainsAny(d.Detail, "\x00\x1b") || len(d.Evidence) != 20 || d.Technique != "" {
		t.Errorf("cleaned detection: detail %d bytes, evidence %d, technique %q", len(d.Detail), len(d.Evidence), d.Technique)
	}
}

// TestDeletedUser: a detection for a user that no longer exists is
// acknowledged and counted, and stores nothing; one naming only a session
// is attributed to the session's user.
func TestDeletedUser(t *testing.T) {
	in, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
	in.user("alice", "s1")
	if err := in.publish(detection("d1", "ghost", "", "high", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := in.st.GetRiskDetection(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("detection of a missing user stored: %v", err)
	}
	if st := in.svc.Stats(); st.UnknownUser != 1 {
		t.Errorf("stats %+v", st)
	}
	e := detection("d2", "", "s1", "medium", 1)
	if err := in.publish(e); err != nil {
		t.Fatal(err)
	}
	if in.level("alice") != "medium" || in.sessionLevel("s1") != "medium" {
		t.Errorf("session-only detection: user %s, session %s", in.level("alice"), in.sessionLevel("s1"))
	}
	// A session that is gone: the detection is about the user.
	if err := in.publish(detection("d3", "alice", "gone", "low", 1)); err != nil {
		t.Fatal(err)
	}
	if d, err := in.st.GetRiskDetection(ctx, "d3"); err != nil || d.SessionID != "" {
		t.Errorf("detection with a missing session: %+v %v", d, err)
	}
}

// TestDismiss: each form of dismissal, and its errors.
func TestDismiss(t *testing.T) {
	in, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
	in.user("alice", "s1", "s2")
	for _, e := range []*model.Event{detection("d1", "alice", "s1", "high", 1), detection("d2", "alice", "s2", "medium", 1),
		detection("d3", "alice", "", "low", 1)} {
		if err := in.publish(e); err != nil {
			t.Fatal(err)
		}
	}
	out, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{DetectionID: "d1"}, "known VPN")
	if err != nil || out.Level != "medium" || out.Previous != "high" || len(out.Detections) != 1 {
		t.Fatalf("dismiss d1: %+v %v", out, err)
	}
	if in.sessionLevel("s1") != "none" {
		t.Errorf("s1 after dismissing its detection: %s", in.sessionLevel("s1"))
	}
	if _, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{DetectionID: "d1"}, ""); !errors.Is(err, risk.ErrNotActive) {
		t.Errorf("dismiss twice: %v, want ErrNotActive", err)
	}
	if _, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{DetectionID: "nope"}, ""); !errors.Is(err, risk.ErrNotFound) || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("dismiss unknown: %v, want ErrNotFound", err)
	}
	if _, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{SessionID: "s1"}, ""); !errors.Is(err, risk.ErrNotActive) {
		t.Errorf("dismiss a session without active detections: %v", err)
	}
	if _, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{SessionID: "nope"}, ""); !errors.Is(err, risk.ErrNotFound) {
		t.Errorf("dismiss an unknown session: %v", err)
	}
	if out, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{SessionID: "s2"}, ""); err != nil || out.Level != "low" {
		t.Errorf("dismiss s2: %+v %v", out, err)
	}
	if out, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{UserID: "alice"}, "all fine"); err != nil || out.Level != "none" || out.Detections[0] != "d3" {
		t.Errorf("dismiss alice: %+v %v", out, err)
	}
	if _, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{UserID: "ghost"}, ""); !errors.Is(err, risk.ErrNotFound) {
		t.Errorf("dismiss unknown user: %v", err)
	}
	if _, err := in.svc.Dismiss(ctx, "admin-1", risk.Target{UserID: "alice", SessionID: "s1"}, ""); err == nil {
		t.Errorf("dismiss two targets: no error")
	}
	ds := in.events(model.EventRiskDismissed)
	if len(ds) != 3 || ds[0].Actor != "admin-1" || ds[0].Reason != "known VPN" || ds[0].Data["detections"] != "d1" || !in.committed(ds[0]) {
		t.Errorf("risk.dismissed: %+v", ds)
	}
	// A detection after the dismissal counts.
	if err := in.publish(detection("d4", "alice", "", "medium", 1)); err != nil {
		t.Fatal(err)
	}
	if in.level("alice") != "medium" {
		t.Errorf("a new detection after dismissal: %s", in.level("alice"))
	}
}

// TestConfirmCompromised: high at once and every session revoked, even
// with automatic revocation off; a password change remediates it.
func TestConfirmCompromised(t *testing.T) {
	in, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
	in.user("alice", "s1", "s2")
	ids, err := in.svc.ConfirmCompromised(ctx, "admin-1", "alice", "phished")
	if err != nil || len(ids) != 2 {
		t.Fatalf("ConfirmCompromised: %v %v", ids, err)
	}
	if in.level("alice") != "high" {
		t.Errorf("level %s", in.level("alice"))
	}
	if r, cause := in.revoked("s1"); !r || cause != string(model.CauseCompromiseConfirmed) {
		t.Errorf("s1: %v %s", r, cause)
	}
	cc := in.events(model.EventRiskCompromiseConfirmed)
	if len(cc) != 1 || cc[0].Actor != "admin-1" || !in.committed(cc[0]) {
		t.Errorf("risk.compromise_confirmed: %+v", cc)
	}
	if _, err := in.svc.ConfirmCompromised(ctx, "admin-1", "ghost", ""); !errors.Is(err, risk.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	// The user changes the password: remediated.
	if err := in.b.Publish(ctx, &model.Event{ID: "pw", Type: model.EventPasswordChanged, Actor: "alice", UserID: "alice", Time: t0}); err != nil {
		t.Fatal(err)
	}
	if in.level("alice") != "none" {
		t.Errorf("after a password change: %s", in.level("alice"))
	}
	rem := in.events(model.EventRiskRemediated)
	if len(rem) != 1 || rem[0].Reason != risk.RemediatedPasswordChange || rem[0].Data["previous"] != "high" {
		t.Errorf("risk.remediated: %+v", rem)
	}
}

// TestMFARemediation: a sign-in with a second factor remediates up to
// medium, not high; a password-only sign-in remediates nothing.
func TestMFARemediation(t *testing.T) {
	in, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
	in.user("alice", "s1")
	in.user("bob", "b1")
	_ = in.publish(detection("d1", "alice", "s1", "medium", 1))
	_ = in.publish(detection("d2", "bob", "b1", "high", 1))
	signIn := func(user, amr string) {
		if err := in.b.Publish(ctx, &model.Event{ID: "si-" + user + amr, Type: model.EventSignInSucceeded, Actor: user, UserID: user,
			Time: t0, Data: map[string]string{"amr": amr}}); err != nil {
			t.Fatal(err)
		}
	}
	signIn("alice", "pwd")
	if in.level("alice") != "medium" {
		t.Errorf("password-only sign-in remediated")
	}
	signIn("alice", "pwd otp mfa")
	signIn("bob", "pwd otp mfa")
	if in.level("alice") != "none" || in.sessionLevel("s1") != "none" {
		t.Errorf("alice after MFA: %s / %s", in.level("alice"), in.sessionLevel("s1"))
	}
	if in.level("bob") != "high" {
		t.Errorf("bob's high risk remediated by MFA")
	}
}

// TestSetUserLevel: the administrator's level replaces the detections,
// is recorded as a detection with source admin, and setting it again
// records nothing.
func TestSetUserLevel(t *testing.T) {
	in, _ := newEnv(t, nil)
	in.user("alice", "s1")
	_ = in.publish(detection("d1", "alice", "s1", "medium", 1))
	if err := in.svc.SetUserLevel(ctx, "admin-1", "alice", "low", "checked with the user"); err != nil {
		t.Fatal(err)
	}
	if in.level("alice") != "low" || in.sessionLevel("s1") != "none" {
		t.Errorf("after set low: %s / %s", in.level("alice"), in.sessionLevel("s1"))
	}
	if d, _ := in.st.GetRiskDetection(ctx, "d1"); d.State != model.DetectionSuperseded {
		t.Errorf("d1 %s", d.State)
	}
	n := len(in.events(model.EventUserRiskChanged))
	if err := in.svc.SetUserLevel(ctx, "admin-1", "alice", "low", "again"); err != nil {
		t.Fatal(err)
	}
	if len(in.events(model.EventUserRiskChanged)) != n {
		t.Errorf("setting the same level recorded a change")
	}
	if err := in.svc.SetUserLevel(ctx, "admin-1", "alice", "severe", ""); !errors.Is(err, risk.ErrInvalidLevel) {
		t.Errorf("invalid level: %v", err)
	}
	if err := in.svc.SetUserLevel(ctx, "admin-1", "ghost", "low", ""); !errors.Is(err, risk.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	// High by an administrator is a high like any other: the response runs.
	if err := in.svc.SetUserLevel(ctx, "admin-1", "alice", "high", ""); err != nil {
		t.Fatal(err)
	}
	if r, _ := in.revoked("s1"); !r {
		t.Errorf("high set by an administrator did not revoke")
	}
	x, err := in.svc.Explain(ctx, "alice", "")
	var active []risk.Detection
	for _, d := range x.Detections {
		if d.State == model.DetectionActive {
			active = append(active, d)
		}
	}
	if err != nil || x.Level != "high" || len(active) != 1 || active[0].Source != model.DetectionSourceAdmin ||
		active[0].Type != risk.TypeAdminSetLevel || active[0].Detail != "by admin-1" {
		t.Errorf("explain after admin set: active %+v %v", active, err)
	}
	if err := in.svc.SetUserLevel(ctx, "admin-1", "alice", "none", ""); err != nil || in.level("alice") != "none" {
		t.Errorf("set none: %v %s", err, in.level("alice"))
	}
}

// TestExpiry: low and medium detections stop counting after their
// lifetime; a high one does not.
func TestExpiry(t *testing.T) {
	in, clk := newEnv(t, func(o *risk.Options) {
		o.AutoRevokeLevel, o.LowLifetime, o.MediumLifetime = "off", time.Hour, 2*time.Hour
	})
	in.user("alice", "s1")
	in.user("bob")
	_ = in.publish(detection("d1", "alice", "s1", "low", 1))
	_ = in.publish(detection("d2", "bob", "", "high", 1))
	clk.Advance(30 * time.Minute)
	if n, err := in.svc.Sweep(ctx); err != nil || n != 0 || in.level("alice") != "low" {
		t.Errorf("before expiry: %d %v %s", n, err, in.level("alice"))
	}
	clk.Advance(2 * time.Hour)
	if n, err := in.svc.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("sweep: %d %v", n, err)
	}
	if in.level("alice") != "none" || in.sessionLevel("s1") != "none" || in.level("bob") != "high" {
		t.Errorf("after expiry: alice %s, s1 %s, bob %s", in.level("alice"), in.sessionLevel("s1"), in.level("bob"))
	}
	if d, _ := in.st.GetRiskDetection(ctx, "d1"); d.State != model.DetectionExpired {
		t.Errorf("d1 %s", d.State)
	}
}

// TestAssessSignIn: the detector's findings make the sign-in risk and are
// recorded as detections with source signin; an SSO sign-in is at least
// as risky as its session; a malformed finding is skipped.
func TestAssessSignIn(t *testing.T) {
	var finds []assess.Detection
	in, _ := newEnv(t, func(o *risk.Options) {
		o.AutoRevokeLevel = "off"
		o.Detector = assess.Func(func(_ context.Context, a activity.Activity) ([]assess.Detection, error) {
			if a.IP == "192.0.2.66" {
				return nil, errors.New("history unavailable")
			}
			return finds, nil
		})
	})
	in.b.Subscribe("consumer", in.svc.HandleDetection) // as Start does without durable delivery
	in.user("alice", "s1")
	a := activity.Activity{ID: "ev-signin-1", Kind: activity.KindSignIn, UserID: "alice", IP: "203.0.113.9", Time: t0}
	lvl, ds, err := in.svc.AssessSignIn(ctx, a)
	if err != nil || lvl != "none" || len(ds) != 0 {
		t.Fatalf("no findings: %s %v %v", lvl, ds, err)
	}
	finds = []assess.Detection{
		{Type: "unfamiliar_sign_in", Severity: "medium", Confidence: 0.8, Technique: "T1078.004", Detail: "new country"},
		{Type: "bad", Severity: "catastrophic", Confidence: 1},
	}
	lvl, ds, err = in.svc.AssessSignIn(ctx, a)
	if err != nil || lvl != "medium" || len(ds) != 2 {
		t.Fatalf("with findings: %s %v %v", lvl, ds, err)
	}
	if in.level("alice") != "medium" {
		t.Errorf("the sign-in detection did not count towards the user's risk: %s", in.level("alice"))
	}
	got, _ := in.st.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: "alice"})
	if len(got) != 1 || got[0].Source != model.DetectionSourceSignIn || got[0].Evidence[0] != "ev-signin-1" {
		t.Errorf("recorded: %+v", got)
	}
	// Assessing the same sign-in again records nothing new.
	_, _, _ = in.svc.AssessSignIn(ctx, a)
	if got, _ := in.st.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: "alice"}); len(got) != 1 {
		t.Errorf("re-assessment recorded %d detections", len(got))
	}
	// SSO: the session's level.
	finds = nil
	_ = in.publish(detection("d1", "alice", "s1", "high", 1))
	lvl, _, err = in.svc.AssessSignIn(ctx, activity.Activity{ID: "sso", Kind: activity.KindSSOSignIn, UserID: "alice", SessionID: "s1", Time: t0})
	if err != nil || lvl != "high" {
		t.Errorf("SSO sign-in of a high session: %s %v", lvl, err)
	}
	lvl, _, _ = in.svc.AssessSignIn(ctx, activity.Activity{ID: "int", Kind: activity.KindSignIn, UserID: "alice", SessionID: "s1", Time: t0})
	if lvl != "none" {
		t.Errorf("an interactive sign-in took the session's level: %s", lvl)
	}
	// A detector that cannot judge fails the assessment (the sign-in is
	// refused, not judged blind).
	if _, _, err := in.svc.AssessSignIn(ctx, activity.Activity{ID: "blind", Kind: activity.KindSignIn, UserID: "alice", IP: "192.0.2.66", Time: t0}); err == nil {
		t.Error("a detector error was swallowed")
	}
}

// TestExplain: the detections, their history and the events of the audit
// log they rest on; evidence no longer there is named.
func TestExplain(t *testing.T) {
	in, _ := newEnv(t, func(o *risk.Options) { o.AutoRevokeLevel = "off" })
	in.user("alice", "s1")
	if _, err := in.st.AppendEvent(ctx, &model.Event{ID: "act-1", Type: model.EventTokenRefreshed, UserID: "alice", SessionID: "s1", Time: t0}); err != nil {
		t.Fatal(err)
	}
	_ = in.publish(detection("d1", "alice", "s1", "high", 1))
	x, err := in.svc.Explain(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if x.Level != "high" || len(x.Detections) != 1 || x.Detections[0].Weight != "high" || len(x.History) != 2 || len(x.Sessions) != 1 {
		t.Errorf("explain: %+v", x)
	}
	var ids []string
	for _, e := range x.Events {
		ids = append(ids, e.ID)
	}
	if strings.Join(ids, ",") != "act-1,ev-d1" || strings.Join(x.Missing, ",") != "act-2" {
		t.Errorf("events %v, missing %v", ids, x.Missing)
	}
	xs, err := in.svc.Explain(ctx, "", "s1")
	if err != nil || xs.Level != "high" || xs.SessionID != "s1" || len(xs.History) != 1 {
		t.Errorf("explain session: %+v %v", xs, err)
	}
	if _, err := in.svc.Explain(ctx, "", "nope"); !errors.Is(err, risk.ErrNotFound) {
		t.Errorf("unknown session: %v", err)
	}
	l, err := in.svc.List(ctx, nil, 0)
	if err != nil || len(l.Users) != 1 || l.Users[0].Username != "name-alice" || len(l.Sessions) != 1 {
		t.Errorf("list: %+v %v", l, err)
	}
	if _, err := in.svc.List(ctx, []string{"severe"}, 0); !errors.Is(err, risk.ErrInvalidLevel) {
		t.Errorf("list with a bad level: %v", err)
	}
}
