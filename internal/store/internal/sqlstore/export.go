package sqlstore

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// ClaimExportCursor creates sink's cursor at start if it has none, and
// takes or renews its lease for owner when the lease is free or owner's:
// one upsert, so two instances claiming at once cannot both win.
func (s *Store) ClaimExportCursor(ctx context.Context, sink, owner string, start int64, now, until time.Time) (store.ExportCursor, bool, error) {
	if owner == "" {
		return store.ExportCursor{}, false, wrap("claim export cursor", errEmptyOwner)
	}
	c := store.ExportCursor{Sink: sink}
	var leaseUntil, updated int64
	err := s.db.Write().QueryRow(ctx, `INSERT INTO export_cursors (sink, seq, lease_owner, lease_until, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (sink) DO UPDATE SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until
		WHERE export_cursors.lease_owner = excluded.lease_owner OR export_cursors.lease_until < $5
		RETURNING seq, lease_owner, lease_until, updated_at, state`,
		sink, start, owner, micros(until), micros(now)).Scan(&c.Seq, &c.Owner, &leaseUntil, &updated, &c.State)
	if err == nil {
		c.LeaseUntil, c.UpdatedAt = fromMicros(leaseUntil), fromMicros(updated)
		return c, true, nil
	}
	if !s.d.IsNoRows(err) {
		return c, false, wrap("claim export cursor", err)
	}
	// Another owner's live lease.
	err = s.db.Write().QueryRow(ctx, `SELECT seq, lease_owner, lease_until, updated_at FROM export_cursors WHERE sink = $1`, sink).
		Scan(&c.Seq, &c.Owner, &leaseUntil, &updated)
	c.LeaseUntil, c.UpdatedAt = fromMicros(leaseUntil), fromMicros(updated)
	return c, false, wrap("claim export cursor", err)
}

// AdvanceExportCursor moves the cursor forward for the lease holder.
func (s *Store) AdvanceExportCursor(ctx context.Context, sink, owner string, seq int64, now time.Time) (bool, error) {
	n, err := s.db.Write().Exec(ctx, `UPDATE export_cursors SET seq = $3, updated_at = $4
		WHERE sink = $1 AND lease_owner = $2 AND seq <= $3`, sink, owner, seq, micros(now))
	if err != nil {
		return false, wrap("advance export cursor", err)
	}
	return n == 1, nil
}

// SetExportCursorState stores state with sink's lease while owner holds
// it: the owner check and the write are one statement, so a holder that
// lost the lease cannot overwrite its successor's state.
func (s *Store) SetExportCursorState(ctx context.Context, sink, owner, state string, now time.Time) (bool, error) {
	if owner == "" {
		return false, wrap("set export cursor state", errEmptyOwner)
	}
	n, err := s.db.Write().Exec(ctx, `UPDATE export_cursors SET state = $3
		WHERE sink = $1 AND lease_owner = $2 AND lease_until >= $4`, sink, owner, state, micros(now))
	if err != nil {
		return false, wrap("set export cursor state", err)
	}
	return n == 1, nil
}

// ReleaseExportCursor ends owner's lease on sink.
func (s *Store) ReleaseExportCursor(ctx context.Context, sink, owner string) error {
	_, err := s.db.Write().Exec(ctx, `UPDATE export_cursors SET lease_owner = '', lease_until = 0
		WHERE sink = $1 AND lease_owner = $2`, sink, owner)
	return wrap("release export cursor", err)
}

// ListExportCursors returns every cursor by sink name.
func (s *Store) ListExportCursors(ctx context.Context) ([]store.ExportCursor, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT sink, seq, lease_owner, lease_until, updated_at FROM export_cursors ORDER BY sink`)
	out, err := collect(rs, err, "list export cursors", func(r Row) (*store.ExportCursor, error) {
		var (
			c                  store.ExportCursor
			leaseUntil, update int64
		)
		if err := r.Scan(&c.Sink, &c.Seq, &c.Owner, &leaseUntil, &update); err != nil {
			return nil, err
		}
		c.LeaseUntil, c.UpdatedAt = fromMicros(leaseUntil), fromMicros(update)
		return &c, nil
	})
	if err != nil {
		return nil, err
	}
	cs := make([]store.ExportCursor, len(out))
	for i, c := range out {
		cs[i] = *c
	}
	return cs, nil
}
