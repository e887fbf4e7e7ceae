package ocsf_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/audit/ocsf"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// incidentEvent is an incident.* event as the incident service records it.
func incidentEvent(typ model.EventType, status, prev string, extra map[string]string) *store.StoredEvent {
	data := map[string]string{
		model.DataIncidentID: "7d0c3a4e-9a51-4f55-8a3e-1f0e4a9b2c11", model.DataIncidentNumber: "7",
		model.DataIncidentTitle: "token_replay_wrong_key (user u-1)", model.DataIncidentSeverity: "high",
		model.DataIncidentStatus: status, model.DataIncidentDetections: "3",
		model.DataIncidentTechniques: "T1550.001 T1539 T9999", model.DataIncidentTactics: "TA0005 TA0006 TA0008",
		model.DataIncidentFirstSeen: "2026-04-01T12:00:00Z", model.DataIncidentLastSeen: "2026-04-01T12:30:45.123456Z",
	}
	if prev != "" {
		data["previous_status"] = prev
	}
	for k, v := range extra {
		data[k] = v
	}
	return &store.StoredEvent{Seq: 9, Event: model.Event{ID: "e-" + string(typ), Type: typ, Time: t0, Actor: "admin-1",
		UserID: "u-1", SessionID: "s-1", DeviceID: "dev-1", IP: "203.0.113.7", Outcome: model.OutcomeSuccess, Data: data}}
}

// Every incident event maps to an Incident Finding (2005) that the
// vendored OCSF 1.8.0 schema accepts, with the incident's severity,
// status, assignee (or the administrators' group), times, MITRE ATT&CK
// techniques and tactics, and the detection behind the change.
func TestIncidentEventsValidate(t *testing.T) {
	s := loadSchema(t)
	m := ocsf.NewMapper("1.2.3")
	cases := []struct {
		name     string
		ev       *store.StoredEvent
		typeUID  int
		statusID int
		verdict  int
		check    func(t *testing.T, r map[string]any)
	}{
		{"created", incidentEvent(model.EventIncidentCreated, model.IncidentNew, "", map[string]string{
			model.DataDetectionID: "det-1", "detection_type": "token_replay_wrong_key", "detection_event_id": "ev-1"}), 200501, 1, 0,
			func(t *testing.T, r map[string]any) {
				fl := r["finding_info_list"].([]any)
				if len(fl) != 2 || fl[0].(map[string]any)["uid"] != "7d0c3a4e-9a51-4f55-8a3e-1f0e4a9b2c11" || fl[1].(map[string]any)["uid"] != "det-1" ||
					fl[0].(map[string]any)["related_events_count"] != float64(3) {
					t.Errorf("finding_info_list %v", fl)
				}
				if r["assignee_group"].(map[string]any)["uid"] != "admin" || r["assignee"] != nil {
					t.Errorf("unassigned: %v %v", r["assignee_group"], r["assignee"])
				}
			}},
		{"updated", incidentEvent(model.EventIncidentUpdated, model.IncidentActive, "", nil), 200502, 2, 0, nil},
		{"assigned", incidentEvent(model.EventIncidentAssigned, model.IncidentActive, "", map[string]string{model.DataIncidentAssignee: "u-9"}), 200502, 2, 0,
			func(t *testing.T, r map[string]any) {
				if r["assignee"].(map[string]any)["uid"] != "u-9" || r["assignee_group"] != nil {
					t.Errorf("assignee %v", r["assignee"])
				}
			}},
		{"commented", incidentEvent(model.EventIncidentCommented, model.IncidentActive, "", map[string]string{"comment": "called the user"}), 200502, 2, 0,
			func(t *testing.T, r map[string]any) {
				if r["comment"] != "called the user" {
					t.Errorf("comment %v", r["comment"])
				}
			}},
		{"resolved", incidentEvent(model.EventIncidentStatusChanged, model.IncidentResolved, model.IncidentActive, nil), 200503, 4, 0, nil},
		{"false positive", incidentEvent(model.EventIncidentStatusChanged, model.IncidentFalsePositive, model.IncidentNew, nil), 200503, 5, 1, nil},
		{"reopened", incidentEvent(model.EventIncidentStatusChanged, model.IncidentActive, model.IncidentResolved, nil), 200502, 2, 0, nil},
		{"merged away", incidentEvent(model.EventIncidentStatusChanged, model.IncidentResolved, model.IncidentActive, map[string]string{"merged_into": "x"}), 200503, 4, 10, nil},
		{"merged", incidentEvent(model.EventIncidentMerged, model.IncidentActive, "", map[string]string{"merged": "a b"}), 200502, 2, 0, nil},
		{"split", incidentEvent(model.EventIncidentSplit, model.IncidentActive, "", nil), 200502, 2, 0, nil},
		{"action", incidentEvent(model.EventIncidentActionTaken, model.IncidentActive, "", map[string]string{"action": "revoke_sessions", "action_reason": "stolen"}), 200502, 2, 0, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := m.Map(c.ev)
			b, err := ocsf.MarshalRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(b); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			var r map[string]any
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r["class_uid"] != float64(2005) || r["type_uid"] != float64(c.typeUID) || r["status_id"] != float64(c.statusID) ||
				r["severity_id"] != float64(4) || r["priority_id"] != float64(3) {
				t.Errorf("classification: %s", b)
			}
			if v, _ := r["verdict_id"].(float64); int(v) != c.verdict {
				t.Errorf("verdict_id %v, want %d", r["verdict_id"], c.verdict)
			}
			if r["start_time"] != float64(1775044800000) || r["end_time"] != float64(1775046645123) || !strings.HasPrefix(r["message"].(string), "INC-7: ") {
				t.Errorf("times/message: %v %v %v", r["start_time"], r["end_time"], r["message"])
			}
			if md := r["metadata"].(map[string]any); md["event_code"] != c.ev.Code() || md["uid"] != c.ev.ID {
				t.Errorf("metadata %v", md)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
	// The techniques with their tactics: a sub-technique under its
	// parent, one attack per tactic, an unknown technique alone.
	rec := m.Map(cases[0].ev)
	var got []string
	for _, a := range rec.Attacks {
		s := a.Technique.UID
		if a.SubTechnique != nil {
			s += "/" + a.SubTechnique.UID + " " + a.SubTechnique.Name
		}
		if a.Tactic != nil {
			s += "@" + a.Tactic.UID + " " + a.Tactic.Name
		}
		got = append(got, s)
	}
	want := []string{
		"T1550/T1550.001 Use Alternate Authentication Material: Application Access Token@TA0005 Defense Evasion",
		"T1550/T1550.001 Use Alternate Authentication Material: Application Access Token@TA0008 Lateral Movement",
		"T1539@TA0006 Credential Access",
		"T9999",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("attacks:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rec.Attacks[0].Version != "17" || rec.Attacks[0].Technique.Name != "Use Alternate Authentication Material" {
		t.Errorf("attack %+v", rec.Attacks[0])
	}
}
