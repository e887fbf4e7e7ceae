package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/store/storetest"
)

// TestEventAtomicity runs storetest.RunEventAtomicity with a trigger that
// makes the store's schema refuse to insert events whose reason is
// storetest.RefusedAppend (the statement fails, which aborts the
// transaction around it: only a rollback ends it).
func TestEventAtomicity(t *testing.T) {
	d := dsn(t)
	s := open(t, d)
	refuseAppends(t, d, s.Schema())
	storetest.RunEventAtomicity(t, s)
}

// TestCreateEventAtomicity runs storetest.RunCreateEventAtomicity: a
// created (or deleted) row commits with its record or not at all.
func TestCreateEventAtomicity(t *testing.T) {
	d := dsn(t)
	s := open(t, d)
	refuseAppends(t, d, s.Schema())
	storetest.RunCreateEventAtomicity(t, s)
}

// TestTokenEventAtomicity runs storetest.RunTokenEventAtomicity: the
// rotation statement's event CTE failing fails the rotation.
func TestTokenEventAtomicity(t *testing.T) {
	d := dsn(t)
	s := open(t, d)
	refuseAppends(t, d, s.Schema())
	storetest.RunTokenEventAtomicity(t, s)
}

// refuseAppends installs the trigger of TestEventAtomicity in schema.
func refuseAppends(t *testing.T, d, schema string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	fn := pgx.Identifier{schema, "storetest_refuse"}.Sanitize()
	for _, stmt := range []string{
		`CREATE FUNCTION ` + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.reason = '` + storetest.RefusedAppend + `' THEN
				RAISE EXCEPTION 'event refused by the test';
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER storetest_refuse BEFORE INSERT ON ` + pgx.Identifier{schema, "events"}.Sanitize() +
			` FOR EACH ROW EXECUTE FUNCTION ` + fn + `()`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
}
