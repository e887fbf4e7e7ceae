package store

import (
	"context"
	"time"
)

// ExportCursor is how far one audit export sink has delivered the events
// table: every event with a sequence number up to Seq was delivered (or,
// on PostgreSQL, skipped over as a number that never committed). The
// instance holding the lease (Owner, until LeaseUntil) is the only one
// that exports to the sink.
type ExportCursor struct {
	Sink       string
	Seq        int64
	Owner      string
	LeaseUntil time.Time
	UpdatedAt  time.Time
	// State is what the lease's holder stored with it
	// (SetExportCursorState), returned by ClaimExportCursor so that a new
	// holder takes it over with the lease. Empty for the audit sinks.
	State string
}

// ExportCursors is the part of the store the audit exporters use: one
// row per sink, created at start, moved forward after each delivered
// batch.
type ExportCursors interface {
	// ClaimExportCursor takes or renews the lease on sink's cursor for
	// owner until `until` and returns the cursor. A sink seen for the
	// first time gets a cursor at start. The lease is taken when it is
	// free (expired at now) or already owner's; otherwise held is false
	// and the cursor says who holds it.
	ClaimExportCursor(ctx context.Context, sink, owner string, start int64, now, until time.Time) (c ExportCursor, held bool, err error)
	// AdvanceExportCursor moves sink's cursor to seq while owner holds its
	// lease; it never moves it back. It reports false when owner no
	// longer holds the lease (another instance claimed it).
	AdvanceExportCursor(ctx context.Context, sink, owner string, seq int64, now time.Time) (bool, error)
	// SetExportCursorState stores state with sink's lease while owner
	// holds it (and it has not ended at now), in one statement with that
	// check. It reports false when owner does not hold the lease: a
	// holder that lost its lease cannot overwrite its successor's state.
	SetExportCursorState(ctx context.Context, sink, owner, state string, now time.Time) (bool, error)
	// ReleaseExportCursor ends owner's lease on sink (on shutdown), so
	// another instance may take the sink over at once.
	ReleaseExportCursor(ctx context.Context, sink, owner string) error
	// ListExportCursors returns every sink's cursor, by sink name.
	ListExportCursors(ctx context.Context) ([]ExportCursor, error)
}
