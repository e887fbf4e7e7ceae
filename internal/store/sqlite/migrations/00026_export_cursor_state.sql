-- State a lease holder keeps with its lease (the relay: the sequence
-- numbers it skipped at a gap and still watches for a late commit), so
-- that the next holder takes it over with the lease. Written only by the
-- holder (store.ExportCursors.SetExportCursorState), returned by a claim.

-- +goose Up
ALTER TABLE export_cursors ADD COLUMN state TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE export_cursors DROP COLUMN state;
