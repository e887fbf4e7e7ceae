package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- sessions ----

const sessionCols = `id, user_id, auth_time, amr, acr, ip, user_agent, created_at, last_seen,
	expires_at, idle_timeout, revoked_at, revoke_cause, dbsc_key_jkt, dbsc_key`

// sessionRow receives a sessions row (sessionCols).
type sessionRow struct {
	se                                                  model.Session
	amr, dbscKey                                        string
	authTime, created, lastSeen, expires, idle, revoked int64
}

func (x *sessionRow) dest() []any {
	se := &x.se
	return []any{&se.ID, &se.UserID, &x.authTime, &x.amr, &se.ACR, &se.IP, &se.UserAgent, &x.created,
		&x.lastSeen, &x.expires, &x.idle, &x.revoked, &se.RevokeCause, &se.DBSCKeyJKT, &x.dbscKey}
}

func (x *sessionRow) session() (*model.Session, error) {
	se := &x.se
	var err error
	if se.AMR, err = unjsonList(x.amr, "session amr"); err != nil {
		return nil, err
	}
	se.AuthTime = fromMicros(x.authTime)
	se.CreatedAt = fromMicros(x.created)
	se.LastSeen = fromMicros(x.lastSeen)
	se.ExpiresAt = fromMicros(x.expires)
	se.IdleTimeout = time.Duration(x.idle)
	se.RevokedAt = fromMicros(x.revoked)
	se.DBSCKey = unrawJSON(x.dbscKey)
	return se, nil
}

func scanSession(r Row) (*model.Session, error) {
	var x sessionRow
	if err := r.Scan(x.dest()...); err != nil {
		return nil, err
	}
	return x.session()
}

// CreateSession stores a new session, with ctx's pending events
// (store.WithEvent: the sign-in's record) in the same transaction.
func (s *Store) CreateSession(ctx context.Context, se *model.Session) error {
	return s.execEvent(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO sessions (`+sessionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			se.ID, se.UserID, micros(se.AuthTime), jsonList(se.AMR), se.ACR, se.IP, se.UserAgent,
			micros(se.CreatedAt), micros(se.LastSeen), micros(se.ExpiresAt), int64(se.IdleTimeout),
			micros(se.RevokedAt), se.RevokeCause, se.DBSCKeyJKT, rawJSON(se.DBSCKey))
		return s.createErr("session", err)
	})
}

// CreateSessionAtRisk: see store.Store. One statement: the insert takes
// its row from the user's row, and only while that row still has the
// risk the decision read. On PostgreSQL the row is locked FOR SHARE: a
// risk change holding it (UpdateRisk's FOR UPDATE) makes the insert wait
// and then re-check the row as committed, so it inserts nothing; one
// that comes after waits for this commit and sees the session. SQLite
// serialises writers. The common path costs no extra round trip.
func (s *Store) CreateSessionAtRisk(ctx context.Context, se *model.Session, seen store.RiskSeen) error {
	return s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `INSERT INTO sessions (`+sessionCols+`)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15
		FROM users WHERE id = $2 AND risk_level = $16 AND risk_updated_at = $17`+s.d.ForShare,
			se.ID, se.UserID, micros(se.AuthTime), jsonList(se.AMR), se.ACR, se.IP, se.UserAgent,
			micros(se.CreatedAt), micros(se.LastSeen), micros(se.ExpiresAt), int64(se.IdleTimeout),
			micros(se.RevokedAt), se.RevokeCause, se.DBSCKeyJKT, rawJSON(se.DBSCKey),
			seen.Level, micros(seen.UpdatedAt))
		if err != nil {
			return s.createErr("session", err)
		}
		if n == 1 {
			return nil
		}
		// Why not (only on refusal): the user is gone, or its risk moved.
		var one int
		if err := q.QueryRow(ctx, `SELECT 1 FROM users WHERE id = $1`, se.UserID).Scan(&one); err != nil {
			return s.getErr("user", err)
		}
		return fmt.Errorf("create session: %w", store.ErrRiskChanged)
	})
}

// GetSession returns a session by id.
func (s *Store) GetSession(ctx context.Context, id string) (*model.Session, error) {
	se, err := scanSession(s.db.Lookup().QueryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = $1`, id))
	return se, s.getErr("session", err)
}

