-- The automatic risk response bounds its revocation at the user's first
-- remediation after the activity it answers (store.RemediationEvents,
-- docs/risk-response.md). This partial index holds only the kinds of
-- event that can be one, so the look-up reads a handful of rows per user
-- rather than every token event, and the ordinary appends do not pay for
-- it. The remediation query repeats the predicate word for word (the
-- planners match it as written). Conventions as in 00001.

-- +goose Up
CREATE INDEX events_remediation ON events (user_id, time)
    WHERE type IN ('user.password_changed', 'user.sessions_revoked');

-- +goose Down
DROP INDEX events_remediation;
