package server_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// refusedAgent is the User-Agent of the requests whose token events the
// test trigger makes the database refuse.
const refusedAgent = "ward-test-refused-audit"

// tokenEventInstances starts an instance on SQLite and, when
// WARD_TEST_POSTGRES_DSN is set (required under CI), one on PostgreSQL,
// and runs f on each.
func tokenEventInstances(t *testing.T, f func(t *testing.T, in *wardtest.Instance, refuse func(t *testing.T))) {
	t.Run("sqlite", func(t *testing.T) {
		in := wardtest.Start(t, wardtest.Options{})
		f(t, in, func(t *testing.T) { refuseTokenEventsSQLite(t, in.DBPath) })
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
		if dsn == "" {
			if os.Getenv("CI") != "" {
				t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
			}
			t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
		}
		in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
		f(t, in, func(t *testing.T) { refuseTokenEventsPostgres(t, in.PostgresDSN()) })
	})
}

// refuseTokenEventsSQLite installs a trigger making the database refuse
// the token events of requests from refusedAgent: the append fails inside
// the write that commits the token.
func refuseTokenEventsSQLite(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER test_refuse_token_events BEFORE INSERT ON events
		WHEN NEW.user_agent = '` + refusedAgent + `' AND NEW.type IN ('token.issued', 'token.refreshed', 'token.revoked')
		BEGIN SELECT RAISE(ABORT, 'token event refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
}

func refuseTokenEventsPostgres(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		`CREATE FUNCTION test_refuse_token_events() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.user_agent = '` + refusedAgent + `' AND NEW.type IN ('token.issued', 'token.refreshed', 'token.revoked') THEN
				RAISE EXCEPTION 'token event refused by the test';
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER test_refuse_token_events BEFORE INSERT ON events
			FOR EACH ROW EXECUTE FUNCTION test_refuse_token_events()`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
}

// tokenEvents returns the stored events of types in session sid.
func tokenEvents(t *testing.T, in *wardtest.Instance, sid string, types ...model.EventType) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: types, SessionID: sid, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// wantCleanServerError checks the answer to a token request whose audit
// record the database refused: a plain server_error that carries no
// token and nothing of the database's message.
func wantCleanServerError(t *testing.T, r result, secrets ...string) {
	t.Helper()
	wantError(t, r, http.StatusInternalServerError, "server_error")
	for _, k := range []string{"access_token", "refresh_token", "id_token"} {
		if _, ok := r.JSON[k]; ok {
			t.Errorf("server_error carries %s", k)
		}
	}
	for _, s := range append(secrets, "refused", "trigger", "events", "INSERT", "SQL") {
		if strings.Contains(r.Body, s) {
			t.Errorf("server_error body %q contains %q", r.Body, s)
		}
	}
}

// A refresh whose token.refreshed the database refuses rotates nothing:
// the client gets a plain server_error, the presented token stays the
// live one (presenting it again is a normal refresh, not reuse), no other
// token exists, and the audit log has exactly one token.refreshed per
// rotation that happened. The same for the code exchange's token.issued
// with the refresh token it creates, and for a refresh token revoked at
// /revoke.
func TestTokenEventsCommitWithToken(t *testing.T) {
	tokenEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(t *testing.T)) {
		ctx := context.Background()
		refuse(t)
		refused := http.Header{"User-Agent": {refusedAgent}}
		s := newSigner(t)

		// The code exchange: token.issued is refused with the new
		// refresh token.
		code, verifier := codeFlow(t, in, "spa", s, nil)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}
		wantCleanServerError(t, do(t, in, call{path: "/token", signer: s, form: form, header: refused}), code)

		code, verifier = codeFlow(t, in, "spa", s, nil)
		r := exchange(t, in, "spa", code, verifier, s)
		if r.Status != http.StatusOK {
			t.Fatalf("exchange: %d %s", r.Status, r.Body)
		}
		rt := r.str("refresh_token")
		sid, _ := claims(t, r.str("access_token"))["sid"].(string)
		if n := len(tokenEvents(t, in, sid, model.EventTokenIssued)); n != 1 {
			t.Fatalf("%d token.issued for the session, want 1", n)
		}

		// Two refreshes refused, then the same token works.
		for range 2 {
			fr := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}}
			r := do(t, in, call{path: "/token", signer: s, form: fr, header: refused})
			wantCleanServerError(t, r, rt)
			// The refusal itself is recorded (its own event, not refused).
			failed, err := in.App.Store.ListEvents(ctx, store.EventFilter{CorrelationID: r.Header.Get("X-Correlation-ID"),
				Types: []model.EventType{model.EventTokenRequestFailed}})
			if err != nil || len(failed) != 1 || failed[0].Outcome != model.OutcomeFailure {
				t.Errorf("token.request_failed of the refused refresh: %v, %v", failed, err)
			}
			old, err := in.App.Store.GetRefreshToken(ctx, in.App.TokenHasher.Sum(rt))
			if err != nil || !old.RotatedAt.IsZero() {
				t.Fatalf("presented token after a refused refresh: %+v, %v; want it live", old, err)
			}
		}
		if n := len(tokenEvents(t, in, sid, model.EventTokenRefreshed)); n != 0 {
			t.Errorf("%d token.refreshed after refused refreshes, want 0", n)
		}
		var rotated []string
		for i := range 3 {
			r := refresh(t, in, "spa", rt, s)
			if r.Status != http.StatusOK {
				t.Fatalf("refresh %d after the refused ones: %d %s", i, r.Status, r.Body)
			}
			rotated = append(rotated, rt)
			rt = r.str("refresh_token")
		}
		evs := tokenEvents(t, in, sid, model.EventTokenRefreshed)
		if len(evs) != 3 {
			t.Fatalf("%d token.refreshed, want one per rotation (3)", len(evs))
		}
		// Newest first; each says which generation it used and issued.
		for i, e := range evs {
			gin, gout := e.Data[activity.DataRTGenIn], e.Data[activity.DataRTGenOut]
			if want, wantOut := []string{"3", "2", "1"}[i], []string{"4", "3", "2"}[i]; gin != want || gout != wantOut || e.Data["refresh_bound"] != "true" {
				t.Errorf("token.refreshed %d: generation in %q out %q bound %q; want %s -> %s, bound", i, gin, gout, e.Data["refresh_bound"], want, wantOut)
			}
			if i > 0 && e.Seq >= evs[i-1].Seq {
				t.Errorf("token.refreshed not in sequence order: %d after %d", e.Seq, evs[i-1].Seq)
			}
		}
		for _, h := range rotated {
			if old, err := in.App.Store.GetRefreshToken(ctx, in.App.TokenHasher.Sum(h)); err != nil || old.RotatedAt.IsZero() {
				t.Errorf("rotated token: %+v, %v", old, err)
			}
		}

		// Revocation at /revoke: refused, the token stays usable.
		rev := url.Values{"token": {rt}, "client_id": {"spa"}}
		wantCleanServerError(t, do(t, in, call{path: "/revoke", form: rev, header: refused}), rt)
		if _, err := in.App.Store.GetRefreshToken(ctx, in.App.TokenHasher.Sum(rt)); err != nil {
			t.Fatalf("refresh token after a refused revocation: %v", err)
		}
		if r := do(t, in, call{path: "/revoke", form: rev}); r.Status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		if _, err := in.App.Store.GetRefreshToken(ctx, in.App.TokenHasher.Sum(rt)); err == nil {
			t.Error("refresh token still stored after /revoke")
		}
		if evs := tokenEvents(t, in, sid, model.EventTokenRevoked); len(evs) != 1 || evs[0].Reason != model.ReasonClientRevokedRefreshToken {
			t.Errorf("token.revoked after the revocation: %d events", len(evs))
		}
		wantError(t, refresh(t, in, "spa", rt, s), http.StatusBadRequest, "invalid_grant")
	})
}

