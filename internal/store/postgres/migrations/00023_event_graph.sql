-- The investigation graph (internal/graph, docs/secops.md "Investigation
-- graph") reads the events of users, sessions, devices and IP addresses
-- within a time window, and single events by id (the evidence of
-- detections). Conventions as in 00001.
--
-- events_graph_user holds every column the graph groups by, in the
-- order it groups (store.GroupEvents), and the time last: a user's
-- events, and a session's (under its user), are aggregated by walking the
-- index alone, in order, without reading the table or sorting (seq, last
-- in every index, makes the scans index-only). The few events
-- of a session that name no user have an index of their own. Devices and
-- addresses have a plain (subject, time) index; their partial condition skips the many
-- events without one (the queries repeat it).

-- +goose Up
CREATE INDEX events_graph_user ON events (user_id, session_id, ip, device_id, client_id, type, outcome, reason, time, seq)
    WHERE user_id IS NOT NULL;
CREATE INDEX events_session_nouser ON events (session_id, time, seq)
    WHERE session_id IS NOT NULL AND user_id IS NULL;
CREATE INDEX events_device_time ON events (device_id, time, seq) WHERE device_id <> '';
CREATE INDEX events_ip_time ON events (ip, time, seq) WHERE ip <> '';
CREATE INDEX events_id ON events (id);

-- +goose Down
DROP INDEX events_id;
DROP INDEX events_ip_time;
DROP INDEX events_device_time;
DROP INDEX events_session_nouser;
DROP INDEX events_graph_user;