// ListSessions returns sessions matching f, newest first. ActiveOnly
// selects unrevoked sessions whose ExpiresAt is after f.Now; it does not
// apply the idle timeout (Session.Active does).
func (s *Store) ListSessions(ctx context.Context, f store.SessionFilter) ([]*model.Session, error) {
	var (
		where []string
		args  []any
	)
	if f.UserID != "" {
		args = append(args, f.UserID)
		where = append(where, "user_id = $"+strconv.Itoa(len(args)))
	}
	if f.ActiveOnly {
		if f.Now.IsZero() {
			return nil, errors.New("store: list sessions: SessionFilter.Now is required with ActiveOnly")
		}
		args = append(args, micros(f.Now))
		where = append(where, "revoked_at = 0 AND expires_at > $"+strconv.Itoa(len(args)))
	}
	q := `SELECT ` + sessionCols + ` FROM sessions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	n := f.Limit
	if n <= 0 {
		n = defaultLimit
	}
	args = append(args, int64(n))
	q += ` ORDER BY created_at DESC, id LIMIT $` + strconv.Itoa(len(args))
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "list sessions", scanSession)
}

// TouchSession sets LastSeen of an unrevoked session. A missing or
// revoked session is ErrNotFound (nothing changes).
func (s *Store) TouchSession(ctx context.Context, id string, at time.Time) error {
	n, err := s.db.Write().Exec(ctx, `UPDATE sessions SET last_seen = $2 WHERE id = $1 AND revoked_at = 0`,
		id, micros(at))
	if err != nil {
		return wrap("touch session", err)
	}
	if n == 0 {
		return notFound("active session")
	}
	return nil
}

// errNotBound: BindSessionKey's statement bound nothing (the session is
// gone, revoked or bound already); its pending events are not appended.
var errNotBound = errors.New("store: bind session key: not bound")

// BindSessionKey records the DBSC key of an unrevoked, unbound session in
// one conditional statement, so two registrations cannot both win, with
// ctx's pending events (session.dbsc_registered) in its transaction: only
// the registration that binds records them.
func (s *Store) BindSessionKey(ctx context.Context, id, jkt string, jwk json.RawMessage) error {
	if jkt == "" || len(jwk) == 0 {
		return errors.New("store: bind session key: thumbprint and key are required")
	}
	err := s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `UPDATE sessions SET dbsc_key_jkt = $2, dbsc_key = $3
		WHERE id = $1 AND revoked_at = 0 AND dbsc_key_jkt = ''`, id, jkt, rawJSON(jwk))
		if err != nil {
			return wrap("bind session key", err)
		}
		if n != 1 {
			return errNotBound
		}
		return nil
	})
	if !errors.Is(err, errNotBound) {
		return err
	}
	se, err := s.GetSession(ctx, id)
	if err != nil {
		return err
	}
	if !se.RevokedAt.IsZero() {
		return notFound("active session")
	}
	return alreadyExists("session key")
}

// RevokeSession marks the session revoked and deletes its refresh
// tokens, together with ctx's pending events (store.WithEvent), and
// reports whether this call revoked it: a session revoked before keeps its
// first revocation time and cause and reports false (its pending events'
// builder gets no ids), so that of concurrent revocations exactly one
// reports true. A missing session is ErrNotFound.
func (s *Store) RevokeSession(ctx context.Context, id string, at time.Time, cause string) (bool, error) {
	if at.IsZero() {
		return false, errors.New("store: revoke session: revocation time is required")
	}
	var revoked bool
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		revoked = false
		n, err := q.Exec(ctx, `UPDATE sessions SET revoked_at = $2, revoke_cause = $3 WHERE id = $1 AND revoked_at = 0`,
			id, micros(at), cause)
		if err != nil {
			return nil, wrap("revoke session", err)
		}
		if n == 0 {
			var one int
			if err := q.QueryRow(ctx, `SELECT 1 FROM sessions WHERE id = $1`, id).Scan(&one); err != nil {
				return nil, s.getErr("session", err)
			}
		}
		// Also for a session revoked before: a refresh token written
		// after its revocation must not survive either.
		if _, err := q.Exec(ctx, `DELETE FROM refresh_tokens WHERE session_id = $1`, id); err != nil {
			return nil, wrap("revoke session tokens", err)
		}
		if n == 0 {
			return nil, nil
		}
		revoked = true
		return []string{id}, nil
	})
	if err != nil {
		return false, err
	}
	return revoked, nil
}

// RevokeUserSessions revokes every unrevoked session of the user
// (expired ones included, so none of their tokens survive), deletes their refresh
// tokens and returns the revoked ids in ascending order; ctx's pending
// event (store.WithEvent) commits with them and its completion function
// gets the ids.
func (s *Store) RevokeUserSessions(ctx context.Context, userID string, at time.Time, cause string) ([]string, error) {
	if at.IsZero() {
		return nil, errors.New("store: revoke user sessions: revocation time is required")
	}
	var ids []string
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		var err error
		ids, err = s.revokeUser(ctx, q, userID, at, cause)
		return ids, err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// revokeUser is RevokeUserSessions's write on q (also UpdateRisk's, for a
// confirmed compromise): the ids revoked, ascending.
func (s *Store) revokeUser(ctx context.Context, q Querier, userID string, at time.Time, cause string) ([]string, error) {
	rs, err := q.Query(ctx, `UPDATE sessions SET revoked_at = $2, revoke_cause = $3
		WHERE user_id = $1 AND revoked_at = 0 RETURNING id`, userID, micros(at), cause)
	ids, err := collect(rs, err, "revoke user sessions", func(r Row) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
	if err != nil {
		return nil, err
	}
	return deleteSessionTokens(ctx, q, ids, "revoke user session tokens")
}

// deleteSessionTokens deletes the refresh tokens of the sessions ids (just
// revoked) and returns ids in ascending order: the last step of every
// revocation of several sessions (user, device, risk response).
func deleteSessionTokens(ctx context.Context, q Querier, ids []string, what string) ([]string, error) {
	for _, id := range ids {
		if _, err := q.Exec(ctx, `DELETE FROM refresh_tokens WHERE session_id = $1`, id); err != nil {
			return nil, wrap(what, err)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// ---- refresh tokens ----

const refreshCols = `hash, session_id, client_id, user_id, scope, jkt, auth_time, amr, acr,
	created_at, expires_at, rotated_at, device_id, generation`

// refreshSelect reads refreshCols back; an unset device_id is stored as
// NULL (see the partial index refresh_tokens_device).
const refreshSelect = `hash, session_id, client_id, user_id, scope, jkt, auth_time, amr, acr,
	created_at, expires_at, rotated_at, COALESCE(device_id, ''), generation`

// refreshRow receives a refresh_tokens row (refreshSelect).
type refreshRow struct {
	t                                   model.RefreshToken
	amr                                 string
	authTime, created, expires, rotated int64
	generation                          int64
}

func (x *refreshRow) dest() []any {
	t := &x.t
	return []any{&t.Hash, &t.SessionID, &t.ClientID, &t.UserID, &t.Scope, &t.JKT, &x.authTime, &x.amr,
		&t.ACR, &x.created, &x.expires, &x.rotated, &t.DeviceID, &x.generation}
}

func (x *refreshRow) token() (*model.RefreshToken, error) {
	t := &x.t
	var err error
	if t.AMR, err = unjsonList(x.amr, "refresh token amr"); err != nil {
		return nil, err
	}
	t.AuthTime = fromMicros(x.authTime)
	t.CreatedAt = fromMicros(x.created)
	t.ExpiresAt = fromMicros(x.expires)
	t.RotatedAt = fromMicros(x.rotated)
	t.Generation = int(x.generation)
	return t, nil
}

func scanRefresh(r Row) (*model.RefreshToken, error) {
	var x refreshRow
	if err := r.Scan(x.dest()...); err != nil {
		return nil, err
	}
	return x.token()
}

const insertRefresh = `INSERT INTO refresh_tokens (` + refreshCols + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`

func refreshArgs(t *model.RefreshToken) []any {
	return []any{t.Hash, t.SessionID, t.ClientID, t.UserID, t.Scope, t.JKT, micros(t.AuthTime),
		jsonList(t.AMR), t.ACR, micros(t.CreatedAt), micros(t.ExpiresAt), micros(t.RotatedAt),
		nullIfEmpty(t.DeviceID), int64(t.Generation)}
}

func (s *Store) lockSession(ctx context.Context, q Querier, id string) error {
	if s.d.LockSession == "" {
		return nil
	}
	_, err := q.Exec(ctx, s.d.LockSession, id)
	return wrap("lock session", err)
}

// CreateRefreshToken stores a new refresh token, with the events pending
// on ctx (store.WithEvent) in the same transaction.
func (s *Store) CreateRefreshToken(ctx context.Context, t *model.RefreshToken) error {
	if len(t.Hash) == 0 {
		return errors.New("store: create refresh token: hash is required")
	}
	p := store.TakeEvent(ctx)
	if s.d.LockSession == "" && p == nil {
		_, err := s.db.Write().Exec(ctx, insertRefresh, refreshArgs(t)...)
		return s.createErr("refresh token", err)
	}
	if s.d.RotateInOneStatement && p != nil {
		if evs := p.Events(nil); len(evs) == 1 {
			args := append(refreshArgs(t), s.eventValues(evs[0])...)
			if _, err := s.db.Write().Exec(ctx, createRefreshEventSQL, args...); err != nil {
				if s.d.IsUniqueViolation(err) {
					return s.createErr("refresh token", err)
				}
				return wrap("create refresh token", err)
			}
			p.MarkStored(evs)
			return nil
		}
	}
	return s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		if err := s.lockSession(ctx, q, t.SessionID); err != nil {
			return nil, err
		}
		_, err := q.Exec(ctx, insertRefresh, refreshArgs(t)...)
		return nil, s.createErr("refresh token", err)
	})
}

