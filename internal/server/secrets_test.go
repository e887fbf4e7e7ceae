package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/wardtest"
)

// TestNoSecretInLogsOrDatabase runs full flows with debug logging, then
// searches every log line and every byte of the database files for each
// secret that was issued or used. The seed names server logs as a theft
// route; Ward must not be one.
func TestNoSecretInLogsOrDatabase(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	secrets := secretFlows(t, in)
	in.App.Store.Close() // flush WAL content into view; we scan all files anyway
	files := map[string][]byte{"log": []byte(in.LogText())}
	entries, _ := os.ReadDir(filepath.Dir(in.DBPath))
	for _, e := range entries {
		if e.Name() == "kek.key" || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(in.DBPath), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	if len(files) < 2 {
		t.Fatalf("no database files found next to %s", in.DBPath)
	}
	scan(t, secrets, files)
}

// The same over PostgreSQL: every column of every row, as text.
func TestNoSecretInPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
	secrets := secretFlows(t, in)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, in.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	for _, tbl := range tables {
		rows, err := conn.Query(ctx, `SELECT t::text FROM `+pgx.Identifier{tbl}.Sanitize()+` t`)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			dump.WriteString(l + "\n")
		}
	}
	if len(tables) < 5 || !strings.Contains(dump.String(), "session.refresh_reuse_detected") {
		t.Fatalf("database dump looks empty (%d tables): the test would prove nothing", len(tables))
	}
	scan(t, secrets, map[string][]byte{"log": []byte(in.LogText()), "postgres": dump.Bytes()})
}

// scan fails for every secret found in any of the texts, raw or hex-encoded
// (PostgreSQL prints bytea as hex).
func scan(t *testing.T, secrets []string, texts map[string][]byte) {
	t.Helper()
	if !strings.Contains(string(texts["log"]), `"level"`) {
		t.Fatal("no log output captured: the test would prove nothing")
	}
	for _, sec := range secrets {
		for name, content := range texts {
			if bytes.Contains(content, []byte(sec)) || bytes.Contains(content, []byte(hex.EncodeToString([]byte(sec)))) {
				t.Errorf("secret %.6s… found in %s", sec, name)
			}
		}
	}
}

// secretFlows runs full flows (code + DPoP, refresh, reuse, code reuse,
// client credentials, introspection, failed client and user
// authentication, recovery codes, revocation) and returns every secret
// that was issued or presented.
func secretFlows(t *testing.T, in *wardtest.Instance) []string {
	s := newSigner(t)
	var secrets []string
	add := func(v ...string) {
		for _, x := range v {
			if x != "" {
				secrets = append(secrets, x)
			}
		}
	}
	add(wardtest.AlicePassword, wardtest.BobPassword, wardtest.AliceTOTP, wardtest.ServiceSecret, wardtest.WebSecret)

	// Code flow, refresh, reuse, failures.
	code, verifier := codeFlow(t, in, "spa", s, nil)
	add(code, verifier)
	r := exchange(t, in, "spa", code, verifier, s)
	add(r.str("access_token"), r.str("refresh_token"), r.str("id_token"))
	r2 := refresh(t, in, "spa", r.str("refresh_token"), s)
	add(r2.str("access_token"), r2.str("refresh_token"))
	refresh(t, in, "spa", r.str("refresh_token"), s) // reuse
	exchange(t, in, "spa", code, verifier, s)        // code reuse
	// Client credentials, introspection, revocation, failed auth with a secret.
	cc := do(t, in, call{path: "/token", basic: serviceAuth, signer: s, form: url.Values{"grant_type": {"client_credentials"}}})
	add(cc.str("access_token"))
	do(t, in, call{path: "/introspect", basic: serviceAuth, form: url.Values{"token": {cc.str("access_token")}}})
	do(t, in, call{path: "/token", basic: [2]string{"service", "a-wrong-secret-that-is-long"}, form: url.Values{"grant_type": {"client_credentials"}}})
	add("a-wrong-secret-that-is-long")
	// A failed password attempt.
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	_, body := wardtest.Do(t, b, "GET", in.AuthorizeURL("web", challenge, nil), nil)
	f := wardtest.HiddenFields(body)
	f.Set("username", "bob")
	f.Set("password", "bob-wrong-password-typed")
	wardtest.Do(t, b, "POST", in.URL+"/login", f)
	add("bob-wrong-password-typed")
	do(t, in, call{path: "/revoke", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"token": {"some-refresh-token-guess-xyz"}}})
	add("some-refresh-token-guess-xyz")
	// Recovery codes: a set made for alice (as shown, and as stored
	// before hashing), one used on the pages, a wrong one typed.
	codes := recoveryCodes(t, in)
	for _, c := range codes {
		add(c, strings.ReplaceAll(c, "-", ""))
	}
	rb := in.Browser()
	mfa, _ := mfaPage(t, in, rb)
	if a := recoveryAnswer(useRecoveryCode(rb, in, mfa, codes[0])); a != "signed in" {
		t.Fatalf("recovery code: %s", a)
	}
	rb = in.Browser()
	mfa, _ = mfaPage(t, in, rb)
	useRecoveryCode(rb, in, mfa, "wrong-recovery-typed")
	add("wrong-recovery-typed")
	// Shared Signals: a receiver's credentials and push authorization header.
	add(ssfSecretFlow(t, in)...)

	return secrets
}
