-- Shared Signals (SSF 1.0) transmitter: event streams of receivers and the
-- durable outbox of signed SETs, one queue per stream in sequence order.
-- Conventions as in 00001.

-- +goose Up
CREATE TABLE ssf_streams (
    id               TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL,
    audience         TEXT NOT NULL DEFAULT '',
    method           TEXT NOT NULL,
    endpoint_url     TEXT NOT NULL DEFAULT '',
    -- the push authorization_header, AES-256-GCM under the KEK (AAD: stream id)
    auth_header      BYTEA,
    events_requested TEXT NOT NULL DEFAULT '',
    events_delivered TEXT NOT NULL DEFAULT '',
    description      TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    status_reason    TEXT NOT NULL DEFAULT '',
    excluded         TEXT NOT NULL DEFAULT '',
    -- the next sequence number of the stream's queue
    next_seq         BIGINT NOT NULL DEFAULT 1,
    -- push delivery lease: one instance delivers a stream at a time
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL DEFAULT 0,
    updated_at       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX ssf_streams_client ON ssf_streams (client_id, created_at);

-- One row: bumped on every change of a stream's configuration, so that
-- instances notice changes made by others with one cheap read.
CREATE TABLE ssf_meta (
    id      INTEGER PRIMARY KEY,
    version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO ssf_meta (id, version) VALUES (1, 0);

-- state: 0 queued, 2 refused by the receiver (kept for inspection).
-- Delivered (pushed and answered 2xx, or acknowledged by a poll) rows are
-- deleted. visible_at holds a polled SET back until its acknowledgement
-- is overdue.
CREATE TABLE ssf_outbox (
    stream_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    jti         TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    subject_key TEXT NOT NULL DEFAULT '',
    event_type  TEXT NOT NULL DEFAULT '',
    set_jwt     TEXT NOT NULL,
    created_at  BIGINT NOT NULL DEFAULT 0,
    state       BIGINT NOT NULL DEFAULT 0,
    visible_at  BIGINT NOT NULL DEFAULT 0,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (stream_id, seq)
);
CREATE UNIQUE INDEX ssf_outbox_jti ON ssf_outbox (stream_id, jti);
CREATE UNIQUE INDEX ssf_outbox_dedup ON ssf_outbox (stream_id, dedup_key);
-- No index on state: every write of a SET pays for each index, and the
-- queries by state look per stream through the primary key (delivered
-- rows are deleted, so a queue's head is its oldest undelivered SET).

-- +goose Down
DROP TABLE ssf_outbox;
DROP TABLE ssf_meta;
DROP TABLE ssf_streams;
