package admin

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
)

// userJSON is a user as the admin API shows it: no password hash, no TOTP
// seed (only whether one is enrolled), no recovery code (only how many
// are left).
type userJSON struct {
	ID           string     `json:"id"`
	Username     string     `json:"username"`
	Email        string     `json:"email"`
	DisplayName  string     `json:"display_name"`
	Roles        []string   `json:"roles"`
	Disabled     bool       `json:"disabled"`
	TOTPEnrolled bool       `json:"totp_enrolled"`
	FailedLogins int        `json:"failed_logins"`
	Locked       bool       `json:"locked"`
	LockedUntil  *time.Time `json:"locked_until,omitempty"`
	Groups       []groupRef `json:"groups,omitempty"`
	// RecoveryCodesLeft is how many one-time recovery codes of the TOTP
	// factor are unused.
	RecoveryCodesLeft int `json:"recovery_codes_left"`
	// Passkeys is how many passkeys and security keys the user has
	// (GET /users/{id}/passkeys lists them).
	Passkeys int `json:"passkeys"`
	// RiskLevel is the user risk Conditional Access sees.
	RiskLevel         string     `json:"risk_level"`
	RiskUpdatedAt     *time.Time `json:"risk_updated_at,omitempty"`
	PasswordChangedAt *time.Time `json:"password_changed_at,omitempty"`
	CreatedAt         time.Time  `json:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at"`
}

