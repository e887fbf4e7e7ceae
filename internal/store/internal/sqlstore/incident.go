package sqlstore

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- incidents: correlated detections, timelines ----

const incidentCols = `id, number, title, severity, status, status_reason, assignee, merged_into, techniques,
	detections, first_seen, last_seen, created_at, updated_at, closed_at`

const incidentDetectionCols = `detection_id, incident_id, event_id, type, severity, confidence, technique, user_id,
	session_id, device_id, client_id, ip, detail, source, detected_at, added_at`

// maxCandidates bounds the incidents a correlation looks at.
const maxCandidates = 20

func scanIncident(r Row) (*model.Incident, error) {
	var (
		in                                       model.Incident
		techniques                               string
		first, last, created, updated, closed, n int64
	)
	if err := r.Scan(&in.ID, &in.Number, &in.Title, &in.Severity, &in.Status, &in.StatusReason, &in.Assignee,
		&in.MergedInto, &techniques, &n, &first, &last, &created, &updated, &closed); err != nil {
		return nil, err
	}
	var err error
	if in.Techniques, err = unjsonList(techniques, "incident techniques"); err != nil {
		return nil, err
	}
	in.Detections = int(n)
	in.FirstSeen, in.LastSeen, in.CreatedAt, in.UpdatedAt, in.ClosedAt =
		fromMicros(first), fromMicros(last), fromMicros(created), fromMicros(updated), fromMicros(closed)
	return &in, nil
}

func scanIncidentDetection(r Row) (*model.IncidentDetection, error) {
	var (
		d               model.IncidentDetection
		detected, added int64
	)
	if err := r.Scan(&d.DetectionID, &d.IncidentID, &d.EventID, &d.Type, &d.Severity, &d.Confidence, &d.Technique,
		&d.UserID, &d.SessionID, &d.DeviceID, &d.ClientID, &d.IP, &d.Detail, &d.Source, &detected, &added); err != nil {
		return nil, err
	}
	d.DetectedAt, d.AddedAt = fromMicros(detected), fromMicros(added)
	return &d, nil
}

func scanIncidentEntry(r Row) (*model.IncidentEntry, error) {
	var (
		e    model.IncidentEntry
		at   int64
		data string
	)
	if err := r.Scan(&e.Seq, &e.IncidentID, &at, &e.Kind, &e.Actor, &e.Text, &data); err != nil {
		return nil, err
	}
	var err error
	if e.Data, err = unjsonMap(data, "incident entry data"); err != nil {
		return nil, err
	}
	e.At = fromMicros(at)
	return &e, nil
}

// lockIncidents takes the lock that serialises every change of incidents.
func (s *Store) lockIncidents(ctx context.Context, q Querier) error {
	var next int64
	err := q.QueryRow(ctx, `SELECT next FROM incident_counter WHERE id = 1`+s.d.ForUpdate).Scan(&next)
	return wrap("lock incidents", err)
}

