-- Domain events whose SETs the SSF transmitter has queued, written in the
-- same transaction as the SETs. After a crash between storing an event and
-- queueing its SETs, the transmitter's catch-up consumer finds the event
-- missing here and queues them (docs/ssf.md, "The outbox"). Rows older
-- than the event stream's retention are purged. Conventions as in 00001.

-- +goose Up
CREATE TABLE ssf_handled_events (
    event_id   TEXT PRIMARY KEY,
    handled_at BIGINT NOT NULL
);
CREATE INDEX ssf_handled_events_at ON ssf_handled_events (handled_at);

-- +goose Down
DROP TABLE ssf_handled_events;
