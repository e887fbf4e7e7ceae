package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	return redeem(ctx, s, "auth code", at, rt, redeemCode, []any{hash, micros(at)}, scanCode,
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
	return redeem(ctx, s, "auth code", at, nil, refuseCode, []any{hash, micros(at), jkt}, scanCode,
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
	return redeem(ctx, s, "device code", at, rt, redeemDevice, []any{hash, micros(at), model.DeviceCodeApproved}, scanDeviceCode,
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
//
// On PostgreSQL (Dialect.RotateInOneStatement) a redemption with at most
// one pending event is one statement instead (sql's, args followed by
// rt's and the event's values; scan reads its row): one round trip and
// one commit instead of five round trips.
func redeem[T any](ctx context.Context, s *Store, what string, at time.Time, rt *model.RefreshToken,
	sql *redeemStatements, args []any, scan func(Row) (T, error),
	spend, read func(Querier) (T, error), used func(T) bool) (T, error) {
	var zero T
	if at.IsZero() {
		return zero, errors.New("store: redeem " + what + ": time is required")
	}
	if rt != nil && len(rt.Hash) == 0 {
		return zero, errors.New("store: redeem " + what + ": refresh token hash is required")
	}
	p := store.TakeEvent(ctx)
	if s.d.RotateInOneStatement {
		var evs []*model.Event
		if p != nil {
			evs = p.Events(nil)
		}
		if len(evs) <= 1 {
			return redeemOne(ctx, s, what, rt, sql, args, scan, used, p, evs)
		}
	}
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

// redeemOne is redeem as one statement (redeemStatements): the
// conditional UPDATE spends the code; the refresh token's INSERT (under
// the share lock on its session) and the event's are gated on it; when
// it spent nothing, a locking read returns the code's newest committed
// version, so that a code spent by a concurrent redemption that
// committed while this one waited for its row is reported used
// (ErrAlreadyUsed), as the transaction's later read would.
func redeemOne[T any](ctx context.Context, s *Store, what string, rt *model.RefreshToken, sql *redeemStatements,
	args []any, scan func(Row) (T, error), used func(T) bool, p *store.PendingEvent, evs []*model.Event) (T, error) {
	var zero T
	q := sql.plain
	switch {
	case rt != nil && len(evs) == 1:
		q = sql.tokenEvent
	case rt != nil:
		q = sql.token
	case len(evs) == 1:
		q = sql.event
	}
	args = slices.Clone(args)
	if rt != nil {
		args = append(args, refreshArgs(rt)...)
	}
	if len(evs) == 1 {
		args = append(args, s.eventValues(evs[0])...)
	}
	var spent bool
	c, err := scan(flagRow{r: s.db.Write().QueryRow(ctx, q, args...), flag: &spent})
	switch {
	case s.d.IsNoRows(err):
		return zero, notFound("redeemable " + what)
	case err != nil && s.d.IsUniqueViolation(err):
		return zero, s.createErr("refresh token", err)
	case err != nil:
		return zero, wrap("redeem "+what, err)
	case !spent && !used(c): // not redeemable
		return zero, notFound("redeemable " + what)
	case !spent:
		return c, store.ErrAlreadyUsed
	}
	if len(evs) == 1 {
		p.MarkStored(evs)
	}
	return c, nil
}

// flagRow scans a leading boolean column into flag, then the rest.
type flagRow struct {
	r    Row
	flag *bool
}

func (f flagRow) Scan(dest ...any) error { return f.r.Scan(append([]any{f.flag}, dest...)...) }

// redeemStatements are a redemption's one-statement forms: without a
// refresh token or event, with either, with both.
type redeemStatements struct{ plain, token, event, tokenEvent string }

var (
	redeemCode   = newRedeemStatements("auth_codes", codeCols, "", "", 3)
	refuseCode   = newRedeemStatements("auth_codes", codeCols, ", refused = TRUE, refused_jkt = $3::text", "", 4)
	redeemDevice = newRedeemStatements("device_codes", deviceCodeCols, "", " AND status = $3", 4)
)

// Parameter types of the refresh token's and the event's values, cast so
// that PostgreSQL can type them in a SELECT.
var (
	refreshArgTypes = []string{"bytea", "text", "text", "text", "text", "text", "bigint", "text", "text",
		"bigint", "bigint", "bigint", "text", "bigint"}
	eventArgTypes = []string{"text", "text", "bigint", "text", "text", "text", "text", "text", "text", "text",
		"text", "text", "text", "text", "text", "text", "text", "bytea"}
)

// newRedeemStatements builds the statements for table: $1 is the code's
// hash, $2 the time of use, set (more assignments) and cond (narrowing
// what is redeemable), with their parameters up to next-1; the refresh token's values follow, then the
// event's. The result is one row (spent, cols…): spent true with the
// code as spent, false with the code's newest version (FOR SHARE: a
// locking read sees the redemption that committed while this statement
// waited for the row), or no row when there is no such code.
func newRedeemStatements(table, cols, set, cond string, next int) *redeemStatements {
	build := func(token, event bool) string {
		var b strings.Builder
		fmt.Fprintf(&b, "WITH spent AS (UPDATE %s SET used_at = $2%s WHERE hash = $1 AND used_at = 0%s RETURNING %s)", table, set, cond, cols)
		n := next
		if token {
			fmt.Fprintf(&b, `,
	s AS (SELECT 1 FROM sessions WHERE id = $%d::text FOR SHARE),
	ins AS (INSERT INTO refresh_tokens (%s) SELECT %s
		WHERE EXISTS (SELECT 1 FROM spent) AND (SELECT count(*) FROM s) >= 0 RETURNING 1)`,
				n+1, refreshCols, castParams(n, refreshArgTypes))
			n += len(refreshArgTypes)
		}
		if event {
			fmt.Fprintf(&b, `,
	ev AS (INSERT INTO events (%s, mac) SELECT %s WHERE EXISTS (SELECT 1 FROM spent) RETURNING 1)`,
				eventCols, castParams(n, eventArgTypes))
		}
		fmt.Fprintf(&b, `,
	cur AS (SELECT %s FROM %s WHERE hash = $1 AND NOT EXISTS (SELECT 1 FROM spent) FOR SHARE)
	SELECT true, %s FROM spent UNION ALL SELECT false, %s FROM cur`, cols, table, cols, cols)
		return b.String()
	}
	return &redeemStatements{plain: build(false, false), token: build(true, false), event: build(false, true), tokenEvent: build(true, true)}
}

// castParams returns "$first::types[0], $first+1::types[1], …".
func castParams(first int, types []string) string {
	ps := make([]string, len(types))
	for i, t := range types {
		ps[i] = fmt.Sprintf("$%d::%s", first+i, t)
	}
	return strings.Join(ps, ", ")
}
