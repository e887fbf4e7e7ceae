package sqlite

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

// Write().Query runs a statement with result rows (UPDATE … RETURNING)
// as one operation of the writer, alone and in a shared transaction, and
// hands back every row, scanned as database/sql would.
func TestWriteQueryReturningRows(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	defer s.Close()
	for _, id := range []string{"a", "b", "c"} {
		if err := s.db.InTx(ctx, insertEvent(id)); err != nil {
			t.Fatal(err)
		}
	}
	type name string
	update := func(outcome string) ([]string, error) {
		rs, err := s.db.Write().Query(ctx, `UPDATE events SET outcome = $1 WHERE type = 'test'
			RETURNING id, seq, user_id, outcome, CAST(outcome AS BLOB), seq`, outcome)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		var got []string
		seqSeen := map[int64]bool{}
		for rs.Next() {
			var (
				id     name
				seq    int64
				user   sql.NullString
				out    string
				blob   []byte
				anySeq any
			)
			if err := rs.Scan(&id, &seq, &user, &out, &blob, &anySeq); err != nil {
				return nil, err
			}
			if seq <= 0 || seqSeen[seq] || user.Valid || out != outcome || string(blob) != outcome || anySeq != seq {
				t.Errorf("row %s: seq %d user %v outcome %q blob %q any %v", id, seq, user, out, blob, anySeq)
			}
			seqSeen[seq] = true
			got = append(got, string(id))
		}
		slices.Sort(got)
		return got, rs.Err()
	}
	// Alone, with the writer idle.
	if got, err := update("one"); err != nil || !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("Write().Query alone: %v %v, want [a b c]", got, err)
	}
	// Queued behind a transaction, so that it shares the next one with
	// other writes, one of them failing.
	inTx, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.db.InTx(ctx, func(sqlstore.Querier) error { close(inTx); <-release; return nil })
	}()
	<-inTx
	type result struct {
		ids []string
		err error
	}
	res := make(chan result, 1)
	go func() { ids, err := update("two"); res <- result{ids, err} }()
	waitQueued(t, s.db.writer, 1)
	failed := make(chan error, 1)
	go func() { _, err := s.db.Write().Exec(ctx, `INSERT INTO no_such_table VALUES (1)`); failed <- err }()
	waitQueued(t, s.db.writer, 2)
	added := make(chan error, 1)
	go func() { added <- s.db.InTx(ctx, insertEvent("d")) }()
	waitQueued(t, s.db.writer, 3)
	commits := s.db.writer.commits.Load()
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil || !slices.Equal(r.ids, []string{"a", "b", "c"}) {
		t.Errorf("Write().Query in a shared transaction: %v %v, want [a b c]", r.ids, r.err)
	}
	if err := <-failed; err == nil {
		t.Error("the failing write succeeded")
	}
	if err := <-added; err != nil {
		t.Error(err)
	}
	if c := s.db.writer.commits.Load() - commits; c != 2 {
		t.Errorf("%d commits, want 2 (the held transaction, then the three writes together)", c)
	}
	var n int
	if err := s.db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE outcome = 'two'`).Scan(&n); err != nil || n != 3 {
		t.Errorf("%d rows updated by the shared Write().Query (%v), want 3", n, err)
	}
	// An error of the statement reaches the caller.
	if _, err := s.db.Write().Query(ctx, `UPDATE no_such_table SET x = 1 RETURNING x`); err == nil {
		t.Error("Write().Query of a bad statement succeeded")
	}
}

// The push worker's lease claim (UPDATE … RETURNING on the write
// querier) works on SQLite and is durable: a second owner finds the
// streams taken.
func TestClaimSSFStreamsSQLite(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	defer s.Close()
	for _, id := range []string{"p1", "p2"} {
		if err := s.CreateSSFStream(ctx, &model.SSFStream{ID: id, ClientID: "c", Method: model.DeliveryPush,
			Status: model.StreamEnabled}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	ids, err := s.ClaimSSFStreams(ctx, "A", now, now.Add(5*time.Second), now.Add(10*time.Second), -1)
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{"p1", "p2"}) {
		t.Fatalf("ClaimSSFStreams: %v %v, want [p1 p2]", ids, err)
	}
	if ids, err := s.ClaimSSFStreams(ctx, "B", now, now.Add(5*time.Second), now.Add(10*time.Second), -1); err != nil || len(ids) != 0 {
		t.Errorf("B claimed %v (%v) while A holds the leases", ids, err)
	}
}