// createRefreshEventSQL is CreateRefreshToken's transaction with one
// event as one statement (PostgreSQL, as rotateRefreshSQL): the session's
// share lock, the token ($1–$14) and the event ($15–$32: eventCols and
// the record MAC), which the INSERT of the token gates.
var createRefreshEventSQL = `WITH s AS (SELECT 1 FROM sessions WHERE id = $2 FOR SHARE),
	ins AS (INSERT INTO refresh_tokens (` + refreshCols + `)
		SELECT $1::bytea, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::text, $9::text,
			$10::bigint, $11::bigint, $12::bigint, $13::text, $14::bigint
		WHERE (SELECT count(*) FROM s) >= 0 RETURNING 1)
	INSERT INTO events (` + eventCols + `, mac)
		SELECT $15::text, $16::text, $17::bigint, $18::text, $19::text, $20::text, $21::text, $22::text,
			$23::text, $24::text, $25::text, $26::text, $27::text, $28::text, $29::text, $30::text, $31::text,
			$32::bytea
		WHERE EXISTS (SELECT 1 FROM ins)`

// GetRefreshToken returns a refresh token by hash.
func (s *Store) GetRefreshToken(ctx context.Context, hash []byte) (*model.RefreshToken, error) {
	t, err := scanRefresh(s.db.Lookup().QueryRow(ctx, `SELECT `+refreshSelect+` FROM refresh_tokens WHERE hash = $1`, hash))
	return t, s.getErr("refresh token", err)
}

