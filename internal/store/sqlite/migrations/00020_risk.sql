-- Identity Protection: the detections behind each user's and session's
-- risk level, the session levels and the history of every level change.
-- The user's level itself is users.risk_level (what Conditional Access
-- reads). Conventions as in 00001: times are microseconds since the
-- epoch, lists are JSON text.

-- +goose Up
CREATE TABLE risk_detections (
    id           TEXT PRIMARY KEY, -- the detection id: a repeat is refused here
    type         TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    session_id   TEXT NOT NULL DEFAULT '',
    client_id    TEXT NOT NULL DEFAULT '',
    device_id    TEXT NOT NULL DEFAULT '',
    ip           TEXT NOT NULL DEFAULT '',
    severity     TEXT NOT NULL,
    confidence   DOUBLE PRECISION NOT NULL,
    technique    TEXT NOT NULL DEFAULT '',
    evidence     TEXT NOT NULL DEFAULT '',
    detail       TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL DEFAULT '',
    event_id     TEXT NOT NULL DEFAULT '',
    detected_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    state_reason TEXT NOT NULL DEFAULT '',
    state_actor  TEXT NOT NULL DEFAULT '',
    state_at     BIGINT NOT NULL DEFAULT 0,
    handled      BOOLEAN NOT NULL DEFAULT 0
);
CREATE INDEX risk_detections_user ON risk_detections (user_id, state, detected_at);
CREATE INDEX risk_detections_session ON risk_detections (session_id, detected_at);
CREATE INDEX risk_detections_expiry ON risk_detections (state, expires_at);

CREATE TABLE session_risk (
    session_id TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    level      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX session_risk_user ON session_risk (user_id);
CREATE INDEX session_risk_level ON session_risk (level, updated_at);

CREATE TABLE risk_history (
    seq          INTEGER PRIMARY KEY,
    subject      TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    level        TEXT NOT NULL,
    previous     TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    actor        TEXT NOT NULL DEFAULT '',
    detection_id TEXT NOT NULL DEFAULT '',
    at           BIGINT NOT NULL
);
CREATE INDEX risk_history_user ON risk_history (user_id, seq);

CREATE INDEX users_risk_level ON users (risk_level, risk_updated_at);

-- +goose Down
DROP INDEX users_risk_level;
DROP TABLE risk_history;
DROP TABLE session_risk;
DROP TABLE risk_detections;
