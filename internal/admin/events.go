package admin

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/model"
)

// eventsPage is the answer to GET /events. NextBefore, when set, is the
// before value that fetches the next (older) page.
type eventsPage struct {
	Events     []*audit.Record `json:"events"` // documented event JSON (store.StoredEvent.MarshalJSON)
	NextBefore int64           `json:"next_before,omitempty"`
}

// parseEventFilter reads the query of GET /events.
func parseEventFilter(r *http.Request) (audit.Query, error) {
	q := r.URL.Query()
	var f audit.Query
	for _, v := range q["type"] {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if _, ok := model.EventCodes[model.EventType(t)]; !ok {
				return f, invalid("unknown event type %q", t)
			}
			f.Types = append(f.Types, model.EventType(t))
		}
	}
	f.UserID, f.SessionID, f.ClientID = q.Get("user_id"), q.Get("session_id"), q.Get("client_id")
	f.CorrelationID = q.Get("correlation_id")
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, invalid("%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", p.name)
			}
			*p.dst = t
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, invalid("since must be before until")
	}
	var err error
	if f.Limit, err = parseLimit(q); err != nil {
		return f, err
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return f, invalid("before must be a positive event sequence number")
		}
		f.BeforeSeq = n
	}
	return f, nil
}

// GET /events returns matching events newest first. One more event than
// asked for is read to know whether an older page exists.
func (api *API) listEvents(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	f, err := parseEventFilter(r)
	if err != nil {
		return err
	}
	want := f.Limit
	if want < maxLimit {
		f.Limit = want + 1
	}
	evs, err := api.audit.ListEvents(r.Context(), f)
	if err != nil {
		return err
	}
	page := eventsPage{Events: make([]*audit.Record, 0, min(len(evs), want))}
	more := len(evs) > want || (want == maxLimit && len(evs) == maxLimit)
	if len(evs) > want {
		evs = evs[:want]
	}
	for _, e := range evs {
		page.Events = append(page.Events, e)
	}
	if more && len(evs) > 0 {
		page.NextBefore = evs[len(evs)-1].Seq
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
