package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// runAgentCLI runs ward with args, making sure the agent commands are
// reachable under `device` whether or not the admin `device` command is
// wired yet.
func runAgentCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &cliEnv{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, environ: []string{}}
	lastStdout, lastStderr = &out, &errb
	root := newRootCmd(e)
	var dev *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == "device" {
			dev = c
		}
	}
	switch {
	case dev == nil:
		root.AddCommand(newDeviceAgentCmd(e))
	default:
		if sub, _, err := dev.Find([]string{"enroll"}); err != nil || sub == dev {
			addAgentCommands(dev, e)
		}
	}
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	code := exitOK
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(e.stderr, "ward:", err)
		code = exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if isUsageError(err) {
			code = exitUsage
		}
	}
	return out.String(), errb.String(), code
}

// lastStdout and lastStderr are the output of the command running now.
var lastStdout, lastStderr *bytes.Buffer

type cliCollector struct{ now func() time.Time }

func (c cliCollector) Collect(context.Context) (*posture.Posture, error) {
	return &posture.Posture{Platform: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", Hostname: "cli-box",
		DiskEncrypted: posture.Yes, UserIsAdmin: posture.No, FirewallEnabled: posture.Yes, CollectedAt: c.now().UTC()}, nil
}

var userCodeRE = regexp.MustCompile(`(?m)^\s+([A-Z]{4}-[A-Z]{4})\s*$`)

