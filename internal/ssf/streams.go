package ssf

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/textclean"
)

// StreamJSON is a stream's configuration as receivers see it (SSF 1.0
// §8.1.1). The push authorization_header is never returned.
type StreamJSON struct {
	StreamID                string       `json:"stream_id"`
	Iss                     string       `json:"iss"`
	Aud                     any          `json:"aud"`
	Delivery                DeliveryJSON `json:"delivery"`
	EventsSupported         []string     `json:"events_supported"`
	EventsRequested         []string     `json:"events_requested,omitempty"`
	EventsDelivered         []string     `json:"events_delivered"`
	Description             string       `json:"description,omitempty"`
	MinVerificationInterval int          `json:"min_verification_interval,omitempty"`
}

// DeliveryJSON is a stream's delivery configuration.
type DeliveryJSON struct {
	Method      string `json:"method"`
	EndpointURL string `json:"endpoint_url"`
}

func (h *Handler) render(st *model.SSFStream) StreamJSON {
	var aud any = st.Audience
	if len(st.Audience) == 1 {
		aud = st.Audience[0]
	}
	d := DeliveryJSON{Method: st.Method, EndpointURL: st.EndpointURL}
	if st.Method == model.DeliveryPoll {
		d.EndpointURL = h.PollURL(st.ID)
	}
	delivered := st.EventsDelivered
	if delivered == nil {
		delivered = []string{}
	}
	return StreamJSON{StreamID: st.ID, Iss: h.issuer, Aud: aud, Delivery: d, EventsSupported: cae.EventsSupported,
		EventsRequested: st.EventsRequested, EventsDelivered: delivered, Description: st.Description,
		MinVerificationInterval: h.svc.MinVerificationInterval()}
}

// streamRequest reads the receiver-supplied properties of a stream
// configuration body.
func streamRequest(obj map[string]json.RawMessage) (cae.StreamRequest, error) {
	var req cae.StreamRequest
	if raw, ok := obj["delivery"]; ok && string(raw) != "null" {
		var d map[string]json.RawMessage
		if err := json.Unmarshal(raw, &d); err != nil || d == nil {
			return req, badRequest("delivery must be an object")
		}
		method, _, err := str(d, "method")
		if err != nil {
			return req, badRequest("delivery.method must be a string")
		}
		ep, _, err := str(d, "endpoint_url")
		if err != nil {
			return req, badRequest("delivery.endpoint_url must be a string")
		}
		del := &cae.Delivery{Method: method, EndpointURL: ep}
		if hv, present, err := str(d, "authorization_header"); err != nil {
			return req, badRequest("delivery.authorization_header must be a string")
		} else if present {
			del.AuthorizationHeader = &hv
		}
		req.Delivery = del
	}
	if l, present, err := strList(obj, "events_requested"); err != nil {
		return req, err
	} else if present {
		req.EventsRequested = &l
	}
	if d, present, err := str(obj, "description"); err != nil {
		return req, err
	} else if present {
		req.Description = &d
	}
	return req, nil
}

// checkTransmitterSupplied enforces SSF 1.0 §8.1.1.3: transmitter-supplied
// properties in an update must match the current values.
func (h *Handler) checkTransmitterSupplied(obj map[string]json.RawMessage, cur StreamJSON) error {
	if v, present, err := str(obj, "iss"); err != nil || (present && v != cur.Iss) {
		return badRequest("iss does not match the stream's")
	}
	if raw, ok := obj["aud"]; ok {
		var one string
		var many []string
		want := cur.Aud
		switch {
		case json.Unmarshal(raw, &one) == nil:
			if want != one && !(slices.Equal(asList(want), []string{one})) {
				return badRequest("aud does not match the stream's")
			}
		case json.Unmarshal(raw, &many) == nil:
			if !slices.Equal(many, asList(want)) {
				return badRequest("aud does not match the stream's")
			}
		default:
			return badRequest("aud must be a string or an array of strings")
		}
	}
	for name, want := range map[string][]string{"events_supported": cur.EventsSupported, "events_delivered": cur.EventsDelivered} {
		got, present, err := strList(obj, name)
		if err != nil {
			return err
		}
		if present && !sameSet(got, want) {
			return badRequest("%s does not match the stream's", name)
		}
	}
	if raw, ok := obj["min_verification_interval"]; ok {
		var n int
		if json.Unmarshal(raw, &n) != nil || n != cur.MinVerificationInterval {
			return badRequest("min_verification_interval does not match the stream's")
		}
	}
	return nil
}

