package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/storetest"
)

// dsnEnv names the database the tests use. CI sets it; without it the
// tests skip. If it is set, an unreachable database fails the tests.
const dsnEnv = "WARD_TEST_POSTGRES_DSN"

func dsn(t *testing.T) string {
	t.Helper()
	v := os.Getenv(dsnEnv)
	if v == "" {
		t.Skipf("%s is not set; skipping PostgreSQL tests (e.g. %s=postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", dsnEnv, dsnEnv)
	}
	// Set but unreachable is a failure, reported once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, v)
	if err != nil {
		t.Fatalf("%s is set but the database is unreachable: %v", dsnEnv, err)
	}
	conn.Close(ctx)
	return v
}

// open returns a store in a fresh schema ward_test_<random>, dropped when
// the test ends.
func open(t *testing.T, dsn string, opts ...postgres.Option) *postgres.Store {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_test_" + hex.EncodeToString(b)
	s, err := postgres.Open(ctx, dsn, append([]postgres.Option{postgres.WithSchema(schema), postgres.WithMaxConns(10)}, opts...)...)
	if err != nil {
		t.Fatalf("postgres.Open (%s): %v", dsnEnv, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	d := dsn(t)
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store { return open(t, d, postgres.WithClock(now)) })
}

// TestReopen checks that migrations are idempotent within a schema.
func TestReopen(t *testing.T) {
	d := dsn(t)
	s := open(t, d)
	ctx := context.Background()
	if err := s.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	s2, err := postgres.Open(ctx, d, postgres.WithSchema(s.Schema()))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if u, err := s2.GetUser(ctx, "u1"); err != nil || u.Username != "alice" {
		t.Errorf("after reopen: got %+v, %v; want alice", u, err)
	}
}

func TestInvalidDSNHidesPassword(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://u:s3cret-pw@host:notaport/db")
	if err == nil {
		t.Fatal("Open with invalid DSN: got nil error")
	}
	if got := err.Error(); contains(got, "s3cret-pw") {
		t.Errorf("error leaks the password: %q", got)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestPoolSettings checks that the pool and statement settings reach the
// pool, that impossible ones are refused, and that Ward's SQL runs in the
// modes that do without server-side prepared statements (behind a
// transaction-pooling PgBouncer): the whole conformance suite per mode
// with WARD_TEST_PG_EXEC_MODES=1.
func TestPoolSettings(t *testing.T) {
	d := dsn(t)
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_test_" + hex.EncodeToString(b)
	s, err := postgres.Open(ctx, d, postgres.WithSchema(schema), postgres.WithPool(postgres.Pool{
		MaxConns: 3, MinConns: 2, MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute,
		QueryExecMode: "describe_exec", StatementCacheCapacity: 32,
	}))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	st := s.PoolStat()
	if st.MaxConns != 3 || st.QueryExecMode != "describe_exec" {
		t.Errorf("PoolStat = %+v, want MaxConns 3, describe_exec", st)
	}
	if err := s.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
		t.Errorf("CreateUser: %v", err)
	}
	s.Close()
	if conn, err := pgx.Connect(ctx, d); err == nil {
		_, _ = conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		conn.Close(ctx)
	}

	for _, bad := range []postgres.Pool{
		{MaxConns: 2, MinConns: 3},
		{QueryExecMode: "prepare"},
	} {
		if s, err := postgres.Open(ctx, d, postgres.WithPool(bad)); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded", bad)
		}
	}

	// The conformance suite takes minutes per mode on a small machine:
	// the whole of it runs per mode when asked (it passed in both).
	if os.Getenv("WARD_TEST_PG_EXEC_MODES") == "" {
		t.Log("set WARD_TEST_PG_EXEC_MODES=1 to run the conformance suite in the exec and simple_protocol modes")
		return
	}
	for _, mode := range []string{"exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
				return open(t, d, postgres.WithClock(now), postgres.WithPool(postgres.Pool{QueryExecMode: mode}))
			})
		})
	}
}