func TestAgentCommands(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes: []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:     []string{"openid", "profile", "offline_access", "ward:device"}, DPoPBoundAccessTokens: true})
	}})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.json")
	keyDir := filepath.Join(dir, "keys")
	b := in.Browser()
	approved := false
	agentHooks.collector = cliCollector{now: in.Clock.Now}
	agentHooks.now = in.Clock.Now
	// Polling: the first wait is when the user approves in the browser;
	// every wait moves the server's clock instead of sleeping.
	agentHooks.sleep = func(ctx context.Context, d time.Duration) error {
		if !approved {
			approved = true
			m := userCodeRE.FindStringSubmatch(lastStdout.String())
			if m == nil {
				t.Fatalf("no user code in the output: %s", lastStdout.String())
			}
			approveInBrowser(t, in, b, m[1])
		}
		in.Clock.Advance(d)
		return ctx.Err()
	}
	t.Cleanup(func() { agentHooks.collector, agentHooks.sleep, agentHooks.now = nil, nil, nil })
	cf := "--agent-config=" + cfgPath

	out, errs, code := runAgentCLI(t, "", "device", "enroll", "--server", in.URL, "--key-store", "file", "--key-dir", keyDir, cf)
	if code != 0 || !strings.Contains(out, in.URL+"/device") || !strings.Contains(out, "Enrolled: device ") {
		t.Fatalf("enroll: exit %d\n%s\n%s", code, out, errs)
	}
	t.Logf("enroll:\n%s%s", out, errs)
	if st, err := os.Stat(cfgPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config: %v %v", st, err)
	}
	cfg, err := agent.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out+errs, cfg.RefreshToken.Reveal()) {
		t.Error("the refresh token was printed")
	}

	if _, errs, code := runAgentCLI(t, "", "device", "enroll", "--server", in.URL, cf); code == 0 || !strings.Contains(errs, "already enrolled") {
		t.Errorf("second enroll: exit %d %s", code, errs)
	}

	out, errs, code = runAgentCLI(t, "", "device", "status", cf)
	t.Logf("status:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(out, cfg.DeviceID) || !regexp.MustCompile(`Status:\s+active`).MatchString(out) || !strings.Contains(out, "Compliance:") ||
		!regexp.MustCompile(`Key attested:\s+no \(the key storage is the agent's claim\)`).MatchString(out) {
		t.Errorf("status: exit %d\n%s\n%s", code, out, errs)
	}

	alice, _ := in.App.Store.GetUserByUsername(context.Background(), "alice")
	out, errs, code = runAgentCLI(t, "", "device", "curl", "/userinfo", cf)
	if code != 0 || !strings.Contains(out, alice.ID) || !strings.Contains(errs, "200 OK") {
		t.Errorf("curl /userinfo: exit %d\n%s\n%s", code, out, errs)
	}
	if strings.HasSuffix(errs, "\n\n") {
		t.Errorf("curl added a line break after a body that ends with one: %q", errs)
	}
	// A body without a final line break is passed on as it is; the line
	// break that ends the terminal's line goes to stderr.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("no newline")) }))
	defer plain.Close()
	out, errs, code = runAgentCLI(t, "", "device", "curl", plain.URL+"/x", cf)
	if code != 0 || out != "no newline" || !strings.HasSuffix(errs, "200 OK\n\n") {
		t.Errorf("curl of a body without a line break: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	out, errs, code = runAgentCLI(t, "", "device", "curl", in.URL+"/userinfo", "-X", "POST", "-d", "a=1", cf)
	if code != 0 || !strings.Contains(out, alice.ID) {
		t.Errorf("curl -X POST -d: exit %d\n%s\n%s", code, out, errs)
	}
	_, errs, code = runAgentCLI(t, "", "device", "curl", "/devices/not-mine", cf)
	if code != exitFailure || !strings.Contains(errs, "404") {
		t.Errorf("curl 404: exit %d %s", code, errs)
	}

	out, errs, code = runAgentCLI(t, "", "device", "posture", cf)
	if code != 0 || !strings.Contains(out, "Disk encrypted") || !strings.Contains(out, "cli-box") {
		t.Errorf("posture: exit %d\n%s\n%s", code, out, errs)
	}
	out, errs, code = runAgentCLI(t, "", "device", "posture", "--send", cf)
	t.Logf("posture --send:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(out, "Reported. Compliance:") {
		t.Errorf("posture --send: exit %d\n%s\n%s", code, out, errs)
	}

	if _, errs, code := runAgentCLI(t, "", "device", "status", "--agent-config", filepath.Join(dir, "none.json")); code == 0 || !strings.Contains(errs, "not enrolled") {
		t.Errorf("status without enrolment: exit %d %s", code, errs)
	}
}

// approveInBrowser signs alice in at the verification page and approves.
func approveInBrowser(t *testing.T, in *wardtest.Instance, b *http.Client, userCode string) {
	t.Helper()
	approveInBrowserWith(t, in, b, userCode, wardtest.AlicePassword)
}

// approveInBrowserWith is approveInBrowser with alice's password.
func approveInBrowserWith(t *testing.T, in *wardtest.Instance, b *http.Client, userCode, password string) {
	t.Helper()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.URL+"/device", nil)
	form := wardtest.HiddenFields(body)
	form.Set("user_code", userCode)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device", form)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
		t.Fatalf("user code: %d %.300s", resp.StatusCode, body)
	}
	form = wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", password)
	_, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	in.Clock.Advance(31 * time.Second)
	form = wardtest.HiddenFields(body)
	form.Set("otp", in.TOTP(t, 0))
	_, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	form = wardtest.HiddenFields(body)
	form.Set("decision", "approve")
	if resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", form); resp.StatusCode != 200 {
		t.Fatalf("approve: %d %.300s", resp.StatusCode, body)
	}
}