// CorrelateDetection records a detection in the incident fn chooses.
func (s *Store) CorrelateDetection(ctx context.Context, d *model.IncidentDetection, since time.Time,
	fn func(*store.IncidentChange) error) (*store.IncidentChange, error) {
	var out *store.IncidentChange
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		if err := s.lockIncidents(ctx, q); err != nil {
			return nil, err
		}
		var exists int
		err := q.QueryRow(ctx, `SELECT 1 FROM incident_detections WHERE detection_id = $1`, d.DetectionID).Scan(&exists)
		switch {
		case err == nil:
			return nil, alreadyExists("incident detection")
		case !s.d.IsNoRows(err):
			return nil, wrap("look up incident detection", err)
		}
		c := &store.IncidentChange{Detection: d, Incidents: map[string]*model.Incident{}}
		if err := s.loadCandidates(ctx, q, d, since, c); err != nil {
			return nil, err
		}
		before := snapshotIncidents(c.Incidents)
		if err := fn(c); err != nil {
			return nil, err
		}
		ids, err := s.saveIncidentChange(ctx, q, before, c)
		if err != nil {
			return nil, err
		}
		if d.AddedAt.IsZero() {
			d.AddedAt = s.now()
		}
		if _, err := q.Exec(ctx, `INSERT INTO incident_detections (`+incidentDetectionCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			d.DetectionID, d.IncidentID, d.EventID, d.Type, d.Severity, d.Confidence, d.Technique, d.UserID,
			d.SessionID, d.DeviceID, d.ClientID, d.IP, d.Detail, d.Source, micros(d.DetectedAt), micros(d.AddedAt)); err != nil {
			return nil, s.createErr("incident detection", err)
		}
		if err := addEntities(ctx, q, d); err != nil {
			return nil, err
		}
		n, err := q.Exec(ctx, `UPDATE incidents SET detections = detections + 1 WHERE id = $1`, d.IncidentID)
		if err != nil {
			return nil, wrap("count incident detection", err)
		}
		if n == 0 {
			return nil, notFound("incident " + d.IncidentID)
		}
		out = c
		return addID(ids, d.IncidentID), nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// entityKinds are the kinds of incident_entities and how a detection
// names each.
var entityKinds = []struct {
	kind, col string
	of        func(*model.IncidentDetection) string
}{
	{"user", "user_id", func(d *model.IncidentDetection) string { return d.UserID }},
	{"session", "session_id", func(d *model.IncidentDetection) string { return d.SessionID }},
	{"device", "device_id", func(d *model.IncidentDetection) string { return d.DeviceID }},
	{"ip", "ip", func(d *model.IncidentDetection) string { return d.IP }},
}

// loadCandidates loads the incidents d may belong to.
func (s *Store) loadCandidates(ctx context.Context, q Querier, d *model.IncidentDetection, since time.Time, c *store.IncidentChange) error {
	var (
		conds []string
		args  []any
	)
	for _, k := range entityKinds {
		v := k.of(d)
		if v == "" {
			continue
		}
		args = append(args, k.kind, v)
		conds = append(conds, "(kind = $"+strconv.Itoa(len(args)-1)+" AND value = $"+strconv.Itoa(len(args))+")")
	}
	if len(conds) == 0 {
		return nil
	}
	args = append(args, micros(since), maxCandidates)
	ns, nl := strconv.Itoa(len(args)-1), strconv.Itoa(len(args))
	rs, err := q.Query(ctx, `SELECT `+incidentCols+` FROM incidents WHERE id IN (
			SELECT incident_id FROM incident_entities WHERE `+strings.Join(conds, " OR ")+`)
		AND merged_into = '' AND (last_seen >= $`+ns+` OR closed_at >= $`+ns+`)
		ORDER BY last_seen DESC, number DESC LIMIT $`+nl, args...)
	list, err := collect(rs, err, "load incident candidates", scanIncident)
	if err != nil {
		return err
	}
	for _, in := range list {
		c.Incidents[in.ID] = in
		c.Candidates = append(c.Candidates, in.ID)
	}
	return nil
}

// addEntities records the entities d names for its incident.
func addEntities(ctx context.Context, q Querier, d *model.IncidentDetection) error {
	for _, k := range entityKinds {
		if v := k.of(d); v != "" {
			if _, err := q.Exec(ctx, `INSERT INTO incident_entities (kind, value, incident_id) VALUES ($1, $2, $3)
				ON CONFLICT (kind, value, incident_id) DO NOTHING`, k.kind, v, d.IncidentID); err != nil {
				return wrap("record incident entity", err)
			}
		}
	}
	return nil
}

// rebuildEntities recomputes an incident's entities from its detections
// (after detections moved).
func rebuildEntities(ctx context.Context, q Querier, id string) error {
	if _, err := q.Exec(ctx, `DELETE FROM incident_entities WHERE incident_id = $1`, id); err != nil {
		return wrap("rebuild incident entities", err)
	}
	for _, k := range entityKinds {
		if _, err := q.Exec(ctx, `INSERT INTO incident_entities (kind, value, incident_id)
			SELECT DISTINCT $2, `+k.col+`, incident_id FROM incident_detections WHERE incident_id = $1 AND `+k.col+` <> ''
			ON CONFLICT (kind, value, incident_id) DO NOTHING`, id, k.kind); err != nil {
			return wrap("rebuild incident entities", err)
		}
	}
	return nil
}

func snapshotIncidents(m map[string]*model.Incident) map[string]model.Incident {
	out := make(map[string]model.Incident, len(m))
	for id, in := range m {
		cp := *in
		cp.Techniques = append([]string(nil), in.Techniques...)
		out[id] = cp
	}
	return out
}

func sameIncident(a, b model.Incident) bool {
	return a.Title == b.Title && a.Severity == b.Severity && a.Status == b.Status && a.StatusReason == b.StatusReason &&
		a.Assignee == b.Assignee && a.MergedInto == b.MergedInto && jsonList(a.Techniques) == jsonList(b.Techniques) &&
		a.FirstSeen.Equal(b.FirstSeen) && a.LastSeen.Equal(b.LastSeen) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.ClosedAt.Equal(b.ClosedAt)
}

func addID(ids []string, id string) []string {
	key := "incident:" + id
	for _, v := range ids {
		if v == key {
			return ids
		}
	}
	return append(ids, key)
}

// saveIncidentChange writes what fn changed and returns the event ids of
// the incidents it created or changed.
func (s *Store) saveIncidentChange(ctx context.Context, q Querier, before map[string]model.Incident, c *store.IncidentChange) ([]string, error) {
	var ids []string
	keys := make([]string, 0, len(c.Incidents))
	for id := range c.Incidents {
		keys = append(keys, id)
	}
	sort.Strings(keys)
	for _, id := range keys {
		in := c.Incidents[id]
		if was, ok := before[id]; ok && sameIncident(was, *in) {
			continue
		}
		if _, err := q.Exec(ctx, `UPDATE incidents SET title = $2, severity = $3, status = $4, status_reason = $5,
			assignee = $6, merged_into = $7, techniques = $8, first_seen = $9, last_seen = $10, updated_at = $11,
			closed_at = $12 WHERE id = $1`, in.ID, in.Title, in.Severity, in.Status, in.StatusReason, in.Assignee,
			in.MergedInto, jsonList(in.Techniques), micros(in.FirstSeen), micros(in.LastSeen), micros(in.UpdatedAt),
			micros(in.ClosedAt)); err != nil {
			return nil, wrap("update incident", err)
		}
		ids = addID(ids, id)
	}
	for _, in := range c.New {
		if err := q.QueryRow(ctx, `UPDATE incident_counter SET next = next + 1 WHERE id = 1 RETURNING next`).Scan(&in.Number); err != nil {
			return nil, wrap("number incident", err)
		}
		if _, err := q.Exec(ctx, `INSERT INTO incidents (`+incidentCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12, $13, $14)`,
			in.ID, in.Number, in.Title, in.Severity, in.Status, in.StatusReason, in.Assignee, in.MergedInto,
			jsonList(in.Techniques), micros(in.FirstSeen), micros(in.LastSeen), micros(in.CreatedAt),
			micros(in.UpdatedAt), micros(in.ClosedAt)); err != nil {
			return nil, s.createErr("incident", err)
		}
		ids = addID(ids, in.ID)
	}
	touched := map[string]bool{}
	froms := make([]string, 0, len(c.MoveAll))
	for from := range c.MoveAll {
		froms = append(froms, from)
	}
	sort.Strings(froms)
	for _, from := range froms {
		to := c.MoveAll[from]
		if _, err := q.Exec(ctx, `UPDATE incident_detections SET incident_id = $2 WHERE incident_id = $1`, from, to); err != nil {
			return nil, wrap("move incident detections", err)
		}
		touched[from], touched[to] = true, true
	}
	dets := make([]string, 0, len(c.Move))
	for id := range c.Move {
		dets = append(dets, id)
	}
	sort.Strings(dets)
	for _, det := range dets {
		var from string
		err := q.QueryRow(ctx, `SELECT incident_id FROM incident_detections WHERE detection_id = $1`, det).Scan(&from)
		if err != nil {
			return nil, s.getErr("incident detection "+det, err)
		}
		if _, err := q.Exec(ctx, `UPDATE incident_detections SET incident_id = $2 WHERE detection_id = $1`, det, c.Move[det]); err != nil {
			return nil, wrap("move incident detection", err)
		}
		touched[from], touched[c.Move[det]] = true, true
	}
	moved := make([]string, 0, len(touched))
	for id := range touched {
		moved = append(moved, id)
	}
	sort.Strings(moved)
	for _, id := range moved {
		if _, err := q.Exec(ctx, `UPDATE incidents SET detections = (SELECT COUNT(*) FROM incident_detections
			WHERE incident_id = $1) WHERE id = $1`, id); err != nil {
			return nil, wrap("count incident detections", err)
		}
		if err := rebuildEntities(ctx, q, id); err != nil {
			return nil, err
		}
		ids = addID(ids, id)
	}
	for _, e := range c.Entries {
		if e.At.IsZero() {
			e.At = s.now()
		}
		if err := q.QueryRow(ctx, `INSERT INTO incident_timeline (incident_id, at, kind, actor, text, data)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`, e.IncidentID, micros(e.At), e.Kind, e.Actor, e.Text,
			jsonMap(e.Data)).Scan(&e.Seq); err != nil {
			return nil, wrap("append incident timeline", err)
		}
		ids = addID(ids, e.IncidentID)
	}
	return ids, nil
}

// UpdateIncidents changes incidents under the incidents' lock.
func (s *Store) UpdateIncidents(ctx context.Context, ids []string, detections bool,
	fn func(*store.IncidentChange) error) (*store.IncidentChange, error) {
	var out *store.IncidentChange
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		if err := s.lockIncidents(ctx, q); err != nil {
			return nil, err
		}
		c := &store.IncidentChange{Incidents: map[string]*model.Incident{}, Members: map[string][]*model.IncidentDetection{}}
		for _, id := range ids {
			if _, ok := c.Incidents[id]; ok {
				continue
			}
			in, err := scanIncident(q.QueryRow(ctx, `SELECT `+incidentCols+` FROM incidents WHERE id = $1`, id))
			if err != nil {
				return nil, s.getErr("incident "+id, err)
			}
			c.Incidents[id] = in
			if detections {
				rs, err := q.Query(ctx, `SELECT `+incidentDetectionCols+` FROM incident_detections WHERE incident_id = $1
					ORDER BY detected_at, detection_id LIMIT $2`, id, store.MaxIncidentMembers)
				members, err := collect(rs, err, "load incident detections", scanIncidentDetection)
				if err != nil {
					return nil, err
				}
				c.Members[id] = members
			}
		}
		before := snapshotIncidents(c.Incidents)
		if err := fn(c); err != nil {
			return nil, err
		}
		changed, err := s.saveIncidentChange(ctx, q, before, c)
		if err != nil {
			return nil, err
		}
		out = c
		return changed, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetIncident returns one incident.
func (s *Store) GetIncident(ctx context.Context, id string) (*model.Incident, error) {
	in, err := scanIncident(s.db.Read().QueryRow(ctx, `SELECT `+incidentCols+` FROM incidents WHERE id = $1`, id))
	return in, s.getErr("incident", err)
}

// GetIncidentByNumber returns one incident by its number.
func (s *Store) GetIncidentByNumber(ctx context.Context, n int64) (*model.Incident, error) {
	in, err := scanIncident(s.db.Read().QueryRow(ctx, `SELECT `+incidentCols+` FROM incidents WHERE number = $1`, n))
	return in, s.getErr("incident", err)
}

// ListIncidents returns incidents, newest first.
func (s *Store) ListIncidents(ctx context.Context, f store.IncidentFilter) ([]*model.Incident, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	if len(f.Statuses) > 0 {
		ph := placeholders(len(args)+1, len(f.Statuses))
		for _, st := range f.Statuses {
			args = append(args, st)
		}
		where = append(where, "status IN ("+ph+")")
	}
	if f.Severity != "" {
		add("severity = ?", f.Severity)
	}
	if f.Assignee != "" {
		add("assignee = ?", f.Assignee)
	}
	if f.UserID != "" {
		add("id IN (SELECT incident_id FROM incident_entities WHERE kind = 'user' AND value = ?)", f.UserID)
	}
	if f.Before > 0 {
		add("number < ?", f.Before)
	}
	q := `SELECT ` + incidentCols + ` FROM incidents`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, limit(f.Limit))
	q += ` ORDER BY number DESC LIMIT $` + strconv.Itoa(len(args))
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "list incidents", scanIncident)
}

// IncidentDetections returns an incident's detections, oldest first.
func (s *Store) IncidentDetections(ctx context.Context, incidentID string, n int) ([]*model.IncidentDetection, error) {
	if n <= 0 {
		n = defaultLimit
	}
	n = min(n, store.MaxIncidentMembers)
	rs, err := s.db.Read().Query(ctx, `SELECT `+incidentDetectionCols+` FROM incident_detections WHERE incident_id = $1
		ORDER BY detected_at, detection_id LIMIT $2`, incidentID, n)
	return collect(rs, err, "incident detections", scanIncidentDetection)
}

// IncidentTimeline returns an incident's timeline, oldest first.
func (s *Store) IncidentTimeline(ctx context.Context, incidentID string, n int) ([]*model.IncidentEntry, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT seq, incident_id, at, kind, actor, text, data FROM incident_timeline
		WHERE incident_id = $1 ORDER BY seq LIMIT $2`, incidentID, limit(n))
	return collect(rs, err, "incident timeline", scanIncidentEntry)
}

// IncidentOfDetection returns the incident holding a detection.
func (s *Store) IncidentOfDetection(ctx context.Context, detectionID string) (string, error) {
	var id string
	err := s.db.Read().QueryRow(ctx, `SELECT incident_id FROM incident_detections WHERE detection_id = $1`, detectionID).Scan(&id)
	return id, s.getErr("incident detection", err)
}

// PurgeIncidents deletes incidents closed before `before`.
func (s *Store) PurgeIncidents(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.db.InTx(ctx, func(q Querier) error {
		n = 0
		if err := s.lockIncidents(ctx, q); err != nil {
			return err
		}
		old := `SELECT id FROM incidents WHERE status IN ($1, $2) AND closed_at > 0 AND closed_at < $3`
		args := []any{model.IncidentResolved, model.IncidentFalsePositive, micros(before)}
		for _, table := range []string{"incident_detections", "incident_entities", "incident_timeline"} {
			if _, err := q.Exec(ctx, `DELETE FROM `+table+` WHERE incident_id IN (`+old+`)`, args...); err != nil {
				return wrap("purge "+table, err)
			}
		}
		var err error
		n, err = q.Exec(ctx, `DELETE FROM incidents WHERE id IN (`+old+`)`, args...)
		return wrap("purge incidents", err)
	})
	return n, err
}