// Concurrent refreshes of one token: exactly one rotates and records
// token.refreshed, the others are reuse (the session is revoked once,
// with one refresh_reuse_detected).
func TestConcurrentRefreshOneEvent(t *testing.T) {
	tokenEventInstances(t, func(t *testing.T, in *wardtest.Instance, _ func(t *testing.T)) {
		s := newSigner(t)
		code, verifier := codeFlow(t, in, "spa", s, nil)
		r := exchange(t, in, "spa", code, verifier, s)
		if r.Status != http.StatusOK {
			t.Fatalf("exchange: %d %s", r.Status, r.Body)
		}
		rt := r.str("refresh_token")
		sid, _ := claims(t, r.str("access_token"))["sid"].(string)
		const n = 8
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { results[i] = refresh(t, in, "spa", rt, s) })
		}
		wg.Wait()
		ok := 0
		for _, r := range results {
			switch {
			case r.Status == http.StatusOK:
				ok++
			case r.Status != http.StatusBadRequest || r.str("error") != "invalid_grant":
				t.Errorf("concurrent refresh: %d %s", r.Status, r.Body)
			}
		}
		if ok != 1 {
			t.Errorf("%d concurrent refreshes succeeded, want 1", ok)
		}
		if evs := tokenEvents(t, in, sid, model.EventTokenRefreshed); len(evs) != 1 {
			t.Errorf("%d token.refreshed, want 1", len(evs))
		}
		if evs := tokenEvents(t, in, sid, model.EventRefreshReuseDetected); len(evs) != 1 {
			t.Errorf("%d refresh_reuse_detected, want 1", len(evs))
		}
	})
}
