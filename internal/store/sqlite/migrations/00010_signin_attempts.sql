-- Sign-in lockout state lives in the database only, so that every
-- instance sharing it and a restarted one see the same counts:
--   - users.failed_at is the time of the account's last counted attempt;
--     a count older than the failure window starts afresh;
--   - signin_failures counts attempts on usernames that do not exist,
--     keyed by a keyed hash (HMAC under a key derived from the KEK) of
--     the normalised name, so that a typed-in password is not stored.
--     A row is equivalent to no row after expires_at and is purged then.
-- Conventions as in 00001.

-- +goose Up
ALTER TABLE users ADD COLUMN failed_at INTEGER NOT NULL DEFAULT 0;
-- Counts recorded before this column existed keep their age.
UPDATE users SET failed_at = updated_at WHERE failed_logins > 0;

CREATE TABLE signin_failures (
    name_hash    BLOB PRIMARY KEY,
    failures     INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER NOT NULL DEFAULT 0,
    failed_at    INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX signin_failures_expires ON signin_failures (expires_at);

-- +goose Down
DROP TABLE signin_failures;
ALTER TABLE users DROP COLUMN failed_at;
