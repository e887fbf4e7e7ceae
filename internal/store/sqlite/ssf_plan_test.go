package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestSSFQueryPlans checks that the SSF outbox queries (run per stream on
// every delivery, poll and rescan) use an index.
func TestSSFQueryPlans(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for _, tc := range []struct{ query, want string }{
		{`SELECT * FROM ssf_outbox WHERE stream_id = $1 AND seq > $2 AND state = 0 ORDER BY seq LIMIT 32`, "(stream_id=? AND seq>?)"},
		{`DELETE FROM ssf_outbox WHERE stream_id = $1 AND seq = $2`, "(stream_id=? AND seq=?)"},
		{`DELETE FROM ssf_outbox WHERE stream_id = $1 AND state = 0 AND jti IN ($2)`, "USING INDEX ssf_outbox_jti"},
		{`SELECT id FROM ssf_streams s WHERE EXISTS (SELECT 1 FROM ssf_outbox o WHERE o.stream_id = s.id AND o.state = 0)`, "(stream_id=?)"},
		{`SELECT * FROM ssf_outbox WHERE stream_id = $1 AND state = 0 AND visible_at <= $2 ORDER BY seq LIMIT 100`, "(stream_id=?)"},
		{`SELECT * FROM ssf_streams WHERE client_id = $1 ORDER BY created_at, id`, "USING INDEX ssf_streams_client"},
	} {
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
		got := strings.Join(plan, "; ")
		t.Logf("%s\n\t-> %s", tc.query, got)
		if !strings.Contains(got, tc.want) || strings.Contains(got, "SCAN o") {
			t.Errorf("plan of %s:\n got  %s\n want %s", tc.query, got, tc.want)
		}
	}
}
