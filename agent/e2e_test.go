package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// fixedCollector reports a healthy Linux machine.
type fixedCollector struct{ now func() time.Time }

func (c fixedCollector) Collect(ctx context.Context) (*posture.Posture, error) {
	return &posture.Posture{
		Platform: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", Kernel: "6.1.0-18-amd64", Hostname: "laptop-7",
		DiskEncrypted: posture.Yes, UserIsAdmin: posture.No, AntiMalwarePresent: posture.Unknown,
		FirewallEnabled: posture.Yes, SecureBoot: posture.Yes, ScreenLock: posture.Yes, Rooted: posture.No,
		CollectedAt: c.now().UTC(),
		Evidence:    map[string]string{posture.FieldDiskEncrypted: "root on dm-crypt (fixture)"},
	}, nil
}

// startAgentIdP runs Ward with the ward-agent client.
func startAgentIdP(t *testing.T) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes:            []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:                []string{"openid", "profile", "offline_access", "ward:device"},
			DPoPBoundAccessTokens: true, CAECapable: true})
		// The tests replay the agent's refresh token with another key
		// and check that the agent keeps working: the token endpoint's
		// own refusal. Ward's automatic response to that detection
		// (every session of the user revoked) is tested in
		// internal/gateway (TestTokenTheftEndToEnd).
		c.Risk.AutoRevokeLevel = "off"
	}})
}

// approve drives the browser for a device authorization the way a user
// does: open verification_uri_complete, submit the code, sign alice in
// with password and TOTP (or reuse b's session), and answer decision.
func approve(t testing.TB, in *wardtest.Instance, b *http.Client, complete, userCode, decision string) {
	t.Helper()
	resp, body := wardtest.Do(t, b, http.MethodGet, complete, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `value="`+userCode+`"`) {
		t.Fatalf("verification page: %d, want the form prefilled with %s; %.300s", resp.StatusCode, userCode, body)
	}
	form := wardtest.HiddenFields(body)
	form.Set("user_code", userCode)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device", form)
	if resp.StatusCode == 200 && strings.Contains(body, `name="password"`) {
		form = wardtest.HiddenFields(body)
		form.Set("username", "alice")
		form.Set("password", wardtest.AlicePassword)
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
		if resp.StatusCode != 200 || !strings.Contains(body, `name="otp"`) {
			t.Fatalf("password: %d, want the TOTP page; %.300s", resp.StatusCode, body)
		}
		in.Clock.Advance(31 * time.Second) // a fresh TOTP step: each code is accepted once
		form = wardtest.HiddenFields(body)
		form.Set("otp", in.TOTP(t, 0))
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	}
	if resp.StatusCode != 200 || !strings.Contains(body, `value="approve"`) {
		t.Fatalf("want the confirmation page, got %d %.400s", resp.StatusCode, body)
	}
	form = wardtest.HiddenFields(body)
	form.Set("decision", decision)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", form)
	if resp.StatusCode != 200 {
		t.Fatalf("confirm: %d %.300s", resp.StatusCode, body)
	}
}

// enrollOptions are Enroll options against in whose polling advances the
// fake clock instead of sleeping.
func enrollOptions(in *wardtest.Instance, dir string, prompt func(uri, complete, code string)) agent.EnrollOptions {
	ks := &keystore.FileStore{Dir: filepath.Join(dir, "keys")}
	return agent.EnrollOptions{
		Server: in.URL, Store: ks, KeyDir: ks.Dir, Collector: fixedCollector{now: in.Clock.Now},
		ConfigPath: filepath.Join(dir, "config", "agent.json"), Now: in.Clock.Now, Prompt: prompt,
		Sleep: func(ctx context.Context, d time.Duration) error { in.Clock.Advance(d); return ctx.Err() },
	}
}

