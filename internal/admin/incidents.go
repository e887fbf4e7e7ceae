package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/ward-idp/ward/internal/incident"
)

// Incidents is the incident service: correlated detections, their
// handling and the response actions taken from them (incident.Service).
type Incidents interface {
	List(ctx context.Context, f incident.Filter) ([]*incident.Incident, error)
	Get(ctx context.Context, ref string) (*incident.Detail, error)
	Assign(ctx context.Context, actor, ref, assignee string) (*incident.Incident, error)
	Comment(ctx context.Context, actor, ref, text string) (*incident.Entry, error)
	SetStatus(ctx context.Context, actor, ref, status, reason string) (*incident.Incident, error)
	Merge(ctx context.Context, actor, target string, sources []string, reason string) (*incident.Incident, error)
	Split(ctx context.Context, actor, ref string, detections []string, reason string) (*incident.Incident, error)
	Act(ctx context.Context, actor, ref string, req incident.ActionRequest) (*incident.ActionResult, error)
}

func (api *API) incidentRoutes() {
	if api.incidents == nil {
		return
	}
	api.handle("GET /incidents", api.listIncidents)
	api.handle("GET /incidents/{id}", api.getIncident)
	api.handle("PATCH /incidents/{id}", api.patchIncident)
	api.handle("POST /incidents/{id}/assign", api.assignIncident)
	api.handle("POST /incidents/{id}/status", api.incidentStatus)
	api.handle("POST /incidents/{id}/comments", api.commentIncident)
	api.handle("POST /incidents/{id}/merge", api.mergeIncidents)
	api.handle("POST /incidents/{id}/split", api.splitIncident)
	api.handle("POST /incidents/{id}/actions", api.incidentAction)
}

// incidentErr maps the incident service's errors: 404 for a missing
// incident, 400 for a refused request (a missing reason included), 409
// for a change that does not fit the incident's state.
func incidentErr(err error) error {
	switch {
	case errors.Is(err, incident.ErrNotFound):
		return notFound("incident")
	case errors.Is(err, incident.ErrReasonRequired):
		return invalid("a reason is required to close or reopen an incident (and to dismiss one)")
	case errors.Is(err, incident.ErrInvalid):
		return invalid("%s", err.Error())
	case errors.Is(err, incident.ErrConflict):
		return conflict(err.Error())
	}
	return err
}

// GET /incidents?status=open&severity=high&assignee=ID&user=ID&before=N&limit=N
func (api *API) listIncidents(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	q := r.URL.Query()
	limit, err := parseLimit(q)
	if err != nil {
		return err
	}
	f := incident.Filter{Statuses: q["status"], Severity: q.Get("severity"), Assignee: q.Get("assignee"),
		UserID: q.Get("user"), Limit: limit}
	if v := q.Get("before"); v != "" {
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before < 1 {
			return invalid("before must be an incident number")
		}
	}
	list, err := api.incidents.List(r.Context(), f)
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"incidents": list})
	return nil
}

// GET /incidents/{id}: id, name (INC-7) or number.
func (api *API) getIncident(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	d, err := api.incidents.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

type incidentPatch struct {
	Assignee *string `json:"assignee"`
	Status   *string `json:"status"`
	Reason   string  `json:"reason"`
}

// PATCH /incidents/{id} {"assignee": "...", "status": "...", "reason": "..."}:
// the assignee, the status, or both (the assignee first).
func (api *API) patchIncident(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var p incidentPatch
	if err := decodeJSON(w, r, &p); err != nil {
		return err
	}
	if p.Assignee == nil && p.Status == nil {
		return invalid("set assignee or status")
	}
	id := r.PathValue("id")
	var out *incident.Incident
	var err error
	if p.Assignee != nil {
		if out, err = api.incidents.Assign(r.Context(), rc.actor(), id, *p.Assignee); err != nil {
			return incidentErr(err)
		}
	}
	if p.Status != nil {
		if out, err = api.incidents.SetStatus(r.Context(), rc.actor(), id, *p.Status, p.Reason); err != nil {
			return incidentErr(err)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// POST /incidents/{id}/assign {"assignee": "USER_ID"} ("" unassigns).
func (api *API) assignIncident(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Assignee string `json:"assignee"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	out, err := api.incidents.Assign(r.Context(), rc.actor(), r.PathValue("id"), body.Assignee)
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// POST /incidents/{id}/status {"status": "resolved", "reason": "..."}.
func (api *API) incidentStatus(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	out, err := api.incidents.SetStatus(r.Context(), rc.actor(), r.PathValue("id"), body.Status, body.Reason)
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// POST /incidents/{id}/comments {"text": "..."}.
func (api *API) commentIncident(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Text string `json:"text"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	out, err := api.incidents.Comment(r.Context(), rc.actor(), r.PathValue("id"), body.Text)
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// POST /incidents/{id}/merge {"incidents": ["INC-3", ...], "reason": "..."}:
// merges those incidents into this one.
func (api *API) mergeIncidents(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Incidents []string `json:"incidents"`
		Reason    string   `json:"reason"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	out, err := api.incidents.Merge(r.Context(), rc.actor(), r.PathValue("id"), body.Incidents, body.Reason)
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// POST /incidents/{id}/split {"detections": ["..."], "reason": "..."}:
// moves those detections to a new incident, which the response is.
func (api *API) splitIncident(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Detections []string `json:"detections"`
		Reason     string   `json:"reason"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	out, err := api.incidents.Split(r.Context(), rc.actor(), r.PathValue("id"), body.Detections, body.Reason)
	if err != nil {
		return incidentErr(err)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// POST /incidents/{id}/actions {"action": "revoke_sessions", "target": "...", "reason": "..."}.
// A response action that failed on some target answers 502 with the
// results (what was done, what failed), which are recorded either way.
func (api *API) incidentAction(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body incident.ActionRequest
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	out, err := api.incidents.Act(r.Context(), rc.actor(), r.PathValue("id"), body)
	if err != nil && out == nil {
		return incidentErr(err)
	}
	if err != nil {
		api.log.WarnContext(r.Context(), "incident action incomplete", "incident", out.Incident, "action", out.Action,
			"correlation_id", rc.corrID, "err", err)
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": CodeActionIncomplete,
			"error_description": "the action failed on some targets; see results", "result": out})
		return nil
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
