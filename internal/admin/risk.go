package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/ward-idp/ward/internal/risk"
)

// Risk is the risk service: levels, dismissal, confirmed compromise,
// explanations (risk.Service).
type Risk interface {
	SetUserLevel(ctx context.Context, actor, userID, level, reason string) error
	Dismiss(ctx context.Context, actor string, t risk.Target, reason string) (*risk.Dismissal, error)
	ConfirmCompromised(ctx context.Context, actor, userID, reason string) ([]string, error)
	List(ctx context.Context, levels []string, limit int) (*risk.Listing, error)
	Explain(ctx context.Context, userID, sessionID string) (*risk.Explanation, error)
}

// maxRiskReason bounds an administrator's reason.
const maxRiskReason = 200

func (api *API) riskRoutes() {
	if api.risk == nil {
		return
	}
	api.handle("GET /risk", api.listRisk)
	api.handle("GET /users/{id}/risk", api.explainRisk("user"))
	api.handle("GET /sessions/{id}/risk", api.explainRisk("session"))
	api.handle("POST /users/{id}/risk/dismiss", api.dismissRisk("user"))
	api.handle("POST /sessions/{id}/risk/dismiss", api.dismissRisk("session"))
	api.handle("POST /risk/detections/{id}/dismiss", api.dismissRisk("detection"))
	api.handle("POST /users/{id}/risk/confirm-compromised", api.confirmCompromised)
}

// riskErr maps the risk service's errors: 404 for a missing user,
// session or detection, 409 when nothing is active to dismiss, 400 for an
// invalid level.
func riskErr(err error, what string) error {
	switch {
	case errors.Is(err, risk.ErrNotFound):
		return notFound(what)
	case errors.Is(err, risk.ErrNotActive):
		return conflict("nothing to dismiss: no active detection")
	case errors.Is(err, risk.ErrInvalidLevel):
		return invalid("%s", err.Error())
	}
	return err
}

// GET /risk?level=high&level=medium&limit=N: the users and sessions at
// risk.
func (api *API) listRisk(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	q := r.URL.Query()
	limit := defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return invalid("limit must be 1..%d", maxLimit)
		}
		limit = n
	}
	levels := q["level"]
	for _, l := range levels {
		if !risk.ValidLevel(l) {
			return invalid("level must be none, low, medium or high")
		}
	}
	out, err := api.risk.List(r.Context(), levels, limit)
	if err != nil {
		return riskErr(err, "risk")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// GET /users/{id}/risk, GET /sessions/{id}/risk: the level, the
// detections behind it, its history and the events they rest on.
func (api *API) explainRisk(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
		id := r.PathValue("id")
		var x *risk.Explanation
		var err error
		if kind == "session" {
			x, err = api.risk.Explain(r.Context(), "", id)
		} else {
			x, err = api.risk.Explain(r.Context(), id, "")
		}
		if err != nil {
			return riskErr(err, kind)
		}
		writeJSON(w, http.StatusOK, x)
		return nil
	}
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func decodeReason(w http.ResponseWriter, r *http.Request) (string, error) {
	var body reasonBody
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &body); err != nil {
			return "", err
		}
	}
	if len(body.Reason) > maxRiskReason {
		return "", invalid("reason is longer than %d characters", maxRiskReason)
	}
	return body.Reason, nil
}

// POST /users/{id}/risk/dismiss, /sessions/{id}/risk/dismiss,
// /risk/detections/{id}/dismiss with {"reason": "…"} (optional).
func (api *API) dismissRisk(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
		reason, err := decodeReason(w, r)
		if err != nil {
			return err
		}
		id := r.PathValue("id")
		var t risk.Target
		switch kind {
		case "user":
			t.UserID = id
		case "session":
			t.SessionID = id
		default:
			t.DetectionID = id
		}
		out, err := api.risk.Dismiss(r.Context(), rc.actor(), t, reason)
		if err != nil {
			return riskErr(err, kind)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// POST /users/{id}/risk/confirm-compromised with {"reason": "…"}.
func (api *API) confirmCompromised(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	reason, err := decodeReason(w, r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	ids, err := api.risk.ConfirmCompromised(r.Context(), rc.actor(), id, reason)
	if err != nil {
		return riskErr(err, "user")
	}
	if ids == nil {
		ids = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"user_id": id, "level": "high", "sessions_revoked": ids})
	return nil
}
