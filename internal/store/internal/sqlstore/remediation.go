package sqlstore

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// RemediationIndexPredicate is the WHERE of the partial index
// events_remediation (migration 00029) and a term of the remediation
// look-up, written the same way so that the planners of both backends
// use the index: it holds the few remediation events, not the stream of
// token events every user has.
var RemediationIndexPredicate = remediationIndexPredicate()

func remediationIndexPredicate() string {
	var types []string
	for _, r := range store.RemediationEvents {
		types = append(types, quote(string(r.Type)))
	}
	return "type IN (" + strings.Join(types, ", ") + ")"
}

// remediationBound is the bound of RevokeUserSessionsUnremediated as one
// scalar expression: the earliest remediation of user (a placeholder)
// after activity and, unless now is 1, not after until; else
// otherwise (until, or for the sessions' predicate with now = 1 the
// largest time: every session the statement sees).
func remediationBound(user, activity, until, now, otherwise string) string {
	var terms []string
	for _, r := range store.RemediationEvents {
		t := "type = " + quote(string(r.Type))
		if r.Reasons != nil {
			var rs []string
			for _, c := range r.Reasons {
				rs = append(rs, quote(string(c)))
			}
			t = "(" + t + " AND reason IN (" + strings.Join(rs, ", ") + "))"
		}
		terms = append(terms, t)
	}
	return `COALESCE((SELECT MIN(time) FROM events WHERE user_id = ` + user + ` AND ` + RemediationIndexPredicate +
		` AND (` + strings.Join(terms, " OR ") + `) AND time > ` + activity + ` AND (` + now + ` = 1 OR time <= ` + until + `)), ` + otherwise + `)`
}

// RevokeUnremediatedSQL revokes and reports the bound it applied in one
// statement. The look-up is uncorrelated, so each backend computes it
// once, from the statement's snapshot: a remediation and the sessions
// created after it are seen together or not at all.
var RevokeUnremediatedSQL = `UPDATE sessions SET revoked_at = $2, revoke_cause = $3
	WHERE user_id = $1 AND revoked_at = 0
	AND (created_at <= ` + remediationBound("$1", "$4", "$5", "$7", "CASE WHEN $7 = 1 THEN "+maxMicros+" ELSE $5 END") + ` OR id = $6)
	RETURNING id, ` + remediationBound("$1", "$4", "$5", "$7", "$5")

// remediationBoundSQL reads the bound alone.
var remediationBoundSQL = `SELECT ` + remediationBound("$1", "$2", "$3", "$4", "$3")

// maxMicros is the largest time column value.
const maxMicros = "9223372036854775807"

// quote is an SQL string literal of a constant of the model.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// RevokeUserSessionsUnremediated: see store.Store.
func (s *Store) RevokeUserSessionsUnremediated(ctx context.Context, userID string, revokedAt time.Time, cause string, b *store.RemediationBound) ([]string, error) {
	if revokedAt.IsZero() || b == nil || b.Until.IsZero() {
		return nil, errors.New("store: revoke unremediated sessions: revocation time and bound are required")
	}
	var ids []string
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		var err error
		ids, err = s.revokeUnremediated(ctx, q, userID, revokedAt, cause, b)
		return ids, err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// revokeUnremediated is RevokeUserSessionsUnremediated's write on q (also
// UpdateRisk's, for a response): the ids revoked, ascending, and
// b.Applied set.
func (s *Store) revokeUnremediated(ctx context.Context, q Querier, userID string, revokedAt time.Time, cause string, b *store.RemediationBound) ([]string, error) {
	if revokedAt.IsZero() || b == nil || b.Until.IsZero() {
		return nil, errors.New("store: revoke unremediated sessions: revocation time and bound are required")
	}
	var ids []string
	b.Applied = b.Until
	now := 0
	if b.Now {
		now = 1
	}
	rs, err := q.Query(ctx, RevokeUnremediatedSQL, userID, micros(revokedAt), cause, micros(b.Activity), micros(b.Until), b.Subject, now)
	type row struct {
		id    string
		bound int64
	}
	got, err := collect(rs, err, "revoke unremediated sessions", func(r Row) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.bound)
	})
	if err != nil {
		return nil, err
	}
	for _, x := range got {
		ids = append(ids, x.id)
		b.Applied = fromMicros(x.bound)
	}
	if len(got) == 0 { // nothing revoked: say where the bound was all the same
		var bound int64
		if err := q.QueryRow(ctx, remediationBoundSQL, userID, micros(b.Activity), micros(b.Until), now).Scan(&bound); err != nil {
			return nil, wrap("remediation bound", err)
		}
		b.Applied = fromMicros(bound)
	}
	return deleteSessionTokens(ctx, q, ids, "revoke user session tokens")
}
