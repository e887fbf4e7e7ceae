-- Conditional Access: versioned policy documents (the highest version is
-- in force; rows are never updated) and the user risk fields the policies
-- read. Conventions as in 00001.

-- +goose Up
CREATE TABLE policy_versions (
    version    BIGINT PRIMARY KEY,
    document   TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL DEFAULT '',
    comment    TEXT NOT NULL DEFAULT ''
);
ALTER TABLE users ADD COLUMN risk_level TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN risk_updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN password_changed_at BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE users DROP COLUMN password_changed_at;
ALTER TABLE users DROP COLUMN risk_updated_at;
ALTER TABLE users DROP COLUMN risk_level;
DROP TABLE policy_versions;
