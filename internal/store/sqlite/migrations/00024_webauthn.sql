-- WebAuthn: users' passkeys and security keys, and the ceremonies the
-- server has begun. A credential stores only its public key (COSE_Key),
-- the authenticator's model (aaguid), its signature counter and backup
-- flags. A challenge lives here, not in the page or in one process's
-- memory, so that the answer to it is accepted once on any instance and
-- across restarts: the row is deleted by the request that takes it.
-- Conventions as in 00001.

-- +goose Up
CREATE TABLE webauthn_credentials (
    id                 TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id      BLOB NOT NULL UNIQUE,
    name               TEXT NOT NULL DEFAULT '',
    public_key         BLOB NOT NULL,
    aaguid             BLOB,
    sign_count         INTEGER NOT NULL DEFAULT 0,
    transports         TEXT NOT NULL DEFAULT '',
    attachment         TEXT NOT NULL DEFAULT '',
    attestation_format TEXT NOT NULL DEFAULT '',
    attestation_type   TEXT NOT NULL DEFAULT '',
    discoverable       BOOLEAN NOT NULL DEFAULT FALSE,
    backup_eligible    BOOLEAN NOT NULL DEFAULT FALSE,
    backup_state       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         INTEGER NOT NULL DEFAULT 0,
    last_used_at       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id);

CREATE TABLE webauthn_challenges (
    id         TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL,
    user_id    TEXT NOT NULL DEFAULT '',
    session    BLOB NOT NULL,
    created_at INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX webauthn_challenges_expiry ON webauthn_challenges (expires_at);

-- +goose Down
DROP TABLE webauthn_challenges;
DROP TABLE webauthn_credentials;
