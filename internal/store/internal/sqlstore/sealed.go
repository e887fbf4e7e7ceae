package sqlstore

import (
	"context"

	"github.com/ward-idp/ward/internal/store"
)

// sealedColumns are the columns holding values sealed under the KEK, one
// per store.Sealed kind, in store.SealedKinds order.
var sealedColumns = []struct{ kind, table, key, col string }{
	{store.SealedSigningKey, "signing_keys", "kid", "private_enc"},
	{store.SealedTOTP, "users", "id", "totp_secret"},
	{store.SealedSSFAuthHeader, "ssf_streams", "id", "auth_header"},
	{store.SealedAuditKey, "audit_keys", "kid", "public_enc"},
	{store.SealedAuditSecret, "audit_secrets", "name", "value_enc"},
}

// ResealAll rewrites the sealed values reseal changes, in one
// transaction with ctx's pending event (store.WithEvent).
func (s *Store) ResealAll(ctx context.Context, reseal func(*store.Sealed) ([]byte, error)) (int, error) {
	var n int
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		var ids []string
		streams := false
		for _, c := range sealedColumns {
			rs, err := q.Query(ctx, `SELECT `+c.key+`, `+c.col+` FROM `+c.table+` WHERE `+c.col+` IS NOT NULL ORDER BY `+c.key+s.d.ForUpdate)
			vals, err := collect(rs, err, "read sealed "+c.kind, func(r Row) (*store.Sealed, error) {
				v := &store.Sealed{Kind: c.kind}
				err := r.Scan(&v.Owner, &v.Ciphertext)
				return v, err
			})
			if err != nil {
				return nil, err
			}
			for _, v := range vals {
				if len(v.Ciphertext) == 0 {
					continue
				}
				ct, err := reseal(v)
				if err != nil {
					return nil, err
				}
				if ct == nil {
					continue
				}
				if _, err := q.Exec(ctx, `UPDATE `+c.table+` SET `+c.col+` = $2 WHERE `+c.key+` = $1`, v.Owner, blob(ct)); err != nil {
					return nil, wrap("reseal "+c.kind, err)
				}
				ids = append(ids, c.kind+":"+v.Owner)
				streams = streams || c.kind == store.SealedSSFAuthHeader
			}
		}
		if streams {
			if _, err := q.Exec(ctx, bumpSSFVersion); err != nil {
				return nil, wrap("reseal", err)
			}
		}
		n = len(ids)
		return ids, nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
