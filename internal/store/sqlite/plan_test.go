package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestQueryPlans checks that every hot lookup is served by an index, not
// a table scan.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	tests := []struct {
		query string
		want  string // substring of the plan
	}{
		{`SELECT * FROM users WHERE lower(username) = lower($1) AND username = $1`, "USING INDEX users_username"},
		{`SELECT * FROM refresh_tokens WHERE hash = $1`, "USING PRIMARY KEY"},
		// GetRefreshGrant: three primary-key lookups, token first.
		{`SELECT * FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
			JOIN users u ON u.id = rt.user_id WHERE rt.hash = $1`,
			"SEARCH rt USING PRIMARY KEY (hash=?); SEARCH s USING INDEX sqlite_autoindex_sessions_1 (id=?); SEARCH u USING INDEX sqlite_autoindex_users_1 (id=?)"},
		{`DELETE FROM refresh_tokens WHERE session_id = $1`, "USING INDEX refresh_tokens_session"},
		{`SELECT * FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT 10`, "USING INDEX sessions_user"},
		{`SELECT * FROM group_members WHERE user_id = $1`, "USING INDEX group_members_user"},
		{`SELECT * FROM events WHERE type IN ($1, $2) ORDER BY seq DESC LIMIT 100`, "USING INDEX events_type"},
		{`SELECT * FROM events WHERE user_id = $1 ORDER BY seq DESC LIMIT 100`, "USING INDEX events_user"},
		{`SELECT * FROM events WHERE session_id = $1 ORDER BY seq DESC LIMIT 100`, "USING INDEX events_session"},
		{`SELECT * FROM events WHERE client_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT 100`, "USING INDEX events_client"},
		{`SELECT * FROM events WHERE time >= $1 AND time < $2 ORDER BY seq DESC LIMIT 100`, "USING INDEX events_time"},
		{`SELECT * FROM jtis WHERE jti = $1`, "USING PRIMARY KEY"},
		{`DELETE FROM jtis WHERE exp <= $1`, "USING COVERING INDEX jtis_exp"},
		{`DELETE FROM refresh_tokens WHERE expires_at <= $1`, "USING INDEX refresh_tokens_expires"},
		{`DELETE FROM auth_codes WHERE expires_at <= $1`, "USING INDEX auth_codes_expires"},
		{`DELETE FROM sessions WHERE expires_at <= $1`, "USING INDEX sessions_expires"},
		// Devices: GetDeviceByJKT runs on every DPoP-bound request.
		{`SELECT * FROM devices WHERE jkt = $1`, "SEARCH devices USING INDEX devices_jkt (jkt=?)"},
		{`SELECT * FROM devices WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT 100`, "USING INDEX devices_user"},
		{`SELECT * FROM devices WHERE user_id = $1 AND status = $2 ORDER BY created_at DESC, id LIMIT 100`, "USING INDEX devices_user"},
		{`SELECT * FROM devices ORDER BY created_at DESC, id LIMIT 100`, "USING INDEX devices_created"},
		{`SELECT * FROM device_codes WHERE hash = $1`, "USING PRIMARY KEY"},
		{`SELECT * FROM device_codes WHERE user_code = $1 AND expires_at > $2`, "USING INDEX device_codes_user_code"},
		{`DELETE FROM device_codes WHERE expires_at <= $1`, "USING INDEX device_codes_expires"},
		// RevokeDeviceSessions: the partial index on device_id, then sessions by id.
		{`UPDATE sessions SET revoked_at = 1 WHERE revoked_at = 0 AND id IN
			(SELECT session_id FROM refresh_tokens WHERE device_id = $1) RETURNING id`, "USING INDEX refresh_tokens_device"},
		{`SELECT * FROM compliance_policies WHERE platform = $1`, "USING PRIMARY KEY"},
		// Sign-in failures of unknown names: one row per attempt, purged by expiry.
		{`SELECT * FROM signin_failures WHERE name_hash = $1`, "USING PRIMARY KEY"},
		{`DELETE FROM signin_failures WHERE expires_at <= $1`, "USING INDEX signin_failures_expires"},
		// Recovery codes: one user's, by the primary key's prefix.
		{`UPDATE recovery_codes SET used_at = 1 WHERE user_id = $1 AND code_hash = $2 AND used_at = 0`, "USING PRIMARY KEY (user_id=? AND code_hash=?)"},
		{`SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at = 0`, "USING PRIMARY KEY (user_id=?)"},
	}
	for _, tc := range tests {
		rs, err := s.db.r.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tc.query, "a", "b")
		if err != nil {
			t.Errorf("%s: %v", tc.query, err)
			continue
		}
		var plan []string
		for rs.Next() {
			var id, parent, unused int
			var detail string
			if err := rs.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rs.Close()
		t.Logf("%s\n\t-> %s", strings.Join(strings.Fields(tc.query), " "), strings.Join(plan, "; "))
		if got := strings.Join(plan, "; "); !strings.Contains(got, tc.want) {
			t.Errorf("plan of %s:\n got  %s\n want %s", tc.query, got, tc.want)
		}
	}
}
