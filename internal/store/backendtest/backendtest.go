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
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
}

// All returns the backends to test on, each with its own new database.
func All(t *testing.T) []Backend {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ward.db")
	bs := []Backend{{Name: "sqlite", Open: func(t *testing.T, now func() time.Time) store.Store {
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
	}}}
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("WARD_TEST_POSTGRES_DSN is required under CI=true")
		}
		t.Log("WARD_TEST_POSTGRES_DSN is not set: PostgreSQL is not tested")
		return bs
	}
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
	return append(bs, Backend{Name: "postgres", Open: func(t *testing.T, now func() time.Time) store.Store {
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
	}})
}
