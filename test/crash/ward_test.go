package crash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// built is the ward binary the tests of the package share: built once.
var built struct {
	once     sync.Once
	dir, bin string
	skip     string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildWard builds ./cmd/ward once for the package's tests (no -race:
// the child only has to be quick to build and to run) and returns the
// binary's path. It skips the test when go is not on PATH.
func buildWard(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		start := time.Now()
		built.bin, built.skip, built.err = build()
		if built.err == nil && built.skip == "" {
			t.Logf("built ward in %v", time.Since(start).Round(time.Millisecond))
		}
	})
	if built.skip != "" {
		t.Skip(built.skip)
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

func build() (bin, skip string, err error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", "crash test skipped: the go command is not on PATH (it builds ./cmd/ward)", nil
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if _, err := os.Stat(filepath.Join(root, "cmd", "ward")); err != nil {
		return "", "", fmt.Errorf("module root %s has no cmd/ward: %v", root, err)
	}
	if built.dir, err = os.MkdirTemp("", "ward-crash-"); err != nil {
		return "", "", err
	}
	bin = filepath.Join(built.dir, "ward")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/ward")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/ward: %v\n%s", err, b)
	}
	return bin, "", nil
}

// freeAddr returns 127.0.0.1:<a free port>, avoiding the ports browsers
// and HTTP clients refuse.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().(*net.TCPAddr)
		ln.Close()
		switch p := addr.Port; {
		case p == 1, p == 7, p == 9, p == 6000, p >= 6665 && p <= 6669, p == 10080:
			continue
		}
		return addr.String()
	}
	t.Fatal("no usable free port")
	return ""
}

// childEnv is the environment of the child processes: the test's own
// without WARD_* variables, so a WARD_KEK or WARD_ISSUER of the machine
// running the tests cannot change the configuration under test.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// lockedBuffer collects a child's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ward is one deployment: a binary, a configuration file, a data
// directory and an address. serve runs `ward serve` on them; kill ends
// it with SIGKILL; serve again restarts it on the same data.
type ward struct {
	t       *testing.T
	bin     string
	cfgFile string
	addr    string
	url     string
	// exportDir holds the audit export's JSONL files (the file sink).
	exportDir string
	// env is added to the child's environment (a webhook's secret_env).
	env []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
	runs []*lockedBuffer
}

// newWard writes a configuration for a fresh deployment in dir and
// creates its key-encryption key with `ward keys kek`.
func newWard(t *testing.T, bin, dir string) *ward {
	t.Helper()
	// Fast SSF retries and a file sink; everything else is the default:
	// SQLite in data_dir and the embedded NATS server.
	return newWardWith(t, bin, dir, fmt.Sprintf(`ssf:
  push_min_backoff: 50ms
  push_max_backoff: 500ms
  rescan_interval: 100ms
  poll_hold: 5s
  long_poll_timeout: 2s
  push_allowed_networks: [127.0.0.0/8]  # the push receiver is on loopback
export:
  sinks:
    - name: crash-archive
      type: file
      file: {path: %s, max_bytes: 1048576, max_files: 1000}
`, filepath.Join(dir, "export", "ocsf.jsonl")), nil)
}

// newWardWith is newWard with more configuration (YAML appended to the
// base: address, data directory, KEK, JSON logs, fast password hashing
// since hundreds of users are created) and more environment for the
// child.
func newWardWith(t *testing.T, bin, dir, more string, env []string) *ward {
	t.Helper()
	addr := freeAddr(t)
	w := &ward{t: t, bin: bin, cfgFile: filepath.Join(dir, "ward.yaml"), addr: addr, url: "http://" + addr,
		exportDir: filepath.Join(dir, "export"), env: env}
	kekFile := filepath.Join(dir, "kek.key")
	cfg := fmt.Sprintf(`issuer: %s
listen: %s
data_dir: %s
kek:
  file: %s
log:
  level: info
  format: json
passwords:
  argon2_time: 1
  argon2_memory_kib: 8192
  max_concurrent: 4
`, w.url, addr, filepath.Join(dir, "data"), kekFile) + more
	if err := os.WriteFile(w.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	kek, err := w.cli("", "keys", "kek")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kekFile, []byte(kek), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			w.dumpLogs()
		}
	})
	return w
}

// cli runs a command-line tool (`ward --config … args…`) with stdin and
// returns its stdout. Its output may hold secrets (a client secret): the
// error carries only the tool's stderr.
func (w *ward) cli(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, append([]string{"--config", w.cfgFile}, args...)...)
	cmd.Env = childEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ward %s: %v; stderr: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// serve starts `ward serve` and waits until /healthz answers.
func (w *ward) serve() {
	w.t.Helper()
	w.mu.Lock()
	if w.cmd != nil {
		w.mu.Unlock()
		w.t.Fatal("ward serve is already running")
	}
	logs := &lockedBuffer{}
	w.runs = append(w.runs, logs)
	cmd := exec.Command(w.bin, "--config", w.cfgFile, "serve")
	cmd.Env = append(childEnv(), w.env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		w.mu.Unlock()
		w.t.Fatalf("start ward serve: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	w.cmd, w.done = cmd, done
	w.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(w.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			w.t.Fatalf("ward serve exited during start-up (run %d): %v", len(w.runs), cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("ward serve not healthy after 30 s (run %d): %v", len(w.runs), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL (no shutdown of any kind) and waits for the exit.
func (w *ward) kill() {
	w.t.Helper()
	w.mu.Lock()
	cmd, done := w.cmd, w.done
	w.cmd, w.done = nil, nil
	w.mu.Unlock()
	if cmd == nil {
		w.t.Fatal("ward serve is not running")
	}
	if err := cmd.Process.Kill(); err != nil {
		w.t.Fatalf("kill ward serve: %v", err)
	}
	<-done
}

// stop ends a running server with SIGKILL (test cleanup).
func (w *ward) stop() {
	w.mu.Lock()
	cmd, done := w.cmd, w.done
	w.cmd, w.done = nil, nil
	w.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		<-done
	}
}

// dumpLogs writes the servers' output to the test log (on failure only):
// the warnings and errors of each run and its last lines. Ward's log
// never holds tokens or secrets.
func (w *ward) dumpLogs() {
	w.mu.Lock()
	runs := append([]*lockedBuffer(nil), w.runs...)
	w.mu.Unlock()
	for i, r := range runs {
		lines := strings.Split(strings.TrimRight(r.String(), "\n"), "\n")
		var b strings.Builder
		important := 0
		for _, l := range lines {
			if (strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || !strings.HasPrefix(l, "{")) && important < 200 {
				b.WriteString(l + "\n")
				important++
			}
		}
		tail := lines[max(0, len(lines)-10):]
		w.t.Logf("ward serve run %d: %d log lines; warnings, errors and other output:\n%s\nlast %d lines:\n%s",
			i+1, len(lines), b.String(), len(tail), strings.Join(tail, "\n"))
	}
}

// parseField returns the value after "name:" on a line of out.
func parseField(out, name string) (string, error) {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", errors.New("no " + name + " in the output")
}