func asList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []string:
		return x
	}
	return nil
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// POST /ssf/stream
func (h *Handler) createStream(w http.ResponseWriter, r *http.Request, clientID string) error {
	obj, err := readObject(w, r)
	if err != nil {
		return err
	}
	req, err := streamRequest(obj)
	if err != nil {
		return err
	}
	if req.Delivery != nil && req.Delivery.Method == model.DeliveryPoll && req.Delivery.EndpointURL != "" {
		return badRequest("delivery.endpoint_url is supplied by the transmitter for poll delivery; omit it")
	}
	st, err := h.svc.CreateStream(r.Context(), clientID, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", h.url(PathStream)+"?stream_id="+st.ID)
	writeJSON(w, http.StatusCreated, h.render(st))
	return nil
}

// GET /ssf/stream[?stream_id=]
func (h *Handler) readStream(w http.ResponseWriter, r *http.Request, clientID string) error {
	q := r.URL.Query()
	if ids, ok := q["stream_id"]; ok {
		if len(ids) != 1 || ids[0] == "" {
			return badRequest("stream_id must be given once")
		}
		st, err := h.svc.GetStream(r.Context(), clientID, ids[0])
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, h.render(st))
		return nil
	}
	l, err := h.svc.ListStreams(r.Context(), clientID)
	if err != nil {
		return err
	}
	out := make([]StreamJSON, len(l))
	for i, st := range l {
		out[i] = h.render(st)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// PATCH /ssf/stream
func (h *Handler) updateStream(w http.ResponseWriter, r *http.Request, clientID string) error {
	return h.changeStream(w, r, clientID, false)
}

// PUT /ssf/stream
func (h *Handler) replaceStream(w http.ResponseWriter, r *http.Request, clientID string) error {
	return h.changeStream(w, r, clientID, true)
}

func (h *Handler) changeStream(w http.ResponseWriter, r *http.Request, clientID string, replace bool) error {
	obj, id, err := readStreamObject(w, r)
	if err != nil {
		return err
	}
	req, err := streamRequest(obj)
	if err != nil {
		return err
	}
	cur, err := h.svc.GetStream(r.Context(), clientID, id)
	if err != nil {
		return err
	}
	curJSON := h.render(cur)
	if err := h.checkTransmitterSupplied(obj, curJSON); err != nil {
		return err
	}
	if d := req.Delivery; d != nil && d.Method == model.DeliveryPoll && d.EndpointURL != "" && d.EndpointURL != h.PollURL(id) {
		return badRequest("delivery.endpoint_url is supplied by the transmitter for poll delivery")
	}
	st, err := h.svc.UpdateStream(r.Context(), clientID, id, req, replace)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h.render(st))
	return nil
}

// DELETE /ssf/stream?stream_id=
func (h *Handler) deleteStream(w http.ResponseWriter, r *http.Request, clientID string) error {
	id, err := queryStreamID(r)
	if err != nil {
		return err
	}
	if err := h.svc.DeleteStream(r.Context(), clientID, id); err != nil {
		return err
	}
	noContent(w, http.StatusNoContent)
	return nil
}

func queryStreamID(r *http.Request) (string, error) {
	ids := r.URL.Query()["stream_id"]
	if len(ids) != 1 || ids[0] == "" {
		return "", badRequest("the stream_id query parameter is required")
	}
	return ids[0], nil
}

// statusJSON is a stream's status (SSF 1.0 §8.1.2).
type statusJSON struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
}

// GET /ssf/status?stream_id=
func (h *Handler) readStatus(w http.ResponseWriter, r *http.Request, clientID string) error {
	id, err := queryStreamID(r)
	if err != nil {
		return err
	}
	status, reason, err := h.svc.Status(r.Context(), clientID, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, statusJSON{StreamID: id, Status: status, Reason: reason})
	return nil
}

// POST /ssf/status
func (h *Handler) updateStatus(w http.ResponseWriter, r *http.Request, clientID string) error {
	obj, id, err := readStreamObject(w, r)
	if err != nil {
		return err
	}
	status, _, err := str(obj, "status")
	if err != nil {
		return err
	}
	reason, _, err := str(obj, "reason")
	if err != nil {
		return err
	}
	st, err := h.svc.SetStatus(r.Context(), clientID, id, status, reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, statusJSON{StreamID: st.ID, Status: st.Status, Reason: st.StatusReason})
	return nil
}

// POST /ssf/subjects:add (200) and /ssf/subjects:remove (204).
func (h *Handler) changeSubject(add bool) func(http.ResponseWriter, *http.Request, string) error {
	change, status := h.svc.AddSubject, http.StatusOK
	if !add {
		change, status = h.svc.RemoveSubject, http.StatusNoContent
	}
	return func(w http.ResponseWriter, r *http.Request, clientID string) error {
		id, subject, err := subjectRequest(w, r)
		if err != nil {
			return err
		}
		if err := change(r.Context(), clientID, id, subject); err != nil {
			return err
		}
		noContent(w, status)
		return nil
	}
}

func subjectRequest(w http.ResponseWriter, r *http.Request) (string, json.RawMessage, error) {
	obj, id, err := readStreamObject(w, r)
	if err != nil {
		return "", nil, err
	}
	subject, ok := obj["subject"]
	if !ok || string(subject) == "null" {
		return "", nil, badRequest("subject is required")
	}
	if raw, ok := obj["verified"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return "", nil, badRequest("verified must be a boolean")
		}
	}
	return id, subject, nil
}

