package cae

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/textclean"
)

// ErrorKind classifies management errors; the HTTP layer maps them to
// statuses.
type ErrorKind int

// Error kinds.
const (
	KindInvalid  ErrorKind = iota + 1 // 400: malformed or unacceptable request
	KindNotFound                      // 404: no such stream for this receiver
	KindConflict                      // 409: too many streams for this receiver
	KindTooMany                       // 429: verification requested too often
)

// Error is a stream management failure. Description is safe to return to
// the receiver.
type Error struct {
	Kind        ErrorKind
	Description string
}

func (e *Error) Error() string { return "cae: " + e.Description }

func invalid(format string, a ...any) error {
	return &Error{Kind: KindInvalid, Description: fmt.Sprintf(format, a...)}
}

var errNoStream = &Error{Kind: KindNotFound, Description: "no stream with this stream_id for this receiver"}

// Limits of receiver-supplied values.
const (
	maxDescription = 1024
	maxURL         = 2048
	maxHeader      = 4096
	maxState       = 1024
	maxReason      = 256
	maxRequested   = 64
)

// Delivery is a stream's delivery configuration as the receiver sends
// it.
type Delivery struct {
	Method      string
	EndpointURL string
	// AuthorizationHeader is the push authorization_header (nil: absent).
	AuthorizationHeader *string
}

// StreamRequest holds the receiver-supplied properties of a create,
// update (PATCH) or replace (PUT) request; nil means absent.
type StreamRequest struct {
	Delivery        *Delivery
	EventsRequested *[]string
	Description     *string
}

// CreateStream creates a stream owned by clientID. Without delivery the
// stream is polled; without events_requested it delivers every supported
// event.
func (s *Service) CreateStream(ctx context.Context, clientID string, req StreamRequest) (*model.SSFStream, error) {
	existing, err := s.o.Store.ListSSFStreams(ctx, clientID)
	if err != nil {
		return nil, fmt.Errorf("cae: list streams: %w", err)
	}
	if len(existing) >= s.o.MaxStreamsPerClient {
		return nil, &Error{Kind: KindConflict, Description: fmt.Sprintf("a receiver may have at most %d streams; update or delete one", s.o.MaxStreamsPerClient)}
	}
	now := s.o.Now()
	st := &model.SSFStream{ID: newStreamID(), ClientID: clientID, Audience: []string{clientID},
		Status: model.StreamEnabled, CreatedAt: now, UpdatedAt: now}
	if err := s.apply(st, req, true); err != nil {
		return nil, err
	}
	ev := streamEvent(model.EventSSFStreamCreated, clientID, st)
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.o.Store.CreateSSFStream(ectx, st); err != nil {
		return nil, fmt.Errorf("cae: create stream: %w", err)
	}
	s.changed()
	s.pusher.claimSoon()
	s.o.Log.InfoContext(ctx, "cae: stream created", "stream_id", st.ID, "client_id", clientID, "method", st.Method,
		"events", len(st.EventsDelivered))
	s.announce(ectx, ev)
	return st, nil
}

// streamEvent builds the record of a receiver's change to its stream st
// (as it is after a create or an update, as it was before a delete): the
// client as actor, reason receiver. It never carries the push
// authorization header, and of the endpoint only the host (a URL's path
// or query may hold a credential).
func streamEvent(typ model.EventType, clientID string, st *model.SSFStream) *model.Event {
	d := map[string]string{
		model.DataSSFStreamID:              st.ID,
		model.DataSSFStreamMethod:          st.Method,
		model.DataSSFStreamEventsDelivered: strings.Join(st.EventsDelivered, ","),
	}
	if h := endpointHost(st); h != "" {
		d[model.DataSSFStreamEndpointHost] = h
	}
	if st.EventsRequested != nil {
		d[model.DataSSFStreamEventsRequested] = strings.Join(st.EventsRequested, ",")
	}
	return &model.Event{Type: typ, Actor: clientID, ClientID: clientID, Reason: "receiver", Data: d}
}

