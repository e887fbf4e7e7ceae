package sqlstore

import (
	"context"
	"errors"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// RedeemAuthCode spends an unused authorization code at `at`, stores rt
// (nil: none) and appends the events pending on ctx, in one transaction:
// the code is used up exactly when what it issued (or the refusal that
// spent it) is recorded. The conditional UPDATE is the single-use check:
// of concurrent calls one marks the row, the others find it used
// (ErrAlreadyUsed, with the record and its first UsedAt) and write nothing.
func (s *Store) RedeemAuthCode(ctx context.Context, hash []byte, at time.Time, rt *model.RefreshToken) (*model.AuthCode, error) {
	return redeem(ctx, s, "auth code", at, rt,
		func(q Querier) (*model.AuthCode, error) {
			return scanCode(q.QueryRow(ctx, `UPDATE auth_codes SET used_at = $2 WHERE hash = $1 AND used_at = 0
				RETURNING `+codeCols, hash, micros(at)))
		},
		func(q Querier) (*model.AuthCode, error) {
			return scanCode(q.QueryRow(ctx, `SELECT `+codeCols+` FROM auth_codes WHERE hash = $1`, hash))
		},
		func(c *model.AuthCode) bool { return !c.UsedAt.IsZero() })
}

// RefuseAuthCode is RedeemAuthCode for a refused redemption: it spends
// the code with the refusal's pending events and no token, and records
// it as Refused with the refused request's DPoP key jkt.
func (s *Store) RefuseAuthCode(ctx context.Context, hash []byte, at time.Time, jkt string) (*model.AuthCode, error) {
	return redeem(ctx, s, "auth code", at, nil,
		func(q Querier) (*model.AuthCode, error) {
			return scanCode(q.QueryRow(ctx, `UPDATE auth_codes SET used_at = $2, refused = TRUE, refused_jkt = $3
				WHERE hash = $1 AND used_at = 0 RETURNING `+codeCols, hash, micros(at), jkt))
		},
		func(q Querier) (*model.AuthCode, error) {
			return scanCode(q.QueryRow(ctx, `SELECT `+codeCols+` FROM auth_codes WHERE hash = $1`, hash))
		},
		func(c *model.AuthCode) bool { return !c.UsedAt.IsZero() })
}

// RedeemDeviceCode is RedeemAuthCode for an approved device authorization
// request: it marks it used at `at` only when it is approved and unused.
// A request used before is ErrAlreadyUsed (with the record); one that is
// not approved (pending, denied) is ErrNotFound; neither writes anything.
func (s *Store) RedeemDeviceCode(ctx context.Context, hash []byte, at time.Time, rt *model.RefreshToken) (*model.DeviceCode, error) {
	return redeem(ctx, s, "device code", at, rt,
		func(q Querier) (*model.DeviceCode, error) {
			return scanDeviceCode(q.QueryRow(ctx, `UPDATE device_codes SET used_at = $2
				WHERE hash = $1 AND used_at = 0 AND status = $3 RETURNING `+deviceCodeCols,
				hash, micros(at), model.DeviceCodeApproved))
		},
		func(q Querier) (*model.DeviceCode, error) {
			return scanDeviceCode(q.QueryRow(ctx, `SELECT `+deviceCodeCols+` FROM device_codes WHERE hash = $1`, hash))
		},
		func(c *model.DeviceCode) bool { return !c.UsedAt.IsZero() })
}

// redeem is the one transaction of both redemptions: spend (the
// conditional UPDATE) marks the code used; when it matches no row, read
// tells a code used before (ErrAlreadyUsed, with its record) from one
// that is missing or not redeemable (ErrNotFound); otherwise rt is stored
// and the pending events appended with it.
func redeem[T any](ctx context.Context, s *Store, what string, at time.Time, rt *model.RefreshToken,
	spend, read func(Querier) (T, error), used func(T) bool) (T, error) {
	var zero T
	if at.IsZero() {
		return zero, errors.New("store: redeem " + what + ": time is required")
	}
	if rt != nil && len(rt.Hash) == 0 {
		return zero, errors.New("store: redeem " + what + ": refresh token hash is required")
	}
	p := store.TakeEvent(ctx)
	var out T
	err := s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		c, err := spend(q)
		if s.d.IsNoRows(err) {
			c, err = read(q)
			switch {
			case err != nil:
				return nil, s.getErr(what, err)
			case !used(c): // not redeemable, or created after the UPDATE ran
				return nil, notFound("redeemable " + what)
			}
			out = c
			return nil, store.ErrAlreadyUsed
		}
		if err != nil {
			return nil, wrap("redeem "+what, err)
		}
		out = c
		return nil, s.redeemRefresh(ctx, q, rt)
	})
	switch {
	case errors.Is(err, store.ErrAlreadyUsed):
		return out, store.ErrAlreadyUsed
	case err != nil:
		return zero, err
	}
	return out, nil
}

// redeemRefresh stores the refresh token a redemption issues (nil: none),
// under the share lock on its session that CreateRefreshToken takes.
func (s *Store) redeemRefresh(ctx context.Context, q Querier, rt *model.RefreshToken) error {
	if rt == nil {
		return nil
	}
	if err := s.lockSession(ctx, q, rt.SessionID); err != nil {
		return err
	}
	_, err := q.Exec(ctx, insertRefresh, refreshArgs(rt)...)
	return s.createErr("refresh token", err)
}
