package admin

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/session"
)

// ReasonAdminRevoked is the reason (and revoke cause) of sessions an
// administrator revoked.
const ReasonAdminRevoked = model.CauseAdminRevoked

// Page sizes of list endpoints.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// sessionJSON is a sign-in session. It holds no token.
type sessionJSON struct {
	ID                 string     `json:"id"`
	UserID             string     `json:"user_id"`
	Active             bool       `json:"active"`
	AuthTime           time.Time  `json:"auth_time"`
	AMR                []string   `json:"amr"`
	ACR                string     `json:"acr,omitempty"`
	IP                 string     `json:"ip,omitempty"`
	UserAgent          string     `json:"user_agent,omitempty"`
	CreatedAt          time.Time  `json:"created_at"`
	LastSeen           time.Time  `json:"last_seen"`
	ExpiresAt          time.Time  `json:"expires_at"`
	IdleTimeoutSeconds int64      `json:"idle_timeout_seconds"`
	RevokedAt          *time.Time `json:"revoked_at,omitempty"`
	RevokeCause        string     `json:"revoke_cause,omitempty"`
}

func (api *API) sessionDTO(s *model.Session, now time.Time) sessionJSON {
	out := sessionJSON{
		ID: s.ID, UserID: s.UserID, Active: s.Active(now), AuthTime: s.AuthTime.UTC(), AMR: nonNil(s.AMR),
		ACR: s.ACR, IP: s.IP, UserAgent: s.UserAgent, CreatedAt: s.CreatedAt.UTC(), LastSeen: s.LastSeen.UTC(),
		ExpiresAt: s.ExpiresAt.UTC(), IdleTimeoutSeconds: int64(s.IdleTimeout / time.Second), RevokeCause: s.RevokeCause,
	}
	if !s.RevokedAt.IsZero() {
		t := s.RevokedAt.UTC()
		out.RevokedAt = &t
	}
	return out
}

// parseLimit reads the limit query parameter (default 100, 1..1000).
func parseLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, invalid("limit must be an integer from 1 to %d", maxLimit)
	}
	return n, nil
}

// parseBool reads a true/false query parameter ("" is false).
func parseBool(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, invalid("%s must be true or false", name)
}

// listSessionsOf lists sessions newest first; active keeps those in use
// (not revoked, expired or idle).
func (api *API) listSessionsOf(r *http.Request, userID string) ([]sessionJSON, error) {
	q := r.URL.Query()
	active, err := parseBool(q, "active")
	if err != nil {
		return nil, err
	}
	limit, err := parseLimit(q)
	if err != nil {
		return nil, err
	}
	ss, err := api.sessions.List(r.Context(), session.Filter{UserID: userID, ActiveOnly: active, Limit: limit})
	if err != nil {
		return nil, err
	}
	now := api.now()
	out := make([]sessionJSON, 0, len(ss))
	for _, s := range ss {
		out = append(out, api.sessionDTO(s, now))
	}
	return out, nil
}

// GET /sessions?user_id=&active=&limit=
func (api *API) listSessions(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	out, err := api.listSessionsOf(r, r.URL.Query().Get("user_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out})
	return nil
}

// GET /users/{id}/sessions?active=&limit=
func (api *API) listUserSessions(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	id := r.PathValue("id")
	if _, err := api.identity.GetUser(r.Context(), id); err != nil {
		return orNotFound(err, "user")
	}
	out, err := api.listSessionsOf(r, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out})
	return nil
}

// GET /sessions/{id}
func (api *API) getSession(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	s, err := api.sessions.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return orNotFound(err, "session")
	}
	writeJSON(w, http.StatusOK, api.sessionDTO(s, api.now()))
	return nil
}

// DELETE /sessions/{id} revokes one session and its refresh tokens.
// Revoking a revoked session changes nothing and records nothing.
func (api *API) deleteSession(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if _, err := api.sessions.Revoke(r.Context(), rc.actor(), r.PathValue("id"), ReasonAdminRevoked); err != nil {
		return orNotFound(err, "session")
	}
	return noContent(w)
}

// POST /users/{id}/sessions/revoke revokes every session of a user: a
// session.revoked for each and one user.sessions_revoked, even with no
// active session (the administrator means every token of the user).
func (api *API) revokeUserSessions(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := api.identity.GetUser(ctx, id); err != nil {
		return orNotFound(err, "user")
	}
	ids, err := api.sessions.RevokeUser(ctx, rc.actor(), id, ReasonAdminRevoked)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked_session_ids": nonNil(ids)})
	return nil
}