// groupRef names a group a user belongs to.
type groupRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// userDTO renders u, with left recovery codes unused.
func (api *API) userDTO(u *model.User, left int) userJSON {
	out := userJSON{
		ID: u.ID, Username: u.Username, Email: u.Email, DisplayName: u.DisplayName,
		Roles: nonNil(u.Roles), Disabled: u.Disabled, TOTPEnrolled: len(u.TOTPSecret) > 0, RecoveryCodesLeft: left,
		FailedLogins: u.FailedLogins, CreatedAt: u.CreatedAt.UTC(), UpdatedAt: u.UpdatedAt.UTC(),
		RiskLevel: u.RiskLevel, RiskUpdatedAt: optTime(u.RiskUpdatedAt), PasswordChangedAt: optTime(u.PasswordChangedAt),
	}
	if out.RiskLevel == "" {
		out.RiskLevel = identity.RiskNone
	}
	if !u.LockedUntil.IsZero() {
		t := u.LockedUntil.UTC()
		out.LockedUntil = &t
		out.Locked = api.now().Before(t)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// userWithGroups renders a user with its groups.
func (api *API) userWithGroups(r *http.Request, u *model.User) (userJSON, error) {
	left, err := api.identity.RecoveryCodesLeft(r.Context(), u.ID)
	if err != nil {
		return userJSON{}, err
	}
	out := api.userDTO(u, left)
	pks, err := api.identity.ListPasskeys(r.Context(), u.ID)
	if err != nil {
		return userJSON{}, err
	}
	out.Passkeys = len(pks)
	gs, err := api.identity.GroupsOf(r.Context(), u.ID)
	if err != nil {
		return out, err
	}
	out.Groups = []groupRef{}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupRef{ID: g.ID, Name: g.Name})
	}
	slices.SortFunc(out.Groups, func(a, b groupRef) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// GET /users
func (api *API) listUsers(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	us, err := api.identity.ListUsers(r.Context())
	if err != nil {
		return err
	}
	slices.SortFunc(us, func(a, b *model.User) int { return cmp.Compare(a.Username, b.Username) })
	left, err := api.identity.RecoveryCodesLeftByUser(r.Context())
	if err != nil {
		return err
	}
	pks, err := api.identity.PasskeyCounts(r.Context())
	if err != nil {
		return err
	}
	out := make([]userJSON, 0, len(us))
	for _, u := range us {
		d := api.userDTO(u, left[u.ID])
		d.Passkeys = pks[u.ID]
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
	return nil
}

// createUserRequest is the body of POST /users.
type createUserRequest struct {
	Username    string   `json:"username"`
	Email       string   `json:"email"`
	DisplayName string   `json:"display_name"`
	Password    string   `json:"password"`
	Roles       []string `json:"roles"`
}

// POST /users
func (api *API) createUser(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var req createUserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	u, err := api.identity.CreateUser(r.Context(), rc.actor(), identity.NewUser{
		Username: req.Username, Email: req.Email, DisplayName: req.DisplayName, Password: req.Password, Roles: req.Roles,
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/users/"+u.ID)
	writeJSON(w, http.StatusCreated, api.userDTO(u, 0))
	return nil
}

// GET /users/{id}
func (api *API) getUser(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	u, err := api.identity.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		return orNotFound(err, "user")
	}
	out, err := api.userWithGroups(r, u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// patchUserRequest is the body of PATCH /users/{id}; absent (or null)
// fields are left as they are.
type patchUserRequest struct {
	Disabled *bool     `json:"disabled"`
	Roles    *[]string `json:"roles"`
	Password *string   `json:"password"`
}

// PATCH /users/{id}. The changes are applied password first, then roles,
// then the disabled flag; each is checked by the identity service before
// it is applied, and the roles are checked before anything is applied, so
// that a rejected request changes nothing.
func (api *API) patchUser(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var req patchUserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Disabled == nil && req.Roles == nil && req.Password == nil {
		return invalid("nothing to change: give disabled, roles or password")
	}
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := api.identity.GetUser(ctx, id); err != nil {
		return orNotFound(err, "user")
	}
	self := id == rc.admin.ID
	if req.Roles != nil {
		if err := checkRoles(*req.Roles); err != nil {
			return err
		}
		if self && !slices.ContainsFunc(*req.Roles, func(s string) bool { return strings.TrimSpace(s) == model.RoleAdmin }) {
			return conflict("you cannot remove the admin role from your own account")
		}
	}
	if self && req.Disabled != nil && *req.Disabled {
		return conflict("you cannot disable your own account")
	}
	if req.Password != nil {
		if err := api.identity.SetPassword(ctx, rc.actor(), id, *req.Password); err != nil {
			return orNotFound(err, "user")
		}
	}
	if req.Roles != nil {
		if err := api.identity.SetRoles(ctx, rc.actor(), id, *req.Roles); err != nil {
			return orNotFound(err, "user")
		}
	}
	if req.Disabled != nil {
		if err := api.identity.SetDisabled(ctx, rc.actor(), id, *req.Disabled); err != nil {
			return orNotFound(err, "user")
		}
	}
	return api.getUser(w, r, rc)
}

// checkRoles applies the identity service's rule for role names (see
// identity.Service.SetRoles) before any change is made, so that a PATCH
// that also changes the password cannot half-succeed.
func checkRoles(roles []string) error {
	for _, r := range roles {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if len(r) > 64 || !identity.ValidUsername(strings.ToLower(r)) {
			return invalid("invalid role %q: use 1 to 64 characters from a-z, 0-9, '.', '_', '@' and '-'", r)
		}
		if !model.KnownRole(r) {
			return invalid("unknown role %q: known roles are %s", r, strings.Join(model.KnownRoles, ", "))
		}
	}
	return nil
}

// POST /users/{id}/unlock
func (api *API) unlockUser(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.identity.Unlock(r.Context(), rc.actor(), r.PathValue("id")); err != nil {
		return orNotFound(err, "user")
	}
	return api.getUser(w, r, rc)
}

// DELETE /users/{id}/totp removes the user's TOTP second factor
// (mfa.removed).
func (api *API) removeTOTP(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.identity.RemoveTOTP(r.Context(), rc.actor(), r.PathValue("id")); err != nil {
		if errors.Is(err, identity.ErrNoTOTP) {
			return notFound("TOTP second factor")
		}
		return orNotFound(err, "user")
	}
	return noContent(w)
}

// recoveryCodesJSON answers POST /users/{id}/recovery-codes: the only
// time the codes are shown.
type recoveryCodesJSON struct {
	UserID        string   `json:"user_id"`
	RecoveryCodes []string `json:"recovery_codes"`
}

// POST /users/{id}/recovery-codes gives a user with TOTP a new set of
// one-time recovery codes, replacing any earlier set
// (mfa.recovery_codes_created); 409 for a user without TOTP.
func (api *API) newRecoveryCodes(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	codes, err := api.identity.NewRecoveryCodes(r.Context(), rc.actor(), id)
	if errors.Is(err, identity.ErrNoTOTP) {
		return conflict("the user has no TOTP second factor: recovery codes stand in for a lost authenticator, so enrol one first")
	} else if err != nil {
		return orNotFound(err, "user")
	}
	out := recoveryCodesJSON{UserID: id, RecoveryCodes: make([]string, len(codes))}
	for i, c := range codes {
		out.RecoveryCodes[i] = c.Reveal()
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// DELETE /users/{id}
func (api *API) deleteUser(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	if id == rc.admin.ID {
		return conflict("you cannot delete your own account")
	}
	if err := api.identity.DeleteUser(r.Context(), rc.actor(), id); err != nil {
		return orNotFound(err, "user")
	}
	return noContent(w)
}
