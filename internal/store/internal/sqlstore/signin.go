package sqlstore

import (
	"context"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// ---- sign-in lockout ----
//
// A reservation is one statement: the lock check is its WHERE clause and
// the count its SET, so the database serialises concurrent attempts on a
// row (PostgreSQL re-evaluates the WHERE clause on the row a concurrent
// UPDATE committed; SQLite has one writer). Nothing is decided from an
// earlier read.

// lockoutArgs are the values the reservation statements share: $2 now,
// $3 the start of the failure window (a count whose last attempt is at
// or before it starts afresh; -1: no window), $4 MaxFailures, $5 the
// lock's end if this attempt locks. For unknown names also when the
// record stops counting: $6 unlocked (one window after this attempt),
// $7 locked (when the lock ends, or later, so that a lock given back
// leaves a record that still counts for its window).
func lockoutArgs(now time.Time, r store.Lockout, unknown bool) []any {
	windowStart, exp := int64(-1), now.AddDate(100, 0, 0)
	if r.Window > 0 {
		windowStart, exp = micros(now.Add(-r.Window)), now.Add(r.Window)
	}
	until := now.Add(r.LockFor)
	args := []any{micros(now), windowStart, int64(max(r.MaxFailures, 1)), micros(until)}
	if unknown {
		args = append(args, micros(exp), max(micros(until), micros(exp)))
	}
	return args
}

// nextCount is the count after an attempt on a record with columns
// failures, locked_until and failed_at (of table t): a lock that has
// expired or a count out of the window starts afresh.
func nextCount(t, failures string) string {
	return `(CASE WHEN ` + t + `locked_until <> 0 OR ` + t + `failed_at <= $3 THEN 1 ELSE ` + t + failures + ` + 1 END)`
}

func scanReservation(rs Rows, err error, op string) (*store.SignInReservation, bool, error) {
	if err != nil {
		return nil, false, wrap(op, err)
	}
	defer rs.Close()
	if !rs.Next() {
		return nil, false, wrap(op, rs.Err())
	}
	var failures, until int64
	if err := rs.Scan(&failures, &until); err != nil {
		return nil, false, wrap(op, err)
	}
	if err := rs.Close(); err != nil {
		return nil, false, wrap(op, err)
	}
	return &store.SignInReservation{Failures: int(failures), LockedUntil: fromMicros(until), LockedNow: until != 0}, true, nil
}

// ReserveSignIn counts an attempt on a user's account unless it is
// locked. With pending events (user.locked) the statement and their
// append are one transaction: the builder gets the user's id and the
// count (decimal) when this attempt locked the account, nil otherwise, so
// a lock never commits without its record, nor the record without the
// lock.
func (s *Store) ReserveSignIn(ctx context.Context, userID string, now time.Time, r store.Lockout) (*store.SignInReservation, error) {
	next := nextCount("", "failed_logins")
	var res *store.SignInReservation
	var ok bool
	err := s.execPendingIDs(ctx, func(q Querier) ([]string, error) {
		rs, err := q.Query(ctx, `UPDATE users SET failed_logins = `+next+`,
		locked_until = CASE WHEN `+next+` >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) ELSE 0 END,
		failed_at = $2, updated_at = $2
		WHERE id = $1 AND locked_until <= $2
		RETURNING failed_logins, locked_until`, append([]any{userID}, lockoutArgs(now, r, false)...)...)
		res, ok, err = scanReservation(rs, err, "reserve sign-in")
		if err != nil || !ok || !res.LockedNow {
			return nil, err
		}
		return []string{userID, strconv.Itoa(res.Failures)}, nil
	})
	if err != nil || ok {
		return res, err
	}
	var until int64
	if err := s.db.Read().QueryRow(ctx, `SELECT locked_until FROM users WHERE id = $1`, userID).Scan(&until); err != nil {
		return nil, s.getErr("user", err)
	}
	return &store.SignInReservation{LockedUntil: fromMicros(until)}, store.ErrLocked
}

// releaseLock is the lock a reservation may lift: the one it set, or -1
// (no lock has that value).
func releaseLock(r *store.SignInReservation) int64 {
	if r.LockedNow {
		return micros(r.LockedUntil)
	}
	return -1
}

// ReleaseSignIn gives a reservation on a user's account back. With
// pending events (the record of a lock lifted) it reads the lock under
// the row lock in the same transaction, and the builder gets the user's
// id only when this release lifted the lock the reservation set.
func (s *Store) ReleaseSignIn(ctx context.Context, userID string, r *store.SignInReservation) error {
	const release = `UPDATE users SET
		failed_logins = CASE WHEN failed_logins > 0 THEN failed_logins - 1 ELSE 0 END,
		locked_until = CASE WHEN locked_until = $2 THEN 0 ELSE locked_until END
		WHERE id = $1`
	p := store.TakeEvent(ctx)
	if p == nil {
		_, err := s.db.Write().Exec(ctx, release, userID, releaseLock(r))
		return wrap("release sign-in", err)
	}
	return s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		var until int64
		if err := q.QueryRow(ctx, `SELECT locked_until FROM users WHERE id = $1`+s.d.ForUpdate, userID).Scan(&until); s.d.IsNoRows(err) {
			return nil, nil
		} else if err != nil {
			return nil, wrap("release sign-in", err)
		}
		if _, err := q.Exec(ctx, release, userID, releaseLock(r)); err != nil {
			return nil, wrap("release sign-in", err)
		}
		if r.LockedNow && until == releaseLock(r) {
			return []string{userID}, nil
		}
		return nil, nil
	})
}

