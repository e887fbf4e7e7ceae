package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/ward-idp/ward/internal/store/internal/upgradetest"
)

// TestUpgradeFromOlderSchemas is sqlite's test of the same name on
// PostgreSQL: a schema at an older migration version, data written with
// its SQL, Open migrates it to the newest and the data reads back.
func TestUpgradeFromOlderSchemas(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set; skipping PostgreSQL tests")
	}
	ctx := context.Background()
	fsys, _ := fs.Sub(migrations, "migrations")
	for _, from := range upgradetest.FromVersions(t, fsys) {
		t.Run("from_"+strconv.FormatInt(from, 10), func(t *testing.T) {
			b := make([]byte, 8)
			rand.Read(b)
			schema := "ward_upg_" + hex.EncodeToString(b)
			cfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				conn, err := pgx.Connect(ctx, dsn)
				if err == nil {
					conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
					conn.Close(ctx)
				}
			})
			if _, err := pool.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
				t.Fatal(err)
			}
			db := stdlib.OpenDBFromPool(pool)
			p, err := goose.NewProvider(goose.DialectPostgres, db, fsys)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, from); err != nil {
				t.Fatal(err)
			}
			upgradetest.Seed(t, db)
			db.Close()
			pool.Close()

			s, err := Open(ctx, dsn, WithSchema(schema), WithMaxConns(4))
			if err != nil {
				t.Fatalf("Open (migrate from %d): %v", from, err)
			}
			defer s.Close()
			upgradetest.Check(t, s)
		})
	}
}
