// Package backendtest gives tests outside the store the databases to run
// on: SQLite always, and PostgreSQL when WARD_TEST_POSTGRES_DSN is set
// (required under CI=true), each in a fresh database or schema that is
// removed afterwards. A Backend opens any number of store handles on one
// database: each is what one instance of Ward, or one process after a
// restart, would hold.
package backendtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// Backend is one database.
type Backend struct {
	Name string
	// Open returns a new handle on the database (closed when the test
	// ends); now is its clock (nil: time.Now).
	Open func(t *testing.T, now func() time.Time) store.Store
	// exec runs statements on the database through a connection of its
	// own, outside every store handle.
	exec func(t *testing.T, stmts ...string)
	// events is the events table, as a trigger names it.
	events string
}

// RefuseEvents makes the database refuse to insert events of the given
// types (a trigger: the insert fails inside the transaction of the write
// that appends them, which then rolls back) until the returned function
// is called. It is how a test shows that a change and its record commit
// together: a write whose event is refused must leave nothing behind.
func (b Backend) RefuseEvents(t *testing.T, types ...model.EventType) (lift func()) {
	t.Helper()
	q := make([]string, len(types))
	for i, typ := range types {
		q[i] = "'" + strings.ReplaceAll(string(typ), "'", "''") + "'"
	}
	in := strings.Join(q, ", ")
	if b.Name == "sqlite" {
		b.exec(t, `CREATE TRIGGER backendtest_refuse BEFORE INSERT ON events WHEN NEW.type IN (`+in+`)
			BEGIN SELECT RAISE(ABORT, 'event refused by the test'); END`)
		return func() { b.exec(t, `DROP TRIGGER backendtest_refuse`) }
	}
	fn := strings.TrimSuffix(b.events, `"events"`) + `"backendtest_refuse"`
	b.exec(t, `CREATE FUNCTION `+fn+`() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.type IN (`+in+`) THEN
				RAISE EXCEPTION 'event refused by the test';
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER backendtest_refuse BEFORE INSERT ON `+b.events+` FOR EACH ROW EXECUTE FUNCTION `+fn+`()`)
	return func() { b.exec(t, `DROP TRIGGER backendtest_refuse ON `+b.events, `DROP FUNCTION `+fn+`()`) }
}

// All returns the backends to test on, each with its own new database.
func All(t *testing.T) []Backend {
	t.Helper()
	var bs []Backend
	for _, k := range Kinds(t) {
		bs = append(bs, k.New(t))
	}
	return bs
}

// Kind is a kind of database to test on; New makes a new, empty one
// (removed when t ends).
type Kind struct {
	Name string
	New  func(t *testing.T) Backend
}

// Opener returns a function opening handles on a new database of kind k
// with clock now: each call is one more instance (or a restart).
func (k Kind) Opener(t *testing.T, now func() time.Time) func() store.Store {
	t.Helper()
	b := k.New(t)
	return func() store.Store { return b.Open(t, now) }
}

// Kinds returns the kinds of database to test on: SQLite always,
// PostgreSQL when WARD_TEST_POSTGRES_DSN is set (required under CI=true).
func Kinds(t *testing.T) []Kind {
	t.Helper()
	ks := []Kind{{Name: "sqlite", New: newSQLite}}
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("WARD_TEST_POSTGRES_DSN is required under CI=true")
		}
		t.Log("WARD_TEST_POSTGRES_DSN is not set: PostgreSQL is not tested")
		return ks
	}
	return append(ks, Kind{Name: "postgres", New: func(t *testing.T) Backend { return newPostgres(t, dsn) }})
}

// newSQLite is a new SQLite database file.
func newSQLite(t *testing.T) Backend {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ward.db")
	exec := func(t *testing.T, stmts ...string) {
		t.Helper()
		// Waits for a store's writer rather than failing busy.
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, stmt := range stmts {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	return Backend{Name: "sqlite", exec: exec, events: "events", Open: func(t *testing.T, now func() time.Time) store.Store {
		t.Helper()
		var opts []sqlite.Option
		if now != nil {
			opts = append(opts, sqlite.WithClock(now))
		}
		st, err := sqlite.Open(context.Background(), path, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}}
}

// newPostgres is a new schema on the PostgreSQL server at dsn.
func newPostgres(t *testing.T, dsn string) Backend {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_test_" + hex.EncodeToString(b)
	t.Cleanup(func() { // registered first: runs after every handle closed
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	exec := func(t *testing.T, stmts ...string) {
		t.Helper()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, stmt := range stmts {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
	events := pgx.Identifier{schema, "events"}.Sanitize()
	return Backend{Name: "postgres", exec: exec, events: events, Open: func(t *testing.T, now func() time.Time) store.Store {
		t.Helper()
		opts := []postgres.Option{postgres.WithSchema(schema), postgres.WithMaxConns(8)}
		if now != nil {
			opts = append(opts, postgres.WithClock(now))
		}
		st, err := postgres.Open(context.Background(), dsn, opts...)
		if err != nil {
			t.Fatalf("postgres.Open: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}}
}
