-- Ward schema for SQLite. Times are unix microseconds (0 = unset),
-- durations nanoseconds, lists/maps/raw JSON are JSON text ('' = empty),
-- secrets and hashes are BLOBs.

-- +goose Up
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    email         TEXT NOT NULL DEFAULT '',
    display_name  TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL DEFAULT '',
    totp_secret   BLOB,
    roles         TEXT NOT NULL DEFAULT '',
    disabled      BOOLEAN NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL DEFAULT 0
);
-- Usernames are unique case-insensitively; exact lookups use it too.
CREATE UNIQUE INDEX users_username ON users (lower(username));

CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    pos      INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE clients (
    id                         TEXT PRIMARY KEY,
    name                       TEXT NOT NULL DEFAULT '',
    secret_hash                BLOB,
    token_endpoint_auth_method TEXT NOT NULL DEFAULT '',
    redirect_uris              TEXT NOT NULL DEFAULT '',
    post_logout_redirect_uris  TEXT NOT NULL DEFAULT '',
    grant_types                TEXT NOT NULL DEFAULT '',
    scopes                     TEXT NOT NULL DEFAULT '',
    audience                   TEXT NOT NULL DEFAULT '',
    jwks                       TEXT NOT NULL DEFAULT '',
    dpop_bound_access_tokens   BOOLEAN NOT NULL DEFAULT 0,
    access_token_ttl           INTEGER NOT NULL DEFAULT 0,
    created_at                 INTEGER NOT NULL DEFAULT 0,
    updated_at                 INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    auth_time    INTEGER NOT NULL DEFAULT 0,
    amr          TEXT NOT NULL DEFAULT '',
    acr          TEXT NOT NULL DEFAULT '',
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL DEFAULT 0,
    last_seen    INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER NOT NULL DEFAULT 0,
    idle_timeout INTEGER NOT NULL DEFAULT 0,
    revoked_at   INTEGER NOT NULL DEFAULT 0,
    revoke_cause TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id, created_at);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    session_id TEXT NOT NULL,
    client_id  TEXT NOT NULL DEFAULT '',
    user_id    TEXT NOT NULL DEFAULT '',
    scope      TEXT NOT NULL DEFAULT '',
    jkt        TEXT NOT NULL DEFAULT '',
    auth_time  INTEGER NOT NULL DEFAULT 0,
    amr        TEXT NOT NULL DEFAULT '',
    acr        TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL DEFAULT 0,
    rotated_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

CREATE TABLE auth_codes (
    hash                  BLOB PRIMARY KEY,
    client_id             TEXT NOT NULL DEFAULT '',
    user_id               TEXT NOT NULL DEFAULT '',
    session_id            TEXT NOT NULL DEFAULT '',
    redirect_uri          TEXT NOT NULL DEFAULT '',
    scope                 TEXT NOT NULL DEFAULT '',
    nonce                 TEXT NOT NULL DEFAULT '',
    code_challenge        TEXT NOT NULL DEFAULT '',
    code_challenge_method TEXT NOT NULL DEFAULT '',
    dpop_jkt              TEXT NOT NULL DEFAULT '',
    auth_time             INTEGER NOT NULL DEFAULT 0,
    amr                   TEXT NOT NULL DEFAULT '',
    acr                   TEXT NOT NULL DEFAULT '',
    created_at            INTEGER NOT NULL DEFAULT 0,
    expires_at            INTEGER NOT NULL DEFAULT 0,
    used_at               INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);

CREATE TABLE pushed_requests (
    request_uri TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL DEFAULT '',
    params      TEXT NOT NULL DEFAULT '',
    expires_at  INTEGER NOT NULL DEFAULT 0,
    used_at     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX pushed_requests_expires ON pushed_requests (expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL DEFAULT '',
    private_enc BLOB,
    public_jwk  TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL DEFAULT 0,
    active_at   INTEGER NOT NULL DEFAULT 0,
    retire_at   INTEGER NOT NULL DEFAULT 0
);

-- seq is the rowid. Events are only ever deleted oldest first, so
-- max(rowid)+1 keeps it increasing without AUTOINCREMENT's extra page
-- write per insert. user_id, session_id and client_id are NULL when
-- unset so that their partial indexes skip the many events without them
-- (an equality lookup implies IS NOT NULL, so queries still use them).
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL DEFAULT '',
    type           TEXT NOT NULL,
    time           INTEGER NOT NULL DEFAULT 0,
    actor          TEXT NOT NULL DEFAULT '',
    user_id        TEXT,
    session_id     TEXT,
    client_id      TEXT,
    device_id      TEXT NOT NULL DEFAULT '',
    token_id       TEXT NOT NULL DEFAULT '',
    ip             TEXT NOT NULL DEFAULT '',
    user_agent     TEXT NOT NULL DEFAULT '',
    outcome        TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL DEFAULT '',
    binding        TEXT NOT NULL DEFAULT '',
    binding_reason TEXT NOT NULL DEFAULT '',
    correlation_id TEXT NOT NULL DEFAULT '',
    data           TEXT NOT NULL DEFAULT ''
);
-- Each index ends in the rowid (seq), so "filter, newest first" walks it backwards.
CREATE INDEX events_type ON events (type);
CREATE INDEX events_user ON events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_session ON events (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX events_client ON events (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX events_time ON events (time);

CREATE TABLE jtis (
    jti TEXT PRIMARY KEY,
    exp INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX jtis_exp ON jtis (exp);

-- +goose Down
DROP TABLE jtis;
DROP TABLE events;
DROP TABLE signing_keys;
DROP TABLE pushed_requests;
DROP TABLE auth_codes;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE clients;
DROP TABLE group_members;
DROP TABLE groups;
DROP TABLE users;
