package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

// ownPostgres is a PostgreSQL server of the test's own: initdb into a
// temporary directory, pg_ctl on a free loopback port (trust
// authentication, no Unix socket outside the directory). Restarting it
// disturbs nothing else on the machine, unlike the system's cluster.
type ownPostgres struct {
	bin, data, sock, log string
	port                 int
	runAs                string // "postgres" when the test runs as root (initdb refuses root)
}

// startOwnPostgres starts the instance, or returns nil (with a log line)
// when the server binaries are not installed.
func startOwnPostgres(t *testing.T) *ownPostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Log("no /usr/lib/postgresql/*/bin/pg_ctl: the test uses WARD_TEST_POSTGRES_DSN and cannot restart PostgreSQL")
		return nil
	}
	// The newest version.
	sort.Slice(bins, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(bins[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(bins[j]))))
		return vi < vj
	})
	p := &ownPostgres{bin: filepath.Dir(bins[len(bins)-1]), port: freePort(t)}
	// Not t.TempDir: the directory must belong to the server's user.
	root, err := os.MkdirTemp("", "ward-cluster-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	p.data, p.sock, p.log = filepath.Join(root, "data"), root, filepath.Join(root, "postgres.log")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Log("running as root without a postgres user: the test uses WARD_TEST_POSTGRES_DSN and cannot restart PostgreSQL")
			return nil
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(root, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.runAs = "postgres"
	}
	if out, err := p.run("initdb", "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.start(t)
	t.Cleanup(func() { p.run("pg_ctl", "-D", p.data, "-m", "immediate", "stop") })
	t.Logf("PostgreSQL of the test's own: %s on port %d", p.bin, p.port)
	return p
}

// run runs one of the server's programs (as the postgres user when the
// test is root).
func (p *ownPostgres) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, prog)
	var cmd *exec.Cmd
	if p.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = p.sock
	return cmd.CombinedOutput()
}

func (p *ownPostgres) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// start starts the server and waits until it accepts connections (after
// an immediate stop, that includes crash recovery).
func (p *ownPostgres) start(t *testing.T) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c full_page_writes=off", p.port, p.sock)
	if out, err := p.run("pg_ctl", "-D", p.data, "-l", p.log, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		b, _ := os.ReadFile(p.log)
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, tail(b, 2000))
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := p.run("pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port)); err == nil {
			return
		}
	}
	t.Fatal("PostgreSQL did not become ready")
}

// stopImmediate stops the server without a shutdown checkpoint: every
// connection is cut, as when the server crashes.
func (p *ownPostgres) stopImmediate(t *testing.T) {
	t.Helper()
	if out, err := p.run("pg_ctl", "-D", p.data, "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}
