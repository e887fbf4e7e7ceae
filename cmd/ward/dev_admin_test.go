package main

import (
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/wardtest"
)

// startDev runs `ward serve --dev` for h and returns the server's address
// and its banner (stdout). The server stops when the test ends.
func startDev(t *testing.T, h *harness) (addr, banner string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--config", h.cfgFile}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: h.environ})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not shut down")
		}
	})
	re := regexp.MustCompile(`msg=listening addr=(\S+)`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			return m[1], out.String()
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errb.String())
		default:
		}
	}
	t.Fatalf("no listening line: %s", errb.String())
	return "", ""
}

// shellWords splits a command line as a POSIX shell would for the
// commands the banner prints (words, double-quoted strings).
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// The admin API is usable out of the box in dev mode: the banner prints
// two commands, and run as printed (plus flags that keep the test's files
// in its own directory) they sign alice in through the ward-admin client
// and call the admin API with a DPoP-bound token.
func TestDevAdminAPICommands(t *testing.T) {
	h := newHarness(t, "listen: 127.0.0.1:0\n")
	h.environ = []string{}
	addr, banner := startDev(t, h)
	issuer := "http://" + addr

	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^  ` + name + `:\s+(\S+)$`).FindStringSubmatch(banner)
		if m == nil {
			t.Fatalf("banner lacks %s:\n%s", name, banner)
		}
		return m[1]
	}
	password, seed := field("Password"), field("TOTP secret")
	_, adminPart, ok := strings.Cut(banner, "Admin API:")
	if !ok {
		t.Fatalf("banner lacks the admin API:\n%s", banner)
	}
	var cmds [][]string
	for _, line := range strings.Split(adminPart, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "ward device ") {
			cmds = append(cmds, shellWords(l))
		}
	}
	if len(cmds) != 2 || cmds[0][2] != "enroll" || cmds[1][2] != "curl" {
		t.Fatalf("admin API commands in the banner: %q\n%s", cmds, banner)
	}
	if !strings.Contains(strings.Join(cmds[0], " "), "--server "+issuer) || !strings.Contains(strings.Join(cmds[0], " "), "ward:admin") {
		t.Fatalf("enroll command %q", cmds[0])
	}

	dir := t.TempDir()
	isolate := []string{"--agent-config=" + filepath.Join(dir, "admin.json")}
	b := (&wardtest.Instance{}).Browser()
	approved := false
	agentHooks.collector = cliCollector{now: time.Now}
	agentHooks.sleep = func(ctx context.Context, d time.Duration) error {
		if !approved {
			approved = true
			m := userCodeRE.FindStringSubmatch(lastStdout.String())
			if m == nil {
				t.Fatalf("no user code in the output: %s", lastStdout.String())
			}
			approveAsAlice(t, b, issuer, m[1], password, seed)
		}
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t.Cleanup(func() { agentHooks.collector, agentHooks.sleep = nil, nil })

	args := append(append(cmds[0][1:], isolate...), "--key-store", "file", "--key-dir", filepath.Join(dir, "keys"))
	out, errs, code := runAgentCLI(t, "", args...)
	if code != 0 || !strings.Contains(out, "Enrolled: device ") {
		t.Fatalf("%s: exit %d\n%s\n%s", strings.Join(cmds[0], " "), code, out, errs)
	}
	out, errs, code = runAgentCLI(t, "", append(cmds[1][1:], isolate...)...)
	if code != 0 || !strings.Contains(errs, "200 OK") || !strings.Contains(out, `"username":"alice"`) {
		t.Fatalf("%s: exit %d\n%s\n%s", strings.Join(cmds[1], " "), code, out, errs)
	}
}

// approveAsAlice approves a device code in the browser as the demo user.
func approveAsAlice(t *testing.T, b *http.Client, issuer, userCode, password, seed string) {
	t.Helper()
	resp, body := wardtest.Do(t, b, http.MethodGet, issuer+"/device", nil)
	form := wardtest.HiddenFields(body)
	form.Set("user_code", userCode)
	resp, body = wardtest.Do(t, b, http.MethodPost, issuer+"/device", form)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
		t.Fatalf("user code: %d %.300s", resp.StatusCode, body)
	}
	form = wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", password)
	_, body = wardtest.Do(t, b, http.MethodPost, issuer+"/login", form)
	code, err := totp.GenerateCode(seed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	form = wardtest.HiddenFields(body)
	form.Set("otp", code)
	_, body = wardtest.Do(t, b, http.MethodPost, issuer+"/login/mfa", form)
	form = wardtest.HiddenFields(body)
	form.Set("decision", "approve")
	if resp, body = wardtest.Do(t, b, http.MethodPost, issuer+"/device/confirm", form); resp.StatusCode != 200 {
		t.Fatalf("approve: %d %.300s", resp.StatusCode, body)
	}
}
