package admin

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/policy"
)

// maxPolicyBody bounds a policy document upload (hundreds of policies).
const maxPolicyBody = 1 << 20

// accessRoutes registers the Conditional Access routes.
func (api *API) accessRoutes() {
	api.handle("GET /conditional-access/policies", api.getPolicies)
	api.handle("PUT /conditional-access/policies", api.putPolicies)
	api.handle("GET /conditional-access/versions", api.listPolicyVersions)
	api.handle("GET /conditional-access/versions/{version}", api.getPolicyVersion)
	api.handle("POST /conditional-access/whatif", api.whatIf)
	api.handle("PUT /users/{id}/risk", api.setUserRisk)
}

// accessErr maps the access service's errors to responses; every problem
// of an invalid document is listed.
func accessErr(err error) error {
	switch {
	case errors.Is(err, access.ErrInvalid):
		e := &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "invalid policy document", Cause: err}
		for _, p := range policyProblems(err) {
			text := strings.TrimPrefix(p.Error(), access.ErrInvalid.Error()+": ")
			field, msg, ok := strings.Cut(text, ": ")
			if !ok || errors.Is(p, access.ErrInvalid) {
				field, msg = "", text
			}
			e.Fields = append(e.Fields, FieldError{Field: field, Message: msg})
		}
		return e
	case errors.Is(err, access.ErrConflict):
		return &Error{Status: http.StatusPreconditionFailed, Code: CodeConflict, Description: err.Error(), Cause: err}
	case errors.Is(err, access.ErrWhatIf):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: err.Error(), Cause: err}
	}
	return err
}

// policyProblems returns the problems of an access.ErrInvalid error: the
// leaves of its tree of joined errors, each "field.path: message". A
// message may span lines (a CEL error quotes the rule and points at the
// problem), so the error text is not split on newlines.
func policyProblems(err error) []error {
	var out []error
	var walk func(error)
	walk = func(err error) {
		if err == access.ErrInvalid {
			return
		}
		if u, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range u.Unwrap() {
				walk(e)
			}
			return
		}
		out = append(out, err)
	}
	walk(err)
	return out
}

// GET /conditional-access/policies: the document in force; ETag is its
// version, for If-Match on PUT.
func (api *API) getPolicies(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	doc, v, err := api.access.Current(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(v, 10)))
	writeJSON(w, http.StatusOK, map[string]any{"version": v, "document": doc})
	return nil
}

// PUT /conditional-access/policies with the whole document as
// application/json or application/yaml. If-Match: "<version>" makes the
// change conditional; ?comment= is kept with the version.
func (api *API) putPolicies(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" && mt != "application/yaml" && mt != "application/x-yaml" {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType,
			Description: "the policy document must be application/json or application/yaml"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPolicyBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
				Description: fmt.Sprintf("the policy document is larger than %d bytes", maxPolicyBody)}
		}
		return invalid("the request body could not be read")
	}
	var doc *policy.Document
	if mt == "application/json" {
		doc, err = policy.DecodeJSON(strings.NewReader(string(body)))
	} else {
		doc, err = policy.DecodeYAML(body)
	}
	if err != nil {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "invalid policy document: " + err.Error(), Cause: err}
	}
	o := access.ApplyOptions{Actor: rc.actor(), Comment: r.URL.Query().Get("comment"), ExpectVersion: access.AnyVersion}
	if len(o.Comment) > 500 {
		return invalid("comment is longer than 500 characters")
	}
	if im := r.Header.Get("If-Match"); im != "" && im != "*" { // "*": any current version (RFC 9110)
		n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
		if err != nil || n < 0 {
			return invalid("If-Match must be the quoted version number from the ETag")
		}
		o.ExpectVersion = n
	}
	res, err := api.access.Apply(r.Context(), doc, o)
	if err != nil {
		return accessErr(err)
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(res.Version, 10)))
	writeJSON(w, http.StatusOK, res)
	return nil
}

type policyVersionJSON struct {
	Version   int64            `json:"version"`
	Digest    string           `json:"digest"`
	CreatedAt time.Time        `json:"created_at"`
	CreatedBy string           `json:"created_by"`
	Comment   string           `json:"comment,omitempty"`
	Document  *policy.Document `json:"document,omitempty"`
}

// GET /conditional-access/versions?limit=
func (api *API) listPolicyVersions(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	limit, err := parseLimit(r.URL.Query())
	if err != nil {
		return err
	}
	vs, err := api.access.Versions(r.Context(), limit)
	if err != nil {
		return err
	}
	out := make([]policyVersionJSON, 0, len(vs))
	for _, v := range vs {
		out = append(out, policyVersionJSON{Version: v.Version, Digest: v.Digest, CreatedAt: v.CreatedAt.UTC(), CreatedBy: v.CreatedBy, Comment: v.Comment})
	}
	writeJSON(w, http.StatusOK, map[string]any{"versions": out})
	return nil
}

// GET /conditional-access/versions/{version}
func (api *API) getPolicyVersion(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	n, err := strconv.ParseInt(r.PathValue("version"), 10, 64)
	if err != nil || n < 1 {
		return invalid("version must be a positive integer")
	}
	v, doc, err := api.access.Version(r.Context(), n)
	if err != nil {
		return orNotFound(err, "policy version")
	}
	writeJSON(w, http.StatusOK, policyVersionJSON{Version: v.Version, Digest: v.Digest, CreatedAt: v.CreatedAt.UTC(),
		CreatedBy: v.CreatedBy, Comment: v.Comment, Document: doc})
	return nil
}

// POST /conditional-access/whatif with an access.WhatIf body: the
// decision, every policy's result and reason, and the input used.
func (api *API) whatIf(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	var q access.WhatIf
	if err := decodeJSON(w, r, &q); err != nil {
		return err
	}
	res, err := api.access.Explain(r.Context(), q)
	if err != nil {
		return accessErr(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// PUT /users/{id}/risk with {"level": "none|low|medium|high", "reason": "…"}.
func (api *API) setUserRisk(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body struct {
		Level  string `json:"level"`
		Reason string `json:"reason"`
	}
	if err := decodeJSON(w, r, &body); err != nil {
		return err
	}
	if len(body.Reason) > 200 {
		return invalid("reason is longer than 200 characters")
	}
	id := r.PathValue("id")
	if api.risk != nil {
		// Recorded as the administrator's detection; high revokes like any
		// high level (risk.auto_revoke_level).
		if err := api.risk.SetUserLevel(r.Context(), rc.actor(), id, body.Level, body.Reason); err != nil {
			return riskErr(err, "user")
		}
	} else if err := api.identity.SetRisk(r.Context(), rc.actor(), id, body.Level, body.Reason); err != nil {
		if errors.Is(err, identity.ErrInvalidRisk) {
			return invalid("%s", err.Error())
		}
		return orNotFound(err, "user")
	}
	u, err := api.identity.GetUser(r.Context(), id)
	if err != nil {
		return orNotFound(err, "user")
	}
	left, err := api.identity.RecoveryCodesLeft(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.userDTO(u, left))
	return nil
}
