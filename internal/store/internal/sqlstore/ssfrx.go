package sqlstore

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

const ssfrxCols = `name, issuer, stream_id, delivery, endpoint_url, audience, events_delivered, status, status_reason,
	push_token_hash, prev_push_token_hash, config_digest, verified_at, last_error, created_at, updated_at`

// PutSSFReceiverStream upserts a receiver's stream by name, keeping the
// stored creation time.
func (s *Store) PutSSFReceiverStream(ctx context.Context, r *model.SSFReceiverStream) error {
	_, err := s.db.Write().Exec(ctx, `INSERT INTO ssf_receiver_streams (`+ssfrxCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		ON CONFLICT (name) DO UPDATE SET issuer = excluded.issuer, stream_id = excluded.stream_id,
			delivery = excluded.delivery, endpoint_url = excluded.endpoint_url, audience = excluded.audience,
			events_delivered = excluded.events_delivered, status = excluded.status, status_reason = excluded.status_reason,
			push_token_hash = excluded.push_token_hash, prev_push_token_hash = excluded.prev_push_token_hash,
			config_digest = excluded.config_digest, verified_at = excluded.verified_at, last_error = excluded.last_error,
			updated_at = excluded.updated_at`,
		r.Name, r.Issuer, r.StreamID, r.Delivery, r.EndpointURL, jsonList(r.Audience), jsonList(r.EventsDelivered),
		r.Status, r.StatusReason, blob(r.PushTokenHash), blob(r.PrevPushTokenHash), r.ConfigDigest,
		micros(r.VerifiedAt), r.LastError, micros(r.CreatedAt), micros(r.UpdatedAt))
	return wrap("put ssf receiver stream", err)
}

func scanSSFReceiverStream(row Row) (*model.SSFReceiverStream, error) {
	var (
		r                          model.SSFReceiverStream
		aud, evs                   string
		hash, prev                 []byte
		verified, created, updated int64
	)
	if err := row.Scan(&r.Name, &r.Issuer, &r.StreamID, &r.Delivery, &r.EndpointURL, &aud, &evs, &r.Status, &r.StatusReason,
		&hash, &prev, &r.ConfigDigest, &verified, &r.LastError, &created, &updated); err != nil {
		return nil, err
	}
	var err error
	if r.Audience, err = unjsonList(aud, "ssf receiver audience"); err != nil {
		return nil, err
	}
	if r.EventsDelivered, err = unjsonList(evs, "ssf receiver events"); err != nil {
		return nil, err
	}
	r.PushTokenHash, r.PrevPushTokenHash = unblob(hash), unblob(prev)
	r.VerifiedAt, r.CreatedAt, r.UpdatedAt = fromMicros(verified), fromMicros(created), fromMicros(updated)
	return &r, nil
}

// GetSSFReceiverStream reads one receiver's stream.
func (s *Store) GetSSFReceiverStream(ctx context.Context, name string) (*model.SSFReceiverStream, error) {
	r, err := scanSSFReceiverStream(s.db.Read().QueryRow(ctx, `SELECT `+ssfrxCols+` FROM ssf_receiver_streams WHERE name = $1`, name))
	return r, s.getErr("ssf receiver stream", err)
}

// ListSSFReceiverStreams returns every receiver's stream by name.
func (s *Store) ListSSFReceiverStreams(ctx context.Context) ([]*model.SSFReceiverStream, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT `+ssfrxCols+` FROM ssf_receiver_streams ORDER BY name`)
	return collect(rs, err, "list ssf receiver streams", scanSSFReceiverStream)
}

// DeleteSSFReceiverStream forgets a receiver's stream.
func (s *Store) DeleteSSFReceiverStream(ctx context.Context, name string) error {
	n, err := s.db.Write().Exec(ctx, `DELETE FROM ssf_receiver_streams WHERE name = $1`, name)
	return deleted("ssf receiver stream", n, err)
}

// RecordSSFSignal records an accepted SET with ctx's pending events, in
// one transaction; an unexpired record of the same jti refuses it. An
// expired one is taken over (its SET would fail the iat window now).
func (s *Store) RecordSSFSignal(ctx context.Context, receiver, jti string, exp time.Time) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		n, err := q.Exec(ctx, `INSERT INTO ssf_received_sets (receiver, jti, exp) VALUES ($1, $2, $3)
			ON CONFLICT (receiver, jti) DO UPDATE SET exp = excluded.exp WHERE ssf_received_sets.exp <= $4`,
			receiver, jti, micros(exp), micros(s.now()))
		if err != nil {
			return nil, wrap("record ssf signal", err)
		}
		if n == 0 {
			return nil, store.ErrReplay
		}
		return nil, nil
	})
}

// PurgeSSFSignals deletes expired records of accepted SETs.
func (s *Store) PurgeSSFSignals(ctx context.Context, now time.Time) (int64, error) {
	n, err := s.db.Write().Exec(ctx, `DELETE FROM ssf_received_sets WHERE exp <= $1`, micros(now))
	return n, wrap("purge ssf signals", err)
}

// UsersByEmail finds users by email, case-insensitively (index
// users_email).
func (s *Store) UsersByEmail(ctx context.Context, email string, n int) ([]*model.User, error) {
	if n <= 0 {
		n = 2
	}
	rs, err := s.db.Read().Query(ctx, `SELECT `+userCols+` FROM users WHERE lower(email) = lower($1) AND email <> '' ORDER BY id LIMIT $2`, email, n)
	return collect(rs, err, "users by email", scanUser)
}
