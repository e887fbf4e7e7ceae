package incident_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
)

// actEnv: users u1 (sessions s1, s2; device dev1) and u2 (session s3),
// an incident about u1 (INC-1) whose detections the risk service holds
// too, and one about u2 (INC-2).
func actEnv(t *testing.T) *instance {
	in, _ := newEnv(t)
	in.user("u1", "s1", "s2")
	in.user("u2", "s3")
	if err := in.st.CreateDevice(ctx, &model.Device{ID: "dev1", UserID: "u1", JKT: "jkt-1",
		PublicJWK: json.RawMessage(`{"kty":"EC"}`), Platform: "linux", Status: model.DeviceActive, Compliance: model.Compliant,
		CreatedAt: t0, LastSeen: t0, UpdatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []det{
		{id: "d1", user: "u1", session: "s1", device: "dev1", ip: "203.0.113.7", severity: model.RiskMedium, at: time.Minute},
		{id: "d2", user: "u1", session: "s1", ip: "203.0.113.7", severity: model.RiskMedium, at: 2 * time.Minute},
		{id: "d3", user: "u2", session: "s3", at: 3 * time.Minute},
	} {
		in.mustPublish(d)
		if err := in.risk.HandleDetection(ctx, d.event()); err != nil {
			t.Fatal(err)
		}
	}
	return in
}

// actionEvent returns the one incident.action_taken of action.
func (in *instance) actionEvent(t *testing.T, action string) model.Event {
	t.Helper()
	var found []model.Event
	for _, e := range in.events(model.EventIncidentActionTaken) {
		if e.Reason == action {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d incident.action_taken for %s", len(found), action)
	}
	return found[0]
}

func TestActions(t *testing.T) {
	in := actEnv(t)
	inc := in.get("INC-1")

	// revoke_sessions without a target: every session of every user of
	// the incident, through the session service.
	res, err := in.svc.Act(ctx, "admin-7", "INC-1", incident.ActionRequest{Action: incident.ActionRevokeSessions, Reason: "token replay"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 1 || res.Results[0].ID != "u1" || !res.Results[0].Done || res.Results[0].Detail != "2 sessions revoked" {
		t.Errorf("revoke_sessions results %+v", res.Results)
	}
	for _, sid := range []string{"s1", "s2"} {
		if se, _ := in.st.GetSession(ctx, sid); se.RevokedAt.IsZero() {
			t.Errorf("session %s not revoked", sid)
		}
	}
	if se, _ := in.st.GetSession(ctx, "s3"); !se.RevokedAt.IsZero() {
		t.Error("u2's session was revoked by u1's incident")
	}
	ev := in.actionEvent(t, incident.ActionRevokeSessions)
	if ev.Actor != "admin-7" || ev.Data[model.DataIncidentID] != inc.ID || ev.Data["result"] != "user:u1=done" ||
		ev.Data["action_reason"] != "token replay" || ev.ID != res.EventID || ev.Code() != "W9307W" || !in.withTx[ev.ID] {
		t.Errorf("incident.action_taken %+v (result event id %s)", ev, res.EventID)
	}
	if us := in.events(model.EventUserSessionsRevoked); len(us) != 1 || us[0].Actor != "admin-7" || us[0].Reason != string(model.CauseAdminRevoked) {
		t.Errorf("user.sessions_revoked %+v", us)
	}
	if got := in.get("INC-1"); got.Status != model.IncidentActive || got.Timeline[len(got.Timeline)-1].Kind != model.IncidentEntryAction {
		t.Errorf("after an action: %+v", got.Incident)
	}

	// disable_device: the device service disables it.
	if _, err := in.svc.Act(ctx, "admin-7", "INC-1", incident.ActionRequest{Action: incident.ActionDisableDevice, Target: "dev1"}); err != nil {
		t.Fatal(err)
	}
	if d, _ := in.st.GetDevice(ctx, "dev1"); d.Status != model.DeviceDisabled {
		t.Errorf("device status %s", d.Status)
	}
	if dd := in.events(model.EventDeviceDisabled); len(dd) != 1 || dd[0].Actor != "admin-7" {
		t.Errorf("device.disabled %+v", dd)
	}

	// require_password_change: the user's risk goes to high (an
	// administrator's decision naming the incident).
	if _, err := in.svc.Act(ctx, "admin-7", "INC-1", incident.ActionRequest{Action: incident.ActionRequirePasswordChange}); err != nil {
		t.Fatal(err)
	}
	if u, _ := in.st.GetUser(ctx, "u1"); u.RiskLevel != model.RiskHigh {
		t.Errorf("u1 risk %q, want high", u.RiskLevel)
	}
	rc := in.events(model.EventUserRiskChanged)
	if len(rc) == 0 || rc[len(rc)-1].Actor != "admin-7" || !strings.HasPrefix(rc[len(rc)-1].Reason, "INC-1: require_password_change") {
		t.Errorf("user.risk_changed %+v", rc)
	}

	// confirm_compromised.
	if _, err := in.svc.Act(ctx, "admin-7", "INC-1", incident.ActionRequest{Action: incident.ActionConfirmCompromised, Target: "u1", Reason: "user confirmed"}); err != nil {
		t.Fatal(err)
	}
	cc := in.events(model.EventRiskCompromiseConfirmed)
	if len(cc) != 1 || cc[0].UserID != "u1" || cc[0].Actor != "admin-7" || cc[0].Reason != "INC-1: confirm_compromised: user confirmed" {
		t.Errorf("risk.compromise_confirmed %+v", cc)
	}

	// disable_user.
	if _, err := in.svc.Act(ctx, "admin-7", "INC-1", incident.ActionRequest{Action: incident.ActionDisableUser}); err != nil {
		t.Fatal(err)
	}
	if u, _ := in.st.GetUser(ctx, "u1"); !u.Disabled {
		t.Error("u1 not disabled")
	}
	if ud := in.events(model.EventUserDisabled); len(ud) != 1 || ud[0].Actor != "admin-7" || ud[0].UserID != "u1" {
		t.Errorf("user.disabled %+v", ud)
	}
	if u2, _ := in.st.GetUser(ctx, "u2"); u2.Disabled {
		t.Error("u2 disabled by u1's incident")
	}
}

// An incident is no way to act on what it does not name: targets of
// another incident, unknown actions and a dismissal without a reason are
// refused before anything happens.
func TestActionsRefused(t *testing.T) {
	in := actEnv(t)
	for name, req := range map[string]incident.ActionRequest{
		"another incident's user":    {Action: incident.ActionDisableUser, Target: "u2"},
		"another incident's session": {Action: incident.ActionRevokeSessions, Target: "s3"},
		"a device not named":         {Action: incident.ActionDisableDevice, Target: "dev9"},
		"unknown action":             {Action: "delete_everything"},
		"oversized reason":           {Action: incident.ActionRevokeSessions, Reason: strings.Repeat("r", 300)},
		"no device in the incident":  {Action: incident.ActionDisableDevice},
	} {
		ref := "INC-1"
		if name == "no device in the incident" {
			ref = "INC-2"
		}
		if _, err := in.svc.Act(ctx, "admin", ref, req); !errors.Is(err, incident.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := in.svc.Act(ctx, "admin", "INC-1", incident.ActionRequest{Action: incident.ActionDismiss}); !errors.Is(err, incident.ErrReasonRequired) {
		t.Errorf("dismiss without a reason: %v", err)
	}
	if u, _ := in.st.GetUser(ctx, "u2"); u.Disabled {
		t.Error("u2 disabled")
	}
	if se, _ := in.st.GetSession(ctx, "s3"); !se.RevokedAt.IsZero() {
		t.Error("s3 revoked")
	}
	if n := len(in.events(model.EventIncidentActionTaken)); n != 0 {
		t.Errorf("%d actions recorded", n)
	}
	// A target session of the incident revokes that session alone.
	res, err := in.svc.Act(ctx, "admin", "INC-1", incident.ActionRequest{Action: incident.ActionRevokeSessions, Target: "s1"})
	if err != nil || len(res.Results) != 1 || res.Results[0].Kind != "session" || !res.Results[0].Done {
		t.Fatalf("revoke s1: %v %+v", err, res)
	}
	if se, _ := in.st.GetSession(ctx, "s2"); !se.RevokedAt.IsZero() {
		t.Error("s2 revoked with s1")
	}
}

// dismiss takes the incident's detections out of the risk count and
// closes the incident as a false positive.
func TestActionDismiss(t *testing.T) {
	in := actEnv(t)
	if u, _ := in.st.GetUser(ctx, "u1"); u.RiskLevel == "" {
		t.Fatal("u1 has no risk to dismiss")
	}
	res, err := in.svc.Act(ctx, "admin", "INC-1", incident.ActionRequest{Action: incident.ActionDismiss, Reason: "pen test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 2 || !res.Results[0].Done || !res.Results[1].Done {
		t.Errorf("dismiss results %+v", res.Results)
	}
	for _, id := range []string{"d1", "d2"} {
		if d, _ := in.st.GetRiskDetection(ctx, id); d.State != model.DetectionDismissed || d.StateActor != "admin" {
			t.Errorf("risk detection %s: %s by %s", id, d.State, d.StateActor)
		}
	}
	if d, _ := in.st.GetRiskDetection(ctx, "d3"); d.State != model.DetectionActive {
		t.Error("u2's detection dismissed")
	}
	if u, _ := in.st.GetUser(ctx, "u1"); u.RiskLevel != "" {
		t.Errorf("u1 risk %q after dismissal", u.RiskLevel)
	}
	got := in.get("INC-1")
	if got.Status != model.IncidentFalsePositive || got.StatusReason != "pen test" {
		t.Errorf("after dismiss: %+v", got.Incident)
	}
	// Again: nothing active any more, recorded as unchanged.
	res, err = in.svc.Act(ctx, "admin", "INC-1", incident.ActionRequest{Action: incident.ActionDismiss, Reason: "again"})
	if err != nil || res.Results[0].Done {
		t.Errorf("second dismiss: %v %+v", err, res.Results)
	}
}
