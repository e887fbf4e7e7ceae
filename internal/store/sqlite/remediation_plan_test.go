package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

// TestRemediationPlan: the risk response's revocation finds the sessions
// by the user's index and the user's remediations by the partial index of
// migration 00029, whose predicate the query repeats, not by walking
// every event of the user.
func TestRemediationPlan(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	rs, err := s.db.r.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+sqlstore.RevokeUnremediatedSQL, "u", 1, "c", 0, 2, "s", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var plan []string
	for rs.Next() {
		var id, parent, unused int
		var detail string
		if err := rs.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	got := strings.Join(plan, "; ")
	t.Logf("plan: %s", got)
	for _, want := range []string{"SEARCH events USING INDEX events_remediation (user_id=? AND time>?", "SEARCH sessions USING INDEX sessions_user"} {
		if !strings.Contains(got, want) {
			t.Errorf("plan %s\n lacks %s", got, want)
		}
	}
	if strings.Contains(got, "SCAN events") {
		t.Errorf("plan %s scans the events", got)
	}
}

// TestRemediationIndexPredicate: both backends' migration 00029 create
// the partial index with the predicate the look-up repeats.
func TestRemediationIndexPredicate(t *testing.T) {
	for _, path := range []string{"migrations/00029_remediation_events.sql", "../postgres/migrations/00029_remediation_events.sql"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "WHERE "+sqlstore.RemediationIndexPredicate+";") {
			t.Errorf("%s does not create the index WHERE %s", path, sqlstore.RemediationIndexPredicate)
		}
	}
}
