package sqlstore

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

const eventCols = `id, type, time, actor, user_id, session_id, client_id, device_id, token_id, ip,
	user_agent, outcome, reason, binding, binding_reason, correlation_id, data`

// eventSelect reads eventCols back; unset ids are stored as NULL (see the
// partial indexes in the migrations).
const eventSelect = `id, type, time, actor, COALESCE(user_id, ''), COALESCE(session_id, ''),
	COALESCE(client_id, ''), device_id, token_id, ip, user_agent, outcome, reason, binding,
	binding_reason, correlation_id, data`

// nullIfEmpty stores "" as NULL.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// AppendEvent stores e and returns its sequence number, which increases
// with every append.
func (s *Store) AppendEvent(ctx context.Context, e *model.Event) (int64, error) {
	seq, err := s.appendEvent(ctx, s.grouped(""), e)
	if err != nil {
		return 0, wrap("append event", err)
	}
	return seq, nil
}

// appendEventSQL inserts eventCols and the record MAC.
const appendEventSQL = `INSERT INTO events (` + eventCols + `, mac)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING seq`

func (s *Store) appendEvent(ctx context.Context, q Querier, e *model.Event) (int64, error) {
	var seq int64
	err := q.QueryRow(ctx, appendEventSQL, s.eventValues(e)...).Scan(&seq)
	return seq, err
}

// eventValues returns the values of eventCols for e, as stored, followed
// by its record MAC (store.SetRecordMAC; NULL without one).
func (s *Store) eventValues(e *model.Event) []any {
	v := make([]any, 18)
	v[0], v[1], v[2], v[3] = e.ID, string(e.Type), micros(e.Time), e.Actor
	v[4], v[5], v[6] = nullIfEmpty(e.UserID), nullIfEmpty(e.SessionID), nullIfEmpty(e.ClientID)
	v[7], v[8], v[9], v[10], v[11] = e.DeviceID, e.TokenID, e.IP, e.UserAgent, e.Outcome
	v[12], v[13], v[14], v[15], v[16] = e.Reason, e.Binding, e.BindingReason, e.CorrelationID, jsonMap(e.Data)
	if mac := s.recordMAC.Load(); mac != nil {
		bp := bodyPool.Get().(*[]byte)
		body := store.AppendEventBody((*bp)[:0], v[:17]...)
		v[17] = (*mac)(body)
		*bp = body
		bodyPool.Put(bp)
	}
	return v
}

func scanEvent(r Row) (*store.StoredEvent, error) {
	var (
		ev        store.StoredEvent
		typ, data string
		t         int64
	)
	e := &ev.Event
	if err := r.Scan(&ev.Seq, &e.ID, &typ, &t, &e.Actor, &e.UserID, &e.SessionID, &e.ClientID, &e.DeviceID,
		&e.TokenID, &e.IP, &e.UserAgent, &e.Outcome, &e.Reason, &e.Binding, &e.BindingReason,
		&e.CorrelationID, &data); err != nil {
		return nil, err
	}
	var err error
	if e.Data, err = unjsonMap(data, "event data"); err != nil {
		return nil, err
	}
	e.Type = model.EventType(typ)
	e.Time = fromMicros(t)
	return &ev, nil
}

// ListEvents returns events matching f, newest (highest Seq) first.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]*store.StoredEvent, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(f.Types) > 0 {
		ph := make([]string, len(f.Types))
		for i, t := range f.Types {
			ph[i] = arg(string(t))
		}
		where = append(where, "type IN ("+strings.Join(ph, ", ")+")")
	}
	if f.UserID != "" {
		where = append(where, "user_id = "+arg(f.UserID))
	}
	if f.SessionID != "" {
		where = append(where, "session_id = "+arg(f.SessionID))
	}
	if f.ClientID != "" {
		where = append(where, "client_id = "+arg(f.ClientID))
	}
	if f.DeviceID != "" {
		where = append(where, "device_id = "+arg(f.DeviceID))
	}
	if f.IP != "" {
		where = append(where, "ip = "+arg(f.IP))
	}
	if f.Outcome != "" {
		where = append(where, "outcome = "+arg(f.Outcome))
	}
	if f.CorrelationID != "" {
		where = append(where, "correlation_id = "+arg(f.CorrelationID))
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= "+arg(micros(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "time < "+arg(micros(f.Until)))
	}
	if f.BeforeSeq > 0 {
		where = append(where, "seq < "+arg(f.BeforeSeq))
	}
	q := `SELECT seq, ` + eventSelect + ` FROM events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq DESC LIMIT ` + arg(int64(limit(f.Limit)))
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "list events", scanEvent)
}

// EventsAfter returns up to limit events with Seq > seq, oldest first.
func (s *Store) EventsAfter(ctx context.Context, seq int64, n int) ([]*store.StoredEvent, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT seq, `+eventSelect+` FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`,
		seq, int64(limit(n)))
	return collect(rs, err, "events after", scanEvent)
}

// CountEvents counts events by bucket, type and outcome in one grouped
// read over the events_time index.
func (s *Store) CountEvents(ctx context.Context, f store.EventCountFilter) ([]store.EventCount, error) {
	if len(f.Types) == 0 || f.Bucket <= 0 || !f.Until.After(f.Since) {
		return nil, errors.New("store: count events: types, a positive bucket and until after since are required")
	}
	since, bucket := micros(f.Since), f.Bucket.Microseconds()
	if bucket <= 0 {
		bucket = 1
	}
	args := []any{since, bucket, micros(f.Until)}
	ph := make([]string, len(f.Types))
	for i, t := range f.Types {
		args = append(args, string(t))
		ph[i] = "$" + strconv.Itoa(len(args))
	}
	q := `SELECT (time - $1) / $2, type, outcome, COUNT(*) FROM events
		WHERE time >= $1 AND time < $3 AND type IN (` + strings.Join(ph, ", ") + `)
		GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "count events", func(r Row) (store.EventCount, error) {
		var (
			c   store.EventCount
			b   int64
			typ string
		)
		if err := r.Scan(&b, &typ, &c.Outcome, &c.Count); err != nil {
			return c, err
		}
		c.Type, c.Start = model.EventType(typ), fromMicros(since+b*bucket)
		return c, nil
	})
}