// refreshGrantQuery reads a refresh token with its session, its user and
// the device holding key $2 in one statement (three primary-key lookups
// and one on the devices' unique key index; no device row when $2 is ”).
var refreshGrantQuery = `SELECT ` +
	strings.Replace(qualify("rt", refreshCols), "rt.device_id", "COALESCE(rt.device_id, '')", 1) + `, ` +
	qualify("s", sessionCols) + `, ` + qualify("u", userCols) + `, ` + grantDeviceCols + `
	FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id JOIN users u ON u.id = rt.user_id
	LEFT JOIN devices d ON d.jkt = $2 AND $2 <> ''
	WHERE rt.hash = $1`

// grantDeviceCols are deviceCols of the outer-joined d, with the zero
// value of each column where there is no device.
const grantDeviceCols = `COALESCE(d.id, ''), COALESCE(d.user_id, ''), COALESCE(d.jkt, ''),
	COALESCE(d.public_jwk, ''), COALESCE(d.key_storage, ''), COALESCE(d.platform, ''),
	COALESCE(d.os_name, ''), COALESCE(d.os_version, ''), COALESCE(d.hostname, ''),
	COALESCE(d.agent_version, ''), COALESCE(d.trust_type, ''), COALESCE(d.status, ''),
	COALESCE(d.compliance, ''), COALESCE(d.compliance_failures, ''), COALESCE(d.compliance_at, 0),
	COALESCE(d.posture, ''), COALESCE(d.posture_at, 0), COALESCE(d.created_at, 0),
	COALESCE(d.last_seen, 0), COALESCE(d.updated_at, 0), COALESCE(d.key_attested, FALSE),
	COALESCE(d.key_attestation, '')`

// GetRefreshGrant returns a refresh token with its session and its user,
// read in one query and so from one snapshot. A session or user that no
// longer exists comes back nil (then the three are read one by one: a
// rare path, always refused by the caller).
func (s *Store) GetRefreshGrant(ctx context.Context, hash []byte, jkt string) (*store.RefreshGrant, error) {
	var (
		rt refreshRow
		se sessionRow
		u  userRow
		d  deviceRow
	)
	dest := append(append(append(rt.dest(), se.dest()...), u.dest()...), d.dest()...)
	err := s.db.Lookup().QueryRow(ctx, refreshGrantQuery, hash, jkt).Scan(dest...)
	if s.d.IsNoRows(err) {
		return s.refreshGrantApart(ctx, hash, jkt)
	}
	if err != nil {
		return nil, s.getErr("refresh token", err)
	}
	g := &store.RefreshGrant{}
	if g.Token, err = rt.token(); err != nil {
		return nil, err
	}
	if g.Session, err = se.session(); err != nil {
		return nil, err
	}
	if g.User, err = u.user(); err != nil {
		return nil, err
	}
	if d.d.ID != "" {
		g.Device = d.device()
	}
	return g, nil
}

// refreshGrantApart is GetRefreshGrant by three reads, for a token whose
// session or user is missing.
func (s *Store) refreshGrantApart(ctx context.Context, hash []byte, jkt string) (*store.RefreshGrant, error) {
	t, err := s.GetRefreshToken(ctx, hash)
	if err != nil {
		return nil, err
	}
	g := &store.RefreshGrant{Token: t}
	if g.Session, err = s.GetSession(ctx, t.SessionID); errors.Is(err, store.ErrNotFound) {
		g.Session = nil
	} else if err != nil {
		return nil, err
	}
	if g.User, err = s.GetUser(ctx, t.UserID); errors.Is(err, store.ErrNotFound) {
		g.User = nil
	} else if err != nil {
		return nil, err
	}
	if jkt != "" {
		if g.Device, err = s.GetDeviceByJKT(ctx, jkt); errors.Is(err, store.ErrNotFound) {
			g.Device = nil
		} else if err != nil {
			return nil, err
		}
	}
	return g, nil
}

