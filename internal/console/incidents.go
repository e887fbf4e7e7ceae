package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/mitre"
	"github.com/ward-idp/ward/internal/model"
)

// Incidents is the incident service (incident.Service): every change is
// made and recorded there, with the operator as actor.
type Incidents interface {
	List(ctx context.Context, f incident.Filter) ([]*incident.Incident, error)
	Get(ctx context.Context, ref string) (*incident.Detail, error)
	Assign(ctx context.Context, actor, ref, assignee string) (*incident.Incident, error)
	Comment(ctx context.Context, actor, ref, text string) (*incident.Entry, error)
	SetStatus(ctx context.Context, actor, ref, status, reason string) (*incident.Incident, error)
	Merge(ctx context.Context, actor, target string, sources []string, reason string) (*incident.Incident, error)
	Act(ctx context.Context, actor, ref string, req incident.ActionRequest) (*incident.ActionResult, error)
}

// incidentStatuses are the list's status filter choices ("" is every
// status).
var incidentStatuses = []string{"open", model.IncidentNew, model.IncidentActive, model.IncidentResolved, model.IncidentFalsePositive}

type incidentRow struct {
	*incident.Incident
	AssigneeUser *model.User
	// Heading is the title with user ids shown as usernames.
	Heading string
	// TacticNames are the ATT&CK tactics by name.
	TacticNames []string
}

// heading is an incident's title ("type (user <id>)") with the user's
// name instead of the id.
func heading(title string, users *userLookup) string {
	i := strings.LastIndex(title, "(user ")
	if i < 0 || !strings.HasSuffix(title, ")") {
		return title
	}
	if u := users.get(title[i+len("(user ") : len(title)-1]); u != nil {
		return title[:i] + "(" + u.Username + ")"
	}
	return title
}

type incidentsPage struct {
	Status, Severity, Assignee string
	// User narrows the list to incidents naming one user (an id or a
	// username).
	User                 string
	Statuses, Severities []string
	Operators            []*model.User
	Rows                 []incidentRow
	Problem              string
	Now                  time.Time
	More                 bool
}

// incidentPage is the most an incidents page shows.
const incidentPage = 200

// handleIncidents lists incidents, newest first, filtered by status
// (open by default), severity and assignee.
func (c *Console) handleIncidents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	p := incidentsPage{Status: "open", Severity: q.Get("severity"), Assignee: strings.TrimSpace(q.Get("assignee")),
		Statuses: incidentStatuses, Severities: []string{model.RiskHigh, model.RiskMedium, model.RiskLow}, Now: c.d.Now()}
	if q.Has("status") {
		p.Status = q.Get("status")
	}
	if p.Status != "" && p.Status != "all" && !slices.Contains(p.Statuses, p.Status) {
		p.Problem, p.Status = "Status: unknown", "open"
	}
	if p.Severity != "" && !slices.Contains(p.Severities, p.Severity) {
		p.Problem, p.Severity = "Severity: unknown", ""
	}
	f := incident.Filter{Severity: p.Severity, Limit: incidentPage + 1}
	if p.Status != "" && p.Status != "all" {
		f.Statuses = []string{p.Status}
	}
	users := c.lookup(ctx)
	if p.User = truncate(strings.TrimSpace(q.Get("user")), maxFilterLength); p.User != "" {
		f.UserID = c.userRef(ctx, p.User)
	}
	if p.Assignee != "" {
		f.Assignee = c.userRef(ctx, p.Assignee)
		if p.Assignee == "me" {
			f.Assignee = OperatorOf(ctx).User.ID
		}
	}
	list, err := c.d.Incidents.List(ctx, f)
	if err != nil {
		c.incidentFail(w, r, err)
		return
	}
	if len(list) > incidentPage {
		list, p.More = list[:incidentPage], true
	}
	for _, in := range list {
		row := incidentRow{Incident: in, AssigneeUser: users.get(in.Assignee), Heading: heading(in.Title, users)}
		for _, t := range in.Tactics {
			row.TacticNames = append(row.TacticNames, mitre.TacticName(t))
		}
		p.Rows = append(p.Rows, row)
	}
	if p.Operators, err = c.incidentOperators(ctx); err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, "incidents.html", pageData{Title: "Incidents", Nav: "incidents", Data: p})
}

