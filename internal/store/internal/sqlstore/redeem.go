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
	if at.IsZero() {
		return nil, errors.New("store: redeem auth code: time is required")
	}
	if rt != nil && len(rt.Hash) == 0 {
		return nil, errors.New("store: redeem auth code: refresh token hash is required")
	}
	p := store.TakeEvent(ctx)
	var out *model.AuthCode
	err := s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		c, err := scanCode(q.QueryRow(ctx, `UPDATE auth_codes SET used_at = $2 WHERE hash = $1 AND used_at = 0
			RETURNING `+codeCols, hash, micros(at)))
		if s.d.IsNoRows(err) {
			c, err = scanCode(q.QueryRow(ctx, `SELECT `+codeCols+` FROM auth_codes WHERE hash = $1`, hash))
			switch {
			case err != nil:
				return nil, s.getErr("auth code", err)
			case c.UsedAt.IsZero(): // created after our UPDATE ran
				return nil, notFound("auth code")
			}
			out = c
			return nil, store.ErrAlreadyUsed
		}
		if err != nil {
			return nil, wrap("redeem auth code", err)
		}
		out = c
		return nil, s.redeemRefresh(ctx, q, rt)
	})
	switch {
	case errors.Is(err, store.ErrAlreadyUsed):
		return out, store.ErrAlreadyUsed
	case err != nil:
		return nil, err
	}
	return out, nil
}

// RedeemDeviceCode is RedeemAuthCode for an approved device authorization
// request: it marks it used at `at` only when it is approved and unused.
// A request used before is ErrAlreadyUsed (with the record); one that is
// not approved (pending, denied) is ErrNotFound; neither writes anything.
func (s *Store) RedeemDeviceCode(ctx context.Context, hash []byte, at time.Time, rt *model.RefreshToken) (*model.DeviceCode, error) {
	if at.IsZero() {
		return nil, errors.New("store: redeem device code: time is required")
	}
	if rt != nil && len(rt.Hash) == 0 {
		return nil, errors.New("store: redeem device code: refresh token hash is required")
	}
	p := store.TakeEvent(ctx)
	var out *model.DeviceCode
	err := s.inTxPending(ctx, p, func(q Querier) ([]string, error) {
		c, err := scanDeviceCode(q.QueryRow(ctx, `UPDATE device_codes SET used_at = $2
			WHERE hash = $1 AND used_at = 0 AND status = $3 RETURNING `+deviceCodeCols,
			hash, micros(at), model.DeviceCodeApproved))
		if s.d.IsNoRows(err) {
			c, err = scanDeviceCode(q.QueryRow(ctx, `SELECT `+deviceCodeCols+` FROM device_codes WHERE hash = $1`, hash))
			switch {
			case err != nil:
				return nil, s.getErr("device code", err)
			case c.UsedAt.IsZero():
				return nil, notFound("approved device code")
			}
			out = c
			return nil, store.ErrAlreadyUsed
		}
		if err != nil {
			return nil, wrap("redeem device code", err)
		}
		out = c
		return nil, s.redeemRefresh(ctx, q, rt)
	})
	switch {
	case errors.Is(err, store.ErrAlreadyUsed):
		return out, store.ErrAlreadyUsed
	case err != nil:
		return nil, err
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
