-- Ward as a receiver of Shared Signals: its stream at each configured
-- transmitter (so a restart finds it instead of creating another), and
-- the SETs it accepted, until their iat window ends (a replay is refused
-- after a restart and by every instance). Users are looked up by email
-- to map email subjects. Conventions as in 00001: times are microseconds
-- since the epoch, lists JSON text.

-- +goose Up
CREATE TABLE ssf_receiver_streams (
    name                 TEXT PRIMARY KEY,
    issuer               TEXT NOT NULL,
    stream_id            TEXT NOT NULL DEFAULT '',
    delivery             TEXT NOT NULL DEFAULT '',
    endpoint_url         TEXT NOT NULL DEFAULT '',
    audience             TEXT NOT NULL DEFAULT '',
    events_delivered     TEXT NOT NULL DEFAULT '',
    status               TEXT NOT NULL DEFAULT '',
    status_reason        TEXT NOT NULL DEFAULT '',
    push_token_hash      BLOB,
    prev_push_token_hash BLOB,
    config_digest        TEXT NOT NULL DEFAULT '',
    verified_at          BIGINT NOT NULL DEFAULT 0,
    last_error           TEXT NOT NULL DEFAULT '',
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE ssf_received_sets (
    receiver TEXT NOT NULL,
    jti      TEXT NOT NULL,
    exp      BIGINT NOT NULL,
    PRIMARY KEY (receiver, jti)
);
CREATE INDEX ssf_received_sets_exp ON ssf_received_sets (exp);

CREATE INDEX users_email ON users (lower(email));

-- +goose Down
DROP INDEX users_email;
DROP TABLE ssf_received_sets;
DROP TABLE ssf_receiver_streams;
