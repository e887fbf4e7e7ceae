package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/ward-idp/ward/internal/model"
)

// Devices disabled or lost before their evaluation followed their status
// become noncompliant, naming the status, when the database is migrated;
// active devices keep their evaluation.
func TestMigrateInactiveDevicesNoncompliant(t *testing.T) {
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
	if _, err := p.UpTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	for i, st := range []string{model.DeviceActive, model.DeviceDisabled, model.DeviceLost} {
		if _, err := db.ExecContext(ctx, `INSERT INTO devices (id, jkt, status, compliance, compliance_failures) VALUES ($1, $2, $3, 'compliant', '[]')`,
			st, string(rune('a'+i)), st); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for st, want := range map[string]string{model.DeviceActive: "", model.DeviceDisabled: "the device is disabled", model.DeviceLost: "lost or stolen"} {
		d, err := s.GetDevice(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if want == "" {
			if d.Compliance != model.Compliant || string(d.ComplianceFailures) != "[]" {
				t.Errorf("active device changed: %s %s", d.Compliance, d.ComplianceFailures)
			}
			continue
		}
		if d.Compliance != model.NonCompliant || !strings.Contains(string(d.ComplianceFailures), `"rule":"device_status"`) ||
			!strings.Contains(string(d.ComplianceFailures), want) {
			t.Errorf("%s device: %s %s", st, d.Compliance, d.ComplianceFailures)
		}
	}
}
