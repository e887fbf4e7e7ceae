package app

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

const testKEK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// testConfig returns a valid configuration on a temp data dir with cheap
// argon2 parameters.
func testConfig(t *testing.T, dev bool) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Dev = dev
	cfg.Passwords.Argon2MemoryKiB = 64
	cfg.Passwords.Argon2Time = 1
	cfg.ResolvePaths()
	return cfg
}

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func open(t *testing.T, cfg *config.Config, vars map[string]string) *App {
	t.Helper()
	a, err := OpenWith(context.Background(), cfg, nil, Options{LookupEnv: env(vars)})
	if err != nil {
		t.Fatal(err)
	}
	// Close (idempotent) before t.TempDir's removal: a running embedded
	// NATS server still writes its files.
	t.Cleanup(func() { a.Close() })
	return a
}

func events(t *testing.T, a *App) []*store.StoredEvent {
	t.Helper()
	evs, err := a.Store.ListEvents(context.Background(), store.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func countType(evs []*store.StoredEvent, typ model.EventType) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func TestMissingKEKOutsideDev(t *testing.T) {
	cfg := testConfig(t, false)
	_, err := OpenWith(context.Background(), cfg, nil, Options{LookupEnv: env(nil)})
	if !errors.Is(err, ErrNoKEK) {
		t.Fatalf("got %v, want ErrNoKEK", err)
	}
	for _, want := range []string{"ward keys kek", "WARD_KEK", cfg.KEK.File} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(cfg.KEK.File); !errors.Is(err, os.ErrNotExist) {
		t.Error("a KEK file was created outside dev mode")
	}
}

func TestKEKFromEnvAndBadKEK(t *testing.T) {
	cfg := testConfig(t, false)
	a := open(t, cfg, map[string]string{"WARD_KEK": testKEK})
	if len(a.Keys.Keys()) == 0 || a.Keys.ActiveKID() == "" {
		t.Error("no signing key after open")
	}
	a.Close()
	// Reopening with another KEK cannot decrypt the signing keys.
	_, err := OpenWith(context.Background(), cfg, nil, Options{LookupEnv: env(map[string]string{"WARD_KEK": "not base64!"})})
	if err == nil || !strings.Contains(err.Error(), "WARD_KEK") {
		t.Errorf("bad KEK: got %v", err)
	}
}

func TestAuditPersister(t *testing.T) {
	cfg := testConfig(t, false)
	a := open(t, cfg, map[string]string{"WARD_KEK": testKEK})
	defer a.Close()
	ctx := context.Background()
	if _, err := a.Identity.CreateUser(ctx, "tester", identity.NewUser{Username: "zoe", Password: "a long passphrase"}); err != nil {
		t.Fatal(err)
	}
	evs := events(t, a)
	if countType(evs, model.EventUserCreated) != 1 || countType(evs, model.EventKeyCreated) != 1 {
		t.Errorf("events %v", evs)
	}
	// A failing store makes publishing fail.
	a.Store.Close()
	if err := a.Bus.Publish(ctx, &model.Event{Type: model.EventUserUpdated}); err == nil {
		t.Error("publish succeeded although the audit log could not be written")
	}
}

func TestDevDataStableAcrossRestarts(t *testing.T) {
	cfg := testConfig(t, true)
	a := open(t, cfg, nil)
	d1 := a.DevData()
	banner := a.DevBanner()
	nEvents := len(events(t, a))
	a.Close()

	for _, f := range []string{cfg.KEK.File, filepath.Join(cfg.DataDir, DevCredentialsFile), cfg.Storage.SQLite.Path} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(cfg.DataDir); st.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", st.Mode().Perm())
	}
	if len(d1.User.Password.Reveal()) != 16 || d1.User.TOTPSecret == "" || !strings.HasPrefix(d1.User.TOTPURL.Reveal(), "otpauth://totp/") {
		t.Errorf("dev user %+v", d1.User)
	}
	for _, want := range []string{cfg.Issuer, "alice", d1.User.Password.Reveal(), d1.User.TOTPSecret.Reveal(), "demo-spa", "demo-service", d1.Clients[1].Secret.Reveal(), "http://127.0.0.1:8700/demo/callback"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	a = open(t, cfg, nil)
	defer a.Close()
	d2 := a.DevData()
	if d2.User.Password != d1.User.Password || d2.Clients[1].Secret != d1.Clients[1].Secret {
		t.Error("dev credentials changed across restarts")
	}
	if n := len(events(t, a)); n != nEvents {
		t.Errorf("restart produced %d new events", n-nEvents)
	}

	ctx := context.Background()
	if _, err := a.Identity.CheckPassword(ctx, identity.Attempt{Username: "alice", Password: d2.User.Password.Reveal(), IP: "127.0.0.1"}); err != nil {
		t.Errorf("dev password does not sign in: %v", err)
	}
	svc, err := a.Clients.Get(ctx, DevServiceClient)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Clients.CheckSecret(svc, d2.Clients[1].Secret.Reveal()) {
		t.Error("dev service secret does not check")
	}
	spa, err := a.Clients.Get(ctx, DevSPAClientID)
	if err != nil {
		t.Fatal(err)
	}
	if !spa.Public() || !spa.DPoPBoundAccessTokens || len(spa.RedirectURIs) != 2 || !spa.AllowsGrant(model.GrantRefreshToken) {
		t.Errorf("demo-spa %+v", spa)
	}
	// The admin API's client: the agent's grants and the admin scope,
	// managed by dev mode, with the commands to use it in the banner.
	adm, err := a.Clients.Get(ctx, DevAdminClientID)
	if err != nil {
		t.Fatal(err)
	}
	if !adm.Public() || !adm.DPoPBoundAccessTokens || !adm.AllowsGrant(model.GrantDeviceCode) || !slices.Contains(adm.Scopes, "ward:admin") ||
		adm.ManagedBy != model.ClientManagedByDev {
		t.Errorf("ward-admin %+v", adm)
	}
	for _, c := range DevAdminCommands(cfg.Issuer) {
		if !strings.Contains(banner, c) {
			t.Errorf("banner lacks %q:\n%s", c, banner)
		}
	}
	u, _ := a.Store.GetUserByUsername(ctx, "alice")
	if !u.HasRole(model.RoleAdmin) || !a.Identity.HasTOTP(u) {
		t.Errorf("alice %+v", u)
	}
	// Nothing secret is in the database in plaintext.
	raw, err := os.ReadFile(cfg.Storage.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	wal, _ := os.ReadFile(cfg.Storage.SQLite.Path + "-wal")
	for _, s := range []string{d2.User.Password.Reveal(), d2.User.TOTPSecret.Reveal(), d2.Clients[1].Secret.Reveal()} {
		if strings.Contains(string(raw)+string(wal), s) {
			t.Errorf("secret %q… found in the database file", s[:4])
		}
	}
}

func TestDevCredentialsFileReusedAfterDBWipe(t *testing.T) {
	cfg := testConfig(t, true)
	a := open(t, cfg, nil)
	pw := a.DevData().User.Password
	a.Close()
	for _, s := range []string{"", "-wal", "-shm"} {
		os.Remove(cfg.Storage.SQLite.Path + s)
	}
	a = open(t, cfg, nil)
	defer a.Close()
	if a.DevData().User.Password != pw {
		t.Error("password regenerated although the credentials file had one")
	}
	var c devCredentials
	b, _ := os.ReadFile(filepath.Join(cfg.DataDir, DevCredentialsFile))
	if err := json.Unmarshal(b, &c); err != nil || c.Password != pw.Reveal() {
		t.Errorf("credentials file %s / %v", b, err)
	}
}

func TestStaticClientsAndUsers(t *testing.T) {
	cfg := testConfig(t, false)
	cfg.StaticClients = []config.StaticClient{
		{ID: "web", AuthMethod: model.AuthClientSecretPost, SecretEnv: "WEB_SECRET", RedirectURIs: []string{"https://web.example/cb"}},
		{ID: "spa", AuthMethod: model.AuthNone, RedirectURIs: []string{"https://spa.example/cb"}, GrantTypes: []string{"authorization_code", "refresh_token"}},
	}
	cfg.StaticUsers = []config.StaticUser{
		{Username: "Dana", PasswordEnv: "DANA_PW", Roles: []string{"admin"}, Groups: []string{"ops", "dev"}, TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"},
		{Username: "erin", Password: "staple battery horse"},
	}
	vars := map[string]string{"WARD_KEK": testKEK, "WEB_SECRET": "web-secret-0123456789", "DANA_PW": "correct horse battery"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := open(t, cfg, vars)
	ctx := context.Background()
	web, err := a.Clients.Get(ctx, "web")
	if err != nil || !a.Clients.CheckSecret(web, "web-secret-0123456789") {
		t.Fatalf("web client %v %v", web, err)
	}
	dana, err := a.Store.GetUserByUsername(ctx, "dana")
	if err != nil || !dana.HasRole("admin") || !a.Identity.HasTOTP(dana) {
		t.Fatalf("dana %+v %v", dana, err)
	}
	gs, _ := a.Identity.GroupsOf(ctx, dana.ID)
	if len(gs) != 2 {
		t.Errorf("dana in %d groups, want 2", len(gs))
	}
	n := len(events(t, a))
	a.Close()

	// Restart: nothing changes, no events.
	a = open(t, cfg, vars)
	if got := len(events(t, a)); got != n {
		t.Errorf("restart added %d events", got-n)
	}
	a.Close()

	// Change roles and the secret: applied on the next start.
	cfg.StaticUsers[0].Roles = []string{}
	vars["WEB_SECRET"] = "another-secret-0123456789"
	a = open(t, cfg, vars)
	dana, _ = a.Store.GetUserByUsername(ctx, "dana")
	if dana.HasRole("admin") || len(dana.Roles) != 0 {
		t.Errorf("roles not applied: %v", dana.Roles)
	}
	web, _ = a.Clients.Get(ctx, "web")
	if a.Clients.CheckSecret(web, "web-secret-0123456789") || !a.Clients.CheckSecret(web, "another-secret-0123456789") {
		t.Error("static secret change not applied")
	}
	evs := events(t, a)
	if countType(evs, model.EventClientSecretRotated) != 1 || countType(evs, model.EventUserUpdated) != 1 {
		t.Errorf("want one secret_rotated and one user.updated, got %d events", len(evs)-n)
	}

	// A configured client's secret lives in the configuration: a rotation
	// elsewhere would come back at the next start, so it is refused.
	if _, err := a.Clients.RotateSecret(ctx, "cli", "web"); !errors.Is(err, clients.ErrManagedByConfig) || !strings.Contains(err.Error(), "secret_env") {
		t.Errorf("rotating a configured client: %v", err)
	}
	a.Close()

	// A command-line tool needs none of the clients' secret variables.
	delete(vars, "WEB_SECRET")
	tool, err := OpenWith(ctx, cfg, nil, Options{LookupEnv: env(vars), Tool: true})
	if err != nil {
		t.Fatalf("tool without WEB_SECRET: %v", err)
	}
	tool.Close()

	// Dropped from the configuration: kept, with its secret, and handed
	// over to the CLI and admin API.
	cfg.StaticClients = cfg.StaticClients[1:]
	a = open(t, cfg, vars)
	web, err = a.Clients.Get(ctx, "web")
	if err != nil || web.ManagedBy != "" || !a.Clients.CheckSecret(web, "another-secret-0123456789") {
		t.Fatalf("released client: %+v %v", web, err)
	}
	if _, err := a.Clients.RotateSecret(ctx, "cli", "web"); err != nil {
		t.Errorf("rotating a released client: %v", err)
	}
}

func TestStaticSecretEnvMissing(t *testing.T) {
	cfg := testConfig(t, false)
	cfg.StaticClients = []config.StaticClient{{ID: "web", AuthMethod: model.AuthClientSecretBasic, SecretEnv: "WEB_SECRET", GrantTypes: []string{"client_credentials"}}}
	cfg.StaticUsers = []config.StaticUser{{Username: "gus", PasswordEnv: "GUS_PW"}}
	_, err := OpenWith(context.Background(), cfg, nil, Options{LookupEnv: env(map[string]string{"WARD_KEK": testKEK})})
	if err == nil || !strings.Contains(err.Error(), "WEB_SECRET") || !strings.Contains(err.Error(), "GUS_PW") {
		t.Errorf("got %v, want both missing variables named", err)
	}
}

func TestInvalidConfigRefused(t *testing.T) {
	cfg := testConfig(t, true)
	cfg.Storage.Driver = "oracle"
	if _, err := OpenWith(context.Background(), cfg, nil, Options{}); err == nil || !strings.Contains(err.Error(), "storage.driver") {
		t.Errorf("got %v", err)
	}
}

func TestSecretsRedactedInDevData(t *testing.T) {
	cfg := testConfig(t, true)
	a := open(t, cfg, nil)
	defer a.Close()
	b, _ := json.Marshal(a.DevData())
	if strings.Contains(string(b), a.DevData().User.Password.Reveal()) {
		t.Error("DevData marshals the password")
	}
}

// devices.tpm_ek_ca_file: a file that is missing or not a CA bundle is a
// start-up error naming the key, not a server that trusts no vendor (or
// any).
func TestTPMEKCAFile(t *testing.T) {
	dir := t.TempDir()
	notCA := filepath.Join(dir, "not-ca.pem")
	if err := os.WriteFile(notCA, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing.pem"), notCA} {
		cfg := testConfig(t, false)
		cfg.Bus.Driver = config.BusLocal
		cfg.Devices.TPMEKCAFile = path
		_, err := OpenWith(context.Background(), cfg, nil, Options{LookupEnv: env(map[string]string{"WARD_KEK": testKEK})})
		if err == nil || !strings.Contains(err.Error(), "devices.tpm_ek_ca_file") {
			t.Errorf("%s: %v, want an error naming devices.tpm_ek_ca_file", path, err)
		}
	}
}