// RotateRefreshToken marks oldHash rotated at `at` and stores next, in
// one transaction, with the events pending on ctx (store.WithEvent) when
// it rotates. On success it returns the old record with RotatedAt set. If
// oldHash was rotated before it stores nothing, records no event and
// returns the old record with ErrAlreadyUsed; a missing oldHash is
// ErrNotFound.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash []byte, at time.Time, next *model.RefreshToken) (*model.RefreshToken, error) {
	if at.IsZero() {
		return nil, errors.New("store: rotate refresh token: rotation time is required")
	}
	if next == nil || len(next.Hash) == 0 {
		return nil, errors.New("store: rotate refresh token: next token hash is required")
	}
	p := store.TakeEvent(ctx)
	if s.d.RotateInOneStatement {
		var evs []*model.Event
		if p != nil {
			evs = p.Events(nil)
		}
		// One event (token.refreshed) goes into the statement; any other
		// number takes the transaction, which appends them in order.
		if len(evs) <= 1 {
			old, err := s.rotateOneStatement(ctx, oldHash, at, next, evs)
			if err == nil && len(evs) == 1 {
				p.MarkStored(evs)
			}
			return old, err
		}
	}
	var old *model.RefreshToken
	err := s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		if err := s.lockSession(ctx, q, next.SessionID); err != nil {
			return nil, err
		}
		var err error
		old, err = scanRefresh(q.QueryRow(ctx, `UPDATE refresh_tokens SET rotated_at = $2
			WHERE hash = $1 AND rotated_at = 0 RETURNING `+refreshSelect, oldHash, micros(at)))
		if err == nil {
			_, err = q.Exec(ctx, insertRefresh, refreshArgs(next)...)
			return nil, s.createErr("refresh token", err)
		}
		if !s.d.IsNoRows(err) {
			return nil, wrap("rotate refresh token", err)
		}
		old, err = scanRefresh(q.QueryRow(ctx, `SELECT `+refreshSelect+` FROM refresh_tokens WHERE hash = $1`, oldHash))
		if err != nil {
			return nil, s.getErr("refresh token", err)
		}
		return nil, errRollback
	})
	switch {
	case errors.Is(err, errRollback):
		return old, store.ErrAlreadyUsed
	case err != nil:
		return nil, err
	}
	return old, nil
}

// rotateRefreshSQL is RotateRefreshToken's transaction as one statement
// (PostgreSQL): lock the session row (FOR SHARE, as lockSession), mark
// the old token rotated if it is not yet, insert the next one only if
// that UPDATE changed a row, and return the old row with whether this
// statement rotated it. The UPDATE's condition reads the lock's result
// (a count, true whether or not the session exists, as lockSession
// does not require it), so the lock is taken before a row is updated and
// the next token inserted, as in the transaction. The sub-statements see
// one snapshot, so the old row of a token that was not rotated here is
// the one of the statement's start ($15 old hash, $16 rotation time, $2
// the session).
var rotateRefreshSQL = rotateRefreshWith("")

// rotateRefreshEventSQL is rotateRefreshSQL that also appends one event
// ($17–$34: eventCols and the record MAC) when, and only when, it rotates:
// the rotation and its audit record are one statement, so one commit,
// and a failing append (a constraint, a trigger, the connection lost
// before the commit) rotates nothing.
var rotateRefreshEventSQL = rotateRefreshWith(`,
	ev AS (INSERT INTO events (` + eventCols + `, mac)
		SELECT $17::text, $18::text, $19::bigint, $20::text, $21::text, $22::text, $23::text, $24::text,
			$25::text, $26::text, $27::text, $28::text, $29::text, $30::text, $31::text, $32::text, $33::text,
			$34::bytea
		WHERE EXISTS (SELECT 1 FROM old))`)

func rotateRefreshWith(more string) string {
	return `WITH s AS (SELECT 1 FROM sessions WHERE id = $2 FOR SHARE),
	old AS (UPDATE refresh_tokens SET rotated_at = $16
		WHERE hash = $15 AND rotated_at = 0 AND (SELECT count(*) FROM s) >= 0 RETURNING ` + refreshSelect + `),
	ins AS (INSERT INTO refresh_tokens (` + refreshCols + `)
		SELECT $1::bytea, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::text, $9::text,
			$10::bigint, $11::bigint, $12::bigint, $13::text, $14::bigint
		WHERE EXISTS (SELECT 1 FROM old))` + more + `
	SELECT true, old.* FROM old
	UNION ALL
	SELECT false, ` + refreshSelect + ` FROM refresh_tokens WHERE hash = $15 AND NOT EXISTS (SELECT 1 FROM old)`
}

