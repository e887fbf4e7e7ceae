package ocsf

import (
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/mitre"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Incident Finding activities.
const (
	incidentCreate = 1
	incidentUpdate = 2
	incidentClose  = 3
)

// AssigneeGroup is the assignee_group of an unassigned incident: the
// role whose holders handle incidents (OCSF requires an assignee or a
// group).
var AssigneeGroup = Entity{UID: model.RoleAdmin, Name: "Ward administrators"}

// incidentSeverity maps an incident's severity to severity_id and
// priority_id.
var incidentSeverity = map[string]struct{ severity, priority int }{
	model.RiskLow:    {SeverityLow, 1},
	model.RiskMedium: {SeverityMedium, 2},
	model.RiskHigh:   {SeverityHigh, 3},
}

// incidentStatus maps an incident's status to status_id (New, In
// Progress, Resolved, Closed).
var incidentStatus = map[string]struct {
	id   int
	name string
}{
	model.IncidentNew:           {1, "New"},
	model.IncidentActive:        {2, "In Progress"},
	model.IncidentResolved:      {4, "Resolved"},
	model.IncidentFalsePositive: {5, "Closed"},
}

// incidentActivity is Create for a new incident, Close when the event
// closes it (resolved, false positive, merged into another), else Update.
func incidentActivity(ev *store.StoredEvent) int {
	switch {
	case ev.Type == model.EventIncidentCreated:
		return incidentCreate
	case ev.Type == model.EventIncidentStatusChanged && !model.IncidentOpen(ev.Data[model.DataIncidentStatus]) &&
		model.IncidentOpen(ev.Data["previous_status"]):
		return incidentClose
	}
	return incidentUpdate
}

// incident fills an Incident Finding from an incident.* event, which
// carries the incident's state after the change (model.DataIncident*).
func (m *Mapper) incident(r *Record, ev *store.StoredEvent) {
	d := ev.Data
	title := firstNonEmpty(d[model.DataIncidentTitle], "incident "+d[model.DataIncidentID])
	if n := d[model.DataIncidentNumber]; n != "" && n != "0" {
		title = "INC-" + n + ": " + title
	}
	r.Message, r.Desc = title, title
	r.SeverityID, r.PriorityID = SeverityInformational, 0
	if s, ok := incidentSeverity[d[model.DataIncidentSeverity]]; ok {
		r.SeverityID, r.PriorityID = s.severity, s.priority
		r.Priority = priorityNames[s.priority]
	}
	r.StatusID, r.Status, r.StatusDetail = 1, "New", ""
	if s, ok := incidentStatus[d[model.DataIncidentStatus]]; ok {
		r.StatusID, r.Status = s.id, s.name
	}
	switch d[model.DataIncidentStatus] {
	case model.IncidentFalsePositive:
		r.VerdictID, r.Verdict = 1, "False Positive"
	case model.IncidentResolved:
		if d["merged_into"] != "" {
			r.VerdictID, r.Verdict = 10, "Duplicate"
		}
	}
	if a := d[model.DataIncidentAssignee]; a != "" {
		r.Assignee = &User{UID: a}
	} else {
		g := AssigneeGroup
		r.AssigneeGroup = &g
	}
	r.StartTime, r.EndTime = millis(d[model.DataIncidentFirstSeen]), millis(d[model.DataIncidentLastSeen])
	switch ev.Type {
	case model.EventIncidentCommented:
		r.Comment = d["comment"]
	case model.EventIncidentStatusChanged, model.EventIncidentMerged, model.EventIncidentSplit, model.EventIncidentActionTaken:
		r.Comment = ev.Reason
		if a := d["action_reason"]; a != "" {
			r.Comment = ev.Reason + ": " + a
		}
	}
	techniques := strings.Fields(d[model.DataIncidentTechniques])
	r.Attacks = attacks(techniques)
	count, _ := strconv.Atoi(d[model.DataIncidentDetections])
	// The incident itself is the first finding; the detection the change
	// was about (a risk.detected event) the second.
	r.FindingInfoList = []FindingInfo{{
		UID: firstNonEmpty(d[model.DataIncidentID], ev.ID), Title: title, Types: []string{"ward_incident"},
		FirstSeen: r.StartTime, LastSeen: r.EndTime, RelatedCount: count,
	}}
	if det := d[model.DataDetectionID]; det != "" {
		typ := firstNonEmpty(d["detection_type"], "detection")
		r.FindingInfoList = append(r.FindingInfoList, FindingInfo{UID: det, Title: typ, Types: []string{typ},
			Analytic: &Analytic{UID: typ, Name: typ, TypeID: 1, Type: "Rule"}, CreatedTime: ev.Time.UnixMilli()})
	}
	r.Metadata.Profiles = []string{"incident"}
}

// attacks lists each technique with each of its tactics (a technique the
// table does not know: alone).
func attacks(ids []string) []Attack {
	var out []Attack
	for _, id := range ids {
		if !mitre.ValidID(id) {
			continue
		}
		t, _ := mitre.Lookup(id)
		a := Attack{Technique: &AttackRef{UID: id, Name: t.Name}, Version: mitre.Version}
		if parent, _, sub := strings.Cut(id, "."); sub {
			p, _ := mitre.Lookup(parent)
			a.SubTechnique = a.Technique
			a.Technique = &AttackRef{UID: parent, Name: p.Name}
		}
		if len(t.Tactics) == 0 {
			out = append(out, a)
			continue
		}
		for _, ta := range t.Tactics {
			x := a
			x.Tactic = &AttackRef{UID: ta.ID, Name: ta.Name}
			out = append(out, x)
		}
	}
	return out
}

// millis reads an RFC 3339 time as milliseconds since the epoch (0: none).
func millis(v string) int64 {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0
	}
	return t.UnixMilli()
}
