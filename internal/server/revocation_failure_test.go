package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// When the revocation that a reused code or refresh token calls for
// fails, the answer is still invalid_grant (the request was refused
// before the revocation), and the failure is logged with the request's
// correlation id instead of being dropped. Nothing claims the revocation
// happened: no reuse event is recorded and the session stays active
// until a later reuse revokes it. The store is made to refuse the
// revocation by a trigger, so the failure is the database's own.
func TestReuseRevocationFailureIsLogged(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: noAutoRevoke})
	reuseRevocationFailure(t, in, func(t *testing.T, refuse bool) {
		db, err := sql.Open("sqlite", in.DBPath+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		stmt := `DROP TRIGGER refuse_revoke`
		if refuse {
			stmt = `CREATE TRIGGER refuse_revoke BEFORE UPDATE OF revoked_at ON sessions
				BEGIN SELECT RAISE(ABORT, 'revocation refused by the test'); END`
		}
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReuseRevocationFailureIsLoggedPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: noAutoRevoke})
	reuseRevocationFailure(t, in, func(t *testing.T, refuse bool) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, in.PostgresDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		stmts := []string{`DROP TRIGGER refuse_revoke ON sessions`}
		if refuse {
			stmts = []string{
				`CREATE OR REPLACE FUNCTION refuse_revoke() RETURNS trigger LANGUAGE plpgsql AS
					$$ BEGIN RAISE EXCEPTION 'revocation refused by the test'; END $$`,
				`CREATE TRIGGER refuse_revoke BEFORE UPDATE OF revoked_at ON sessions
					FOR EACH ROW EXECUTE FUNCTION refuse_revoke()`,
			}
		}
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func reuseRevocationFailure(t *testing.T, in *wardtest.Instance, refuseRevocations func(t *testing.T, refuse bool)) {
	ctx := context.Background()
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	sid := claims(t, r.str("access_token"))["sid"].(string)
	rt := r.str("refresh_token")
	r2 := refresh(t, in, "spa", rt, s)
	if r2.Status != 200 {
		t.Fatalf("refresh: %d %s", r2.Status, r2.Body)
	}

	// loggedFailure finds the error line of the request with correlation
	// id corr.
	loggedFailure := func(corr, msg string) bool {
		for _, line := range strings.Split(in.LogText(), "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) != nil {
				continue
			}
			if l["level"] == "ERROR" && l["msg"] == msg && l["correlation_id"] == corr &&
				l["session_id"] == sid && strings.Contains(l["err"].(string), "revocation refused by the test") {
				return true
			}
		}
		return false
	}
	active := func() bool {
		se, err := in.App.Store.GetSession(ctx, sid)
		if err != nil {
			t.Fatal(err)
		}
		return se.RevokedAt.IsZero()
	}
	events := func(typ model.EventType) int {
		evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{typ}, SessionID: sid})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}

	refuseRevocations(t, true)
	reused := exchange(t, in, "spa", code, verifier, s)
	wantError(t, reused, 400, "invalid_grant")
	if corr := reused.Header.Get("X-Correlation-ID"); !loggedFailure(corr, "code reuse: revoking the session failed") {
		t.Errorf("the failed revocation after code reuse was not logged with correlation id %q:\n%s", corr, in.LogText())
	}
	replayed := refresh(t, in, "spa", rt, s)
	wantError(t, replayed, 400, "invalid_grant")
	if corr := replayed.Header.Get("X-Correlation-ID"); !loggedFailure(corr, "refresh token reuse: revoking the session failed") {
		t.Errorf("the failed revocation after refresh token reuse was not logged with correlation id %q:\n%s", corr, in.LogText())
	}
	if !active() || events(model.EventCodeReuseDetected) != 0 || events(model.EventRefreshReuseDetected) != 0 || events(model.EventSessionRevoked) != 0 {
		t.Fatalf("a revocation the store refused was recorded: active %v, events %d %d %d", active(),
			events(model.EventCodeReuseDetected), events(model.EventRefreshReuseDetected), events(model.EventSessionRevoked))
	}

	// Once the store accepts it, the next reuse revokes the session, once.
	refuseRevocations(t, false)
	wantError(t, refresh(t, in, "spa", rt, s), 400, "invalid_grant")
	if active() || events(model.EventRefreshReuseDetected) != 1 || events(model.EventSessionRevoked) != 1 {
		t.Errorf("after the store recovered: active %v, reuse events %d, session.revoked %d; want revoked, 1, 1",
			active(), events(model.EventRefreshReuseDetected), events(model.EventSessionRevoked))
	}
}
