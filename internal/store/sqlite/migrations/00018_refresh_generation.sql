-- The place of a refresh token in its rotation chain: 1 for the first
-- token of a grant, +1 at each rotation, so that the activity record can
-- say which generation a refresh presented and which it issued (a rotated
-- generation presented again is reuse). 0: stored before this column.
-- Conventions as in 00001.

-- +goose Up
ALTER TABLE refresh_tokens ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE refresh_tokens DROP COLUMN generation;
