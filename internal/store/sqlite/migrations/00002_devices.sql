-- Devices (registered device keys), RFC 8628 device authorization
-- requests and compliance policies; token protection on clients and the
-- device binding of refresh tokens. Conventions as in 00001.

-- +goose Up
CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL DEFAULT '',
    jkt                 TEXT NOT NULL,
    public_jwk          TEXT NOT NULL DEFAULT '',
    key_storage         TEXT NOT NULL DEFAULT '',
    platform            TEXT NOT NULL DEFAULT '',
    os_name             TEXT NOT NULL DEFAULT '',
    os_version          TEXT NOT NULL DEFAULT '',
    hostname            TEXT NOT NULL DEFAULT '',
    agent_version       TEXT NOT NULL DEFAULT '',
    trust_type          TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL DEFAULT '',
    compliance          TEXT NOT NULL DEFAULT '',
    compliance_failures TEXT NOT NULL DEFAULT '',
    compliance_at       INTEGER NOT NULL DEFAULT 0,
    posture             TEXT NOT NULL DEFAULT '',
    posture_at          INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL DEFAULT 0,
    last_seen           INTEGER NOT NULL DEFAULT 0,
    updated_at          INTEGER NOT NULL DEFAULT 0
);
-- The key thumbprint identifies the device on every DPoP proof.
CREATE UNIQUE INDEX devices_jkt ON devices (jkt);
CREATE INDEX devices_user ON devices (user_id, created_at);
CREATE INDEX devices_created ON devices (created_at);

-- user_code is unique over all rows; an insert takes over the row of an
-- expired request with the same user code (see CreateDeviceCode).
CREATE TABLE device_codes (
    hash          BLOB PRIMARY KEY,
    user_code     TEXT NOT NULL,
    client_id     TEXT NOT NULL DEFAULT '',
    scope         TEXT NOT NULL DEFAULT '',
    dpop_jkt      TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT '',
    user_id       TEXT NOT NULL DEFAULT '',
    session_id    TEXT NOT NULL DEFAULT '',
    auth_time     INTEGER NOT NULL DEFAULT 0,
    amr           TEXT NOT NULL DEFAULT '',
    acr           TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL DEFAULT 0,
    expires_at    INTEGER NOT NULL DEFAULT 0,
    poll_interval INTEGER NOT NULL DEFAULT 0,
    last_poll     INTEGER NOT NULL DEFAULT 0,
    used_at       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE UNIQUE INDEX device_codes_user_code ON device_codes (user_code);
CREATE INDEX device_codes_expires ON device_codes (expires_at);

CREATE TABLE compliance_policies (
    platform   TEXT PRIMARY KEY,
    id         TEXT NOT NULL DEFAULT '',
    name       TEXT NOT NULL DEFAULT '',
    rules      TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

ALTER TABLE clients ADD COLUMN require_protected_sessions BOOLEAN NOT NULL DEFAULT 0;

-- NULL when the token is bound to no registered device, so that the
-- partial index skips those tokens (an equality lookup implies IS NOT
-- NULL, so RevokeDeviceSessions still uses it).
ALTER TABLE refresh_tokens ADD COLUMN device_id TEXT;
CREATE INDEX refresh_tokens_device ON refresh_tokens (device_id) WHERE device_id IS NOT NULL;

-- +goose Down
DROP INDEX refresh_tokens_device;
ALTER TABLE refresh_tokens DROP COLUMN device_id;
ALTER TABLE clients DROP COLUMN require_protected_sessions;
DROP TABLE compliance_policies;
DROP TABLE device_codes;
DROP TABLE devices;