// `ward device curl` against a resource that follows Ward's CAE: after a
// password change ends the session, the resource's claims challenge cannot
// be followed with a refresh. Without --interactive (stderr is no terminal
// here) the command fails and says how to sign in again; with it, the
// device code is shown on stderr, the user approves with the new password,
// the new session is saved and the request goes through.
func TestAgentCurlSignsInAgain(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes: []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:     []string{"openid", "profile", "offline_access", "ward:device"}, DPoPBoundAccessTokens: true, CAECapable: true})
	}})
	ctx := context.Background()
	dir := t.TempDir()
	cf := "--agent-config=" + filepath.Join(dir, "agent.json")
	password := wardtest.AlicePassword
	var approvals int
	agentHooks.collector = cliCollector{now: in.Clock.Now}
	agentHooks.now = in.Clock.Now
	// The first wait of each device-code sign-in is when the user approves
	// the code the command printed (stdout at enrolment, stderr later).
	pending := true
	agentHooks.sleep = func(ctx context.Context, d time.Duration) error {
		if pending {
			pending = false
			m := userCodeRE.FindStringSubmatch(lastStdout.String() + lastStderr.String())
			if m == nil {
				t.Fatalf("no user code in the output: %s %s", lastStdout, lastStderr)
			}
			approveInBrowserWith(t, in, in.Browser(), m[1], password)
			approvals++
		}
		in.Clock.Advance(d)
		return ctx.Err()
	}
	t.Cleanup(func() { agentHooks.collector, agentHooks.sleep, agentHooks.now = nil, nil, nil })
	if out, errs, code := runAgentCLI(t, "", "device", "enroll", "--server", in.URL, "--key-store", "file", "--key-dir", filepath.Join(dir, "keys"), cf); code != 0 {
		t.Fatalf("enroll: exit %d\n%s\n%s", code, out, errs)
	}

	state := rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: 48 * time.Hour, Now: in.Clock.Now})
	res := httptest.NewServer(nil)
	defer res.Close()
	v, err := rs.New(rs.Config{Issuer: in.URL, Audience: in.URL, Now: in.Clock.Now, State: state, ExternalURL: res.URL})
	if err != nil {
		t.Fatal(err)
	}
	res.Config.Handler = v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := rs.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s", tok.Subject)
	}))
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	if out, errs, code := runAgentCLI(t, "", "device", "curl", res.URL+"/doc", cf); code != 0 || out != "hello "+alice.ID {
		t.Fatalf("curl: exit %d %q %s", code, out, errs)
	}

	in.Clock.Advance(2 * time.Second)
	password = "another-long-passphrase-8842"
	if err := in.App.Identity.SetPassword(ctx, "admin", alice.ID, password); err != nil {
		t.Fatal(err)
	}
	state.RevokeUser(in.URL, alice.ID, in.Clock.Now()) // CAEP credential-change
	before, _ := agent.LoadConfig(filepath.Join(dir, "agent.json"))

	pending = false // nobody is there to approve
	out, errs, code := runAgentCLI(t, "", "device", "curl", res.URL+"/doc", cf)
	if code != exitFailure || out != "" || !strings.Contains(errs, "sign in again") || !strings.Contains(errs, "--interactive") ||
		strings.Contains(errs, "Open") {
		t.Fatalf("without --interactive: exit %d %q\n%s", code, out, errs)
	}
	t.Logf("curl without --interactive:\n%s", errs)

	pending = true
	out, errs, code = runAgentCLI(t, "", "device", "curl", res.URL+"/doc", "--interactive", cf)
	t.Logf("curl --interactive:\n%s", errs)
	if code != 0 || out != "hello "+alice.ID || approvals != 2 || !strings.Contains(errs, "sign in again") ||
		!strings.Contains(errs, in.URL+"/device") || !strings.Contains(errs, "200 OK") {
		t.Fatalf("with --interactive: exit %d %q (%d approvals)\n%s", code, out, approvals, errs)
	}
	after, err := agent.LoadConfig(filepath.Join(dir, "agent.json"))
	if err != nil || after.RefreshToken == before.RefreshToken || after.DeviceID != before.DeviceID {
		t.Fatalf("saved session not replaced: %v", err)
	}
	if strings.Contains(errs, after.RefreshToken.Reveal()) || strings.Contains(errs, after.AccessToken.Reveal()) {
		t.Error("a token was printed")
	}
	// The saved session serves the next command without a prompt.
	if out, errs, code := runAgentCLI(t, "", "device", "curl", res.URL+"/doc", cf); code != 0 || out != "hello "+alice.ID || approvals != 2 {
		t.Fatalf("next curl: exit %d %q %s", code, out, errs)
	}
}