func TestEnrollEndToEnd(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()
	dir := t.TempDir()
	b := in.Browser()
	var prompted []string
	o := enrollOptions(in, dir, func(uri, complete, code string) {
		prompted = []string{uri, complete, code}
		approve(t, in, b, complete, code, "approve")
	})
	cfg, err := agent.Enroll(ctx, o)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if len(prompted) != 3 || prompted[0] != in.URL+"/device" || !strings.Contains(prompted[1], url.QueryEscape(prompted[2])) {
		t.Errorf("prompt got %q", prompted)
	}
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}

	// The saved configuration: 0600, the device registered with the key.
	st, err := os.Stat(o.ConfigPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}
	saved, err := agent.LoadConfig(o.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if saved.DeviceID == "" || saved.DeviceID != cfg.DeviceID || saved.KeyStorage != keystore.KindFile || saved.RefreshToken == "" || saved.Server != in.URL {
		t.Fatalf("saved config %+v", saved)
	}
	d, err := in.App.Devices.Get(ctx, cfg.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if d.JKT != cfg.JKT || d.UserID != alice.ID || d.Status != "active" || d.Hostname != "laptop-7" || d.KeyStorage != "file" || d.PostureAt.IsZero() {
		t.Errorf("registered device %+v", d)
	}
	for _, s := range []string{saved.RefreshToken.Reveal(), saved.AccessToken.Reveal()} {
		if strings.Contains(in.LogText(), s) {
			t.Error("a token of the agent is in the server log")
		}
	}

	// Enrolling again with the same key name leaves the key alone.
	again := o
	again.KeyName = cfg.KeyName
	again.Prompt = func(string, string, string) { t.Error("prompted") }
	if _, err := agent.Enroll(ctx, again); !errors.Is(err, keystore.ErrExists) {
		t.Errorf("enrol with an existing key name: %v, want ErrExists", err)
	}
	if _, err := o.Store.Load(ctx, cfg.KeyName); err != nil {
		t.Fatalf("the device key is gone: %v", err)
	}

	// The client: userinfo through the transport.
	c, err := agent.Open(ctx, saved, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	userinfo := func() (int, map[string]any) {
		t.Helper()
		resp, err := c.HTTPClient().Get(in.URL + "/userinfo")
		if err != nil {
			return 0, map[string]any{"err": err.Error()}
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, m := userinfo(); code != 200 || m["sub"] != alice.ID {
		t.Fatalf("userinfo: %d %v", code, m)
	}
	dev, err := c.Device(ctx)
	if err != nil || dev.ID != cfg.DeviceID || dev.Status != "active" || dev.Compliance == "" {
		t.Fatalf("device status: %+v %v", dev, err)
	}
	in.Clock.Advance(2 * time.Second)
	rep, err := c.ReportPosture(ctx)
	if err != nil || rep.PostureAt.IsZero() {
		t.Fatalf("posture report: %+v %v", rep, err)
	}

	// Introspection by a resource server.
	at, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	intro := introspect(t, in, at)
	if intro["active"] != true || intro["token_type"] != "DPoP" {
		t.Fatalf("introspection: %v", intro)
	}
	// Token protection: the session is bound to the registered device, so
	// its access tokens name the device.
	if did := intro["did"]; did != cfg.DeviceID {
		t.Errorf("introspection did = %v, want %s (a protected session)", did, cfg.DeviceID)
	}

	// A copy of the refresh token is useless with another key, and the
	// attempt does not use the token up.
	stolen, _ := agent.LoadConfig(o.ConfigPath)
	if r := refreshWith(t, in, stolen.RefreshToken.Reveal(), newSigner(t)); r["error"] != "invalid_grant" {
		t.Fatalf("refresh with another key: %v, want invalid_grant", r)
	}
	if _, err := c.Refresh(ctx); err != nil {
		t.Fatalf("the agent's own refresh after the theft attempt: %v", err)
	}
	if code, _ := userinfo(); code != 200 {
		t.Fatalf("userinfo after refresh: %d", code)
	}

	// Scheduled reports (`ward device run`) keep the server's view current.
	before, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventDevicePostureReported}})
	rctx, cancel := context.WithCancel(ctx)
	reports := 0
	err = c.RunReports(rctx, 5*time.Millisecond, func(d *agent.Device, err error) {
		if err != nil {
			t.Errorf("scheduled report: %v", err)
		}
		if reports++; reports == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || reports != 3 {
		t.Fatalf("RunReports = %v after %d reports", err, reports)
	}
	after, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventDevicePostureReported}})
	if len(after)-len(before) != 3 {
		t.Fatalf("server recorded %d scheduled reports, want 3", len(after)-len(before))
	}

	// The admin disables the device: the session ends, the next refresh
	// fails, and so do requests.
	if _, err := in.App.Devices.Disable(ctx, "admin-test", cfg.DeviceID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReportPosture(ctx); err == nil {
		t.Errorf("posture report of a disabled device accepted")
	}
	t.Run("disable ends the session", func(t *testing.T) {
		if _, err := c.Refresh(ctx); !errors.Is(err, agent.ErrSessionEnded) {
			t.Fatalf("refresh after disable: %v, want ErrSessionEnded", err)
		}
		if code, m := userinfo(); code == 200 {
			t.Fatalf("userinfo after disable: %d %v", code, m)
		}
	})
}

func TestEnrollDeniedAndExpired(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()

	t.Run("denied", func(t *testing.T) {
		dir := t.TempDir()
		o := enrollOptions(in, dir, func(uri, complete, code string) { approve(t, in, in.Browser(), complete, code, "deny") })
		_, err := agent.Enroll(ctx, o)
		if !errors.Is(err, agent.ErrDenied) {
			t.Fatalf("err = %v, want ErrDenied", err)
		}
		assertNoKeyNoConfig(t, o)
	})
	t.Run("cancelled", func(t *testing.T) {
		dir := t.TempDir()
		cctx, cancel := context.WithCancel(ctx)
		o := enrollOptions(in, dir, func(uri, complete, code string) { cancel() })
		_, err := agent.Enroll(cctx, o)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		assertNoKeyNoConfig(t, o)
	})
	t.Run("unknown client", func(t *testing.T) {
		o := enrollOptions(in, t.TempDir(), func(uri, complete, code string) { t.Error("prompted") })
		o.ClientID = "nope"
		var oe *agent.OAuthError
		if _, err := agent.Enroll(ctx, o); !errors.As(err, &oe) || oe.Code != "invalid_client" {
			t.Fatalf("err = %v, want invalid_client", err)
		}
		assertNoKeyNoConfig(t, o)
	})
	t.Run("plain http to a remote server", func(t *testing.T) {
		o := enrollOptions(in, t.TempDir(), nil)
		o.Prompt = func(string, string, string) {}
		o.Server = "http://id.example.com"
		if _, err := agent.Enroll(ctx, o); err == nil || !strings.Contains(err.Error(), "https") {
			t.Fatalf("err = %v", err)
		}
	})
	// Last: it moves the server clock far ahead of the proofs' real time.
	t.Run("expired", func(t *testing.T) {
		dir := t.TempDir()
		o := enrollOptions(in, dir, func(uri, complete, code string) {})
		o.Sleep = func(ctx context.Context, d time.Duration) error { in.Clock.Advance(11 * time.Minute); return nil }
		_, err := agent.Enroll(ctx, o)
		if !errors.Is(err, agent.ErrExpired) {
			t.Fatalf("err = %v, want ErrExpired", err)
		}
		assertNoKeyNoConfig(t, o)
	})
}

// A server whose agent client may not request the device registration
// scope: enrolment stops before the sign-in, says what the administrator
// must change, and leaves nothing behind.
func TestEnrollNeedsDeviceScope(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes: []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:     []string{"openid", "profile", "offline_access"}, DPoPBoundAccessTokens: true})
	}})
	o := enrollOptions(in, t.TempDir(), func(uri, complete, code string) { t.Error("prompted") })
	_, err := agent.Enroll(context.Background(), o)
	var oe *agent.OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_scope" || !strings.Contains(err.Error(), "allowed the scope "+agent.ScopeDevice) {
		t.Fatalf("err = %v, want invalid_scope naming %s", err, agent.ScopeDevice)
	}
	assertNoKeyNoConfig(t, o)
}

func assertNoKeyNoConfig(t *testing.T, o agent.EnrollOptions) {
	t.Helper()
	if entries, _ := os.ReadDir(o.Store.(*keystore.FileStore).Dir); len(entries) != 0 {
		t.Errorf("the key store still holds %d entries after a failed enrolment", len(entries))
	}
	if _, err := os.Stat(o.ConfigPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config written after a failed enrolment: %v", err)
	}
}

func introspect(t *testing.T, in *wardtest.Instance, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("service", wardtest.ServiceSecret)
	return doJSON(t, req)
}

func refreshWith(t *testing.T, in *wardtest.Instance, rt string, s *dpop.Signer) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {agent.DefaultClientID}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	p, err := s.Proof(http.MethodPost, in.URL+"/token", "", "")
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("DPoP", p)
	return doJSON(t, req)
}

func doJSON(t *testing.T, req *http.Request) map[string]any {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	return m
}

func newSigner(t *testing.T) *dpop.Signer {
	t.Helper()
	k, err := (&keystore.FileStore{Dir: t.TempDir()}).Create(context.Background(), "thief")
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
