package sqlstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- risk: detections, session levels, history ----

const detectionCols = `id, type, user_id, session_id, client_id, device_id, ip, severity, confidence,
	technique, evidence, detail, source, event_id, detected_at, expires_at, state, state_reason,
	state_actor, state_at, handled`

func scanDetection(r Row) (*model.RiskDetection, error) {
	var (
		d                          model.RiskDetection
		evidence                   string
		detected, expires, stateAt int64
	)
	if err := r.Scan(&d.ID, &d.Type, &d.UserID, &d.SessionID, &d.ClientID, &d.DeviceID, &d.IP, &d.Severity,
		&d.Confidence, &d.Technique, &evidence, &d.Detail, &d.Source, &d.EventID, &detected, &expires,
		&d.State, &d.StateReason, &d.StateActor, &stateAt, &d.Handled); err != nil {
		return nil, err
	}
	var err error
	if d.Evidence, err = unjsonList(evidence, "detection evidence"); err != nil {
		return nil, err
	}
	d.DetectedAt, d.ExpiresAt, d.StateAt = fromMicros(detected), fromMicros(expires), fromMicros(stateAt)
	return &d, nil
}

func scanSessionRisk(r Row) (*model.SessionRisk, error) {
	var (
		sr      model.SessionRisk
		updated int64
	)
	if err := r.Scan(&sr.SessionID, &sr.UserID, &sr.Level, &updated); err != nil {
		return nil, err
	}
	sr.UpdatedAt = fromMicros(updated)
	return &sr, nil
}