// userRef turns a username or a user id into a user id (an unknown name
// stays as it is: it matches nothing).
func (c *Console) userRef(ctx context.Context, ref string) string {
	if u, err := c.d.Identity.GetUserByUsername(ctx, ref); err == nil {
		return u.ID
	}
	return ref
}

// incidentOperators are the users who may work on incidents: the
// assignees the forms offer.
func (c *Console) incidentOperators(ctx context.Context) ([]*model.User, error) {
	us, err := c.d.Identity.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	var out []*model.User
	for _, u := range us {
		if !u.Disabled && Allowed(u.Roles, PermManageIncidents) {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b *model.User) int { return strings.Compare(a.Username, b.Username) })
	return out, nil
}

// entityRef is an entity of an incident as the page shows it.
type entityRef struct {
	Kind, ID, Label, Link, LogLink string
}

// detectionRow is a triggering detection with a link to its event in the
// audit log.
type detectionRow struct {
	*incident.Detection
	User    *model.User
	LogLink string
}

type entryRow struct {
	*incident.Entry
	ActorName string
	Data      []postureItem
}

type incidentDetail struct {
	*incident.Detail
	Heading      string
	Now          time.Time
	AssigneeUser *model.User
	Users        []entityRef
	Sessions     []entityRef
	Devices      []entityRef
	Clients      []entityRef
	IPs          []entityRef
	Detections   []detectionRow
	Timeline     []entryRow
	Operators    []*model.User
	Targets      []entityRef
	Actions      []actionChoice
	Open         bool
	Merged       bool
	Result       *incident.ActionResult
	// Form keeps what the operator typed when an action was refused.
	Problem string
	// Graph is the incident's investigation graph (nil: no graph
	// service).
	Graph *graphView
}

type actionChoice struct{ Value, Label string }

var actionChoices = []actionChoice{
	{incident.ActionRevokeSessions, "Revoke sessions"},
	{incident.ActionDisableDevice, "Disable device"},
	{incident.ActionDisableUser, "Disable user"},
	{incident.ActionRequirePasswordChange, "Require a password change"},
	{incident.ActionConfirmCompromised, "Confirm compromised"},
	{incident.ActionDismiss, "Dismiss as false positive"},
}

// logLink is the audit log filtered to one event: its type, user and
// the minute it happened in.
func logLink(typ model.EventType, userID string, at time.Time) string {
	v := url.Values{"tab": {"audit"}, "type": {string(typ)}}
	if userID != "" {
		v.Set("user", userID)
	}
	if !at.IsZero() {
		m := at.UTC().Truncate(time.Minute)
		v.Set("since", m.Format(datetimeLayout))
		v.Set("until", m.Add(time.Minute).Format(datetimeLayout))
	}
	return Prefix + "/logs?" + v.Encode()
}