// rotateOneStatement is RotateRefreshToken in one statement, with evs (at
// most one) appended by it when it rotates. A token that the statement
// found unrotated but could not rotate changed while it waited (rotated,
// or deleted with its session, by a transaction that committed
// meanwhile): it is read again, now, to tell which.
func (s *Store) rotateOneStatement(ctx context.Context, oldHash []byte, at time.Time, next *model.RefreshToken, evs []*model.Event) (*model.RefreshToken, error) {
	var (
		rotated bool
		x       refreshRow
	)
	query, args := rotateRefreshSQL, append(refreshArgs(next), oldHash, micros(at))
	if len(evs) == 1 {
		query, args = rotateRefreshEventSQL, append(args, s.eventValues(evs[0])...)
	}
	err := s.db.Write().QueryRow(ctx, query, args...).Scan(append([]any{&rotated}, x.dest()...)...)
	if s.d.IsNoRows(err) {
		return nil, notFound("refresh token")
	}
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return nil, s.createErr("refresh token", err)
		}
		return nil, wrap("rotate refresh token", err)
	}
	old, err := x.token()
	if err != nil {
		return nil, err
	}
	switch {
	case rotated:
		return old, nil
	case !old.RotatedAt.IsZero():
		return old, store.ErrAlreadyUsed
	}
	old, err = scanRefresh(s.db.Write().QueryRow(ctx, `SELECT `+refreshSelect+` FROM refresh_tokens WHERE hash = $1`, oldHash))
	if err != nil {
		return nil, s.getErr("refresh token", err)
	}
	if old.RotatedAt.IsZero() { // changed but not rotated: not the token it was
		return nil, notFound("refresh token")
	}
	return old, store.ErrAlreadyUsed
}

// DeleteRefreshToken deletes a refresh token, with the events pending on
// ctx (store.WithEvent) in the same transaction when it deletes one.
func (s *Store) DeleteRefreshToken(ctx context.Context, hash []byte) error {
	p := store.TakeEvent(ctx)
	if p == nil {
		n, err := s.db.Write().Exec(ctx, `DELETE FROM refresh_tokens WHERE hash = $1`, hash)
		return deleted("refresh token", n, err)
	}
	return s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		n, err := q.Exec(ctx, `DELETE FROM refresh_tokens WHERE hash = $1`, hash)
		return nil, deleted("refresh token", n, err)
	})
}

// ---- authorization codes ----

const codeCols = `hash, client_id, user_id, session_id, redirect_uri, scope, nonce, code_challenge,
	code_challenge_method, dpop_jkt, auth_time, amr, acr, created_at, expires_at, used_at, refused, refused_jkt`

func scanCode(r Row) (*model.AuthCode, error) {
	var (
		c                                model.AuthCode
		amr                              string
		authTime, created, expires, used int64
	)
	if err := r.Scan(&c.Hash, &c.ClientID, &c.UserID, &c.SessionID, &c.RedirectURI, &c.Scope, &c.Nonce,
		&c.CodeChallenge, &c.CodeChallengeMethod, &c.DPoPJKT, &authTime, &amr, &c.ACR, &created,
		&expires, &used, &c.Refused, &c.RefusedJKT); err != nil {
		return nil, err
	}
	var err error
	if c.AMR, err = unjsonList(amr, "auth code amr"); err != nil {
		return nil, err
	}
	c.AuthTime = fromMicros(authTime)
	c.CreatedAt = fromMicros(created)
	c.ExpiresAt = fromMicros(expires)
	c.UsedAt = fromMicros(used)
	return &c, nil
}

// CreateAuthCode stores a new authorization code.
func (s *Store) CreateAuthCode(ctx context.Context, c *model.AuthCode) error {
	if len(c.Hash) == 0 {
		return errors.New("store: create auth code: hash is required")
	}
	_, err := s.db.Write().Exec(ctx, `INSERT INTO auth_codes (`+codeCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
		c.Hash, c.ClientID, c.UserID, c.SessionID, c.RedirectURI, c.Scope, c.Nonce, c.CodeChallenge,
		c.CodeChallengeMethod, c.DPoPJKT, micros(c.AuthTime), jsonList(c.AMR), c.ACR,
		micros(c.CreatedAt), micros(c.ExpiresAt), micros(c.UsedAt), c.Refused, c.RefusedJKT)
	return s.createErr("auth code", err)
}

// GetAuthCode reads a code without using it.
func (s *Store) GetAuthCode(ctx context.Context, hash []byte) (*model.AuthCode, error) {
	c, err := scanCode(s.db.Read().QueryRow(ctx, `SELECT `+codeCols+` FROM auth_codes WHERE hash = $1`, hash))
	return c, s.getErr("auth code", err)
}

// ---- pushed authorization requests ----

// CreatePushedRequest stores a pushed authorization request.
func (s *Store) CreatePushedRequest(ctx context.Context, p *model.PushedRequest) error {
	_, err := s.db.Write().Exec(ctx, `INSERT INTO pushed_requests (request_uri, client_id, params, expires_at, used_at)
		VALUES ($1, $2, $3, $4, 0)`, p.RequestURI, p.ClientID, jsonMap(p.Params), micros(p.ExpiresAt))
	return s.createErr("pushed request", err)
}

