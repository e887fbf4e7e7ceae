package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
)

// deviceRoutes registers the device and compliance-policy routes.
func (api *API) deviceRoutes() {
	api.handle("GET /devices", api.listDevices)
	api.handle("GET /devices/{id}", api.getDevice)
	api.handle("POST /devices/{id}/disable", api.deviceStatus(device.ReasonDeviceDisabled))
	api.handle("POST /devices/{id}/lost", api.deviceStatus(device.ReasonDeviceLost))
	api.handle("POST /devices/{id}/enable", api.enableDevice)
	api.handle("DELETE /devices/{id}", api.deleteDevice)
	api.handle("GET /compliance-policies", api.listPolicies)
	api.handle("GET /compliance-policies/{platform}", api.getPolicy)
	api.handle("PUT /compliance-policies/{platform}", api.putPolicy)
	api.handle("DELETE /compliance-policies/{platform}", api.deletePolicy)
}

// deviceJSON is a device with its compliance and latest posture. It holds
// the device's public key only.
type deviceJSON struct {
	ID           string           `json:"id"`
	UserID       string           `json:"user_id"`
	JKT          string           `json:"jkt"`
	PublicJWK    json.RawMessage  `json:"public_jwk,omitempty"`
	Status       string           `json:"status"`
	Compliance   string           `json:"compliance"`
	Failures     []device.Failure `json:"failures"`
	ComplianceAt *time.Time       `json:"compliance_at,omitempty"`
	KeyStorage   string           `json:"key_storage,omitempty"`
	// KeyAttested: Ward verified that the key is in a TPM (key_storage
	// alone is the agent's claim).
	KeyAttested    bool                   `json:"key_attested"`
	KeyAttestation *device.KeyAttestation `json:"key_attestation,omitempty"`
	Platform       string                 `json:"platform"`
	OSName         string                 `json:"os_name,omitempty"`
	OSVersion      string                 `json:"os_version,omitempty"`
	Hostname       string                 `json:"hostname,omitempty"`
	AgentVersion   string                 `json:"agent_version,omitempty"`
	TrustType      string                 `json:"trust_type"`
	Posture        json.RawMessage        `json:"posture,omitempty"`
	PostureAt      *time.Time             `json:"posture_at,omitempty"`
	CreatedAt      time.Time              `json:"created_at"`
	LastSeen       time.Time              `json:"last_seen"`
	UpdatedAt      time.Time              `json:"updated_at"`
}

func deviceDTO(d *model.Device, full bool) deviceJSON {
	out := deviceJSON{
		ID: d.ID, UserID: d.UserID, JKT: d.JKT, Status: d.Status, Compliance: d.Compliance, Failures: device.DecodeFailures(d),
		ComplianceAt: optTime(d.ComplianceAt), KeyStorage: d.KeyStorage, KeyAttested: d.KeyAttested,
		KeyAttestation: device.DecodeKeyAttestation(d), Platform: d.Platform, OSName: d.OSName,
		OSVersion: d.OSVersion, Hostname: d.Hostname, AgentVersion: d.AgentVersion, TrustType: d.TrustType,
		PostureAt: optTime(d.PostureAt), CreatedAt: d.CreatedAt.UTC(), LastSeen: d.LastSeen.UTC(), UpdatedAt: d.UpdatedAt.UTC(),
	}
	if full {
		out.PublicJWK = d.PublicJWK
		if json.Valid(d.Posture) {
			out.Posture = d.Posture
		}
	}
	return out
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// deviceErr maps the device service's errors to responses.
func deviceErr(err error, what string) error {
	switch {
	case errors.Is(err, device.ErrNotFound):
		return notFound(what)
	case errors.Is(err, device.ErrInvalid):
		e := &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: err.Error(), Cause: err}
		if re, ok := errors.AsType[*device.RulesError](err); ok {
			e.Description = re.Error()
			for _, p := range re.Problems {
				e.Fields = append(e.Fields, FieldError{Field: "rules", Message: p})
			}
		}
		return e
	}
	return err
}