// UpdateRisk changes one user's risk under the lock of the user's row.
func (s *Store) UpdateRisk(ctx context.Context, userID string, add *model.RiskDetection, fn func(*store.RiskState) error) (*store.RiskState, error) {
	var out *store.RiskState
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		var level string
		var levelAt int64
		// The lock that serialises every change of this user's risk.
		err := q.QueryRow(ctx, `SELECT risk_level, risk_updated_at FROM users WHERE id = $1`+s.d.ForUpdate, userID).
			Scan(&level, &levelAt)
		if err != nil {
			return nil, s.getErr("user", err)
		}
		if add != nil {
			n, err := q.Exec(ctx, `INSERT INTO risk_detections (`+detectionCols+`)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
				ON CONFLICT (id) DO NOTHING`, detectionArgs(add)...)
			if err != nil {
				return nil, wrap("insert risk detection", err)
			}
			if n == 0 {
				return nil, alreadyExists("risk detection")
			}
		}
		st, err := s.loadRisk(ctx, q, userID, level, levelAt)
		if err != nil {
			return nil, err
		}
		if add != nil {
			for _, d := range st.Active {
				if d.ID == add.ID {
					st.Added = d
				}
			}
		}
		before := snapshotRisk(st)
		if err := fn(st); err != nil {
			return nil, err
		}
		ids, err := s.saveRisk(ctx, q, before, st)
		if err != nil {
			return nil, err
		}
		if r := st.Revoke; r != nil {
			// The response, under the same lock and in the same
			// commit as the level that calls for it.
			r.Revoked = nil
			if r.At.IsZero() {
				return nil, errors.New("store: update risk: a revocation needs its time")
			}
			if r.Bound != nil {
				r.Revoked, err = s.revokeUnremediated(ctx, q, userID, r.At, r.Cause, r.Bound)
			} else {
				r.Revoked, err = s.revokeUser(ctx, q, userID, r.At, r.Cause)
			}
			if err != nil {
				return nil, err
			}
			for _, id := range r.Revoked {
				ids = append(ids, "revoked:"+id)
			}
		}
		out = st
		return ids, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func detectionArgs(d *model.RiskDetection) []any {
	return []any{d.ID, d.Type, d.UserID, d.SessionID, d.ClientID, d.DeviceID, d.IP, d.Severity, d.Confidence,
		d.Technique, jsonList(d.Evidence), d.Detail, d.Source, d.EventID, micros(d.DetectedAt), micros(d.ExpiresAt),
		d.State, d.StateReason, d.StateActor, micros(d.StateAt), d.Handled}
}

func (s *Store) loadRisk(ctx context.Context, q Querier, userID, level string, levelAt int64) (*store.RiskState, error) {
	if level == "" {
		level = model.RiskNone
	}
	st := &store.RiskState{UserID: userID, UserLevel: level, UserLevelAt: fromMicros(levelAt),
		Sessions: map[string]*model.SessionRisk{}}
	rs, err := q.Query(ctx, `SELECT `+detectionCols+` FROM risk_detections
		WHERE user_id = $1 AND state = $2 ORDER BY detected_at DESC, id DESC LIMIT $3`,
		userID, model.DetectionActive, store.MaxActiveDetections)
	active, err := collect(rs, err, "load risk detections", scanDetection)
	if err != nil {
		return nil, err
	}
	for i := len(active) - 1; i >= 0; i-- { // oldest first
		st.Active = append(st.Active, active[i])
	}
	rs, err = q.Query(ctx, `SELECT session_id, user_id, level, updated_at FROM session_risk WHERE user_id = $1`, userID)
	srs, err := collect(rs, err, "load session risk", scanSessionRisk)
	if err != nil {
		return nil, err
	}
	for _, sr := range srs {
		st.Sessions[sr.SessionID] = sr
	}
	return st, nil
}

// riskSnapshot is what UpdateRisk loaded, to find what fn changed.
type riskSnapshot struct {
	level    string
	sessions map[string]string
	active   map[string]model.RiskDetection
}

func snapshotRisk(st *store.RiskState) riskSnapshot {
	b := riskSnapshot{level: st.UserLevel, sessions: map[string]string{}, active: map[string]model.RiskDetection{}}
	for id, sr := range st.Sessions {
		b.sessions[id] = sr.Level
	}
	for _, d := range st.Active {
		b.active[d.ID] = *d
	}
	return b
}

// saveRisk writes what fn changed and returns the ids of the changed
// levels ("user:ID", "session:ID").
func (s *Store) saveRisk(ctx context.Context, q Querier, before riskSnapshot, st *store.RiskState) ([]string, error) {
	at := st.Cause.At
	if at.IsZero() {
		at = s.now()
	}
	for _, d := range st.Active {
		was, ok := before.active[d.ID]
		if !ok || (was.State == d.State && was.StateReason == d.StateReason && was.StateActor == d.StateActor &&
			was.StateAt.Equal(d.StateAt) && was.Handled == d.Handled) {
			continue
		}
		if _, err := q.Exec(ctx, `UPDATE risk_detections SET state = $2, state_reason = $3, state_actor = $4,
			state_at = $5, handled = $6 WHERE id = $1`, d.ID, d.State, d.StateReason, d.StateActor, micros(d.StateAt), d.Handled); err != nil {
			return nil, wrap("update risk detection", err)
		}
	}
	var ids []string
	history := func(subject, id, level, prev string) error {
		_, err := q.Exec(ctx, `INSERT INTO risk_history (subject, subject_id, user_id, level, previous, reason, actor, detection_id, at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, subject, id, st.UserID, level, prev,
			st.Cause.Reason, st.Cause.Actor, st.Cause.DetectionID, micros(at))
		return wrap("record risk history", err)
	}
	if st.UserLevel == "" {
		st.UserLevel = model.RiskNone
	}
	if st.UserLevel != before.level {
		stored := st.UserLevel
		if stored == model.RiskNone {
			stored = "" // as identity has always stored none
		}
		if _, err := q.Exec(ctx, `UPDATE users SET risk_level = $2, risk_updated_at = $3 WHERE id = $1`,
			st.UserID, stored, micros(at)); err != nil {
			return nil, wrap("update user risk", err)
		}
		st.UserLevelAt = at
		if err := history(model.RiskSubjectUser, st.UserID, st.UserLevel, before.level); err != nil {
			return nil, err
		}
		ids = append(ids, "user:"+st.UserID)
	}
	for id, sr := range st.Sessions {
		if sr.Level == "" {
			sr.Level = model.RiskNone
		}
		prev, ok := before.sessions[id]
		if !ok {
			prev = model.RiskNone
		}
		if sr.Level == prev {
			continue
		}
		sr.SessionID, sr.UserID, sr.UpdatedAt = id, st.UserID, at
		if _, err := q.Exec(ctx, `INSERT INTO session_risk (session_id, user_id, level, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (session_id) DO UPDATE SET user_id = excluded.user_id, level = excluded.level, updated_at = excluded.updated_at`,
			id, st.UserID, sr.Level, micros(at)); err != nil {
			return nil, wrap("update session risk", err)
		}
		if err := history(model.RiskSubjectSession, id, sr.Level, prev); err != nil {
			return nil, err
		}
		ids = append(ids, "session:"+id)
	}
	return ids, nil
}

// GetRiskDetection returns one detection.
func (s *Store) GetRiskDetection(ctx context.Context, id string) (*model.RiskDetection, error) {
	d, err := scanDetection(s.db.Read().QueryRow(ctx, `SELECT `+detectionCols+` FROM risk_detections WHERE id = $1`, id))
	return d, s.getErr("risk detection", err)
}

// ListRiskDetections returns detections, newest first.
func (s *Store) ListRiskDetections(ctx context.Context, f store.RiskDetectionFilter) ([]*model.RiskDetection, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1))
	}
	if f.UserID != "" {
		add("user_id = ?", f.UserID)
	}
	if f.SessionID != "" {
		add("session_id = ?", f.SessionID)
	}
	if f.ActiveOnly {
		add("state = ?", model.DetectionActive)
	}
	q := `SELECT ` + detectionCols + ` FROM risk_detections`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, limit(f.Limit))
	q += ` ORDER BY detected_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "list risk detections", scanDetection)
}

// GetSessionRisk returns a session's stored risk.
func (s *Store) GetSessionRisk(ctx context.Context, sessionID string) (*model.SessionRisk, error) {
	sr, err := scanSessionRisk(s.db.Lookup().QueryRow(ctx,
		`SELECT session_id, user_id, level, updated_at FROM session_risk WHERE session_id = $1`, sessionID))
	return sr, s.getErr("session risk", err)
}

// riskLevels returns f's levels (default low, medium, high) as query
// arguments from $1, with their placeholders.
func riskLevels(f store.RiskLevelFilter) ([]any, string) {
	levels := f.Levels
	if len(levels) == 0 {
		levels = []string{model.RiskLow, model.RiskMedium, model.RiskHigh}
	}
	args := make([]any, len(levels))
	for i, l := range levels {
		args[i] = l
	}
	return args, placeholders(1, len(levels))
}

// riskOrder sorts highest level first.
const riskOrder = `CASE level WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END`

// ListRiskyUsers returns the users at one of f's levels.
func (s *Store) ListRiskyUsers(ctx context.Context, f store.RiskLevelFilter) ([]*model.User, error) {
	args, ph := riskLevels(f)
	args = append(args, limit(f.Limit))
	order := strings.ReplaceAll(riskOrder, "level", "risk_level")
	rs, err := s.db.Read().Query(ctx, `SELECT `+userCols+` FROM users WHERE risk_level IN (`+ph+`)
		ORDER BY `+order+` DESC, risk_updated_at DESC, id LIMIT $`+strconv.Itoa(len(args)), args...)
	return collect(rs, err, "list risky users", scanUser)
}

// ListRiskySessions returns the sessions at one of f's levels.
func (s *Store) ListRiskySessions(ctx context.Context, f store.RiskLevelFilter) ([]*model.SessionRisk, error) {
	args, ph := riskLevels(f)
	args = append(args, limit(f.Limit))
	rs, err := s.db.Read().Query(ctx, `SELECT session_id, user_id, level, updated_at FROM session_risk WHERE level IN (`+ph+`)
		ORDER BY `+riskOrder+` DESC, updated_at DESC, session_id LIMIT $`+strconv.Itoa(len(args)), args...)
	return collect(rs, err, "list risky sessions", scanSessionRisk)
}

// RiskHistory returns level changes, newest first.
func (s *Store) RiskHistory(ctx context.Context, userID, sessionID string, n int) ([]*model.RiskChange, error) {
	q := `SELECT seq, subject, subject_id, user_id, level, previous, reason, actor, detection_id, at FROM risk_history WHERE user_id = $1`
	args := []any{userID}
	if sessionID != "" {
		q += ` AND subject = $2 AND subject_id = $3`
		args = append(args, model.RiskSubjectSession, sessionID)
	}
	args = append(args, limit(n))
	q += ` ORDER BY seq DESC LIMIT $` + strconv.Itoa(len(args))
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "risk history", func(r Row) (*model.RiskChange, error) {
		var (
			c  model.RiskChange
			at int64
		)
		if err := r.Scan(&c.Seq, &c.Subject, &c.SubjectID, &c.UserID, &c.Level, &c.Previous, &c.Reason, &c.Actor,
			&c.DetectionID, &at); err != nil {
			return nil, err
		}
		c.At = fromMicros(at)
		return &c, nil
	})
}

// RiskExpiries returns users with an active detection past its expiry.
func (s *Store) RiskExpiries(ctx context.Context, now time.Time, n int) ([]string, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT DISTINCT user_id FROM risk_detections
		WHERE state = $1 AND expires_at > 0 AND expires_at <= $2 ORDER BY user_id LIMIT $3`,
		model.DetectionActive, micros(now), limit(n))
	return collect(rs, err, "risk expiries", func(r Row) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
}

// PurgeRisk deletes what no longer belongs to anything, and old inactive
// records.
func (s *Store) PurgeRisk(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM session_risk WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.id = session_risk.session_id)`, nil},
		{`DELETE FROM risk_detections WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = risk_detections.user_id)`, nil},
		{`DELETE FROM risk_history WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = risk_history.user_id)`, nil},
		{`DELETE FROM risk_detections WHERE state <> $1 AND detected_at < $2`, []any{model.DetectionActive, micros(before)}},
		{`DELETE FROM risk_history WHERE at < $1`, []any{micros(before)}},
	} {
		n, err := s.db.Write().Exec(ctx, q.sql, q.args...)
		if err != nil {
			return total, wrap("purge risk", err)
		}
		total += n
	}
	return total, nil
}
