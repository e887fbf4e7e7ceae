package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
)

// clientJSON is an OAuth client as the admin API shows it: never the
// secret or its hash, and only the public members of its keys.
type clientJSON struct {
	ID                     string          `json:"id"`
	Name                   string          `json:"name"`
	AuthMethod             string          `json:"auth_method"`
	Public                 bool            `json:"public"`
	HasSecret              bool            `json:"has_secret"`
	RedirectURIs           []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs []string        `json:"post_logout_redirect_uris"`
	GrantTypes             []string        `json:"grant_types"`
	Scopes                 []string        `json:"scopes"`
	Audience               []string        `json:"audience"`
	DPoPBoundAccessTokens  bool            `json:"dpop_bound_access_tokens"`
	RequireProtected       bool            `json:"require_protected_sessions"`
	CAECapable             bool            `json:"cae_capable"`
	ApplicationType        string          `json:"application_type,omitempty"` // web, native; absent: inferred
	ManagedBy              string          `json:"managed_by,omitempty"`       // config, dev: changes are refused
	JWKS                   json.RawMessage `json:"jwks,omitempty"`
	AccessTokenTTL         int64           `json:"access_token_ttl"` // seconds; 0: server default
	CreatedAt              time.Time       `json:"created_at"`
	UpdatedAt              time.Time       `json:"updated_at"`
}

// createdClientJSON is the answer to POST /clients: the client and, for
// client_secret_basic/post clients, the generated secret, shown only here.
type createdClientJSON struct {
	clientJSON
	ClientSecret string `json:"client_secret,omitempty"`
}

func clientDTO(c *model.Client) clientJSON {
	return clientJSON{
		ID: c.ID, Name: c.Name, AuthMethod: c.TokenEndpointAuthMethod, Public: c.Public(), HasSecret: len(c.SecretHash) > 0,
		RedirectURIs: nonNil(c.RedirectURIs), PostLogoutRedirectURIs: nonNil(c.PostLogoutRedirectURIs),
		GrantTypes: nonNil(c.GrantTypes), Scopes: nonNil(c.Scopes), Audience: nonNil(c.Audience),
		DPoPBoundAccessTokens: c.DPoPBoundAccessTokens, RequireProtected: c.RequireProtectedSessions, CAECapable: c.CAECapable,
		ApplicationType: c.ApplicationType, ManagedBy: c.ManagedBy, JWKS: publicJWKS(c.JWKS),
		AccessTokenTTL: int64(c.AccessTokenTTL / time.Second), CreatedAt: c.CreatedAt.UTC(), UpdatedAt: c.UpdatedAt.UTC(),
	}
}

// privateJWKMembers carry private or symmetric key material (RFC 7518
// §6.2.2, §6.3.2, §6.4).
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

// jwkSet is a JWK Set read loosely: each key as its members.
type jwkSet struct {
	Keys []map[string]json.RawMessage `json:"keys"`
}

// publicJWKS returns the key set with private members removed (a stored
// set should have none; this makes sure no response carries them). nil
// when there is no usable set.
func publicJWKS(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	var set jwkSet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil
	}
	for _, k := range set.Keys {
		for _, m := range privateJWKMembers {
			delete(k, m)
		}
	}
	out, err := json.Marshal(set)
	if err != nil {
		return nil
	}
	return out
}

// checkPublicJWKS reports keys in raw that carry private key material.
// Unparseable sets are left to clientspec.Validate.
func checkPublicJWKS(raw json.RawMessage) []error {
	var set jwkSet
	if len(raw) == 0 || json.Unmarshal(raw, &set) != nil {
		return nil
	}
	var errs []error
	for i, k := range set.Keys {
		for _, m := range privateJWKMembers {
			if _, ok := k[m]; ok {
				errs = append(errs, &clientspec.FieldError{Field: fmt.Sprintf("jwks.keys[%d]", i),
					Msg: fmt.Sprintf("holds private key material (%q); register public keys only", m)})
				break
			}
		}
	}
	return errs
}

// clientRequest is the body of POST /clients: clientspec.Spec in snake_case.
type clientRequest struct {
	ID                     string          `json:"id"`
	Name                   string          `json:"name"`
	AuthMethod             string          `json:"auth_method"`
	RedirectURIs           []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs []string        `json:"post_logout_redirect_uris"`
	GrantTypes             []string        `json:"grant_types"`
	Scopes                 []string        `json:"scopes"`
	Audience               []string        `json:"audience"`
	DPoPBoundAccessTokens  bool            `json:"dpop_bound_access_tokens"`
	RequireProtected       bool            `json:"require_protected_sessions"`
	CAECapable             bool            `json:"cae_capable"`
	ApplicationType        string          `json:"application_type"`
	JWKS                   json.RawMessage `json:"jwks"`
	AccessTokenTTL         int64           `json:"access_token_ttl"` // seconds
}

func (req *clientRequest) spec() (clientspec.Spec, error) {
	if req.AccessTokenTTL > math.MaxInt64/int64(time.Second) {
		return clientspec.Spec{}, invalid("access_token_ttl is too large")
	}
	jwks := req.JWKS
	if t := bytes.TrimSpace(jwks); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		jwks = nil
	}
	return clientspec.Spec{
		ID: req.ID, Name: req.Name, AuthMethod: req.AuthMethod, RedirectURIs: req.RedirectURIs,
		PostLogoutRedirectURIs: req.PostLogoutRedirectURIs, GrantTypes: req.GrantTypes, Scopes: req.Scopes,
		Audience: req.Audience, DPoPBoundAccessTokens: req.DPoPBoundAccessTokens, JWKS: jwks,
		RequireProtectedSessions: req.RequireProtected, CAECapable: req.CAECapable, ApplicationType: req.ApplicationType,
		AccessTokenTTL: time.Duration(req.AccessTokenTTL) * time.Second,
	}, nil
}