func (c *Console) incidentDetail(ctx context.Context, ref string) (*incidentDetail, error) {
	d, err := c.d.Incidents.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	users := c.lookup(ctx)
	p := &incidentDetail{Detail: d, Heading: heading(d.Title, users), Now: c.d.Now(), AssigneeUser: users.get(d.Assignee), Actions: actionChoices,
		Open: model.IncidentOpen(d.Status), Merged: d.MergedInto != ""}
	for _, id := range d.Entities.Users {
		e := entityRef{Kind: "user", ID: id, Label: id, Link: userURL(id), LogLink: Prefix + "/logs?tab=audit&user=" + url.QueryEscape(id)}
		if u := users.get(id); u != nil {
			e.Label = u.Username
		}
		p.Users = append(p.Users, e)
	}
	for _, id := range d.Entities.Sessions {
		p.Sessions = append(p.Sessions, entityRef{Kind: "session", ID: id, Label: id, LogLink: Prefix + "/logs?tab=audit&session=" + url.QueryEscape(id)})
	}
	for _, id := range d.Entities.Devices {
		e := entityRef{Kind: "device", ID: id, Label: id, Link: Prefix + "/devices/" + url.PathEscape(id), LogLink: Prefix + "/logs?tab=audit&device=" + url.QueryEscape(id)}
		if dv, err := c.d.Devices.Get(ctx, id); err == nil {
			e.Label = dv.Hostname
		}
		p.Devices = append(p.Devices, e)
	}
	for _, id := range d.Entities.Clients {
		p.Clients = append(p.Clients, entityRef{Kind: "application", ID: id, Label: id, LogLink: Prefix + "/logs?tab=audit&app=" + url.QueryEscape(id)})
	}
	for _, ip := range d.Entities.IPs {
		p.IPs = append(p.IPs, entityRef{Kind: "IP address", ID: ip, Label: ip, LogLink: Prefix + "/logs?tab=signins&ip=" + url.QueryEscape(ip)})
	}
	p.Targets = slices.Concat(p.Users, p.Sessions, p.Devices)
	for _, x := range d.DetectionList {
		p.Detections = append(p.Detections, detectionRow{Detection: x, User: users.get(x.UserID),
			LogLink: logLink(model.EventRiskDetected, x.UserID, x.DetectedAt)})
	}
	for _, e := range d.Timeline {
		row := entryRow{Entry: e, ActorName: e.Actor}
		if u := users.get(e.Actor); u != nil {
			row.ActorName = u.Username
		}
		for k, v := range e.Data {
			if v == "" {
				continue
			}
			if u := users.get(v); u != nil && (k == "assignee" || k == "previous_assignee") {
				v = u.Username
			}
			row.Data = append(row.Data, postureItem{Name: strings.ReplaceAll(k, "_", " "), Value: v})
		}
		slices.SortFunc(row.Data, func(a, b postureItem) int { return strings.Compare(a.Name, b.Name) })
		p.Timeline = append(p.Timeline, row)
	}
	// Newest first: what happened last is what an operator reads first.
	slices.Reverse(p.Timeline)
	if p.Operators, err = c.incidentOperators(ctx); err != nil {
		return nil, err
	}
	p.Graph = c.incidentGraph(ctx, d)
	return p, nil
}

// handleIncident shows an incident: severity, status, assignee, MITRE
// ATT&CK tactics and techniques, entities, the triggering detections with
// links to their events, the timeline with comments; and the actions.
func (c *Console) handleIncident(w http.ResponseWriter, r *http.Request) {
	p, err := c.incidentDetail(r.Context(), r.PathValue("ref"))
	if err != nil {
		c.incidentFail(w, r, err)
		return
	}
	c.renderIncident(w, r, http.StatusOK, p, noticeOf(r))
}

func (c *Console) renderIncident(w http.ResponseWriter, r *http.Request, status int, p *incidentDetail, notice string) {
	c.renderStatus(w, r, status, "incident.html", pageData{Title: p.Name + " " + p.Heading, Nav: "incidents", Notice: notice, Data: p})
}

func incidentURL(name string) string { return Prefix + "/incidents/" + url.PathEscape(name) }

// incidentFail answers an error of the incident service: a refused input
// or a conflict is the service's message (meant for people), with the
// incident's page when there is one.
func (c *Console) incidentFail(w http.ResponseWriter, r *http.Request, err error) {
	status := 0
	switch {
	case errors.Is(err, incident.ErrReasonRequired):
		status = http.StatusBadRequest
		err = errors.New("Give a reason: closing, reopening and dismissing an incident need one.")
	case errors.Is(err, incident.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, incident.ErrConflict):
		status = http.StatusConflict
	default:
		c.fail(w, r, err)
		return
	}
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "incident: invalid request: "), "incident: conflict: ")
	if ref := r.PathValue("ref"); ref != "" && r.Method == http.MethodPost {
		if p, err2 := c.incidentDetail(r.Context(), ref); err2 == nil {
			p.Problem = msg
			c.renderIncident(w, r, status, p, "")
			return
		}
	}
	c.errorPage(w, r, status, "Not done", msg)
}

// incidentAction wraps an incident change: the incident must exist (a
// refusal names it), then fn does the change through the service.
func (c *Console) incidentAction(fn func(w http.ResponseWriter, r *http.Request, op *Operator, ref string) (notice string, err error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		op, ref := OperatorOf(r.Context()), r.PathValue("ref")
		notice, err := fn(w, r, op, ref)
		if err != nil {
			c.incidentFail(w, r, err)
			return
		}
		if notice != "" {
			c.done(w, r, incidentURL(ref), notice)
		}
	}
}

