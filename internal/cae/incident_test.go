package cae

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// TestCredentialCompromiseSET: a confirmed compromise
// (risk.compromise_confirmed) is RISC credential-compromise for the user
// (RISC 1.0 §2.7): credential_type, which RISC requires, event_timestamp
// and reason_admin, and no member RISC does not define for it.
func TestCredentialCompromiseSET(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	e := &model.Event{ID: "e1", Type: model.EventRiskCompromiseConfirmed, Actor: "admin-1", UserID: "u1", Time: time.Unix(1_700_000_000, 0),
		Reason: "INC-7: confirm_compromised: phished", Data: map[string]string{model.DataDetectionID: "admin:x", "previous": "medium", "level": "high"}}
	ts := s.templates(context.Background(), e)
	if len(ts) != 1 {
		t.Fatalf("%d SETs, want 1", len(ts))
	}
	tp := ts[0]
	if tp.typ != "https://schemas.openid.net/secevent/risc/event-type/credential-compromise" ||
		tp.subject.Format != FormatIssSub || tp.subject.Sub != "u1" || tp.subject.Iss != "https://ward.example" || tp.subjectKey != "user:u1" {
		t.Errorf("SET %s about %+v (key %s)", tp.typ, tp.subject, tp.subjectKey)
	}
	b, err := json.Marshal(tp.body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.Unmarshal(b, &body)
	want := map[string]any{"credential_type": "password", "event_timestamp": float64(1_700_000_000),
		"reason_admin": map[string]any{"en": "an administrator confirmed the account is compromised: INC-7: confirm_compromised: phished"}}
	if len(body) != len(want) {
		t.Errorf("members %v, want exactly %v", body, want)
	}
	for k, v := range want {
		if got, _ := json.Marshal(body[k]); string(got) != string(mustJSON(v)) {
			t.Errorf("%s = %s, want %s", k, got, mustJSON(v))
		}
	}
	if !supported(EventCredentialCompromise) {
		t.Error("credential-compromise is not in events_supported")
	}
	// Without a user there is nobody to name.
	e.UserID = ""
	if ts := s.templates(context.Background(), e); len(ts) != 0 {
		t.Errorf("%d SETs for a confirmation naming no user", len(ts))
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// TestIncidentActionSETs: each response action of an incident records
// events that the transmitter turns into SETs (the incident service calls
// the owning services, which record these exact events); the incident.*
// events themselves yield none.
func TestIncidentActionSETs(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	at := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		action string
		ev     *model.Event
		want   []string
	}{
		{"revoke_sessions (a session)", &model.Event{Type: model.EventSessionRevoked, Actor: "admin-1", UserID: "u1", SessionID: "s1",
			Reason: string(model.CauseAdminRevoked)}, []string{EventSessionRevoked}},
		{"revoke_sessions (a user)", &model.Event{Type: model.EventUserSessionsRevoked, Actor: "admin-1", UserID: "u1",
			Reason: string(model.CauseAdminRevoked), Data: map[string]string{"sessions_revoked": "2"}}, []string{EventSessionRevoked}},
		{"disable_device", &model.Event{Type: model.EventDeviceDisabled, Actor: "admin-1", UserID: "u1", DeviceID: "d1",
			Reason: string(model.CauseDeviceDisabled), Data: map[string]string{"previous_compliance": model.Compliant}},
			[]string{EventDeviceComplianceChange, EventSessionRevoked}},
		{"disable_user", &model.Event{Type: model.EventUserDisabled, Actor: "admin-1", UserID: "u1"}, []string{EventAccountDisabled}},
		{"require_password_change", &model.Event{Type: model.EventUserRiskChanged, Actor: "admin-1", UserID: "u1",
			Reason: "INC-7: require_password_change", Data: map[string]string{"level": "high", "previous": "low"}}, []string{EventRiskLevelChange}},
		{"confirm_compromised", &model.Event{Type: model.EventRiskCompromiseConfirmed, Actor: "admin-1", UserID: "u1"}, []string{EventCredentialCompromise}},
		{"dismiss", &model.Event{Type: model.EventUserRiskChanged, Actor: "admin-1", UserID: "u1", Reason: "dismissed",
			Data: map[string]string{"level": "none", "previous": "medium"}}, []string{EventRiskLevelChange}},
	} {
		c.ev.ID, c.ev.Time = "e-"+c.action, at
		var got []string
		for _, tp := range s.templates(context.Background(), c.ev) {
			got = append(got, tp.typ)
			if tp.body.InitiatingEntity != "" && tp.body.InitiatingEntity != InitiatorAdmin {
				t.Errorf("%s: %s initiated by %s, want admin", c.action, tp.typ, tp.body.InitiatingEntity)
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("%s (%s): SETs %v, want %v", c.action, c.ev.Type, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s (%s): SETs %v, want %v", c.action, c.ev.Type, got, c.want)
			}
		}
	}
	for _, ty := range []model.EventType{model.EventIncidentCreated, model.EventIncidentUpdated, model.EventIncidentStatusChanged,
		model.EventIncidentAssigned, model.EventIncidentCommented, model.EventIncidentMerged, model.EventIncidentSplit, model.EventIncidentActionTaken} {
		e := &model.Event{ID: "e", Type: ty, Actor: "admin-1", UserID: "u1", SessionID: "s1", DeviceID: "d1", Time: at}
		if ts := s.templates(context.Background(), e); len(ts) != 0 {
			t.Errorf("%s yields %d SETs", ty, len(ts))
		}
	}
}

// TestBoundedRiskResponseSETs: a risk response that revoked only the
// sessions created before its detection sends one session-revoked per
// revoked session and no user-wide one (which would end the tokens of
// the sessions it spared); an unbounded one sends the user-wide one only.
func TestBoundedRiskResponseSETs(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	at := time.Unix(1_700_000_000, 0)
	summary := &model.Event{ID: "e1", Time: at, Type: model.EventUserSessionsRevoked, Actor: "system", UserID: "u1", Reason: string(model.CauseUserRisk),
		Data: map[string]string{"sessions_revoked": "2", model.DataCreatedUntil: "2026-03-01T12:01:00Z"}}
	if ts := s.templates(context.Background(), summary); len(ts) != 0 {
		t.Errorf("bounded summary: %d SETs, want none", len(ts))
	}
	one := &model.Event{ID: "e2", Time: at, Type: model.EventSessionRevoked, Actor: "system", UserID: "u1", SessionID: "s1", Reason: string(model.CauseUserRisk)}
	ts := s.templates(context.Background(), one)
	if len(ts) != 1 || ts[0].typ != EventSessionRevoked || ts[0].subject.Session == nil || ts[0].subject.User == nil {
		t.Fatalf("bounded session.revoked: %+v, want one session-revoked about the session", ts)
	}
	delete(summary.Data, model.DataCreatedUntil)
	if ts := s.templates(context.Background(), summary); len(ts) != 1 || ts[0].typ != EventSessionRevoked || ts[0].subject.Session != nil {
		t.Errorf("unbounded summary: %+v, want one user-wide session-revoked", ts)
	}
	one.Data = map[string]string{model.DataAllSessions: "true"}
	if ts := s.templates(context.Background(), one); len(ts) != 0 {
		t.Errorf("unbounded session.revoked: %d SETs, want none (the summary speaks)", len(ts))
	}
}