// ConsumePushedRequest returns the request and marks it used. A request
// expired at `at` (or missing) is ErrNotFound; one used before comes back
// with ErrAlreadyUsed.
func (s *Store) ConsumePushedRequest(ctx context.Context, requestURI string, at time.Time) (*model.PushedRequest, error) {
	if at.IsZero() {
		return nil, errors.New("store: consume pushed request: time is required")
	}
	scan := func(r Row) (*model.PushedRequest, int64, error) {
		var (
			p             model.PushedRequest
			params        string
			expires, used int64
		)
		if err := r.Scan(&p.RequestURI, &p.ClientID, &params, &expires, &used); err != nil {
			return nil, 0, err
		}
		var err error
		if p.Params, err = unjsonMap(params, "pushed request params"); err != nil {
			return nil, 0, err
		}
		p.ExpiresAt = fromMicros(expires)
		return &p, used, nil
	}
	q := s.db.Write()
	p, _, err := scan(q.QueryRow(ctx, `UPDATE pushed_requests SET used_at = $2
		WHERE request_uri = $1 AND used_at = 0 AND expires_at > $2
		RETURNING request_uri, client_id, params, expires_at, used_at`, requestURI, micros(at)))
	if err == nil {
		return p, nil
	}
	if !s.d.IsNoRows(err) {
		return nil, wrap("consume pushed request", err)
	}
	p, used, err := scan(q.QueryRow(ctx, `SELECT request_uri, client_id, params, expires_at, used_at
		FROM pushed_requests WHERE request_uri = $1`, requestURI))
	if err != nil {
		return nil, s.getErr("pushed request", err)
	}
	if used == 0 || !at.Before(p.ExpiresAt) {
		return nil, notFound("pushed request")
	}
	return p, store.ErrAlreadyUsed
}

// ---- JTI replay cache ----

// RecordJTI inserts key, or takes over an expired entry, in one
// statement; an unexpired entry (exp after the store clock's now) makes
// the statement change nothing and the call return ErrReplay.
//
// With events pending on ctx (store.WithEvent) they commit with the key,
// and only when the key is new: a key recorded before (a replayed proof)
// records neither. On PostgreSQL a single event makes it one statement
// (recordJTIEventSQL) in the group commit's batches, so a token's jti and
// its audit event cost one round trip.
func (s *Store) RecordJTI(ctx context.Context, key string, exp time.Time) error {
	p := store.TakeEvent(ctx)
	if p == nil {
		return s.RecordJTIOn(ctx, s.grouped(key), key, exp)
	}
	if s.d.RotateInOneStatement {
		if evs := p.Events(nil); len(evs) == 1 {
			args := append(s.eventValues(evs[0]), key, micros(exp), micros(s.now()))
			var n int64
			if err := s.grouped(key).QueryRow(ctx, recordJTIEventSQL, args...).Scan(&n); err != nil {
				return wrap("record jti", err)
			}
			if n == 0 {
				return store.ErrReplay
			}
			p.MarkStored(evs)
			return nil
		}
	}
	return s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		return nil, s.RecordJTIOn(ctx, q, key, exp)
	})
}

// recordJTIEventSQL is RecordJTI with one event as one statement
// (PostgreSQL, as createRefreshEventSQL): the event ($1–$18: eventCols
// and the record MAC) is inserted only when the key ($19, until $20; an
// expired row is taken over at $21) is. It always returns one row, the
// events inserted (0 for a replay), so that a replay does not fail the
// group commit's batch it rides in.
var recordJTIEventSQL = `WITH j AS (INSERT INTO jtis (jti, exp) VALUES ($19, $20)
		ON CONFLICT (jti) DO UPDATE SET exp = excluded.exp WHERE jtis.exp <= $21 RETURNING 1),
	e AS (INSERT INTO events (` + eventCols + `, mac)
		SELECT $1::text, $2::text, $3::bigint, $4::text, $5::text, $6::text, $7::text, $8::text,
			$9::text, $10::text, $11::text, $12::text, $13::text, $14::text, $15::text, $16::text, $17::text,
			$18::bytea
		WHERE EXISTS (SELECT 1 FROM j) RETURNING 1)
	SELECT count(*) FROM e`

// RecordJTIOn is RecordJTI's statement run through q: a backend that
// queues the write itself (SQLite's deferred writes) runs the same one.
func (s *Store) RecordJTIOn(ctx context.Context, q Querier, key string, exp time.Time) error {
	n, err := q.Exec(ctx, `INSERT INTO jtis (jti, exp) VALUES ($1, $2)
		ON CONFLICT (jti) DO UPDATE SET exp = excluded.exp WHERE jtis.exp <= $3`,
		key, micros(exp), micros(s.now()))
	if err != nil {
		return wrap("record jti", err)
	}
	if n == 0 {
		return store.ErrReplay
	}
	return nil
}

// LatestJTIExpiry returns the latest expiry of a recorded key (the zero
// time when there is none): until then a key recorded so far may be
// unexpired.
func (s *Store) LatestJTIExpiry(ctx context.Context) (time.Time, error) {
	var exp int64
	if err := s.db.Read().QueryRow(ctx, `SELECT COALESCE(MAX(exp), 0) FROM jtis`).Scan(&exp); err != nil {
		return time.Time{}, wrap("latest jti expiry", err)
	}
	return fromMicros(exp), nil
}