func (c *Console) handleIncidentAssign(w http.ResponseWriter, r *http.Request, op *Operator, ref string) (string, error) {
	assignee := strings.TrimSpace(r.PostFormValue("assignee"))
	if assignee == "me" {
		assignee = op.User.ID
	}
	if assignee != "" {
		// Only an operator who may act on incidents can be assigned one.
		u, err := c.d.Identity.GetUser(r.Context(), assignee)
		if err != nil || u.Disabled || !Allowed(u.Roles, PermManageIncidents) {
			return "", incidentInvalid("assignee: not a security operator or administrator")
		}
	}
	if _, err := c.d.Incidents.Assign(r.Context(), op.User.ID, ref, assignee); err != nil {
		return "", err
	}
	return "incident-assigned", nil
}

func (c *Console) handleIncidentComment(w http.ResponseWriter, r *http.Request, op *Operator, ref string) (string, error) {
	if _, err := c.d.Incidents.Comment(r.Context(), op.User.ID, ref, r.PostFormValue("comment")); err != nil {
		return "", err
	}
	return "incident-commented", nil
}

func (c *Console) handleIncidentStatus(w http.ResponseWriter, r *http.Request, op *Operator, ref string) (string, error) {
	status, reason := r.PostFormValue("status"), strings.TrimSpace(r.PostFormValue("reason"))
	if status != model.IncidentActive && reason == "" {
		return "", incident.ErrReasonRequired
	}
	if _, err := c.d.Incidents.SetStatus(r.Context(), op.User.ID, ref, status, reason); err != nil {
		return "", err
	}
	return "incident-status", nil
}

func (c *Console) handleIncidentMerge(w http.ResponseWriter, r *http.Request, op *Operator, ref string) (string, error) {
	sources := strings.FieldsFunc(r.PostFormValue("sources"), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	if len(sources) == 0 {
		return "", incidentInvalid("name the incidents to merge into this one (e.g. INC-3 INC-4)")
	}
	if _, err := c.d.Incidents.Merge(r.Context(), op.User.ID, ref, sources, strings.TrimSpace(r.PostFormValue("reason"))); err != nil {
		return "", err
	}
	return "incident-merged", nil
}

// handleIncidentAct takes a response action through the incident
// service and shows its outcome, target by target.
func (c *Console) handleIncidentAct(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	op, ref := OperatorOf(ctx), r.PathValue("ref")
	req := incident.ActionRequest{Action: r.PostFormValue("action"), Target: strings.TrimSpace(r.PostFormValue("target")),
		Reason: strings.TrimSpace(r.PostFormValue("reason"))}
	if req.Target == "all" {
		req.Target = ""
	}
	if req.Action == incident.ActionDisableUser || req.Action == incident.ActionConfirmCompromised {
		// As on a user's page: not on the operator's own account.
		d, err := c.d.Incidents.Get(ctx, ref)
		if err != nil {
			c.incidentFail(w, r, err)
			return
		}
		if req.Target == op.User.ID || (req.Target == "" && slices.Contains(d.Entities.Users, op.User.ID)) {
			c.incidentFail(w, r, fmt.Errorf("%w: you cannot disable or confirm compromised your own account from the console", incident.ErrConflict))
			return
		}
	}
	res, err := c.d.Incidents.Act(ctx, op.User.ID, ref, req)
	if err != nil && res == nil {
		c.incidentFail(w, r, err)
		return
	}
	p, err2 := c.incidentDetail(ctx, ref)
	if err2 != nil {
		c.fail(w, r, err2)
		return
	}
	p.Result = res
	notice := "The action was taken; the outcome for each target is below and in the timeline."
	status := http.StatusOK
	if err != nil {
		notice, status = "", http.StatusConflict
		p.Problem = "The action failed on some targets; the outcome for each is below and in the timeline."
	}
	c.renderIncident(w, r, status, p, notice)
}

func incidentInvalid(msg string) error { return &refusal{msg} }

// refusal is a console-side refusal of an incident change, shown as
// the service's own.
type refusal struct{ msg string }

func (e *refusal) Error() string { return "incident: invalid request: " + e.msg }
func (e *refusal) Unwrap() error { return incident.ErrInvalid }
