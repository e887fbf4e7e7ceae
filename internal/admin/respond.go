package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/session"
)

// Error codes of the admin API (besides the RFC 6750 / RFC 9449 codes of
// authentication failures: invalid_token, invalid_dpop_proof,
// insufficient_scope, access_denied, invalid_request).
const (
	CodeInvalidRequest       = "invalid_request"
	CodeNotFound             = "not_found"
	CodeConflict             = "conflict"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeTooLarge             = "request_too_large"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeServerError          = "server_error"
	// CodeActionIncomplete: an incident's response action failed on some
	// of its targets (the response lists what was done).
	CodeActionIncomplete = "action_incomplete"
)

// Error is an admin API error response. Description is shown to the
// caller; Cause is only logged.
type Error struct {
	Status      int
	Code        string
	Description string
	Fields      []FieldError
	Cause       error
}

// FieldError names one invalid field of a request body.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }
func (e *Error) Unwrap() error { return e.Cause }

func invalid(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: fmt.Sprintf(format, args...)}
}

func notFound(what string) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Description: what + " not found"}
}

func conflict(desc string) *Error {
	return &Error{Status: http.StatusConflict, Code: CodeConflict, Description: desc}
}

// isNotFound reports whether err is a service's "no such thing".
func isNotFound(err error) bool {
	return errors.Is(err, identity.ErrNotFound) || errors.Is(err, session.ErrNotFound) || errors.Is(err, clients.ErrNotFound) ||
		errors.Is(err, device.ErrNotFound) || errors.Is(err, access.ErrNotFound)
}

// orNotFound turns a not-found error of a service into a 404 naming what
// was missing; other errors pass unchanged.
func orNotFound(err error, what string) error {
	if isNotFound(err) {
		return notFound(what)
	}
	return err
}

// classify maps an error from a handler or a service to the response. The services' validation messages are written to be shown;
// anything unrecognised is an internal error.
func classify(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	switch {
	case errors.Is(err, clientspec.ErrInvalid):
		e := &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Cause: err}
		var msgs []string
		for _, fe := range fieldErrors(err) {
			e.Fields = append(e.Fields, FieldError{Field: fe.Field, Message: fe.Msg})
			msgs = append(msgs, fe.Error())
		}
		e.Description = "invalid client: " + strings.Join(msgs, "; ")
		return e
	case errors.Is(err, identity.ErrWeakPassword), errors.Is(err, identity.ErrInvalidUsername),
		errors.Is(err, identity.ErrInvalidInput):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: err.Error(), Cause: err}
	case errors.Is(err, identity.ErrExists):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Description: err.Error(), Cause: err}
	case errors.Is(err, clients.ErrExists):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Description: "a client with this id already exists", Cause: err}
	case errors.Is(err, clients.ErrManagedByConfig):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Description: strings.TrimPrefix(err.Error(), "clients: "), Cause: err}
	case errors.Is(err, clients.ErrNoSecret):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Description: "the client does not authenticate with a client secret", Cause: err}
	case isNotFound(err):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Description: "not found", Cause: err}
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeServerError, Cause: err}
}

// fieldErrors flattens the (joined) validation errors of clientspec.Validate.
func fieldErrors(err error) []*clientspec.FieldError {
	var out []*clientspec.FieldError
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*clientspec.FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error         string       `json:"error"`
	Description   string       `json:"error_description,omitempty"`
	Fields        []FieldError `json:"fields,omitempty"`
	CorrelationID string       `json:"correlation_id,omitempty"`
}

// writeError renders err. Internal errors show only the correlation id;
// their cause goes to the log under it.
func (api *API) writeError(w http.ResponseWriter, r *http.Request, rc *reqCtx, err error) {
	e := classify(err)
	body := errorBody{Error: e.Code, Description: e.Description, Fields: e.Fields}
	if e.Status >= 500 {
		corr := ""
		if rc != nil {
			corr = rc.corrID
		}
		api.log.ErrorContext(r.Context(), "admin: internal error", "correlation_id", corr,
			"method", r.Method, "route", r.Pattern, "err", e.Cause)
		body.Description = "internal error; correlation id " + corr
		body.CorrelationID = corr
	}
	writeJSON(w, e.Status, body)
}

// writeJSON writes v as the response (Cache-Control is set for every
// admin response in ServeHTTP; it is set again here for the error paths
// that do not pass there).
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

// noContent answers 204.
func noContent(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// decodeJSON reads the request body into dst: application/json only, at
// most maxBody bytes, one JSON object, no unknown fields.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType,
			Description: "the request body must be application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err = dec.Decode(dst)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				return invalid("the request body must hold a single JSON object")
			}
		}
	}
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
			Description: fmt.Sprintf("the request body is larger than %d bytes", maxBody)}
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return invalid("the request body must be a JSON object")
		}
		return invalid("field %s: expected %s", te.Field, te.Type)
	}
	switch {
	case errors.Is(err, io.EOF):
		return invalid("the request body is empty")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return invalid("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return invalid("the request body is not valid JSON")
}
