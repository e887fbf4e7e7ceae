package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// schemaConn connects to the store's schema directly, as a tool (or an
// attacker) with database access would.
func schemaConn(t *testing.T, d, schema string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `SET search_path TO `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// Every column of the events table is in the canonical encoding the
// audit chain hashes: a column added later fails here until the encoding
// (and docs/architecture.md) names it.
func TestEventColumnsAreHashed(t *testing.T) {
	d := dsn(t)
	s := open(t, d)
	conn := schemaConn(t, d, s.Schema())
	rows, err := conn.Query(context.Background(), `SELECT column_name FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = 'events' ORDER BY ordinal_position`, s.Schema())
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cols, store.EventColumns) {
		t.Errorf("events has columns %v; the audit chain hashes %v", cols, store.EventColumns)
	}
}

// InsertEventAt on a number an uncommitted transaction holds waits for
// it: when it commits, the event keeps the number; when it rolls back,
// the number is InsertEventAt's. A number InsertEventAt took cannot be
// committed by anyone afterwards.
func TestInsertEventAtWaitsForTheHolder(t *testing.T) {
	d := dsn(t)
	s := open(t, d)
	ctx := context.Background()
	conn := schemaConn(t, d, s.Schema())
	skipped := &model.Event{ID: "ev-skipped", Type: model.EventAuditSequenceSkipped, Actor: "system"}

	for _, commit := range []bool{true, false} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var seq int64
		if err := tx.QueryRow(ctx, `INSERT INTO events (id, type) VALUES ('ev-slow', 'token.issued') RETURNING seq`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		type result struct {
			ok  bool
			err error
		}
		done := make(chan result, 1)
		go func() {
			ok, err := s.InsertEventAt(ctx, seq, skipped)
			done <- result{ok, err}
		}()
		select {
		case r := <-done:
			t.Fatalf("InsertEventAt did not wait for the uncommitted holder of %d: %v, %v", seq, r.ok, r.err)
		case <-time.After(300 * time.Millisecond):
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || r.ok == commit {
			t.Errorf("holder committed=%v: InsertEventAt = %v, %v; want %v", commit, r.ok, r.err, !commit)
		}
		evs, err := s.EventsAfter(ctx, seq-1, 1)
		if err != nil || len(evs) != 1 || evs[0].Seq != seq {
			t.Fatalf("EventsAfter: %v, %v", evs, err)
		}
		if want := map[bool]string{true: "ev-slow", false: "ev-skipped"}[commit]; evs[0].ID != want {
			t.Errorf("holder committed=%v: seq %d holds %s, want %s", commit, seq, evs[0].ID, want)
		}
	}

	// A number handed out but not inserted yet: InsertEventAt takes it,
	// and the late insert fails.
	var seq int64
	if err := conn.QueryRow(ctx, `SELECT nextval(pg_get_serial_sequence('events', 'seq'))`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.InsertEventAt(ctx, seq, skipped); err != nil || !ok {
		t.Fatalf("InsertEventAt a free number = %v, %v", ok, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO events (seq, id, type) OVERRIDING SYSTEM VALUE VALUES ($1, 'ev-late', 'token.issued')`, seq); err == nil {
		t.Error("an event committed under a number InsertEventAt took")
	}
}
