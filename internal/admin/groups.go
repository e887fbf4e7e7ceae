package admin

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// groupJSON is a group with its members' user ids.
type groupJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Members   []string  `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}

func groupDTO(g *model.Group) groupJSON {
	return groupJSON{ID: g.ID, Name: g.Name, Members: nonNil(g.Members), CreatedAt: g.CreatedAt.UTC()}
}

// GET /groups
func (api *API) listGroups(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	gs, err := api.identity.ListGroups(r.Context())
	if err != nil {
		return err
	}
	slices.SortFunc(gs, func(a, b *model.Group) int { return cmp.Compare(a.Name, b.Name) })
	out := make([]groupJSON, 0, len(gs))
	for _, g := range gs {
		out = append(out, groupDTO(g))
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
	return nil
}

// createGroupRequest is the body of POST /groups.
type createGroupRequest struct {
	Name string `json:"name"`
}

// POST /groups
func (api *API) createGroup(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var req createGroupRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	g, err := api.identity.CreateGroup(r.Context(), rc.actor(), req.Name)
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/groups/"+g.ID)
	writeJSON(w, http.StatusCreated, groupDTO(g))
	return nil
}

// GET /groups/{id}
func (api *API) getGroup(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	g, err := api.identity.GetGroup(r.Context(), r.PathValue("id"))
	if err != nil {
		return orNotFound(err, "group")
	}
	writeJSON(w, http.StatusOK, groupDTO(g))
	return nil
}

// addMemberRequest is the body of POST /groups/{id}/members.
type addMemberRequest struct {
	UserID string `json:"user_id"`
}

// POST /groups/{id}/members adds a user; adding a member again changes
// nothing. It answers with the group.
func (api *API) addMember(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var req addMemberRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return invalid("user_id is required")
	}
	ctx := r.Context()
	gid := r.PathValue("id")
	if _, err := api.identity.GetGroup(ctx, gid); err != nil {
		return orNotFound(err, "group")
	}
	if err := api.identity.AddMember(ctx, rc.actor(), gid, req.UserID); err != nil {
		return orNotFound(err, "user")
	}
	return api.getGroup(w, r, rc)
}

// DELETE /groups/{id}/members/{user_id}; removing a non-member changes
// nothing.
func (api *API) removeMember(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.identity.RemoveMember(r.Context(), rc.actor(), r.PathValue("id"), r.PathValue("user_id")); err != nil {
		return orNotFound(err, "group")
	}
	return noContent(w)
}

// DELETE /groups/{id}
func (api *API) deleteGroup(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.identity.DeleteGroup(r.Context(), rc.actor(), r.PathValue("id")); err != nil {
		return orNotFound(err, "group")
	}
	return noContent(w)
}
