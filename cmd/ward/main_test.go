package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
)

const testKEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// syncBuffer is a bytes.Buffer safe for a concurrently running server.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	t       *testing.T
	cfgFile string
	dataDir string
	environ []string
}

func newHarness(t *testing.T, extra string) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dataDir: filepath.Join(dir, "data"), environ: []string{"WARD_KEK=" + testKEK}}
	h.cfgFile = filepath.Join(dir, "ward.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nlog: {format: text}\npasswords: {argon2_time: 1, argon2_memory_kib: 64}\n%s", h.dataDir, extra)
	if err := os.WriteFile(h.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// run runs ward with args (plus --config) and stdin; it returns stdout,
// stderr and the exit code.
func (h *harness) run(stdin string, args ...string) (string, string, int) {
	h.t.Helper()
	var out, errb bytes.Buffer
	e := &cliEnv{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, environ: h.environ}
	code := run(context.Background(), append([]string{"--config", h.cfgFile}, args...), e)
	return out.String(), errb.String(), code
}

// ok runs and fails the test on a non-zero exit.
func (h *harness) ok(stdin string, args ...string) string {
	h.t.Helper()
	out, errs, code := h.run(stdin, args...)
	if code != 0 {
		h.t.Fatalf("ward %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (h *harness) openApp() *app.App {
	h.t.Helper()
	return h.open(true)
}

// open opens the data as a command-line tool does (tool) or as the server
// does (applying the configuration's clients and users).
func (h *harness) open(tool bool) *app.App {
	h.t.Helper()
	cfg, err := config.LoadWith(config.LoadOptions{File: h.cfgFile, Environ: h.environ})
	if err != nil {
		h.t.Fatal(err)
	}
	e := &cliEnv{environ: h.environ}
	a, err := app.OpenWith(context.Background(), cfg, nil, app.Options{LookupEnv: e.lookupEnv, Tool: tool})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { a.Close() })
	return a
}

func TestUserAddListDisable(t *testing.T) {
	h := newHarness(t, "")
	out := h.ok("correct horse battery\n", "user", "add", "Bob", "--password-stdin", "--email", "bob@example.com", "--role", "admin")
	if !strings.Contains(out, "created user bob") {
		t.Errorf("add output %q", out)
	}
	// Without --password-stdin and no terminal: refused, nothing created.
	if _, errs, code := h.run("", "user", "add", "carol"); code == 0 || !strings.Contains(errs, "--password-stdin") {
		t.Errorf("add without password: exit %d, stderr %q", code, errs)
	}
	out = h.ok("", "user", "list")
	if !regexp.MustCompile(`(?m)^bob\s+\S+\s+bob@example.com\s+admin\s+active\s+-\s+none$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	if strings.Contains(out, "carol") {
		t.Error("carol was created without a password")
	}
	h.ok("", "user", "disable", "bob")
	if out := h.ok("", "user", "list"); !strings.Contains(out, "disabled") {
		t.Errorf("after disable:\n%s", out)
	}
	if out := h.ok("", "user", "show", "BOB"); !strings.Contains(out, "disabled") || !strings.Contains(out, "bob@example.com") {
		t.Errorf("show:\n%s", out)
	}
	h.ok("", "user", "enable", "bob")
	h.ok("", "user", "roles", "bob", "admin", " admin")
	if out := h.ok("", "user", "roles", "bob"); out != "admin\n" {
		t.Errorf("roles: %q", out)
	}
	// An unknown role is refused with the known ones named, and changes nothing.
	if _, errs, code := h.run("", "user", "roles", "bob", "superuser"); code == 0 || !strings.Contains(errs, `unknown role "superuser"`) || !strings.Contains(errs, "admin") {
		t.Errorf("unknown role: exit %d, stderr %q", code, errs)
	}
	if out := h.ok("", "user", "roles", "bob"); out != "admin\n" {
		t.Errorf("roles after a refused change: %q", out)
	}
	h.ok("new passphrase here\n", "user", "passwd", "bob", "--password-stdin")
	h.ok("", "group", "add", "ops")
	h.ok("", "group", "add-member", "ops", "bob")
	if out := h.ok("", "group", "list"); !regexp.MustCompile(`(?m)^ops\s+\S+\s+bob$`).MatchString(out) {
		t.Errorf("group list:\n%s", out)
	}
	h.ok("", "group", "remove-member", "ops", "bob")
	h.ok("", "group", "delete", "ops")
	h.ok("", "user", "delete", "bob")
	if _, errs, code := h.run("", "user", "show", "bob"); code != 1 || !strings.Contains(errs, `no user "bob"`) {
		t.Errorf("show deleted: exit %d, %q", code, errs)
	}
}

func TestClientAddSecretWorks(t *testing.T) {
	h := newHarness(t, "")
	out := h.ok("", "client", "add", "svc", "--grant-type", "client_credentials", "--name", "Service")
	m := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no secret in output:\n%s", out)
	}
	sec := m[1]
	a := h.openApp()
	c, err := a.Clients.Get(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Clients.CheckSecret(c, sec) {
		t.Error("printed secret does not check")
	}
	a.Close()
	if out := h.ok("", "client", "show", "svc"); strings.Contains(out, sec) || !strings.Contains(out, "set (hashed)") {
		t.Errorf("show reveals the secret or lacks it:\n%s", out)
	}
	out = h.ok("", "client", "rotate-secret", "svc")
	m2 := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out)
	a = h.openApp()
	c, _ = a.Clients.Get(context.Background(), "svc")
	if m2 == nil || a.Clients.CheckSecret(c, sec) || !a.Clients.CheckSecret(c, m2[1]) {
		t.Errorf("rotation: %q", out)
	}
	a.Close()
	// Public client: no secret printed.
	out = h.ok("", "client", "add", "spa", "--auth-method", "none", "--redirect-uri", "https://spa.example/cb", "--dpop-bound")
	if strings.Contains(out, "client_secret") {
		t.Errorf("public client got a secret:\n%s", out)
	}
	if out := h.ok("", "client", "list"); !regexp.MustCompile(`(?m)^spa\s+-\s+none\s+authorization_code\s+yes$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	if _, errs, code := h.run("", "client", "add", "bad", "--auth-method", "none", "--grant-type", "client_credentials"); code == 0 || !strings.Contains(errs, "grant_types") {
		t.Errorf("invalid client: exit %d %q", code, errs)
	}
	// update changes what is given and nothing else.
	h.ok("", "client", "update", "spa", "--redirect-uri", "https://spa.example/cb", "--redirect-uri", "https://spa.example/cb2",
		"--scope", "openid,profile", "--application-type", "web")
	out = h.ok("", "client", "show", "spa")
	for _, want := range []string{"https://spa.example/cb https://spa.example/cb2", "openid profile", "Application type:   web"} {
		if !strings.Contains(out, want) {
			t.Errorf("show after update lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`DPoP-bound tokens:\s+yes`).MatchString(out) {
		t.Errorf("update changed a flag it was not given:\n%s", out)
	}
	if _, errs, code := h.run("", "client", "update", "spa"); code != exitUsage || !strings.Contains(errs, "nothing to change") {
		t.Errorf("update without flags: exit %d %q", code, errs)
	}
	if _, errs, code := h.run("", "client", "update", "spa", "--redirect-uri", "relative"); code == 0 || !strings.Contains(errs, "redirect_uris[0]") {
		t.Errorf("invalid update: exit %d %q", code, errs)
	}
	// To confidential: a secret is generated and printed once.
	if out := h.ok("", "client", "update", "spa", "--auth-method", "client_secret_post"); !strings.Contains(out, "client_secret: ") {
		t.Errorf("update to confidential printed no secret:\n%s", out)
	}
	h.ok("", "client", "delete", "spa")
}

// A client defined in the configuration file keeps its secret there: a
// rotation with the CLI would be undone at the next start, so it is
// refused, and the CLI needs none of the clients' secret variables.
func TestConfiguredClientRefusesRotation(t *testing.T) {
	h := newHarness(t, "static_clients:\n  - {id: web, auth_method: client_secret_basic, secret_env: WEB_SECRET, grant_types: [client_credentials]}\n")
	h.environ = append(h.environ, "WEB_SECRET=web-secret-0123456789")
	a := h.open(false) // as the server does at start
	a.Close()
	h.environ = h.environ[:len(h.environ)-1]
	_, errs, code := h.run("", "client", "rotate-secret", "web")
	if code == 0 || !strings.Contains(errs, "configuration file") || !strings.Contains(errs, "secret_env") {
		t.Errorf("rotate a configured client: exit %d %q", code, errs)
	}
	if out := h.ok("", "client", "show", "web"); !strings.Contains(out, "Managed by") {
		t.Errorf("show does not say where the client is managed:\n%s", out)
	}
}

func TestKeysRotate(t *testing.T) {
	h := newHarness(t, "")
	kid := func() string {
		out := h.ok("", "keys", "list")
		m := regexp.MustCompile(`(?m)^(\S+)\s+ES256\s+active`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no active key:\n%s", out)
		}
		return m[1]
	}
	before := kid()
	out := h.ok("", "keys", "rotate")
	after := kid()
	if before == after || !strings.Contains(out, after) {
		t.Errorf("active kid %s -> %s; rotate said %q", before, after, out)
	}
	if out := h.ok("", "keys", "list"); !regexp.MustCompile(before + `\s+ES256\s+retiring`).MatchString(out) {
		t.Errorf("old key not retiring:\n%s", out)
	}
}

func TestKeysKEK(t *testing.T) {
	// Needs no configuration at all, not even a valid one.
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"keys", "kek", "--config", "/nonexistent.yaml"}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: []string{}})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(b) != 32 {
		t.Errorf("kek %q: %v (%d bytes)", out.String(), err, len(b))
	}
}

func TestLogs(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "dave", "--password-stdin")
	h.ok("", "client", "add", "svc", "--grant-type", "client_credentials")
	out := h.ok("", "logs")
	for _, want := range []string{"key.created", "user.created", "client.created"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)user\.created\s+success\s+cli\s+dave`).MatchString(out) {
		t.Errorf("user shown by name expected:\n%s", out)
	}
	out = h.ok("", "logs", "--json", "--type", "client.created")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line, got:\n%s", out)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["type"] != "client.created" || ev["client_id"] != "svc" || ev["code"] != "W5000I" || ev["actor"] != "cli" {
		t.Errorf("event %v", ev)
	}
	out = h.ok("", "logs", "--json", "--user", "dave")
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, "user.created") {
		t.Errorf("--user dave:\n%s", out)
	}
	out = h.ok("", "logs", "--json", "--client", "svc", "--since", "1h", "--limit", "5")
	if strings.Count(out, "\n") != 1 {
		t.Errorf("--client svc:\n%s", out)
	}
	if _, _, code := h.run("", "logs", "--type", "bogus"); code != exitUsage {
		t.Errorf("unknown type: exit %d", code)
	}
	if out := h.ok("", "logs", "--since", "2000-01-01T00:00:00Z", "--type", "signin.failed"); strings.Count(out, "\n") != 1 {
		t.Errorf("expected header only:\n%s", out)
	}
}

func TestInvalidConfigReportsEveryError(t *testing.T) {
	h := newHarness(t, "issuer: http://id.example.com\nstorage: {driver: postgres}\ntokens: {code_ttl: -1s}\n")
	for _, args := range [][]string{{"user", "list"}, {"serve"}} {
		out, errs, code := h.run("", args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
		for _, want := range []string{"3 problems", "issuer:", "storage.postgres.dsn:", "tokens.code_ttl:"} {
			if !strings.Contains(errs, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, errs)
			}
		}
		if out != "" {
			t.Errorf("%v: stdout %q", args, out)
		}
	}
	// Decoding errors exit 2 as well.
	h2 := newHarness(t, "tokens: {code_ttl: 60}\n")
	if _, errs, code := h2.run("", "user", "list"); code != exitUsage || !strings.Contains(errs, "no unit") {
		t.Errorf("numeric duration: exit %d %q", code, errs)
	}
	if _, _, code := h2.run("", "user", "frobnicate"); code == 0 {
		t.Error("unknown command succeeded")
	}
}

func TestMissingKEKMessage(t *testing.T) {
	h := newHarness(t, "")
	h.environ = []string{}
	_, errs, code := h.run("", "user", "list")
	if code != exitFailure || !strings.Contains(errs, "ward keys kek") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestServeDev(t *testing.T) {
	h := newHarness(t, "listen: 127.0.0.1:0\n")
	h.environ = []string{} // dev mode creates the KEK file
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--config", h.cfgFile}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: h.environ})
	}()
	re := regexp.MustCompile(`msg=listening addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errb.String())
		default:
		}
	}
	if addr == "" {
		t.Fatalf("no listening line: %s", errb.String())
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz %d %q", resp.StatusCode, body)
	}
	// The issuer follows the port the server got (--dev, no issuer set).
	resp, err = http.Get("http://" + addr + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disco struct{ Issuer string }
	_ = json.NewDecoder(resp.Body).Decode(&disco)
	resp.Body.Close()
	if disco.Issuer != "http://"+addr {
		t.Errorf("discovery issuer %q, want http://%s", disco.Issuer, addr)
	}
	for _, want := range []string{"DEVELOPMENT", "alice", "demo-spa", "demo-service", "secret:", "Data:          " + h.dataDir} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(errb.String(), "client_secret") || strings.Contains(errb.String(), "Password:") {
		t.Error("banner content went to the log")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
}

func TestKeysNATSUser(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "nats.seed")
	runKeys := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"keys", "nats-user", "--config", "/nonexistent.yaml"}, args...),
			&cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: []string{}})
		return out.String(), errb.String(), code
	}
	out, errs, code := runKeys("--seed-file", seed)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	pub := strings.TrimSpace(out)
	raw, err := os.ReadFile(seed)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(raw))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := kp.PublicKey(); p != pub || !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("printed %q, seed's key %q", pub, p)
	}
	if fi, _ := os.Stat(seed); fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %v", fi.Mode().Perm())
	}
	if strings.Contains(out+errs, string(bytes.TrimSpace(raw))) {
		t.Fatal("the seed was printed")
	}
	// Never overwrites, and needs the flag.
	if _, _, code := runKeys("--seed-file", seed); code == 0 {
		t.Fatal("overwrote the seed file")
	}
	if again, _ := os.ReadFile(seed); !bytes.Equal(again, raw) {
		t.Fatal("seed file changed")
	}
	if _, _, code := runKeys(); code == 0 {
		t.Fatal("ran without --seed-file")
	}
}

