package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/ward-idp/ward/internal/store/internal/upgradetest"
)

// TestUpgradeFromOlderSchemas creates databases at older migration
// versions (the first release's schema among them), writes data with the
// SQL of that version, and opens them with this code: every migration up
// to the newest runs and the data reads back through the store.
func TestUpgradeFromOlderSchemas(t *testing.T) {
	ctx := context.Background()
	fsys, _ := fs.Sub(migrations, "migrations")
	for _, from := range upgradetest.FromVersions(t, fsys) {
		t.Run("from_"+strconv.FormatInt(from, 10), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ward.db")
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, from); err != nil {
				t.Fatal(err)
			}
			upgradetest.Seed(t, db)
			db.Close()

			s, err := Open(ctx, path)
			if err != nil {
				t.Fatalf("Open (migrate from %d): %v", from, err)
			}
			defer s.Close()
			upgradetest.Check(t, s)
		})
	}
}
