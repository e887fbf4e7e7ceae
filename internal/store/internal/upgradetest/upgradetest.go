// Package upgradetest is the check both backends run on an upgrade: data
// written with the SQL of an older schema version (columns that exist
// since the first migration) must read back through the store after the
// migrations to the newest version ran.
package upgradetest

import (
	"context"
	"database/sql"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// T0 is the time the seeded rows carry.
var T0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// FromVersions returns the versions an upgrade starts from: the first
// migration (the oldest release), one in the middle and the one before
// the newest.
func FromVersions(t *testing.T, fsys fs.FS) []int64 {
	t.Helper()
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil || len(names) < 2 {
		t.Fatalf("migrations: %v (%d)", err, len(names))
	}
	var vs []int64
	for _, n := range names {
		v, err := strconv.ParseInt(strings.SplitN(n, "_", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("migration %s: %v", n, err)
		}
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return slices.Compact([]int64{vs[0], vs[len(vs)/2], vs[len(vs)-2]})
}

// Seed writes a user, a revoked and an active session, a rotated refresh
// token, a signing key and two events with the columns of migration 1.
func Seed(t *testing.T, db *sql.DB) {
	t.Helper()
	ctx := context.Background()
	ts := T0.UnixMicro()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (id, username, email, display_name, password_hash, roles, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`,
			[]any{"u-upg", "upgrader", "upg@example.com", "Up Grader", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", `["admin"]`, ts}},
		{`INSERT INTO sessions (id, user_id, auth_time, amr, ip, user_agent, created_at, last_seen, expires_at, idle_timeout, revoked_at, revoke_cause) VALUES ($1, $2, $3, $4, $5, $6, $3, $3, $7, $8, $9, $10)`,
			[]any{"s-revoked", "u-upg", ts, `["pwd"]`, "192.0.2.1", "ua/1", T0.Add(720 * time.Hour).UnixMicro(), int64(time.Hour), T0.Add(time.Minute).UnixMicro(), "admin_revoked"}},
		{`INSERT INTO sessions (id, user_id, auth_time, amr, ip, user_agent, created_at, last_seen, expires_at, idle_timeout) VALUES ($1, $2, $3, $4, $5, $6, $3, $3, $7, $8)`,
			[]any{"s-active", "u-upg", ts, `["pwd","otp"]`, "192.0.2.2", "ua/2", T0.Add(720 * time.Hour).UnixMicro(), int64(time.Hour)}},
		{`INSERT INTO refresh_tokens (hash, session_id, client_id, user_id, scope, jkt, auth_time, amr, created_at, expires_at, rotated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, '["pwd"]', $7, $8, $9)`,
			[]any{[]byte("rt-hash-0123456789abcdef0123456"), "s-active", "web", "u-upg", "openid offline_access", "jkt-1", ts, T0.Add(time.Hour).UnixMicro(), T0.Add(time.Second).UnixMicro()}},
		{`INSERT INTO signing_keys (kid, alg, private_enc, public_jwk, created_at, active_at, retire_at) VALUES ($1, $2, $3, $4, $5, $5, 0)`,
			[]any{"kid-upg", "ES256", []byte("sealed-private-key"), `{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"kid-upg"}`, ts}},
		{`INSERT INTO events (id, type, time, actor, user_id, session_id, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			[]any{"ev-1", "user.signed_in", ts, "upgrader", "u-upg", "s-active", "success"}},
		{`INSERT INTO events (id, type, time, actor, user_id, session_id, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			[]any{"ev-2", "session.revoked", ts + 1, "admin", "u-upg", "s-revoked", "success"}},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("seed %s: %v", q.sql[:40], err)
		}
	}
}

// Check reads back what Seed wrote through the store after the upgrade.
func Check(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	u, err := s.GetUserByUsername(ctx, "upgrader")
	if err != nil || u.ID != "u-upg" || !slices.Equal(u.Roles, []string{"admin"}) || u.Email != "upg@example.com" || !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
		t.Errorf("user after the upgrade: %+v %v", u, err)
	}
	rs, err := s.GetSession(ctx, "s-revoked")
	if err != nil || rs.RevokedAt.IsZero() || rs.RevokeCause != "admin_revoked" {
		t.Errorf("revoked session after the upgrade: %+v %v", rs, err)
	}
	as, err := s.GetSession(ctx, "s-active")
	if err != nil || !as.RevokedAt.IsZero() || !as.AuthTime.Equal(T0) || !slices.Equal(as.AMR, []string{"pwd", "otp"}) {
		t.Errorf("active session after the upgrade: %+v %v", as, err)
	}
	rt, err := s.GetRefreshToken(ctx, []byte("rt-hash-0123456789abcdef0123456"))
	if err != nil || rt.SessionID != "s-active" || rt.JKT != "jkt-1" || rt.RotatedAt.IsZero() {
		t.Errorf("refresh token after the upgrade: %+v %v", rt, err)
	}
	keys, err := s.ListSigningKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].KID != "kid-upg" || string(keys[0].PrivateEnc) != "sealed-private-key" {
		t.Errorf("signing keys after the upgrade: %v %v", keys, err)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{UserID: "u-upg", Limit: 10})
	if err != nil || len(evs) != 2 {
		t.Fatalf("events after the upgrade: %d %v", len(evs), err)
	}
	ids := []string{evs[0].ID, evs[1].ID}
	slices.Sort(ids)
	if ids[0] != "ev-1" || ids[1] != "ev-2" {
		t.Errorf("event ids after the upgrade: %v", ids)
	}
	// The upgraded database takes new writes.
	if ok, err := s.RevokeSession(ctx, "s-active", T0.Add(time.Hour), "admin_revoked"); err != nil || !ok {
		t.Errorf("RevokeSession after the upgrade: %v %v", ok, err)
	}
}
