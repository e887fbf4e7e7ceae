package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// writeEventInstances runs f on an instance on SQLite and, when
// WARD_TEST_POSTGRES_DSN is set (required under CI), on PostgreSQL.
// refuse makes the instance's database refuse to insert events of the
// given types (the append fails inside the write that commits them) and
// returns what lifts the refusal.
func writeEventInstances(t *testing.T, f func(t *testing.T, in *wardtest.Instance, refuse func(t *testing.T, types ...model.EventType) func())) {
	t.Run("sqlite", func(t *testing.T) {
		in := wardtest.Start(t, wardtest.Options{})
		f(t, in, func(t *testing.T, types ...model.EventType) func() { return refuseEventsSQLite(t, in.DBPath, types) })
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
		f(t, in, func(t *testing.T, types ...model.EventType) func() {
			return refuseEventsPostgres(t, in.PostgresDSN(), types)
		})
	})
}

func typeList(types []model.EventType) string {
	q := make([]string, len(types))
	for i, typ := range types {
		q[i] = "'" + string(typ) + "'"
	}
	return strings.Join(q, ", ")
}

func refuseEventsSQLite(t *testing.T, path string, types []model.EventType) func() {
	t.Helper()
	exec := func(stmt string) {
		// Waits for the instance's writer rather than failing busy.
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TRIGGER test_refuse_write_events BEFORE INSERT ON events
		WHEN NEW.type IN (` + typeList(types) + `)
		BEGIN SELECT RAISE(ABORT, 'event refused by the test'); END`)
	return func() { exec(`DROP TRIGGER test_refuse_write_events`) }
}

func refuseEventsPostgres(t *testing.T, dsn string, types []model.EventType) func() {
	t.Helper()
	exec := func(stmts ...string) {
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
	exec(`CREATE FUNCTION test_refuse_write_events() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.type IN (`+typeList(types)+`) THEN
				RAISE EXCEPTION 'event refused by the test';
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER test_refuse_write_events BEFORE INSERT ON events
			FOR EACH ROW EXECUTE FUNCTION test_refuse_write_events()`)
	return func() {
		exec(`DROP TRIGGER test_refuse_write_events ON events`, `DROP FUNCTION test_refuse_write_events()`)
	}
}

// wantNoInternals checks that an answer says nothing of the database's
// refusal.
func wantNoInternals(t *testing.T, what, body string) {
	t.Helper()
	for _, s := range []string{"refused by the test", "trigger", "events", "INSERT", "SQL", "append"} {
		if strings.Contains(body, s) {
			t.Errorf("%s: answer contains %q: %.300s", what, s, body)
		}
	}
}

// A sign-in whose signin.succeeded the database refuses creates no
// session: the browser gets a plain error page, no session cookie and no
// code, and the user has no session. Once the database accepts it, the
// sign-in creates one session recorded by exactly one signin.succeeded,
// committed with it.
func TestSignInSessionCommitsWithEvent(t *testing.T) {
	writeEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(*testing.T, ...model.EventType) func()) {
		ctx := context.Background()
		seen := watchCommitted(in.App.Bus)
		bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		sessions := func() []*model.Session {
			t.Helper()
			ss, err := in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: bob.ID})
			if err != nil {
				t.Fatal(err)
			}
			return ss
		}
		signIns := func() []*store.StoredEvent {
			t.Helper()
			evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{UserID: bob.ID, Types: []model.EventType{model.EventSignInSucceeded}})
			if err != nil {
				t.Fatal(err)
			}
			return evs
		}

		lift := refuse(t, model.EventSignInSucceeded)
		b := in.Browser()
		_, ch := wardtest.PKCE()
		resp, body := in.TryLogin(t, b, in.AuthorizeURL("web", ch, nil), "bob", wardtest.BobPassword, "")
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "Something went wrong on our side.") {
			t.Fatalf("sign-in with its record refused: status %d, want 500 and the error page; body %.300s", resp.StatusCode, body)
		}
		wantNoInternals(t, "refused sign-in", body)
		if loc := resp.Header.Get("Location"); loc != "" {
			t.Errorf("refused sign-in redirects to %s", loc)
		}
		for _, c := range resp.Cookies() {
			if c.MaxAge >= 0 && c.Value != "" && strings.Contains(strings.ToLower(c.Name), "session") {
				t.Errorf("refused sign-in sets cookie %s", c.Name)
			}
		}
		if ss := sessions(); len(ss) != 0 {
			t.Fatalf("%d sessions after a refused sign-in, want none", len(ss))
		}
		if evs := signIns(); len(evs) != 0 {
			t.Fatalf("%d signin.succeeded after a refused sign-in, want none", len(evs))
		}

		lift()
		loc := in.Login(t, b, in.AuthorizeURL("web", ch, nil), "bob", wardtest.BobPassword, "")
		if loc.Query().Get("code") == "" {
			t.Fatalf("sign-in after the refusal: no code in %s", loc)
		}
		ss := sessions()
		if len(ss) != 1 {
			t.Fatalf("%d sessions after the sign-in, want 1", len(ss))
		}
		evs := signIns()
		if len(evs) != 1 {
			t.Fatalf("%d signin.succeeded, want 1", len(evs))
		}
		if evs[0].SessionID != ss[0].ID {
			t.Errorf("signin.succeeded of session %q, want %q", evs[0].SessionID, ss[0].ID)
		}
		seen.wantOnce(t, in, evs[0].CorrelationID, model.EventSignInSucceeded, true)
	})
}

// writeEvents returns the stored events of type typ that f selects.
func writeEvents(t *testing.T, in *wardtest.Instance, typ model.EventType, f store.EventFilter) []*store.StoredEvent {
	t.Helper()
	f.Types = []model.EventType{typ}
	evs, err := in.App.Store.ListEvents(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// A device registration whose device.registered the database refuses
// stores no device, and a deletion whose device.deleted it refuses
// deletes nothing (the administrator gets a plain 500); accepted, each
// commits with exactly one event.
func TestDeviceWritesCommitWithEvent(t *testing.T) {
	writeEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(*testing.T, ...model.EventType) func()) {
		ctx := context.Background()
		seen := watchCommitted(in.App.Bus)
		bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		key := newSigner(t)
		jwk, _ := json.Marshal(key.PublicJWK())
		reg := device.Registration{PublicJWK: jwk, KeyStorage: "file", Platform: "linux", OSName: "Debian", OSVersion: "12",
			Hostname: "laptop", AgentVersion: "test"}

		lift := refuse(t, model.EventDeviceRegistered)
		if _, err := in.App.Devices.Register(ctx, bob.ID, reg); err == nil {
			t.Fatal("registration with its record refused: got nil, want an error")
		}
		if _, err := in.App.Store.GetDeviceByJKT(ctx, key.Thumbprint()); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("device after a refused registration: %v, want not found", err)
		}
		if evs := writeEvents(t, in, model.EventDeviceRegistered, store.EventFilter{UserID: bob.ID}); len(evs) != 0 {
			t.Fatalf("%d device.registered after a refused registration, want none", len(evs))
		}
		lift()
		d, err := in.App.Devices.Register(ctx, bob.ID, reg)
		if err != nil {
			t.Fatalf("registration after the refusal: %v", err)
		}
		evs := writeEvents(t, in, model.EventDeviceRegistered, store.EventFilter{UserID: bob.ID})
		if len(evs) != 1 || evs[0].DeviceID != d.ID {
			t.Fatalf("device.registered after the registration: %+v, want one of %s", evs, d.ID)
		}
		seen.mu.Lock()
		if !seen.m[evs[0].ID] {
			t.Error("device.registered not committed with the device")
		}
		seen.mu.Unlock()

		admin := newSigner(t)
		tok := adminToken(t, in, admin)
		del := call{path: "/admin/api/v1/devices/" + d.ID, method: http.MethodDelete, authz: "DPoP " + tok, signer: admin, at: tok}
		lift = refuse(t, model.EventDeviceDeleted)
		r := do(t, in, del)
		if r.Status != http.StatusInternalServerError {
			t.Fatalf("deletion with its record refused: %d %s, want 500", r.Status, r.Body)
		}
		wantNoInternals(t, "refused deletion", r.Body)
		if _, err := in.App.Store.GetDevice(ctx, d.ID); err != nil {
			t.Fatalf("device after a refused deletion: %v, want it kept", err)
		}
		if evs := writeEvents(t, in, model.EventDeviceDeleted, store.EventFilter{DeviceID: d.ID}); len(evs) != 0 {
			t.Fatalf("%d device.deleted after a refused deletion, want none", len(evs))
		}
		lift()
		if r := do(t, in, del); r.Status != http.StatusNoContent {
			t.Fatalf("deletion after the refusal: %d %s", r.Status, r.Body)
		}
		if _, err := in.App.Store.GetDevice(ctx, d.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("device after the deletion: %v, want not found", err)
		}
		evs = writeEvents(t, in, model.EventDeviceDeleted, store.EventFilter{DeviceID: d.ID})
		if len(evs) != 1 {
			t.Fatalf("%d device.deleted, want 1", len(evs))
		}
		seen.wantOnce(t, in, evs[0].CorrelationID, model.EventDeviceDeleted, true)
	})
}

// adminJSON sends an admin API request with a JSON body (nil: none) and
// alice's DPoP-bound token tok.
func adminJSON(t *testing.T, in *wardtest.Instance, s *dpop.Signer, tok, method, path, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	u := in.URL + "/admin/api/v1" + path
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	p, err := s.ProofAt(method, u, tok, "", in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "DPoP "+tok)
	req.Header.Set("DPoP", p)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &r.JSON)
	return r
}

// A client's registration, metadata update, secret rotation and deletion
// at the admin API commit with their event: refused, the administrator
// gets a plain 500 (no secret, nothing of the cause) and the client is as
// it was; accepted, the change is made and recorded exactly once.
func TestClientWritesCommitWithEvent(t *testing.T) {
	writeEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(*testing.T, ...model.EventType) func()) {
		ctx := context.Background()
		seen := watchCommitted(in.App.Bus)
		admin := newSigner(t)
		tok := adminToken(t, in, admin)
		const id = "c-tx"
		client := func() *model.Client {
			t.Helper()
			c, err := in.App.Store.GetClient(ctx, id)
			if err != nil {
				t.Fatalf("client %s: %v", id, err)
			}
			return c
		}
		steps := []struct {
			name         string
			typ          model.EventType
			method, path string
			body         string
			status       int
			after        func(t *testing.T)
		}{
			{"create", model.EventClientCreated, http.MethodPost, "/clients",
				`{"id":"` + id + `","name":"Batch","auth_method":"client_secret_basic","grant_types":["client_credentials"],"scopes":["docs.read"]}`,
				http.StatusCreated, nil},
			{"update", model.EventClientUpdated, http.MethodPatch, "/clients/" + id, `{"name":"Batch jobs"}`, http.StatusOK,
				func(t *testing.T) {
					if c := client(); c.Name != "Batch jobs" {
						t.Errorf("name after the update %q", c.Name)
					}
				}},
			{"rotate secret", model.EventClientSecretRotated, http.MethodPost, "/clients/" + id + "/secret", "", http.StatusOK, nil},
			{"delete", model.EventClientDeleted, http.MethodDelete, "/clients/" + id, "", http.StatusNoContent,
				func(t *testing.T) {
					if _, err := in.App.Store.GetClient(ctx, id); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("client after the deletion: %v", err)
					}
				}},
		}
		for _, st := range steps {
			var was *model.Client
			if st.typ != model.EventClientCreated {
				was = client()
			}
			lift := refuse(t, st.typ)
			r := adminJSON(t, in, admin, tok, st.method, st.path, st.body)
			if r.Status != http.StatusInternalServerError {
				t.Fatalf("%s with its record refused: %d %s, want 500", st.name, r.Status, r.Body)
			}
			wantNoInternals(t, "refused "+st.name, r.Body)
			if strings.Contains(r.Body, "client_secret") {
				t.Errorf("refused %s answers with a secret: %s", st.name, r.Body)
			}
			if was == nil {
				if _, err := in.App.Store.GetClient(ctx, id); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("client after a refused registration: %v, want not found", err)
				}
			} else if now := client(); now.Name != was.Name || !bytes.Equal(now.SecretHash, was.SecretHash) || !now.UpdatedAt.Equal(was.UpdatedAt) {
				t.Fatalf("client changed by a refused %s", st.name)
			}
			if evs := writeEvents(t, in, st.typ, store.EventFilter{ClientID: id}); len(evs) != 0 {
				t.Fatalf("%d %s after a refused %s, want none", len(evs), st.typ, st.name)
			}
			lift()
			r = adminJSON(t, in, admin, tok, st.method, st.path, st.body)
			if r.Status != st.status {
				t.Fatalf("%s after the refusal: %d %s, want %d", st.name, r.Status, r.Body, st.status)
			}
			if st.after != nil {
				st.after(t)
			}
			if was != nil && st.typ == model.EventClientSecretRotated && bytes.Equal(client().SecretHash, was.SecretHash) {
				t.Error("secret not rotated")
			}
			evs := writeEvents(t, in, st.typ, store.EventFilter{ClientID: id})
			if len(evs) != 1 {
				t.Fatalf("%d %s, want 1", len(evs), st.typ)
			}
			seen.wantOnce(t, in, evs[0].CorrelationID, st.typ, true)
		}
	})
}

// A group's creation, membership change and deletion at the admin API
// commit with their event: refused, a plain 500 and the group as it was;
// accepted, the change and exactly one event.
func TestGroupWritesCommitWithEvent(t *testing.T) {
	writeEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(*testing.T, ...model.EventType) func()) {
		ctx := context.Background()
		seen := watchCommitted(in.App.Bus)
		admin := newSigner(t)
		tok := adminToken(t, in, admin)
		bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		var gid string
		members := func() int {
			t.Helper()
			g, err := in.App.Store.GetGroupByName(ctx, "ops-tx")
			if errors.Is(err, store.ErrNotFound) {
				return -1
			}
			if err != nil {
				t.Fatal(err)
			}
			return len(g.Members)
		}
		groupEvents := func(typ model.EventType) []*store.StoredEvent {
			var out []*store.StoredEvent
			for _, e := range writeEvents(t, in, typ, store.EventFilter{}) {
				if gid == "" || e.Data["group_id"] == gid {
					out = append(out, e)
				}
			}
			return out
		}
		steps := []struct {
			name               string
			typ                model.EventType
			method, path, body func() string
			status             int
			before, after      int // members(): -1 for no group
		}{
			{"create", model.EventGroupCreated, fixed(http.MethodPost), fixed("/groups"), fixed(`{"name":"ops-tx"}`), http.StatusCreated, -1, 0},
			{"add member", model.EventGroupUpdated, fixed(http.MethodPost), func() string { return "/groups/" + gid + "/members" },
				fixed(`{"user_id":"` + bob.ID + `"}`), http.StatusOK, 0, 1},
			{"delete", model.EventGroupDeleted, fixed(http.MethodDelete), func() string { return "/groups/" + gid }, fixed(""),
				http.StatusNoContent, 1, -1},
		}
		for _, st := range steps {
			lift := refuse(t, st.typ)
			r := adminJSON(t, in, admin, tok, st.method(), st.path(), st.body())
			if r.Status != http.StatusInternalServerError {
				t.Fatalf("%s with its record refused: %d %s, want 500", st.name, r.Status, r.Body)
			}
			wantNoInternals(t, "refused "+st.name, r.Body)
			if n := members(); n != st.before {
				t.Fatalf("after a refused %s: members %d, want %d (-1: no group)", st.name, n, st.before)
			}
			if evs := groupEvents(st.typ); len(evs) != 0 {
				t.Fatalf("%d %s after a refused %s, want none", len(evs), st.typ, st.name)
			}
			lift()
			r = adminJSON(t, in, admin, tok, st.method(), st.path(), st.body())
			if r.Status != st.status {
				t.Fatalf("%s after the refusal: %d %s, want %d", st.name, r.Status, r.Body, st.status)
			}
			if gid == "" {
				gid = r.str("id")
			}
			if n := members(); n != st.after {
				t.Fatalf("after %s: members %d, want %d (-1: no group)", st.name, n, st.after)
			}
			evs := groupEvents(st.typ)
			if len(evs) != 1 {
				t.Fatalf("%d %s, want 1", len(evs), st.typ)
			}
			seen.wantOnce(t, in, evs[0].CorrelationID, st.typ, true)
		}
	})
}

func fixed(s string) func() string { return func() string { return s } }
