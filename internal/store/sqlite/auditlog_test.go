package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/ward-idp/ward/internal/store"
)

// Every column of the events table is in the canonical encoding the
// audit chain hashes: a column added later fails here until the encoding
// (and docs/architecture.md) names it.
func TestEventColumnsAreHashed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rs, err := s.db.r.db.QueryContext(ctx, `SELECT name FROM pragma_table_info('events') ORDER BY cid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var cols []string
	for rs.Next() {
		var c string
		if err := rs.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	if !slices.Equal(cols, store.EventColumns) {
		t.Errorf("events has columns %v; the audit chain hashes %v", cols, store.EventColumns)
	}
}

// The migration records the events written before it as the legacy
// part of the log (no record MAC), and they read back without one.
func TestMigrateAuditChainLegacy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	fsys, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 12); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := db.ExecContext(ctx, `INSERT INTO events (type) VALUES ('token.issued')`); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, legacy, err := s.AuditChainStart(ctx)
	if err != nil || first != 0 || legacy != 3 {
		t.Errorf("AuditChainStart = %d, %d, %v; want 0, 3", first, legacy, err)
	}
	n := 0
	err = s.ScanEventRecords(ctx, store.EventScan{Body: true}, func(r *store.EventRecord) error {
		n++
		if r.MAC != nil || r.Hash != nil {
			t.Errorf("legacy event %d: mac %x, hash %x", r.Seq, r.MAC, r.Hash)
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Errorf("scanned %d legacy events, %v", n, err)
	}
}
