-- Incidents: risk detections correlated by user, session, device, IP and
-- time window (docs/secops.md, "Incidents"). Conventions as in 00001:
-- times are microseconds since the epoch, lists are JSON text.

-- +goose Up
-- One row, locked by every correlation and every change of incidents:
-- the correlation decision and its write are one transaction, whatever
-- the number of instances. next is the last incident number handed out.
CREATE TABLE incident_counter (
    id   INTEGER PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO incident_counter (id, next) VALUES (1, 0);

CREATE TABLE incidents (
    id            TEXT PRIMARY KEY,
    number        BIGINT NOT NULL UNIQUE,
    title         TEXT NOT NULL,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    assignee      TEXT NOT NULL DEFAULT '',
    merged_into   TEXT NOT NULL DEFAULT '',
    techniques    TEXT NOT NULL DEFAULT '',
    detections    BIGINT NOT NULL DEFAULT 0,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    closed_at     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX incidents_status ON incidents (status, number);
CREATE INDEX incidents_last_seen ON incidents (last_seen);

-- Each detection belongs to one incident: the detection id is the
-- primary key, so a repeat (redelivery, a second instance) is refused.
CREATE TABLE incident_detections (
    detection_id TEXT PRIMARY KEY,
    incident_id  TEXT NOT NULL,
    event_id     TEXT NOT NULL DEFAULT '',
    type         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    confidence   DOUBLE PRECISION NOT NULL DEFAULT 0,
    technique    TEXT NOT NULL DEFAULT '',
    user_id      TEXT NOT NULL DEFAULT '',
    session_id   TEXT NOT NULL DEFAULT '',
    device_id    TEXT NOT NULL DEFAULT '',
    client_id    TEXT NOT NULL DEFAULT '',
    ip           TEXT NOT NULL DEFAULT '',
    detail       TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL DEFAULT '',
    detected_at  BIGINT NOT NULL,
    added_at     BIGINT NOT NULL
);
CREATE INDEX incident_detections_incident ON incident_detections (incident_id, detected_at);

-- The entities (user, session, device, ip) each incident's detections
-- name, once per incident: what correlation looks a detection's entities
-- up in, whatever the number of detections behind them.
CREATE TABLE incident_entities (
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (kind, value, incident_id)
);
CREATE INDEX incident_entities_incident ON incident_entities (incident_id);

-- The timeline: every change of an incident, comments included.
CREATE TABLE incident_timeline (
    seq         INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL DEFAULT '',
    text        TEXT NOT NULL DEFAULT '',
    data        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, seq);

-- +goose Down
DROP TABLE incident_timeline;
DROP TABLE incident_entities;
DROP TABLE incident_detections;
DROP TABLE incidents;
DROP TABLE incident_counter;