// GET /devices?user_id=&status=&limit=
func (api *API) listDevices(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	q := r.URL.Query()
	limit, err := parseLimit(q)
	if err != nil {
		return err
	}
	st := q.Get("status")
	if st != "" && !device.ValidStatus(st) {
		return invalid("status must be %s, %s or %s", model.DeviceActive, model.DeviceDisabled, model.DeviceLost)
	}
	ds, err := api.devices.List(r.Context(), device.Filter{UserID: q.Get("user_id"), Status: st, Limit: limit})
	if err != nil {
		return deviceErr(err, "device")
	}
	out := make([]deviceJSON, 0, len(ds))
	for _, d := range ds {
		out = append(out, deviceDTO(d, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
	return nil
}

// GET /devices/{id}
func (api *API) getDevice(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	d, err := api.devices.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return deviceErr(err, "device")
	}
	writeJSON(w, http.StatusOK, deviceDTO(d, true))
	return nil
}

// POST /devices/{id}/disable and /devices/{id}/lost end every session
// bound to the device and answer with the device.
func (api *API) deviceStatus(reason model.RevocationCause) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
		op := api.devices.Disable
		if reason == device.ReasonDeviceLost {
			op = api.devices.MarkLost
		}
		d, err := op(r.Context(), rc.actor(), r.PathValue("id"))
		if err != nil {
			return deviceErr(err, "device")
		}
		writeJSON(w, http.StatusOK, deviceDTO(d, true))
		return nil
	}
}

// POST /devices/{id}/enable makes a disabled device active again; a lost
// one is 409.
func (api *API) enableDevice(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	d, err := api.devices.Enable(r.Context(), rc.actor(), r.PathValue("id"))
	if errors.Is(err, device.ErrLost) {
		return conflict(err.Error())
	}
	if err != nil {
		return deviceErr(err, "device")
	}
	writeJSON(w, http.StatusOK, deviceDTO(d, true))
	return nil
}

// DELETE /devices/{id}
func (api *API) deleteDevice(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.devices.Delete(r.Context(), rc.actor(), r.PathValue("id")); err != nil {
		return deviceErr(err, "device")
	}
	return noContent(w)
}

// policyJSON is a compliance policy.
type policyJSON struct {
	Platform  string          `json:"platform"`
	Rules     json.RawMessage `json:"rules"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

func policyDTO(p *model.CompliancePolicy) policyJSON {
	rules := p.Rules
	if !json.Valid(rules) {
		rules = json.RawMessage(`{}`)
	}
	return policyJSON{Platform: p.Platform, Rules: rules, CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC()}
}

// GET /compliance-policies
func (api *API) listPolicies(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	ps, err := api.devices.ListPolicies(r.Context())
	if err != nil {
		return err
	}
	out := make([]policyJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, policyDTO(p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"policies": out})
	return nil
}

// GET /compliance-policies/{platform}
func (api *API) getPolicy(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	p, err := api.devices.GetPolicy(r.Context(), r.PathValue("platform"))
	if err != nil {
		return deviceErr(err, "compliance policy")
	}
	writeJSON(w, http.StatusOK, policyDTO(p))
	return nil
}

// PUT /compliance-policies/{platform} with body {"rules": {...}}.
func (api *API) putPolicy(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Rules json.RawMessage `json:"rules"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if len(body.Rules) == 0 {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "rules is required",
			Fields: []FieldError{{Field: "rules", Message: "required"}}}
	}
	p, err := api.devices.PutPolicy(r.Context(), rc.actor(), r.PathValue("platform"), body.Rules)
	if err != nil {
		return deviceErr(err, "compliance policy")
	}
	writeJSON(w, http.StatusOK, policyDTO(p))
	return nil
}

// DELETE /compliance-policies/{platform}
func (api *API) deletePolicy(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.devices.DeletePolicy(r.Context(), rc.actor(), r.PathValue("platform")); err != nil {
		return deviceErr(err, "compliance policy")
	}
	return noContent(w)
}
