// Package wardtest starts a real Ward instance (real store, real HTTP on
// 127.0.0.1, real keys) for tests, with an adjustable clock, and drives
// the browser side of sign-in the way a user would: it fetches the login
// page, fills in the form and follows the redirects.
package wardtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/loadgen"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/server"
)

// Fixed credentials of the test fixtures.
const (
	AlicePassword = "correct-horse-battery-A1"
	AliceTOTP     = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	BobPassword   = "correct-horse-battery-B2"
	ServiceSecret = "service-secret-0123456789-abcdefghijklmnopq"
	WebSecret     = "web-secret-0123456789-abcdefghijklmnopqrstu"
	RedirectURI   = "https://app.example/callback"
)

// Instance is a running Ward.
type Instance struct {
	URL    string // == issuer
	App    *app.App
	Server *server.Server
	Clock  *clock.Fake // shared by the instance and the test
	logs   *syncBuffer // every log line, at debug level
	Config *config.Config
	DBPath string
	http   *httptest.Server
	opts   Options
	close  sync.Once
}

// Options adjust the instance.
type Options struct {
	// Configure may change the configuration before Ward opens.
	Configure func(*config.Config)
	// RealClock uses time.Now instead of a fake clock (for interop tests
	// with clients that read the real time).
	RealClock bool
	// PostgresDSN, when set, stores everything in a fresh PostgreSQL
	// database created for this instance (and dropped afterwards) instead
	// of SQLite.
	PostgresDSN string
	// Join starts the instance on the database, with the key-encryption
	// key and the clock of another one: a second instance of one
	// deployment. PostgresDSN is then ignored. (Restart starts the same
	// instance again.)
	Join *Instance
	// SignInRisk, when set, computes the risk of each sign-in
	// (app.App.SignInRisk).
	SignInRisk app.SignInRiskAssessor
}

// Start runs Ward with SQLite in a temp dir and these fixtures: users
// alice (TOTP, admin) and bob (password only); clients "spa" (public,
// DPoP required), "web" (client_secret_basic, code + refresh), "service"
// (client_secret_basic, client_credentials), "native" (public, DPoP
// optional).
func Start(t testing.TB, o Options) *Instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return start(t, o, ln, nil)
}

// Restart closes in and starts Ward again as the same deployment: on its
// database and data directory, with its key-encryption key, options and
// clock, at its address (so its issuer, its tokens and DPoP proofs made
// for it stay valid). Use the returned instance from then on.
func (in *Instance) Restart(t testing.TB) *Instance {
	t.Helper()
	in.Close()
	ln, err := net.Listen("tcp", in.http.Listener.Addr().String())
	if err != nil {
		t.Fatalf("restart: listen again on %s: %v", in.http.Listener.Addr(), err)
	}
	return start(t, in.opts, ln, in)
}

// Close stops the instance (its HTTP server, then Ward); the test's end
// does it too. It is safe to call more than once.
func (in *Instance) Close() {
	in.close.Do(func() {
		in.http.Close()
		in.App.Close()
	})
}

