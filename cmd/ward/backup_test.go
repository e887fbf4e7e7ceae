package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/secret"
)

const backupClients = `listen: 127.0.0.1:0
static_clients:
  - id: bk-service
    name: Backup test service
    auth_method: client_secret_basic
    secret: bk-service-secret-0123456789-abcdefghijkl
    grant_types: [client_credentials]
    scopes: [docs.read]
`

// startServe runs ward serve on h in this process and returns its address
// and a stop function that waits for it to exit.
func startServe(t *testing.T, h *harness) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", h.cfgFile}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: h.environ})
	}()
	re := regexp.MustCompile(`msg=listening addr=(\S+)`)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			stopped := false
			return m[1], func() {
				if stopped {
					return
				}
				stopped = true
				cancel()
				select {
				case code := <-done:
					if code != 0 {
						t.Errorf("serve exit %d: %s", code, errb.String())
					}
				case <-time.After(30 * time.Second):
					t.Error("serve did not stop")
				}
			}
		}
		select {
		case code := <-done:
			cancel()
			t.Fatalf("serve exited %d: %s", code, errb.String())
		default:
		}
	}
	cancel()
	t.Fatalf("serve did not start: %s", errb.String())
	return "", nil
}

func clientCredentials(addr string) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("bk-service", "bk-service-secret-0123456789-abcdefghijkl")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func jwksKids(t *testing.T, addr string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	slices.Sort(kids)
	return kids
}

// A live SQLite Ward under load is backed up; the backup is restored into
// a fresh data directory, Ward starts on it with the same key-encryption
// key and serves: the users, the sessions (a revocation included) and the
// signing keys are there, the audit log verifies, the restored Ward signs
// tokens. With another key-encryption key the restored data opens nothing.
func TestBackupRestoreLive(t *testing.T) {
	h := newHarness(t, backupClients)
	addr, stop := startServe(t, h)
	defer stop()

	for _, u := range []string{"bob", "carol", "dave"} {
		h.ok("correct horse battery\n", "user", "add", u, "--password-stdin")
	}
	a := h.openApp()
	ctx := context.Background()
	bob, _ := a.Store.GetUserByUsername(ctx, "bob")
	carol, _ := a.Store.GetUserByUsername(ctx, "carol")
	s1, s2 := newSession(t, a, bob.ID), newSession(t, a, carol.ID)
	a.Close()
	h.ok("", "session", "revoke", s1)
	kids := jwksKids(t, addr)
	if len(kids) < 1 {
		t.Fatalf("JWKS before the backup: %v", kids)
	}

	// Tokens are issued (each one an audit event) while the backup runs.
	var issued, failed atomic.Int64
	loadCtx, endLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				if code, err := clientCredentials(addr); err == nil && code == 200 {
					issued.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	for issued.Load() < 20 {
		time.Sleep(10 * time.Millisecond)
	}
	bak := filepath.Join(t.TempDir(), "ward-backup.db")
	out := h.ok("", "backup", bak)
	during := issued.Load()
	time.Sleep(100 * time.Millisecond)
	endLoad()
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d token requests failed during the backup", failed.Load())
	}
	for _, want := range []string{"backup written: " + bak, "integrity check ok", "key-encryption key is not in the backup", "$WARD_KEK"} {
		if !strings.Contains(out, want) {
			t.Errorf("backup output lacks %q:\n%s", want, out)
		}
	}
	if out, _, code := h.run("", "backup", bak); code == 0 {
		t.Errorf("backup over an existing file: exit 0: %s", out)
	}
	raw, err := os.ReadFile(bak)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), testKEK) {
		t.Error("the backup holds the key-encryption key")
	}
	stop()
	t.Logf("%d tokens issued, %d of them before the backup returned", issued.Load(), during)

	// Restore into a fresh data directory and serve from it.
	h2 := newHarness(t, backupClients)
	if out := h2.ok("", "restore", bak); !strings.Contains(out, "restored "+bak) {
		t.Errorf("restore output: %s", out)
	}
	if _, errs, code := h2.run("", "restore", bak); code == 0 || !strings.Contains(errs, "exists") {
		t.Errorf("restore over an existing database without --force: exit %d %s", code, errs)
	}
	addr2, stop2 := startServe(t, h2)
	if got := jwksKids(t, addr2); !slices.Equal(got, kids) {
		t.Errorf("restored JWKS kids %v, want %v", got, kids)
	}
	if code, err := clientCredentials(addr2); err != nil || code != 200 {
		t.Errorf("token from the restored Ward: %d %v", code, err)
	}
	// A restore refuses to run under a live server of the data directory.
	if _, errs, code := h2.run("", "restore", "--force", bak); code == 0 || !strings.Contains(errs, "ward serve is running") {
		t.Errorf("restore under a running server: exit %d %s", code, errs)
	}
	stop2()
	users := h2.ok("", "user", "list")
	for _, u := range []string{"bob", "carol", "dave"} {
		if !strings.Contains(users, u) {
			t.Errorf("restored user list lacks %s:\n%s", u, users)
		}
	}
	if out := h2.ok("", "session", "show", s1); !regexp.MustCompile(`(?m)^Status:\s+revoked$`).MatchString(out) {
		t.Errorf("restored revoked session:\n%s", out)
	}
	if out := h2.ok("", "session", "show", s2); !regexp.MustCompile(`(?m)^Status:\s+active$`).MatchString(out) {
		t.Errorf("restored active session:\n%s", out)
	}
	verify := h2.ok("", "logs", "verify", "--json")
	var rep struct {
		OK      bool  `json:"ok"`
		Records int64 `json:"records"`
	}
	if err := json.Unmarshal([]byte(verify), &rep); err != nil || !rep.OK || rep.Records == 0 {
		t.Errorf("logs verify on the restored data: %v\n%s", err, verify)
	}
	// The restored log holds the token events of the load up to the backup.
	logs := h2.ok("", "logs", "--limit", "1000")
	if n := strings.Count(logs, "token.issued"); n == 0 || int64(n) > issued.Load() {
		t.Errorf("restored log: %d token.issued events, %d issued in all", n, issued.Load())
	}

	// Another key-encryption key opens nothing of the restored data.
	h3 := newHarness(t, backupClients)
	h3.environ = []string{"WARD_KEK=" + strings.Repeat("B", 43) + "="}
	h3.ok("", "restore", bak)
	if _, _, code := h3.run("", "keys", "list"); code == 0 {
		if _, errs, code := h3.run("", "logs", "verify"); code == 0 {
			t.Errorf("the restored data verifies under another key-encryption key: %s", errs)
		}
	}
}

