package admin

import (
	"encoding/hex"
	"net/http"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
)

// passkeyJSON is a user's passkey or security key as the admin API shows
// it: never the public key (nothing secret, but of no use to an
// administrator), the authenticator's model and what Ward recorded.
type passkeyJSON struct {
	ID                string     `json:"id"`
	Name              string     `json:"name"`
	Kind              string     `json:"kind"` // passkey or security_key
	AAGUID            string     `json:"aaguid"`
	Attachment        string     `json:"attachment,omitempty"`
	Transports        []string   `json:"transports"`
	AttestationFormat string     `json:"attestation_format"`
	BackupEligible    bool       `json:"backup_eligible"`
	BackupState       bool       `json:"backup_state"`
	SignCount         uint32     `json:"sign_count"`
	CreatedAt         time.Time  `json:"created_at"`
	LastUsedAt        *time.Time `json:"last_used_at,omitempty"`
}

// GET /users/{id}/passkeys
func (api *API) listPasskeys(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	l, err := api.identity.ListPasskeys(r.Context(), r.PathValue("id"))
	if err != nil {
		return orNotFound(err, "user")
	}
	out := make([]passkeyJSON, 0, len(l))
	for _, c := range l {
		out = append(out, toPasskeyJSON(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"passkeys": out})
	return nil
}

func toPasskeyJSON(c *model.WebAuthnCredential) passkeyJSON {
	kind := identity.MethodSecurityKey
	if c.Discoverable {
		kind = identity.MethodPasskey
	}
	return passkeyJSON{
		ID: c.ID, Name: c.Name, Kind: kind, AAGUID: hex.EncodeToString(c.AAGUID), Attachment: c.Attachment,
		Transports: nonNil(c.Transports), AttestationFormat: c.AttestationFormat, BackupEligible: c.BackupEligible,
		BackupState: c.BackupState, SignCount: c.SignCount, CreatedAt: c.CreatedAt.UTC(), LastUsedAt: optTime(c.LastUsedAt),
	}
}

// PATCH /users/{id}/passkeys/{pid} {"name": "…"} renames one passkey
// (passkey.renamed). 200 with the passkey; 400 for a name that is not 1
// to 64 printable characters; 404 when the user has no such passkey.
func (api *API) renamePasskey(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Name *string `json:"name"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if body.Name == nil {
		return invalid("name is required")
	}
	c, err := api.identity.RenamePasskey(r.Context(), rc.actor(), r.PathValue("id"), r.PathValue("pid"), *body.Name)
	if err != nil {
		return orNotFound(err, "passkey")
	}
	writeJSON(w, http.StatusOK, toPasskeyJSON(c))
	return nil
}

// DELETE /users/{id}/passkeys/{pid} removes one passkey (mfa.removed,
// a CAEP credential-change).
func (api *API) removePasskey(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.identity.RemovePasskey(r.Context(), rc.actor(), r.PathValue("id"), r.PathValue("pid")); err != nil {
		return orNotFound(err, "passkey")
	}
	return noContent(w)
}

// POST /users/{id}/passkeys/reset {"reason": "…"} is the recovery of a
// user who lost every passkey: all of them are removed
// (passkey.recovery, mfa.removed) and the user's risk is raised
// (risk.detected, source admin). 200 {"removed": n}.
func (api *API) resetPasskeys(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	reason, err := decodeReason(w, r)
	if err != nil {
		return err
	}
	n, err := api.identity.ResetPasskeys(r.Context(), rc.actor(), r.PathValue("id"), reason)
	if err != nil {
		return orNotFound(err, "user")
	}
	writeJSON(w, http.StatusOK, map[string]int{"removed": n})
	return nil
}
