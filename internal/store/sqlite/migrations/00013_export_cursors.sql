-- The position of each audit export sink (SIEM export) in the events
-- table, and the lease of the instance exporting to it. Conventions as
-- in 00001: times are microseconds since the epoch.

-- +goose Up
CREATE TABLE export_cursors (
    sink        TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);

-- +goose Down
DROP TABLE export_cursors;
