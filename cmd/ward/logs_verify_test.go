package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/config"
)

// sqlExec runs SQL on the harness's database directly, as someone with
// access to the file would.
func (h *harness) sqlExec(q string, args ...any) {
	h.t.Helper()
	cfg, err := config.LoadWith(config.LoadOptions{File: h.cfgFile, Environ: h.environ})
	if err != nil {
		h.t.Fatal(err)
	}
	db, err := sql.Open("sqlite", cfg.Storage.SQLite.Path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		h.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		h.t.Fatalf("%s: %v", q, err)
	}
}

// serve opens the data as a server does and closes it: the server seals
// what the tools wrote and signs a checkpoint when it stops.
func (h *harness) serveOnce() {
	h.t.Helper()
	a := h.open(false)
	if _, err := a.Sealer.Seal(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		h.t.Fatal(err)
	}
}

// ward logs verify: OK on a log the server sealed; on an edited record,
// exit code 1 and the record named; bounds by number and time; after a
// rotation of the key-encryption key the log still verifies.
func TestLogsVerify(t *testing.T) {
	h := newHarness(t, "audit: {checkpoint_events: 3}")
	h.ok("correct horse battery\n", "user", "add", "dave", "--password-stdin")
	h.ok("", "client", "add", "svc", "--grant-type", "client_credentials")
	h.serveOnce()
	out := h.ok("", "logs", "verify")
	for _, want := range []string{"from the start of the chain", "OK: no record was changed, removed or inserted"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	var rep struct {
		OK       bool  `json:"ok"`
		Records  int64 `json:"records"`
		Unsealed int64 `json:"unsealed"`
		Latest   *struct {
			Seq int64 `json:"seq"`
		} `json:"latest_checkpoint"`
		Problems []struct {
			Seq  int64  `json:"seq"`
			Kind string `json:"kind"`
		} `json:"problems"`
	}
	if err := json.Unmarshal([]byte(h.ok("", "logs", "verify", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records < 3 || rep.Latest == nil || rep.Latest.Seq != rep.Records || rep.Unsealed != 0 {
		t.Errorf("verify --json: %+v", rep)
	}
	records := rep.Records

	// A tool's events wait for a server to seal them.
	h.ok("", "user", "disable", "dave")
	out = h.ok("", "logs", "verify")
	if !strings.Contains(out, "1 record not sealed yet") {
		t.Errorf("an unsealed event not reported:\n%s", out)
	}
	h.serveOnce()

	if out := h.ok("", "logs", "verify", "--from", "2", "--to", "3"); !strings.Contains(out, "OK") {
		t.Errorf("verify --from 2 --to 3:\n%s", out)
	}
	if out := h.ok("", "logs", "verify", "--from", "1h", "--to", "2099-01-01"); !strings.Contains(out, "OK") {
		t.Errorf("verify by time:\n%s", out)
	}
	for _, bad := range [][]string{{"--from", "yesterday"}, {"--from", "0"}, {"--from", "5", "--to", "2"}} {
		if _, _, code := h.run("", append([]string{"logs", "verify"}, bad...)...); code != exitUsage {
			t.Errorf("verify %v: exit %d, want %d", bad, code, exitUsage)
		}
	}

	// Someone edits a record in the database.
	h.sqlExec(`UPDATE events SET ip = '198.51.100.66' WHERE seq = 2`)
	out, errs, code := h.run("", "logs", "verify")
	if code != exitFailure || !strings.Contains(out, "seq 2: changed") || !strings.Contains(errs, "seq 2: changed") {
		t.Errorf("after an edit: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if err := json.Unmarshal([]byte(mustRun(t, h, exitFailure, "logs", "verify", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.OK || len(rep.Problems) != 1 || rep.Problems[0].Seq != 2 || rep.Problems[0].Kind != "changed" {
		t.Errorf("verify --json after an edit: %+v", rep)
	}
	h.sqlExec(`UPDATE events SET ip = '' WHERE seq = 2`) // as it was
	h.ok("", "logs", "verify")

	// A new key-encryption key: the checkpoint keys and the record MAC key
	// are re-sealed with everything else.
	newFile := filepath.Join(t.TempDir(), "kek.new")
	h.ok("", "keys", "rotate-kek", "--new-kek-file", newFile)
	_, next := readKEKFile(t, newFile)
	h.environ = []string{"WARD_KEK=" + next}
	h.serveOnce()
	out = h.ok("", "logs", "verify", "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records <= records+1 || rep.Unsealed != 0 {
		t.Errorf("after the KEK rotation: %+v", rep)
	}
}

func mustRun(t *testing.T, h *harness, want int, args ...string) string {
	t.Helper()
	out, errs, code := h.run("", args...)
	if code != want {
		t.Fatalf("ward %s: exit %d, want %d\n%s\n%s", strings.Join(args, " "), code, want, out, errs)
	}
	return out
}
