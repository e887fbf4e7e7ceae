-- The tamper-evident audit log (internal/audit/chain, docs/architecture.md
-- "The tamper-evident audit log"). Conventions as in 00001.
--
-- events.mac: the record MAC Ward writes with every event (HMAC-SHA256
-- under a secret of audit_secrets); NULL for events written before.
-- audit_chain: one link per sealed event, in sequence order: what the
-- sealer found about its origin and the SHA-256 chain value after it.
-- audit_checkpoints: signed statements of the chain (an ES256 JWS).
-- audit_keys: the public keys that signed checkpoints, sealed under the
-- KEK. audit_secrets: the record MAC key, sealed under the KEK.
-- audit_chain_state.legacy_through: the last event written before this
-- migration, so without a MAC.

-- +goose Up
ALTER TABLE events ADD COLUMN mac BYTEA;

CREATE TABLE audit_chain (
    seq    BIGINT PRIMARY KEY,
    origin BIGINT NOT NULL,
    hash   BYTEA NOT NULL
);

CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    hash       BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    kid        TEXT NOT NULL,
    jws        TEXT NOT NULL
);

CREATE TABLE audit_keys (
    kid        TEXT PRIMARY KEY,
    public_enc BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_secrets (
    name      TEXT PRIMARY KEY,
    value_enc BYTEA NOT NULL
);

CREATE TABLE audit_chain_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    legacy_through BIGINT NOT NULL
);
INSERT INTO audit_chain_state (id, legacy_through) SELECT 1, COALESCE(MAX(seq), 0) FROM events;

-- +goose Down
DROP TABLE audit_chain_state;
DROP TABLE audit_secrets;
DROP TABLE audit_keys;
DROP TABLE audit_checkpoints;
DROP TABLE audit_chain;
ALTER TABLE events DROP COLUMN mac;