// PostgreSQL: ward backup runs pg_dump, ward restore --force pg_restore;
// a user deleted after the backup is back after the restore, and the DSN's
// password never reaches the tools' command lines (checked by the DSN
// split).
func TestBackupRestorePostgres(t *testing.T) {
	admin := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if admin == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Skip("pg_dump is not installed")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name := "ward_backup_" + strings.ToLower(secret.RandomString(8))
	name = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			return r
		}
		return '_'
	}, name)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
	u, _ := url.Parse(admin)
	u.Path = "/" + name

	h := newHarness(t, "storage: {driver: postgres}\nbus: {driver: local}\n")
	h.environ = append(h.environ, "WARD_STORAGE__POSTGRES__DSN="+u.String())
	h.ok("correct horse battery\n", "user", "add", "erin", "--password-stdin")
	bak := filepath.Join(t.TempDir(), "ward.dump")
	if out := h.ok("", "backup", bak); !strings.Contains(out, "pg_dump custom format") {
		t.Errorf("backup output: %s", out)
	}
	if st, err := os.Stat(bak); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("dump file: %v %v", st, err)
	}
	h.ok("", "user", "delete", "erin")
	if out := h.ok("", "user", "list"); strings.Contains(out, "erin") {
		t.Fatalf("erin not deleted:\n%s", out)
	}
	if _, errs, code := h.run("", "restore", bak); code != exitUsage || !strings.Contains(errs, "--force") {
		t.Errorf("restore without --force: %d %s", code, errs)
	}
	h.ok("", "restore", "--force", bak)
	if out := h.ok("", "user", "list"); !strings.Contains(out, "erin") {
		t.Errorf("erin not restored:\n%s", out)
	}
	h.ok("", "logs", "verify")

	// The DSN's password goes to the environment, not the command line.
	for _, dsn := range []string{"postgres://ward:s3cr%40t@db:5432/ward?sslmode=verify-full", "host=db user=ward password='s3cr@t' dbname=ward"} {
		conn, env, err := pgToolConn(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(conn, "s3cr") || !slices.Contains(env, "PGPASSWORD=s3cr@t") {
			t.Errorf("pgToolConn(%q) = %q, PGPASSWORD in env: %v", dsn, conn, slices.Contains(env, "PGPASSWORD=s3cr@t"))
		}
	}
}