// endpointHost returns the host (and port) of a push stream's endpoint,
// "" for a poll stream.
func endpointHost(st *model.SSFStream) string {
	if st.Method != model.DeliveryPush {
		return ""
	}
	u, err := url.Parse(st.EndpointURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// newStreamID returns 128 random bits in hex (RFC 3986 unreserved).
func newStreamID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// apply sets the receiver-supplied properties of req on st. replace
// (create, PUT) resets absent ones to their defaults; otherwise (PATCH)
// absent ones keep their values.
func (s *Service) apply(st *model.SSFStream, req StreamRequest, replace bool) error {
	switch {
	case req.Delivery != nil:
		d := req.Delivery
		switch d.Method {
		case model.DeliveryPush:
			u, err := s.checkPushURL(d.EndpointURL)
			if err != nil {
				return err
			}
			header := ""
			switch {
			case d.AuthorizationHeader != nil:
				header = *d.AuthorizationHeader
				if err := checkHeader(header); err != nil {
					return err
				}
			case !replace && st.Method == model.DeliveryPush && st.EndpointURL == u && len(st.AuthHeaderEnc) > 0:
				// PATCH to the same endpoint without the header (which is
				// never returned, so a receiver cannot echo it): keep it.
				st.Method = model.DeliveryPush
				return s.applyRest(st, req, replace)
			}
			st.Method, st.EndpointURL, st.AuthHeaderEnc = model.DeliveryPush, u, nil
			if header != "" {
				ct, err := s.sealHeader(st.ID, header)
				if err != nil {
					return err
				}
				st.AuthHeaderEnc = ct
			}
		case model.DeliveryPoll:
			if d.AuthorizationHeader != nil {
				return invalid("authorization_header applies to push delivery only")
			}
			// endpoint_url is transmitter-supplied for poll: a receiver may
			// echo ours back (checked by the HTTP layer), nothing else.
			st.Method, st.EndpointURL, st.AuthHeaderEnc = model.DeliveryPoll, "", nil
		case "":
			return invalid("delivery.method is required")
		default:
			return invalid("delivery method %q is not supported (supported: %s, %s)", truncate(d.Method, 100), model.DeliveryPush, model.DeliveryPoll)
		}
	case replace:
		st.Method, st.EndpointURL, st.AuthHeaderEnc = model.DeliveryPoll, "", nil
	}
	return s.applyRest(st, req, replace)
}

func (s *Service) applyRest(st *model.SSFStream, req StreamRequest, replace bool) error {
	switch {
	case req.EventsRequested != nil:
		r := *req.EventsRequested
		if len(r) == 0 {
			return invalid("events_requested must not be empty")
		}
		if len(r) > maxRequested {
			return invalid("events_requested holds more than %d values", maxRequested)
		}
		var delivered []string
		for _, e := range r {
			if supported(e) && !slices.Contains(delivered, e) {
				delivered = append(delivered, e)
			}
		}
		if len(delivered) == 0 {
			return invalid("none of events_requested is supported; see events_supported")
		}
		st.EventsRequested, st.EventsDelivered = slices.Clone(r), delivered
	case replace:
		st.EventsRequested, st.EventsDelivered = nil, slices.Clone(EventsSupported)
	}
	switch {
	case req.Description != nil:
		st.Description = truncate(*req.Description, maxDescription)
	case replace:
		st.Description = ""
	}
	return nil
}

// checkPushURL accepts an endpoint URL checkURL accepts whose host, when
// an address, the push guard permits.
func (s *Service) checkPushURL(raw string) (string, error) {
	u, err := checkURL(raw)
	if err != nil {
		return "", err
	}
	if err := s.guard.checkHost(hostOf(u)); err != nil {
		return "", invalid("delivery.endpoint_url: %v", err)
	}
	return u, nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// checkURL accepts absolute https URLs, and http only to a loopback
// host (a receiver on the same machine).
func checkURL(raw string) (string, error) {
	if raw == "" {
		return "", invalid("delivery.endpoint_url is required for push delivery")
	}
	if len(raw) > maxURL {
		return "", invalid("delivery.endpoint_url is longer than %d bytes", maxURL)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return "", invalid("delivery.endpoint_url must be an absolute URL")
	}
	if u.User != nil || u.Fragment != "" {
		return "", invalid("delivery.endpoint_url must not have user information or a fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return "", invalid("delivery.endpoint_url must use https (http is allowed for loopback addresses only)")
		}
	default:
		return "", invalid("delivery.endpoint_url must use https")
	}
	return u.String(), nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHeader accepts a header value a receiver wants on pushes: printable
// ASCII, no line breaks (no header injection).
func checkHeader(h string) error {
	if h == "" || len(h) > maxHeader {
		return invalid("delivery.authorization_header must be 1 to %d characters", maxHeader)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c < 0x20 || c > 0x7e {
			return invalid("delivery.authorization_header must be printable ASCII")
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// GetStream returns a stream of clientID (KindNotFound for another
// receiver's stream).
func (s *Service) GetStream(ctx context.Context, clientID, id string) (*model.SSFStream, error) {
	if id == "" {
		return nil, invalid("stream_id is required")
	}
	st, err := s.o.Store.GetSSFStream(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && st.ClientID != clientID) {
		return nil, errNoStream
	}
	if err != nil {
		return nil, fmt.Errorf("cae: get stream: %w", err)
	}
	return st, nil
}

// ListStreams returns clientID's streams.
func (s *Service) ListStreams(ctx context.Context, clientID string) ([]*model.SSFStream, error) {
	l, err := s.o.Store.ListSSFStreams(ctx, clientID)
	if err != nil {
		return nil, fmt.Errorf("cae: list streams: %w", err)
	}
	return l, nil
}

// UpdateStream applies a PATCH (replace false) or PUT (replace true) to a
// stream of clientID. A change is recorded as ssf.stream_updated, built
// from the stream as the update read it under the row lock and committed
// with it: a receiver that drops the events carrying revocations, or
// points its pushes elsewhere, stops CAE at that resource as surely as
// one that deletes its stream.
func (s *Service) UpdateStream(ctx context.Context, clientID, id string, req StreamRequest, replace bool) (*model.SSFStream, error) {
	if _, err := s.GetStream(ctx, clientID, id); err != nil {
		return nil, err
	}
	var (
		before, after model.SSFStream // as the committing run saw them
		header        bool            // it changed the authorization header
		ev            *model.Event
	)
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		ev = updateEvent(clientID, &before, &after, header)
		if ev == nil {
			return nil // no change, nothing to record
		}
		return []*model.Event{ev}
	})
	st, err := s.o.Store.UpdateSSFStream(ectx, id, func(st *model.SSFStream) error {
		if st.ClientID != clientID {
			return errNoStream
		}
		before = *st
		if err := s.apply(st, req, replace); err != nil {
			return err
		}
		st.UpdatedAt = s.o.Now()
		after, header = *st, s.headerChanged(&before, st, req)
		return nil
	})
	if err != nil {
		return nil, s.updateErr(err)
	}
	s.changed()
	s.pusher.claimSoon()
	s.wake(id)
	if ev != nil {
		s.o.Log.InfoContext(ctx, "cae: stream updated", "stream_id", id, "client_id", clientID,
			"changed", ev.Data[model.DataSSFStreamChanged])
		s.announce(ectx, ev)
	}
	return st, nil
}

// headerChanged reports whether an update of before to after changed the
// push authorization header: set, removed, or replaced by another value
// (sealing the same value again gives another ciphertext, so those are
// opened and compared).
func (s *Service) headerChanged(before, after *model.SSFStream, req StreamRequest) bool {
	switch {
	case bytes.Equal(before.AuthHeaderEnc, after.AuthHeaderEnc):
		return false
	case len(before.AuthHeaderEnc) == 0 || len(after.AuthHeaderEnc) == 0:
		return true
	case req.Delivery == nil || req.Delivery.AuthorizationHeader == nil:
		return true // not sealed from this request: cannot happen
	}
	old, err := s.openHeader(before.ID, before.AuthHeaderEnc)
	if err != nil {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(old.Reveal()), []byte(*req.Delivery.AuthorizationHeader)) != 1
}

// updateEvent returns the ssf.stream_updated of an update of before to
// after by clientID, nil when it changed none of the receiver-supplied
// properties.
func updateEvent(clientID string, before, after *model.SSFStream, header bool) *model.Event {
	var changed []string
	if before.Method != after.Method {
		changed = append(changed, "method")
	}
	if before.EndpointURL != after.EndpointURL {
		changed = append(changed, "endpoint_url")
	}
	if header {
		changed = append(changed, "authorization_header")
	}
	if !slices.Equal(before.EventsRequested, after.EventsRequested) {
		changed = append(changed, "events_requested")
	}
	if before.Description != after.Description {
		changed = append(changed, "description")
	}
	if len(changed) == 0 {
		return nil
	}
	ev := streamEvent(model.EventSSFStreamUpdated, clientID, after)
	ev.Data[model.DataSSFStreamChanged] = strings.Join(changed, ",")
	if removed := missing(before.EventsDelivered, after.EventsDelivered); len(removed) > 0 {
		ev.Data[model.DataSSFStreamEventsRemoved] = strings.Join(removed, ",")
	}
	if added := missing(after.EventsDelivered, before.EventsDelivered); len(added) > 0 {
		ev.Data[model.DataSSFStreamEventsAdded] = strings.Join(added, ",")
	}
	if before.Method != after.Method {
		ev.Data[model.DataSSFStreamPreviousMethod] = before.Method
	}
	if h := endpointHost(before); h != "" && before.EndpointURL != after.EndpointURL {
		ev.Data[model.DataSSFStreamPreviousEndpoint] = h
	}
	return ev
}

// missing returns the values of a that b lacks.
func missing(a, b []string) []string {
	var out []string
	for _, v := range a {
		if !slices.Contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

func (s *Service) updateErr(err error) error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, store.ErrNotFound):
		return errNoStream
	}
	return fmt.Errorf("cae: update stream: %w", err)
}

// DeleteStream deletes a stream of clientID and its queue, recorded as
// ssf.stream_deleted (the stream as read just before) committed with it:
// deleting its stream is the surest way for a receiver, or whoever holds
// its credentials, to stop CAE at that resource.
func (s *Service) DeleteStream(ctx context.Context, clientID, id string) error {
	st, err := s.GetStream(ctx, clientID, id)
	if err != nil {
		return err
	}
	ev := streamEvent(model.EventSSFStreamDeleted, clientID, st)
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.o.Store.DeleteSSFStream(ectx, id); err != nil {
		return s.updateErr(err)
	}
	s.changed()
	s.o.Log.InfoContext(ctx, "cae: stream deleted", "stream_id", id, "client_id", clientID)
	s.announce(ectx, ev)
	return nil
}

// Status returns a stream's status and its reason.
func (s *Service) Status(ctx context.Context, clientID, id string) (status, reason string, err error) {
	st, err := s.GetStream(ctx, clientID, id)
	if err != nil {
		return "", "", err
	}
	return st.Status, st.StatusReason, nil
}

// SetStatus changes a stream's status (enabled, paused, disabled) at its
// receiver's request (clientID must own it). Paused streams hold their
// SETs; disabling drops them and queues nothing until enabled again. A
// change to enabled or paused queues a stream-updated SET (a disabled
// stream transmits nothing, not even that). A change is recorded as
// ssf.stream_status_changed with the client as actor, committed with it:
// a receiver that stops listening is what an attacker holding its
// credentials would do to keep stolen tokens working there.
func (s *Service) SetStatus(ctx context.Context, clientID, id, status, reason string) (*model.SSFStream, error) {
	if _, err := checkStatus(status, reason); err != nil {
		return nil, err
	}
	if _, err := s.GetStream(ctx, clientID, id); err != nil {
		return nil, err
	}
	return s.setStatus(ctx, id, status, reason, func(st *model.SSFStream) error {
		if st.ClientID != clientID {
			return errNoStream
		}
		return nil
	}, statusEvent(clientID, "receiver", id, status, reason))
}

// SetStatusAsTransmitter changes a stream's status on the transmitter's
// side: an administrator pauses, disables or enables any receiver's
// stream (SSF 1.0 §8.1.2). The receiver learns of it by the
// stream-updated SET, as with SetStatus; a change is recorded as
// ssf.stream_status_changed with actor, committed with it.
func (s *Service) SetStatusAsTransmitter(ctx context.Context, actor, id, status, reason string) (*model.SSFStream, error) {
	if id == "" {
		return nil, invalid("stream_id is required")
	}
	return s.setStatus(ctx, id, status, reason, func(*model.SSFStream) error { return nil },
		statusEvent(actor, "transmitter", id, status, reason))
}

// statusEvent builds the ssf.stream_status_changed of a status change by
// actor on side (transmitter: an administrator; receiver: the client).
func statusEvent(actor, side, id, status, reason string) func(st *model.SSFStream, prev string) *model.Event {
	return func(st *model.SSFStream, prev string) *model.Event {
		return &model.Event{Type: model.EventSSFStreamStatusChanged, Actor: actor, ClientID: st.ClientID, Reason: side,
			Data: map[string]string{"stream_id": id, "status": status, "previous": prev, "status_reason": reason}}
	}
}

// checkStatus validates a status change.
func checkStatus(status, reason string) (string, error) {
	switch status {
	case model.StreamEnabled, model.StreamPaused, model.StreamDisabled:
	case "":
		return "", invalid("status is required")
	default:
		return "", invalid("status must be enabled, paused or disabled")
	}
	if len(reason) > maxReason {
		return "", invalid("reason is longer than %d bytes", maxReason)
	}
	return status, nil
}

// setStatus stores a status change that allow accepts, queues the
// stream-updated SET and wakes delivery. record (nil: none) builds the
// event of a change from the stream and its previous status, read under
// the row lock: it commits in the transaction of the change, so that
// concurrent changes each record the status they replaced.
func (s *Service) setStatus(ctx context.Context, id, status, reason string, allow func(*model.SSFStream) error,
	record func(st *model.SSFStream, prev string) *model.Event) (*model.SSFStream, error) {
	if _, err := checkStatus(status, reason); err != nil {
		return nil, err
	}
	var (
		prev string
		seen *model.SSFStream // as the committing run changed it
		ev   *model.Event
	)
	ectx := ctx
	if record != nil {
		ectx = s.events.PendingEvents(ctx, func([]string) []*model.Event {
			if ev = nil; prev == status {
				return nil // no change, nothing to record
			}
			ev = record(seen, prev)
			return []*model.Event{ev}
		})
	}
	st, err := s.o.Store.UpdateSSFStream(ectx, id, func(st *model.SSFStream) error {
		if err := allow(st); err != nil {
			return err
		}
		prev, seen = st.Status, st
		st.Status, st.StatusReason, st.UpdatedAt = status, reason, s.o.Now()
		return nil
	})
	if err != nil {
		return nil, s.updateErr(err)
	}
	s.changed()
	if prev != status {
		s.o.Log.InfoContext(ctx, "cae: stream status changed", "stream_id", id, "from", prev, "to", status)
		if status != model.StreamDisabled {
			if err := s.streamEvent(ctx, st, EventStreamUpdated, eventBody{Status: status, Reason: reason}); err != nil {
				return nil, err
			}
		}
		if status == model.StreamEnabled {
			s.pusher.claimSoon()
			s.wake(id)
		}
		if ev != nil {
			s.announce(ectx, ev)
		}
	}
	return st, nil
}

// AddSubject includes a subject in a stream again after RemoveSubject
// (Ward's streams include every subject by default). verified is
// accepted and not used.
func (s *Service) AddSubject(ctx context.Context, clientID, id string, subject json.RawMessage) error {
	c, _, err := parseSubject(subject)
	if err != nil {
		return invalid("subject: %v", err)
	}
	return s.updateExcluded(ctx, clientID, id, model.EventSSFSubjectAdded, subject, c, func(ex []string) ([]string, error) {
		return slices.DeleteFunc(ex, func(x string) bool { return x == c }), nil
	})
}

// RemoveSubject stops events about a subject (and, for a simple subject,
// about complex subjects that have it as a member) on a stream.
func (s *Service) RemoveSubject(ctx context.Context, clientID, id string, subject json.RawMessage) error {
	c, m, err := parseSubject(subject)
	if err != nil {
		return invalid("subject: %v", err)
	}
	if m.simple != "" && m.simple == matcherOf(opaqueSubject(id)).simple {
		return invalid("the stream's own subject cannot be removed")
	}
	return s.updateExcluded(ctx, clientID, id, model.EventSSFSubjectRemoved, subject, c, func(ex []string) ([]string, error) {
		if slices.Contains(ex, c) {
			return ex, nil
		}
		if len(ex) >= maxExcluded {
			return nil, invalid("a stream may exclude at most %d subjects", maxExcluded)
		}
		return append(ex, c), nil
	})
}

// updateExcluded changes a stream's excluded subjects with fn and, when
// the list changed, records typ (a subject removed or added back) about
// subject (canonical form c), committed with the change: a receiver that
// removes a victim stops CAE for that user there.
func (s *Service) updateExcluded(ctx context.Context, clientID, id string, typ model.EventType, subject json.RawMessage, c string,
	fn func([]string) ([]string, error)) error {
	if _, err := s.GetStream(ctx, clientID, id); err != nil {
		return err
	}
	ev := s.subjectEvent(ctx, typ, clientID, id, subject, c)
	changed := false
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		if !changed {
			return nil
		}
		return []*model.Event{ev}
	})
	_, err := s.o.Store.UpdateSSFStream(ectx, id, func(st *model.SSFStream) error {
		if st.ClientID != clientID {
			return errNoStream
		}
		ex, err := fn(slices.Clone(st.Excluded))
		if err != nil {
			return err
		}
		changed = !slices.Equal(ex, st.Excluded)
		st.Excluded, st.UpdatedAt = ex, s.o.Now()
		return nil
	})
	if err != nil {
		return s.updateErr(err)
	}
	s.changed()
	if changed {
		s.o.Log.InfoContext(ctx, "cae: stream subjects changed", "stream_id", id, "client_id", clientID, "event", string(typ))
		s.announce(ectx, ev)
	}
	return nil
}

// announce hands the record of a stream change, already committed with
// it, to the bus's subscribers. A subscriber's failure does not fail the
// request: the change and its record are stored (the durable consumers
// and exporters read it from the events table), and an error would make
// the receiver retry a change that was made (a second stream).
func (s *Service) announce(ctx context.Context, ev *model.Event) {
	if err := s.events.Emit(ctx, ev); err != nil {
		s.o.Log.WarnContext(ctx, "cae: stream change recorded, not all subscribers got it", "type", string(ev.Type), "event_id", ev.ID, "err", err)
	}
}

// subjectEvent builds the record of a subject removed or added back: its
// format, a digest of its canonical form c (never the identifier: an
// e-mail address or a phone number), and the Ward user it names, if any
// (an iss_sub of Ward's issuer, or the user member of a complex subject,
// that is a user).
func (s *Service) subjectEvent(ctx context.Context, typ model.EventType, clientID, id string, subject json.RawMessage, c string) *model.Event {
	var sub struct {
		Format string `json:"format"`
		Iss    string `json:"iss"`
		Sub    string `json:"sub"`
		User   *struct {
			Format string `json:"format"`
			Iss    string `json:"iss"`
			Sub    string `json:"sub"`
		} `json:"user"`
	}
	_ = json.Unmarshal(subject, &sub) // parsed and checked before
	sum := sha256.Sum256([]byte(c))
	ev := &model.Event{Type: typ, Actor: clientID, ClientID: clientID, Reason: "receiver", Data: map[string]string{
		model.DataSSFStreamID:      id,
		model.DataSSFSubjectFormat: textclean.Clean(sub.Format, 32),
		model.DataSSFSubjectDigest: hex.EncodeToString(sum[:16]),
	}}
	format, iss, userID := sub.Format, sub.Iss, sub.Sub
	if sub.Format == FormatComplex && sub.User != nil {
		format, iss, userID = sub.User.Format, sub.User.Iss, sub.User.Sub
	}
	if format == "iss_sub" && iss == s.issuer && userID != "" {
		if _, err := s.o.Store.GetUser(ctx, userID); err == nil {
			ev.UserID = userID
		}
	}
	return ev
}

// Verify queues a verification SET carrying state on a stream (SSF 1.0
// §8.1.4.2). Requests closer together than MinVerificationInterval get
// KindTooMany.
func (s *Service) Verify(ctx context.Context, clientID, id, state string) error {
	if len(state) > maxState {
		return invalid("state is longer than %d bytes", maxState)
	}
	st, err := s.GetStream(ctx, clientID, id)
	if err != nil {
		return err
	}
	now := s.o.Now()
	s.vmu.Lock()
	last, ok := s.verified[id]
	if ok && now.Sub(last) < s.o.MinVerificationInterval {
		s.vmu.Unlock()
		return &Error{Kind: KindTooMany, Description: fmt.Sprintf("verification requested less than %s ago (min_verification_interval)", s.o.MinVerificationInterval)}
	}
	s.verified[id] = now
	if len(s.verified) > 10000 {
		for k, t := range s.verified {
			if now.Sub(t) >= s.o.MinVerificationInterval {
				delete(s.verified, k)
			}
		}
	}
	s.vmu.Unlock()
	if st.Status == model.StreamDisabled {
		return nil // a disabled stream transmits nothing
	}
	return s.streamEvent(ctx, st, EventVerification, eventBody{State: state})
}

// MinVerificationInterval returns the stream's min_verification_interval.
func (s *Service) MinVerificationInterval() int { return int(s.o.MinVerificationInterval.Seconds()) }

// QueueCounts returns how many SETs a stream of clientID has queued and
// how many its receiver refused.
func (s *Service) QueueCounts(ctx context.Context, clientID, id string) (store.SETCounts, error) {
	if _, err := s.GetStream(ctx, clientID, id); err != nil {
		return store.SETCounts{}, err
	}
	return s.o.Store.CountSETs(ctx, id)
}

// OutboxDepth returns the SETs queued in the outbox (not yet delivered or
// acknowledged) by delivery method (model.DeliveryPush, DeliveryPoll),
// for monitoring: one count per stream.
func (s *Service) OutboxDepth(ctx context.Context) (map[string]int, error) {
	all, err := s.o.Store.ListSSFStreams(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("cae: list streams: %w", err)
	}
	out := map[string]int{model.DeliveryPush: 0, model.DeliveryPoll: 0}
	for _, st := range all {
		c, err := s.o.Store.CountSETs(ctx, st.ID)
		if err != nil {
			return nil, fmt.Errorf("cae: count SETs: %w", err)
		}
		out[st.Method] += c.Queued
	}
	return out, nil
}