// start runs Ward on ln, afresh or, with prev, as prev restarted.
func start(t testing.TB, o Options, ln net.Listener, prev *Instance) *Instance {
	t.Helper()
	issuer := "http://" + ln.Addr().String()
	dir := t.TempDir()
	if prev != nil {
		dir = prev.Config.DataDir
	}
	cfg := config.Default()
	cfg.Issuer, cfg.Listen, cfg.DataDir = issuer, ln.Addr().String(), dir
	cfg.Log.Level = "debug"
	cfg.Passwords.Argon2MemoryKiB, cfg.Passwords.Argon2Time = 8*1024, 1 // fast tests
	cfg.ResolvePaths()
	cfg.StaticUsers = []config.StaticUser{
		{Username: "alice", Email: "alice@example.com", DisplayName: "Alice", Password: AlicePassword, TOTPSecret: AliceTOTP, Roles: []string{"admin"}},
		{Username: "bob", Email: "bob@example.com", DisplayName: "Bob", Password: BobPassword},
	}
	all := []string{"openid", "profile", "email", "offline_access", "docs.read", "ward:admin"}
	cfg.StaticClients = []config.StaticClient{
		{ID: "spa", Name: "Docs SPA", AuthMethod: "none", RedirectURIs: []string{RedirectURI}, PostLogoutRedirectURIs: []string{"https://app.example/bye"},
			GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: all, DPoPBoundAccessTokens: true},
		{ID: "native", Name: "Native", AuthMethod: "none", RedirectURIs: []string{RedirectURI},
			GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: all},
		{ID: "web", Name: "Web", AuthMethod: "client_secret_basic", Secret: WebSecret, RedirectURIs: []string{RedirectURI},
			GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: all},
		{ID: "service", Name: "Service", AuthMethod: "client_secret_basic", Secret: ServiceSecret,
			GrantTypes: []string{"client_credentials"}, Scopes: []string{"docs.read", "docs.write"}},
	}
	// Test receivers listen on loopback, which pushes may not reach by
	// default (SSRF guard); tests of the guard clear this.
	cfg.SSF.PushAllowedNetworks = []string{"127.0.0.0/8", "::1/128"}
	switch {
	case prev != nil:
		cfg.Storage = prev.Config.Storage
	case o.Join != nil:
		cfg.Storage = o.Join.Config.Storage
	case o.PostgresDSN != "":
		cfg.Storage.Driver = config.DriverPostgres
		cfg.Storage.Postgres.DSN = secret.String(freshDatabase(t, o.PostgresDSN))
		// Tests run many instances in parallel on one PostgreSQL (100
		// connections by default): a small pool each, as before the
		// default became 16.
		cfg.Storage.Postgres.MaxConns = 4
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	// A KEK from the environment path, as production would have it.
	kek := make([]byte, 32)
	rand.Read(kek)
	kekText := []byte(base64.StdEncoding.EncodeToString(kek))
	if o.Join != nil {
		var err error
		if kekText, err = os.ReadFile(o.Join.Config.KEK.File); err != nil {
			t.Fatal(err)
		}
	}
	kekFile := filepath.Join(dir, "kek.key")
	if prev == nil {
		if err := os.WriteFile(kekFile, kekText, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.KEK.File = kekFile
	cfg.KEK.Env = "WARD_TEST_UNSET_KEK"
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	switch {
	case prev != nil:
		clk = prev.Clock // time goes on across the restart
	case o.Join != nil:
		clk = o.Join.Clock // one deployment, one time
	}
	now := clk.Now
	if o.RealClock {
		now = time.Now
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := app.OpenWith(context.Background(), cfg, log, app.Options{Now: now, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("open app: %v", err)
	}
	if o.SignInRisk != nil {
		a.SignInRisk = o.SignInRisk
	}
	srv, err := server.New(a)
	if err != nil {
		t.Fatal(err)
	}
	hs := &httptest.Server{Listener: ln, Config: &http.Server{Handler: srv, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	hs.Start()
	// A test may move the issuer to localhost (an origin browsers allow
	// WebAuthn on); requests then go there, to the same listener.
	u := issuer
	if cfg.Issuer == strings.Replace(issuer, "127.0.0.1", "localhost", 1) {
		u = cfg.Issuer
	}
	inst := &Instance{URL: u, App: a, Server: srv, Clock: clk, logs: logs, Config: cfg, DBPath: cfg.Storage.SQLite.Path, http: hs, opts: o}
	t.Cleanup(inst.Close)
	return inst
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// Browser is a cookie-keeping HTTP client that does not follow redirects
// (tests look at each one).
func (in *Instance) Browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 30 * time.Second}
}

// PKCE returns a fresh verifier and its S256 challenge.
func PKCE() (verifier, challenge string) {
	verifier = secret.RandomToken()
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// TOTP returns alice's current code at the instance's clock, offset by
// steps of 30 s.
func (in *Instance) TOTP(t testing.TB, steps int) string {
	t.Helper()
	code, err := totp.GenerateCode(AliceTOTP, in.Clock.Now().Add(time.Duration(steps)*30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// HiddenFields returns the hidden inputs of an HTML form.
func HiddenFields(body string) url.Values { return loadgen.HiddenFields(body) }

// Login drives the sign-in pages for an authorization URL and returns the
// final redirect (to the client) as a URL. otp may be "" for users without
// TOTP. It fails the test on any unexpected page.
func (in *Instance) Login(t testing.TB, b *http.Client, authorizeURL, username, password, otp string) *url.URL {
	t.Helper()
	u, _ := in.LoginResponse(t, b, authorizeURL, username, password, otp)
	return u
}

// LoginResponse is Login that also returns the final 303 response (its
// headers, e.g. Secure-Session-Registration, are what tests look at).
//
// A sign-in refused because the user's risk changed while it was judged
// (RiskChanged: the risk engine handled a detection of an earlier step of
// the test meanwhile) is made again once, as the page asks the user to,
// when no one-time code is needed (a used code cannot be given again).
func (in *Instance) LoginResponse(t testing.TB, b *http.Client, authorizeURL, username, password, otp string) (*url.URL, *http.Response) {
	t.Helper()
	resp, body := in.TryLogin(t, b, authorizeURL, username, password, otp)
	if RiskChanged(resp, body) && otp == "" {
		resp, body = in.TryLogin(t, b, authorizeURL, username, password, otp)
	}
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: status %d, want 303; body: %.400s", resp.StatusCode, body)
	}
	return mustLocation(t, resp), resp
}

// TryLogin drives the sign-in pages like Login but returns whatever the
// last page answered (a 303 to the client, or a refusal page and its
// body) instead of failing on anything but a redirect.
func (in *Instance) TryLogin(t testing.TB, b *http.Client, authorizeURL, username, password, otp string) (*http.Response, string) {
	t.Helper()
	resp, body := Do(t, b, http.MethodGet, authorizeURL, nil)
	if resp.StatusCode == http.StatusSeeOther {
		return resp, body
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="password"`) {
		t.Fatalf("authorize: status %d, want the login page; body: %.300s", resp.StatusCode, body)
	}
	form := HiddenFields(body)
	form.Set("username", username)
	form.Set("password", password)
	resp, body = Do(t, b, http.MethodPost, in.URL+"/login", form)
	if resp.StatusCode == http.StatusOK && strings.Contains(body, `name="otp"`) {
		form = HiddenFields(body)
		form.Set("otp", otp)
		resp, body = Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
	}
	return resp, body
}

// RiskChanged reports whether a sign-in answer is the refusal of a
// sign-in whose user's risk changed while it was judged (409, "sign in
// again").
func RiskChanged(resp *http.Response, body string) bool {
	return resp.StatusCode == http.StatusConflict && strings.Contains(body, "security status changed while you were signing in")
}

func mustLocation(t testing.TB, resp *http.Response) *url.URL {
	t.Helper()
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Do sends a request (form-encoded body when form != nil) and returns the
// response and its body.
func Do(t testing.TB, c *http.Client, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, body, err := loadgen.Send(context.Background(), c, method, u, form)
	if resp == nil { // a body cut short is returned as far as it came
		t.Fatal(err)
	}
	return resp, body
}

// AuthorizeURL builds an authorization request URL.
func (in *Instance) AuthorizeURL(clientID, challenge string, extra url.Values) string {
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {RedirectURI},
		"scope": {"openid profile offline_access"}, "state": {"st-" + secret.RandomString(6)}, "nonce": {"n-1"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}}
	for k, v := range extra {
		q[k] = v
	}
	return in.URL + "/authorize?" + q.Encode()
}

// LogText returns everything logged so far.
func (in *Instance) LogText() string {
	in.logs.mu.Lock()
	defer in.logs.mu.Unlock()
	return in.logs.String()
}

// freshDatabase creates an empty database on the server of dsn and returns
// the DSN that points at it; the database is dropped when the test ends.
func freshDatabase(t testing.TB, dsn string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	name := "ward_e2e_" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(secret.RandomString(9)))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("postgres: create database: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("postgres: drop database %s: %v", name, err)
		}
		admin.Close(context.Background())
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("postgres DSN: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// PostgresDSN returns the DSN of the instance's own PostgreSQL database
// (for tests that inspect what was stored).
func (in *Instance) PostgresDSN() string { return in.Config.Storage.Postgres.DSN.Reveal() }