// ReserveUnknownSignIn counts an attempt on an unknown name unless it is
// locked. A record stops counting (expires_at) one failure window after
// its last attempt, or when its lock ends if that is later.
func (s *Store) ReserveUnknownSignIn(ctx context.Context, key []byte, now time.Time, r store.Lockout) (*store.SignInReservation, error) {
	next := nextCount("signin_failures.", "failures")
	rs, err := s.db.Write().Query(ctx, `INSERT INTO signin_failures (name_hash, failures, locked_until, failed_at, expires_at)
		VALUES ($1, 1, CASE WHEN 1 >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) ELSE 0 END, $2,
			CASE WHEN 1 >= CAST($4 AS BIGINT) THEN CAST($7 AS BIGINT) ELSE CAST($6 AS BIGINT) END)
		ON CONFLICT (name_hash) DO UPDATE SET failures = `+next+`,
			locked_until = CASE WHEN `+next+` >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) ELSE 0 END,
			expires_at = CASE WHEN `+next+` >= CAST($4 AS BIGINT) THEN CAST($7 AS BIGINT) ELSE CAST($6 AS BIGINT) END,
			failed_at = $2
		WHERE signin_failures.locked_until <= $2
		RETURNING failures, locked_until`, append([]any{key}, lockoutArgs(now, r, true)...)...)
	res, ok, err := scanReservation(rs, err, "reserve unknown sign-in")
	if err != nil || ok {
		return res, err
	}
	var until int64
	if err := s.db.Read().QueryRow(ctx, `SELECT locked_until FROM signin_failures WHERE name_hash = $1`, key).Scan(&until); err != nil && !s.d.IsNoRows(err) {
		return nil, wrap("reserve unknown sign-in", err)
	}
	return &store.SignInReservation{LockedUntil: fromMicros(until)}, store.ErrLocked
}

// ReleaseUnknownSignIn gives a reservation on an unknown name back (the
// record's expiry already covers its window without the lock).
func (s *Store) ReleaseUnknownSignIn(ctx context.Context, key []byte, r *store.SignInReservation) error {
	_, err := s.db.Write().Exec(ctx, `UPDATE signin_failures SET
		failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END,
		locked_until = CASE WHEN locked_until = $2 THEN 0 ELSE locked_until END
		WHERE name_hash = $1`, key, releaseLock(r))
	return wrap("release unknown sign-in", err)
}