// POST /ssf/verify
func (h *Handler) verify(w http.ResponseWriter, r *http.Request, clientID string) error {
	obj, id, err := readStreamObject(w, r)
	if err != nil {
		return err
	}
	state, _, err := str(obj, "state")
	if err != nil {
		return err
	}
	if err := h.svc.Verify(r.Context(), clientID, id, state); err != nil {
		return err
	}
	noContent(w, http.StatusNoContent)
	return nil
}

// Bounds of a poll request's members (the body is bounded by maxBody too).
const (
	maxPollJTI       = 256 // an ack or setErrs key: Ward's jtis are far shorter
	maxSETErrCode    = 64  // a setErrs "err": a registry code
	maxSETErrDesc    = 512 // a setErrs "description" is cut to this (and stored cut with its err)
	maxPollMaxEvents = 1 << 30
)

// POST /ssf/poll/{stream_id} (RFC 8936 §2.4). Members Ward does not know
// are ignored (RFC 8936 and SSF extend the request); every member it knows
// must have its type, or the request is refused as a whole (400) and
// nothing in it, acknowledgements included, is applied.
func (h *Handler) poll(w http.ResponseWriter, r *http.Request, clientID string) error {
	id := r.PathValue("stream_id")
	if !textclean.ValidParam(id, textclean.MaxPathID) {
		return badRequest("the stream_id in the path is not a valid id")
	}
	obj, err := readObject(w, r)
	if err != nil {
		return err
	}
	var req cae.PollRequest
	if raw, ok := obj["maxEvents"]; ok && string(raw) != "null" {
		var n int
		if json.Unmarshal(raw, &n) != nil || n < 0 || n > maxPollMaxEvents {
			return badRequest("maxEvents must be a non-negative integer")
		}
		req.MaxEvents = &n
	}
	if raw, ok := obj["returnImmediately"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &req.ReturnImmediately) != nil {
			return badRequest("returnImmediately must be a boolean")
		}
	}
	if l, _, err := strList(obj, "ack"); err != nil {
		return err
	} else {
		for _, jti := range l {
			if jti == "" || !textclean.ValidParam(jti, maxPollJTI) {
				return badRequest("each ack must be a jti: a non-empty string of at most %d bytes without control characters", maxPollJTI)
			}
		}
		req.Ack = l
	}
	if raw, ok := obj["setErrs"]; ok && string(raw) != "null" {
		var errs map[string]json.RawMessage
		if json.Unmarshal(raw, &errs) != nil || errs == nil {
			return badRequest("setErrs must be an object of jti to {err, description}")
		}
		req.SetErrs = make(map[string]cae.SETError, len(errs))
		for jti, eraw := range errs {
			if jti == "" || !textclean.ValidParam(jti, maxPollJTI) {
				return badRequest("each setErrs key must be a jti: a non-empty string of at most %d bytes without control characters", maxPollJTI)
			}
			var e struct {
				Err         *string `json:"err"`
				Description *string `json:"description"`
			}
			if json.Unmarshal(eraw, &e) != nil || len(eraw) == 0 || eraw[0] != '{' {
				return badRequest("each setErrs value must be an object {err, description} of strings")
			}
			if e.Err == nil || !validErrCode(*e.Err) {
				return badRequest("each setErrs value needs an err: an error code of at most %d bytes (RFC 8935 §2.3)", maxSETErrCode)
			}
			desc := ""
			if e.Description != nil {
				// Free text for operators: cleaned and cut rather than
				// refused, which would hold back the request's acks too.
				desc = textclean.Clean(*e.Description, maxSETErrDesc)
			}
			req.SetErrs[jti] = cae.SETError{Err: *e.Err, Description: desc}
		}
	}
	resp, err := h.svc.Poll(r.Context(), clientID, id, req)
	if err != nil {
		if r.Context().Err() != nil {
			return nil // the receiver went away
		}
		return err
	}
	// Write "sets" by hand to keep queue order (receivers that read the
	// object in order see the oldest first).
	var b strings.Builder
	b.WriteString(`{"sets":{`)
	for i, s := range resp.Sets {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(s.JTI)
		v, _ := json.Marshal(s.SET)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteString(`},"moreAvailable":`)
	if resp.MoreAvailable {
		b.WriteString("true")
	} else {
		b.WriteString("false")
	}
	b.WriteString("}\n")
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(b.String()))
	return nil
}

// validErrCode reports whether c can be an RFC 8935 error code: the
// registry's codes are lower-case words joined by underscores; other
// printable ASCII is allowed for codes registered later, nothing that
// could carry a line break into a log.
func validErrCode(c string) bool {
	if c == "" || len(c) > maxSETErrCode {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] <= ' ' || c[i] > '~' || c[i] == '"' || c[i] == '\\' {
			return false
		}
	}
	return true
}
