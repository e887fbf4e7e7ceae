package sqlstore

import (
	"context"
	"errors"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- recovery codes ----
//
// Every write locks the user's row first (lockUser), so the writes of one
// user's codes, and the UpdateUser that removes the TOTP factor and its
// codes, are serialised on that row in the same order: a code cannot be
// used while its set is replaced or removed, and no lock order can
// deadlock. The use itself is a conditional UPDATE (used_at = 0), so of
// concurrent uses of one code only one changes the row.

// ReplaceRecoveryCodes replaces a user's recovery codes.
func (s *Store) ReplaceRecoveryCodes(ctx context.Context, userID string, hashes [][]byte, at time.Time, check func(*model.User) error) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		u, err := s.lockUser(ctx, q, userID)
		if err != nil {
			return nil, err
		}
		if check != nil {
			if err := check(u); err != nil {
				return nil, err
			}
		}
		if _, err := q.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
			return nil, wrap("delete recovery codes", err)
		}
		for _, h := range hashes {
			if len(h) == 0 {
				return nil, errors.New("store: replace recovery codes: empty hash")
			}
			if _, err := q.Exec(ctx, `INSERT INTO recovery_codes (user_id, code_hash, created_at, used_at) VALUES ($1, $2, $3, 0)`,
				userID, h, micros(at)); err != nil {
				if s.d.IsUniqueViolation(err) {
					return nil, alreadyExists("recovery code")
				}
				return nil, wrap("insert recovery code", err)
			}
		}
		return nil, nil
	})
}

// UseRecoveryCode uses one of a user's recovery codes.
func (s *Store) UseRecoveryCode(ctx context.Context, userID string, hash []byte, at time.Time, fn func(u *model.User, left int) error) (*model.User, error) {
	if at.IsZero() {
		return nil, errors.New("store: use recovery code: time is required")
	}
	var out *model.User
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		u, err := s.lockUser(ctx, q, userID)
		if err != nil {
			return nil, err
		}
		n, err := q.Exec(ctx, `UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at = 0`,
			userID, hash, micros(at))
		if err != nil {
			return nil, wrap("use recovery code", err)
		}
		if n == 0 {
			var used int64
			err := q.QueryRow(ctx, `SELECT used_at FROM recovery_codes WHERE user_id = $1 AND code_hash = $2`, userID, hash).Scan(&used)
			switch {
			case s.d.IsNoRows(err):
				return nil, notFound("recovery code")
			case err != nil:
				return nil, wrap("use recovery code", err)
			}
			return nil, store.ErrAlreadyUsed
		}
		var left int64
		if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at = 0`, userID).Scan(&left); err != nil {
			return nil, wrap("count recovery codes", err)
		}
		if fn != nil {
			if err := fn(u, int(left)); err != nil {
				return nil, err
			}
			if err := s.saveUser(ctx, q, userID, u); err != nil {
				return nil, err
			}
		}
		out = u
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RecoveryCodesLeft counts a user's unused recovery codes.
func (s *Store) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	var n int64
	if err := s.db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at = 0`, userID).Scan(&n); err != nil {
		return 0, wrap("count recovery codes", err)
	}
	return int(n), nil
}

// RecoveryCodesLeftByUser counts the unused recovery codes of every user
// that has some.
func (s *Store) RecoveryCodesLeftByUser(ctx context.Context) (map[string]int, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT user_id, COUNT(*) FROM recovery_codes WHERE used_at = 0 GROUP BY user_id`)
	if err != nil {
		return nil, wrap("count recovery codes", err)
	}
	defer rs.Close()
	out := map[string]int{}
	for rs.Next() {
		var id string
		var n int64
		if err := rs.Scan(&id, &n); err != nil {
			return nil, wrap("count recovery codes", err)
		}
		out[id] = int(n)
	}
	if err := rs.Err(); err != nil {
		return nil, wrap("count recovery codes", err)
	}
	return out, wrap("count recovery codes", rs.Close())
}

// DeleteRecoveryCodes deletes all of a user's recovery codes.
func (s *Store) DeleteRecoveryCodes(ctx context.Context, userID string) (int, error) {
	n, err := s.db.Write().Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID)
	if err != nil {
		return 0, wrap("delete recovery codes", err)
	}
	return int(n), nil
}