// HasJTI reports whether key is recorded and unexpired (its exp
// after the store clock's now, RecordJTI's rule): one primary-key read.
func (s *Store) HasJTI(ctx context.Context, key string) (bool, error) {
	var exp int64
	err := s.db.Lookup().QueryRow(ctx, `SELECT exp FROM jtis WHERE jti = $1`, key).Scan(&exp)
	if s.d.IsNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, wrap("look up jti", err)
	}
	return exp > micros(s.now()), nil
}

// RevokeClientGrant deletes the client's refresh tokens of the session and
// records revokedKey until exp, under a lock of the session row (so a
// refresh token written concurrently by a rotation cannot survive it, as
// in RevokeSession). ctx's pending events commit when the key is new.
func (s *Store) RevokeClientGrant(ctx context.Context, sessionID, clientID, revokedKey string, exp time.Time) (bool, error) {
	var fresh bool
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		fresh = false
		var one int
		if err := q.QueryRow(ctx, `SELECT 1 FROM sessions WHERE id = $1`+s.d.ForUpdate, sessionID).Scan(&one); err != nil {
			return nil, s.getErr("session", err)
		}
		if _, err := q.Exec(ctx, `DELETE FROM refresh_tokens WHERE session_id = $1 AND client_id = $2`, sessionID, clientID); err != nil {
			return nil, wrap("revoke client grant", err)
		}
		n, err := q.Exec(ctx, `INSERT INTO jtis (jti, exp) VALUES ($1, $2)
			ON CONFLICT (jti) DO UPDATE SET exp = excluded.exp WHERE jtis.exp <= $3`, revokedKey, micros(exp), micros(s.now()))
		if err != nil {
			return nil, wrap("revoke client grant", err)
		}
		if n == 0 {
			return nil, nil // revoked before: nothing new to record
		}
		fresh = true
		return []string{sessionID}, nil
	})
	if err != nil {
		return false, err
	}
	return fresh, nil
}

// ---- purge ----

// PurgeExpired deletes authorization codes, device authorization
// requests, pushed requests, JTIs, refresh tokens and sign-in failures of
// unknown names whose expiry is at or before now, and sessions past their absolute lifetime together with
// their refresh tokens. A zero expiry counts as expired.
func (s *Store) PurgeExpired(ctx context.Context, now time.Time) error {
	n := micros(now)
	return s.db.InTx(ctx, func(q Querier) error {
		for _, stmt := range []string{
			`DELETE FROM auth_codes WHERE expires_at <= $1`,
			`DELETE FROM device_codes WHERE expires_at <= $1`,
			`DELETE FROM pushed_requests WHERE expires_at <= $1`,
			`DELETE FROM jtis WHERE exp <= $1`,
			`DELETE FROM signin_failures WHERE expires_at <= $1`,
			`DELETE FROM refresh_tokens WHERE expires_at <= $1`,
			`DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE expires_at <= $1)`,
			`DELETE FROM sessions WHERE expires_at <= $1`,
			`DELETE FROM webauthn_challenges WHERE expires_at <= $1`,
		} {
			if _, err := q.Exec(ctx, stmt, n); err != nil {
				return wrap("purge expired", err)
			}
		}
		return nil
	})
}

// SessionBindings reads the live refresh tokens of the sessions ids
// (unrotated, unexpired at now) and says what each session's are bound to.
func (s *Store) SessionBindings(ctx context.Context, ids []string, now time.Time) (map[string]*store.SessionBinding, error) {
	out := map[string]*store.SessionBinding{}
	if len(ids) == 0 {
		return out, nil
	}
	if len(ids) > 1000 {
		return nil, errors.New("store: session bindings: at most 1000 sessions")
	}
	args := []any{micros(now)}
	ph := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id)
		ph[i] = "$" + strconv.Itoa(len(args))
	}
	type row struct{ sid, client, jkt, device string }
	rs, err := s.db.Read().Query(ctx, `SELECT session_id, client_id, jkt, COALESCE(device_id, '') FROM refresh_tokens
		WHERE rotated_at = 0 AND expires_at > $1 AND session_id IN (`+strings.Join(ph, ", ")+`)
		ORDER BY session_id, client_id, jkt`, args...)
	rows, err := collect(rs, err, "session bindings", func(r Row) (row, error) {
		var x row
		return x, r.Scan(&x.sid, &x.client, &x.jkt, &x.device)
	})
	if err != nil {
		return nil, err
	}
	add := func(l []string, v string) []string {
		if v == "" || slices.Contains(l, v) {
			return l
		}
		return append(l, v)
	}
	for _, x := range rows {
		b := out[x.sid]
		if b == nil {
			b = &store.SessionBinding{}
			out[x.sid] = b
		}
		b.ClientIDs = add(b.ClientIDs, x.client)
		switch {
		case x.device != "":
			b.DeviceIDs = add(b.DeviceIDs, x.device)
		case x.jkt != "":
			b.JKTs = add(b.JKTs, x.jkt)
		default:
			b.Unbound++
		}
	}
	return out, nil
}
