-- One-time recovery codes of the TOTP second factor, for a user who lost
-- the authenticator. Only a keyed hash of each code is stored (HMAC-SHA256
-- under a key derived from the KEK, over the user id and the code), never
-- the code. A used code keeps its row (used_at) so that presenting it
-- again is told apart from a wrong code, until the set is replaced or the
-- TOTP factor removed. Conventions as in 00001.

-- +goose Up
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL,
    created_at INTEGER NOT NULL DEFAULT 0,
    used_at    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, code_hash)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE recovery_codes;
