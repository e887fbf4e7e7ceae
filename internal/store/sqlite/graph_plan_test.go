package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestGraphQueryPlans checks the plans of the investigation graph's
// queries (store.GroupEvents, EventsByID): a user's and a session's events
// are grouped from their covering index alone, in index order (no table
// read, no sort), a session's under its user; devices and addresses use their (subject, time) index;
// events by id their index.
func TestGraphQueryPlans(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	const sel = `SELECT COALESCE(user_id, ''), COALESCE(session_id, ''), COALESCE(client_id, ''), device_id, ip, type, outcome, reason,
		COUNT(*), MIN(time), MAX(time), MIN(seq), MAX(seq) FROM events WHERE `
	tests := []struct {
		query     string
		want, not string
	}{
		{sel + `user_id IN ($1) AND time >= $2 AND time < $3 GROUP BY user_id, session_id, ip, device_id, client_id, type, outcome, reason ORDER BY user_id, session_id, ip, device_id, client_id, type, outcome, reason LIMIT $4`,
			"SEARCH events USING COVERING INDEX events_graph_user (user_id=?)", "B-TREE"},
		// A session's events under its user; those without a user.
		{sel + `user_id IN ($1) AND session_id IN ($2) AND time >= $3 AND time < $4 AND COALESCE(user_id, '') NOT IN ($5) GROUP BY user_id, session_id, ip, device_id, client_id, type, outcome, reason ORDER BY user_id, session_id, ip, device_id, client_id, type, outcome, reason LIMIT $6`,
			"SEARCH events USING COVERING INDEX events_graph_user (user_id=? AND session_id=?)", "B-TREE"},
		{sel + `session_id IN ($1) AND user_id IS NULL AND time >= $2 AND time < $3 GROUP BY session_id, user_id, ip, device_id, client_id, type, outcome, reason ORDER BY session_id, user_id, ip, device_id, client_id, type, outcome, reason LIMIT $4`,
			"SEARCH events USING INDEX events_session_nouser (session_id=? AND time>? AND time<?)", ""},
		{sel + `device_id IN ($1) AND device_id <> '' AND time >= $2 AND time < $3 GROUP BY device_id, user_id, session_id, ip, client_id, type, outcome, reason ORDER BY device_id, user_id, session_id, ip, client_id, type, outcome, reason LIMIT $4`,
			"SEARCH events USING INDEX events_device_time (device_id=? AND time>? AND time<?)", ""},
		{sel + `ip IN ($1) AND ip <> '' AND time >= $2 AND time < $3 GROUP BY ip, user_id, session_id, device_id, client_id, type, outcome, reason ORDER BY ip, user_id, session_id, device_id, client_id, type, outcome, reason LIMIT $4`,
			"SEARCH events USING INDEX events_ip_time (ip=? AND time>? AND time<?)", ""},
		{`SELECT * FROM events WHERE id IN ($1, $2) ORDER BY seq`, "USING INDEX events_id (id=?)", ""},
		{`SELECT * FROM events WHERE seq IN ($1, $2) ORDER BY seq`, "USING INTEGER PRIMARY KEY (rowid=?)", ""},
	}
	for _, tc := range tests {
		n := strings.Count(tc.query, "$")
		args := make([]any, n)
		for i := range args {
			args[i] = "x"
		}
		rs, err := s.db.r.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tc.query, args...)
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
		got := strings.Join(plan, "; ")
		t.Logf("%s\n\t-> %s", strings.Join(strings.Fields(tc.query), " "), got)
		if !strings.Contains(got, tc.want) || (tc.not != "" && strings.Contains(got, tc.not)) {
			t.Errorf("plan of %s:\n got  %s\n want %s (and not %q)", tc.query, got, tc.want, tc.not)
		}
	}
}