// The risk level set with `ward user risk` is what list and show print;
// setting none shows none again.
func TestUserRiskShown(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "erin", "--password-stdin")
	h.ok("correct horse battery\n", "user", "add", "frank", "--password-stdin")
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^Risk:\s+none$`).MatchString(out) {
		t.Errorf("show before:\n%s", out)
	}
	h.ok("", "user", "risk", "erin", "high", "--reason", "leaked credentials")
	out := h.ok("", "user", "list")
	if !regexp.MustCompile(`(?m)^USERNAME.*\sRISK$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^erin\s.*\shigh$`).MatchString(out) || !regexp.MustCompile(`(?m)^frank\s.*\snone$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^Risk:\s+high \(set \d{4}-\d\d-\d\dT\S+Z\)$`).MatchString(out) {
		t.Errorf("show:\n%s", out)
	}
	h.ok("", "user", "risk", "erin", "none")
	if out := h.ok("", "user", "list"); !regexp.MustCompile(`(?m)^erin\s.*\snone$`).MatchString(out) {
		t.Errorf("list after none:\n%s", out)
	}
}

// ward user totp-remove removes the second factor through the identity
// service: mfa.removed (actor cli) committed with the change, and the
// CAEP credential-change SET (app, delete) queued for receivers.
func TestUserTOTPRemove(t *testing.T) {
	h := newHarness(t, "")
	a := h.openApp()
	ctx := context.Background()
	u, err := a.Identity.CreateUser(ctx, "test", identity.NewUser{Username: "erin", Password: "correct horse battery",
		TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
	if err != nil {
		t.Fatal(err)
	}
	stream := createPollStream(t, a)
	a.Close()
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^MFA:\s+totp$`).MatchString(out) {
		t.Fatalf("show before:\n%s", out)
	}
	if out := h.ok("", "user", "totp-remove", "erin"); out != "removed the TOTP second factor of erin\n" {
		t.Errorf("totp-remove: %q", out)
	}
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^MFA:\s+-$`).MatchString(out) {
		t.Errorf("show after:\n%s", out)
	}
	if _, errs, code := h.run("", "user", "totp-remove", "erin"); code != exitFailure || !strings.Contains(errs, "erin has no TOTP second factor") {
		t.Errorf("again: %d %q", code, errs)
	}
	out := h.ok("", "logs", "--json", "--type", "mfa.removed")
	var ev map[string]any
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &ev) != nil ||
		ev["actor"] != actorCLI || ev["user_id"] != u.ID || ev["code"] != "W1003W" {
		t.Fatalf("mfa.removed events:\n%s", out)
	}
	sets := pollSETs(t, h, stream)
	if len(sets) != 1 {
		t.Fatalf("SETs: %+v", sets)
	}
	s := sets[0]
	if s.typ != cae.EventCredentialChange || s.event["credential_type"] != "app" || s.event["change_type"] != "delete" ||
		s.event["initiating_entity"] != cae.InitiatorAdmin || s.subject["format"] != "iss_sub" || s.subject["sub"] != u.ID || s.txn != ev["id"] {
		t.Errorf("credential-change SET: %+v (event %v)", s, ev)
	}
}

// keys rotate --retire-previous and keys retire: the previous key leaves
// JWKS at once, with a warning and key.retired (actor cli); the active
// key cannot be retired.
func TestKeysRetire(t *testing.T) {
	h := newHarness(t, "")
	activeKID := func() string {
		out := h.ok("", "keys", "list")
		m := regexp.MustCompile(`(?m)^(\S+)\s+ES256\s+active`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no active key:\n%s", out)
		}
		return m[1]
	}
	jwks := func() []string {
		a := h.openApp()
		defer a.Close()
		var kids []string
		for _, k := range a.Keys.JWKS().Keys {
			kids = append(kids, k.KeyID)
		}
		return kids
	}
	first := activeKID()
	if _, errs, code := h.run("", "keys", "retire", "--", first); code != exitFailure || !strings.Contains(errs, "active signing key: rotate first") {
		t.Errorf("retire the active key: %d %q", code, errs)
	}
	h.ok("", "keys", "rotate")
	second := activeKID()
	if got := jwks(); len(got) != 2 {
		t.Fatalf("jwks after a plain rotation: %v", got)
	}
	out, errs, code := h.run("", "keys", "rotate", "--retire-previous")
	third := activeKID()
	if code != 0 || !strings.Contains(out, "retired signing key "+first) || !strings.Contains(out, "retired signing key "+second) ||
		!strings.Contains(errs, "warning: tokens signed by "+first+" no longer verify") {
		t.Fatalf("rotate --retire-previous: %d\n%s\n%s", code, out, errs)
	}
	if got := jwks(); len(got) != 1 || got[0] != third {
		t.Errorf("jwks after --retire-previous: %v, want [%s]", got, third)
	}
	if out := h.ok("", "keys", "list"); strings.Contains(out, first) || strings.Contains(out, second) {
		t.Errorf("retired keys still listed:\n%s", out)
	}
	h.ok("", "keys", "rotate")
	fourth := activeKID()
	out, errs, code = h.run("", "keys", "retire", "--", third)
	if code != 0 || !strings.Contains(errs, "warning:") {
		t.Fatalf("retire: %d %q %q", code, out, errs)
	}
	if got := jwks(); len(got) != 1 || got[0] != fourth {
		t.Errorf("jwks after retire: %v", got)
	}
	if _, errs, code := h.run("", "keys", "retire", "--", third); code != exitFailure || !strings.Contains(errs, "no signing key") {
		t.Errorf("retire again: %d %q", code, errs)
	}
	out = h.ok("", "logs", "--json", "--type", "key.retired")
	if n := strings.Count(out, "\n"); n != 3 || strings.Count(out, `"actor":"cli"`) != 3 || !strings.Contains(out, `"immediate":"true"`) {
		t.Errorf("key.retired events:\n%s", out)
	}
}

// ward user recovery-codes prints a new set once (earlier codes stop
// working, with a warning), refuses a user without TOTP, and show says
// how many are left without ever printing a code.
func TestUserRecoveryCodes(t *testing.T) {
	h := newHarness(t, "")
	a := h.openApp()
	ctx := context.Background()
	u, err := a.Identity.CreateUser(ctx, "test", identity.NewUser{Username: "erin", Password: "correct horse battery",
		TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Identity.CreateUser(ctx, "test", identity.NewUser{Username: "frank", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	a.Close()

	codeRE := regexp.MustCompile(`(?m)^  ([0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5})$`)
	out, errs, code := h.run("", "user", "recovery-codes", "erin")
	if code != 0 || !strings.Contains(out, "Recovery codes for erin") || !strings.Contains(errs, "warning: any earlier recovery codes of erin no longer work") {
		t.Fatalf("recovery-codes: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	first := codeRE.FindAllStringSubmatch(out, -1)
	if len(first) != identity.RecoveryCodeCount {
		t.Fatalf("%d codes printed, want %d:\n%s", len(first), identity.RecoveryCodeCount, out)
	}
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^Recovery codes:\s+10 left$`).MatchString(out) || codeRE.MatchString(out) ||
		strings.Contains(out, first[0][1]) {
		t.Errorf("show:\n%s", out)
	}

	// A code works once; a new set replaces the old one with a warning.
	a = h.openApp()
	fresh, _ := a.Store.GetUser(ctx, u.ID)
	if err := a.Identity.CheckRecoveryCode(ctx, fresh, first[0][1], "192.0.2.1"); err != nil {
		t.Fatalf("printed code: %v", err)
	}
	a.Close()
	if out := h.ok("", "user", "show", "erin"); !regexp.MustCompile(`(?m)^Recovery codes:\s+9 left$`).MatchString(out) {
		t.Errorf("show after a use:\n%s", out)
	}
	out, errs, code = h.run("", "user", "recovery-codes", u.ID)
	if code != 0 || !strings.Contains(errs, "warning: the 9 unused recovery code(s) erin had no longer work") {
		t.Fatalf("again: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	second := codeRE.FindAllStringSubmatch(out, -1)
	a = h.openApp()
	if err := a.Identity.CheckRecoveryCode(ctx, fresh, first[1][1], "192.0.2.1"); !errors.Is(err, identity.ErrInvalidRecoveryCode) {
		t.Errorf("a code of the old set: %v", err)
	}
	if err := a.Identity.CheckRecoveryCode(ctx, fresh, second[0][1], "192.0.2.1"); err != nil {
		t.Errorf("a code of the new set: %v", err)
	}
	a.Close()

	// A user without TOTP: refused, with what to do.
	if _, errs, code := h.run("", "user", "recovery-codes", "frank"); code != exitFailure ||
		!strings.Contains(errs, "frank has no TOTP second factor") || !strings.Contains(errs, "ward user totp-enroll frank") {
		t.Errorf("user without TOTP: exit %d, stderr %q", code, errs)
	}
	if out := h.ok("", "user", "show", "frank"); !regexp.MustCompile(`(?m)^Recovery codes:\s+-$`).MatchString(out) {
		t.Errorf("show frank:\n%s", out)
	}
	if _, errs, code := h.run("", "user", "recovery-codes", "nobody"); code == 0 || !strings.Contains(errs, `no user "nobody"`) {
		t.Errorf("unknown user: exit %d, stderr %q", code, errs)
	}

	// Recorded with the CLI as actor; the codes are in no event.
	out = h.ok("", "logs", "--json", "--type", "mfa.recovery_codes_created")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ev map[string]any
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &ev) != nil || ev["actor"] != actorCLI || ev["user_id"] != u.ID || ev["code"] != "W1004I" {
		t.Fatalf("mfa.recovery_codes_created events:\n%s", out)
	}
	all := h.ok("", "logs", "--json")
	for _, c := range append(first, second...) {
		if strings.Contains(all, c[1]) || strings.Contains(all, strings.ReplaceAll(c[1], "-", "")) {
			t.Errorf("a code is in the audit log")
		}
	}

	// totp-remove ends the codes too.
	h.ok("", "user", "totp-remove", "erin")
	a = h.openApp()
	if n, err := a.Identity.RecoveryCodesLeft(ctx, u.ID); err != nil || n != 0 {
		t.Errorf("codes left after totp-remove: %d, %v", n, err)
	}
}