// patchClientRequest is the body of PATCH /clients/{id}: each member given
// replaces that part of the client (lists whole); absent ones stay.
type patchClientRequest struct {
	Name                   *string          `json:"name"`
	AuthMethod             *string          `json:"auth_method"`
	RedirectURIs           *[]string        `json:"redirect_uris"`
	PostLogoutRedirectURIs *[]string        `json:"post_logout_redirect_uris"`
	GrantTypes             *[]string        `json:"grant_types"`
	Scopes                 *[]string        `json:"scopes"`
	Audience               *[]string        `json:"audience"`
	DPoPBoundAccessTokens  *bool            `json:"dpop_bound_access_tokens"`
	RequireProtected       *bool            `json:"require_protected_sessions"`
	CAECapable             *bool            `json:"cae_capable"`
	ApplicationType        *string          `json:"application_type"`
	JWKS                   *json.RawMessage `json:"jwks"`
	AccessTokenTTL         *int64           `json:"access_token_ttl"` // seconds
}

// apply changes s as the request says.
func (req *patchClientRequest) apply(s *clientspec.Spec) error {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	setList := func(dst *[]string, v *[]string) {
		if v != nil {
			*dst = *v
		}
	}
	setBool := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	set(&s.Name, req.Name)
	set(&s.AuthMethod, req.AuthMethod)
	set(&s.ApplicationType, req.ApplicationType)
	setList(&s.RedirectURIs, req.RedirectURIs)
	setList(&s.PostLogoutRedirectURIs, req.PostLogoutRedirectURIs)
	setList(&s.GrantTypes, req.GrantTypes)
	setList(&s.Scopes, req.Scopes)
	setList(&s.Audience, req.Audience)
	setBool(&s.DPoPBoundAccessTokens, req.DPoPBoundAccessTokens)
	setBool(&s.RequireProtectedSessions, req.RequireProtected)
	setBool(&s.CAECapable, req.CAECapable)
	if req.JWKS != nil {
		s.JWKS = *req.JWKS
		if t := bytes.TrimSpace(s.JWKS); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			s.JWKS = nil
		}
		if errs := checkPublicJWKS(s.JWKS); len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	if req.AccessTokenTTL != nil {
		if *req.AccessTokenTTL > math.MaxInt64/int64(time.Second) {
			return invalid("access_token_ttl is too large")
		}
		s.AccessTokenTTL = time.Duration(*req.AccessTokenTTL) * time.Second
	}
	return nil
}

// PATCH /clients/{id} changes a client's metadata. A move to
// client_secret_basic/post generates a secret, shown once in the answer.
func (api *API) patchClient(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var req patchClientRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	c, sec, err := api.clients.Update(r.Context(), rc.actor(), r.PathValue("id"), req.apply)
	if err != nil {
		return orNotFound(err, "client")
	}
	writeJSON(w, http.StatusOK, createdClientJSON{clientJSON: clientDTO(c), ClientSecret: sec.Reveal()})
	return nil
}

// GET /clients
func (api *API) listClients(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	cs, err := api.clients.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]clientJSON, 0, len(cs))
	for _, c := range cs {
		out = append(out, clientDTO(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"clients": out})
	return nil
}

// POST /clients creates a client; the clients service validates the spec
// and generates the secret, which the response shows once.
func (api *API) createClient(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var req clientRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	spec, err := req.spec()
	if err != nil {
		return err
	}
	if errs := checkPublicJWKS(spec.JWKS); len(errs) > 0 {
		// Report every problem at once, as the service would.
		check := spec
		if check.ID == "" {
			check.ID = "generated"
		}
		check.Normalize()
		return errors.Join(append([]error{clientspec.Validate(check)}, errs...)...)
	}
	c, sec, err := api.clients.Create(r.Context(), rc.actor(), spec)
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/clients/"+c.ID)
	writeJSON(w, http.StatusCreated, createdClientJSON{clientJSON: clientDTO(c), ClientSecret: sec.Reveal()})
	return nil
}

// GET /clients/{id}
func (api *API) getClient(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	c, err := api.clients.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return orNotFound(err, "client")
	}
	writeJSON(w, http.StatusOK, clientDTO(c))
	return nil
}

// rotatedSecretJSON is the answer to POST /clients/{id}/secret.
type rotatedSecretJSON struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// POST /clients/{id}/secret replaces the secret; the old one stops
// working at once.
func (api *API) rotateClientSecret(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	sec, err := api.clients.RotateSecret(r.Context(), rc.actor(), id)
	if err != nil {
		return orNotFound(err, "client")
	}
	writeJSON(w, http.StatusOK, rotatedSecretJSON{ClientID: id, ClientSecret: sec.Reveal()})
	return nil
}

// DELETE /clients/{id}
func (api *API) deleteClient(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := api.clients.Delete(r.Context(), rc.actor(), r.PathValue("id")); err != nil {
		return orNotFound(err, "client")
	}
	return noContent(w)
}