// Enrolment as a user meets it when a policy refuses the agent's refresh:
// the device is registered but the command says the enrolment is not
// finished; once the policy is fixed, `ward device enroll` finishes it
// without a second device code. --force enrols again and removes the
// previous device from the server instead of leaving it active.
func TestAgentEnrollResumeAndForce(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes: []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:     []string{"openid", "profile", "offline_access", "ward:device"}, DPoPBoundAccessTokens: true})
	}})
	ctx := context.Background()
	dir := t.TempDir()
	cf := "--agent-config=" + filepath.Join(dir, "agent.json")
	keyDir := filepath.Join(dir, "keys")
	b := in.Browser()
	approvals := 0
	waiting := false
	agentHooks.collector = cliCollector{now: in.Clock.Now}
	agentHooks.now = in.Clock.Now
	agentHooks.sleep = func(ctx context.Context, d time.Duration) error {
		if !waiting {
			waiting = true
			approvals++
			m := userCodeRE.FindStringSubmatch(lastStdout.String())
			if m == nil {
				t.Fatalf("no user code in the output: %s", lastStdout.String())
			}
			approveInBrowser(t, in, b, m[1])
		}
		in.Clock.Advance(d)
		return ctx.Err()
	}
	t.Cleanup(func() { agentHooks.collector, agentHooks.sleep, agentHooks.now = nil, nil, nil })
	apply := func(doc string) {
		d, err := policy.DecodeYAML([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.App.Access.Apply(ctx, d, access.ApplyOptions{Actor: "test", ExpectVersion: access.AnyVersion}); err != nil {
			t.Fatal(err)
		}
	}
	apply(`
policies:
  - id: no-agent-refresh
    name: Block the agent's refresh
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [ward-agent]}}
    conditions: {flows: [refresh]}
    grant: {block: true}
`)
	out, errs, code := runAgentCLI(t, "", "device", "enroll", "--server", in.URL, "--key-store", "file", "--key-dir", keyDir, cf)
	if code != exitFailure || !strings.Contains(out, "the enrolment is not finished") || !strings.Contains(errs, "run `ward device enroll` again") {
		t.Fatalf("enroll with the binding refused: exit %d\n%s\n%s", code, out, errs)
	}
	first, err := agent.LoadConfig(filepath.Join(dir, "agent.json"))
	if err != nil || !first.Incomplete {
		t.Fatalf("saved config: %+v %v", first, err)
	}

	apply("policies: []\n")
	waiting = false
	out, errs, code = runAgentCLI(t, "", "device", "enroll", "--server", in.URL, cf)
	if code != 0 || !strings.Contains(out, "Finishing the enrolment of device "+first.DeviceID) || !strings.Contains(out, "Enrolled: device "+first.DeviceID) || approvals != 1 {
		t.Fatalf("finish: exit %d, %d approvals\n%s\n%s", code, approvals, out, errs)
	}
	if _, errs, code := runAgentCLI(t, "", "device", "enroll", "--server", in.URL, cf); code == 0 || !strings.Contains(errs, "already enrolled") {
		t.Errorf("enroll when enrolled: exit %d %s", code, errs)
	}

	waiting = false
	out, errs, code = runAgentCLI(t, "", "device", "enroll", "--server", in.URL, "--force", "--key-store", "file", "--key-dir", keyDir, cf)
	if code != 0 || !strings.Contains(out, "Removed the previous device "+first.DeviceID) || approvals != 2 {
		t.Fatalf("enroll --force: exit %d\n%s\n%s", code, out, errs)
	}
	second, _ := agent.LoadConfig(filepath.Join(dir, "agent.json"))
	if second.DeviceID == first.DeviceID {
		t.Fatal("--force kept the device id")
	}
	if _, err := in.App.Devices.Get(ctx, first.DeviceID); !errors.Is(err, device.ErrNotFound) {
		t.Errorf("the previous device is still registered: %v", err)
	}
}
