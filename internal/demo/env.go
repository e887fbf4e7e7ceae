package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/server"
)

// Names of the embedded deployment's clients and accounts.
const (
	docsClient     = "docs"
	adminClient    = "ward-demo-admin"
	receiverClient = "docs-gateway"
	usageClient    = "docs-gateway-usage"
	docsAudience   = "https://docs.contoso.example"
	docsRedirect   = "https://docs.contoso.example/callback"
	adminRedirect  = "https://console.contoso.example/callback"
	victimName     = "alice"
	adminName      = "secops"
)

// Target is the Ward a run plays against, and the accounts and clients it
// uses there. The embedded deployment fills it in; --server reads it from
// a file (see docs/demo.md).
type Target struct {
	Issuer string `json:"issuer"`
	// The victim: password and TOTP secret (base32).
	User         string `json:"user"`
	UserPassword string `json:"user_password"`
	UserTOTP     string `json:"user_totp_secret"`
	// An administrator (role admin) and a public client that may ask for
	// ward:admin with the authorization code flow and DPoP.
	Admin            string `json:"admin"`
	AdminPassword    string `json:"admin_password"`
	AdminTOTP        string `json:"admin_totp_secret"`
	AdminClient      string `json:"admin_client"`
	AdminRedirectURI string `json:"admin_redirect_uri"`
	DocsClient       string `json:"docs_client"`
	DocsRedirectURI  string `json:"docs_redirect_uri"`
	DocsAudience     string `json:"docs_audience"`
	// DocsSecret: run 1's document app is a confidential client whose
	// secret sits in its configuration on the laptop (embedded only).
	DocsSecret     string `json:"-"`
	AgentClient    string `json:"agent_client"`
	ReceiverClient string `json:"receiver_client"`
	ReceiverSecret string `json:"receiver_secret"`
	UsageClient    string `json:"usage_client"`
	UsageSecret    string `json:"usage_secret"`
	ApplyPolicies  bool   `json:"apply_policies"`
	remote         bool
	logs           *lockedBuffer // Ward's own log (embedded only)
}

// lockedBuffer collects a process's log lines.
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

// ward is an embedded Ward: the application and its HTTP server on a
// loopback port the OS picked, in a temporary data directory.
type ward struct {
	target Target
	app    *app.App
	srv    *http.Server
	done   chan struct{}
}

// defences say how the embedded Ward is configured for a run.
type defences struct {
	on bool
}

func randomSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomTOTP() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// startWard starts Ward in dir: SQLite, the embedded NATS bus, the demo's
// accounts and clients. With d.on the document client requires DPoP and
// the detectors run; without, tokens are plain bearer tokens and nothing
// watches them.
func startWard(ctx context.Context, dir string, d defences) (*ward, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	issuer := "http://" + ln.Addr().String()
	t := Target{Issuer: issuer,
		User: victimName, UserPassword: "Contoso-" + randomSecret(9), UserTOTP: randomTOTP(),
		Admin: adminName, AdminPassword: "Contoso-" + randomSecret(9), AdminTOTP: randomTOTP(),
		AdminClient: adminClient, AdminRedirectURI: adminRedirect,
		DocsClient: docsClient, DocsRedirectURI: docsRedirect, DocsAudience: docsAudience,
		AgentClient: agent.DefaultClientID, ReceiverClient: receiverClient, ReceiverSecret: randomSecret(24),
		UsageClient: usageClient, UsageSecret: randomSecret(24), ApplyPolicies: d.on, logs: &lockedBuffer{}}
	docs := config.StaticClient{ID: docsClient, Name: "Contoso Documents", AuthMethod: "none", RedirectURIs: []string{docsRedirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: []string{"openid", "profile", "offline_access"},
		Audience: []string{docsAudience}, DPoPBoundAccessTokens: true, CAECapable: true}
	if !d.on {
		// Without defences: a confidential client whose tokens are
		// plain bearer tokens (Ward gives no refresh token to a public
		// client without DPoP).
		t.DocsSecret = randomSecret(24)
		docs.AuthMethod, docs.Secret, docs.DPoPBoundAccessTokens, docs.CAECapable = "client_secret_basic", secret.String(t.DocsSecret), false, false
	}

	cfg := config.Default()
	cfg.Issuer, cfg.Listen, cfg.DataDir = issuer, ln.Addr().String(), dir
	cfg.Log.Level = "debug"
	cfg.ResolvePaths()
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	cfg.KEK.File = filepath.Join(dir, "kek.key")
	cfg.KEK.Env = "WARD_DEMO_UNSET_KEK"
	if err := os.WriteFile(cfg.KEK.File, []byte(base64.StdEncoding.EncodeToString(kek)), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	cfg.StaticUsers = []config.StaticUser{
		{Username: victimName, Email: "alice@contoso.example", DisplayName: "Alice (Contoso finance)",
			Password: secret.String(t.UserPassword), TOTPSecret: secret.String(t.UserTOTP)},
		{Username: adminName, Email: "secops@contoso.example", DisplayName: "Contoso security operations",
			Password: secret.String(t.AdminPassword), TOTPSecret: secret.String(t.AdminTOTP), Roles: []string{"admin"}},
	}
	cfg.StaticClients = []config.StaticClient{
		docs,
		{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes: []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:     []string{"openid", "profile", "offline_access", "ward:device"}, DPoPBoundAccessTokens: true, CAECapable: true},
		{ID: adminClient, Name: "Contoso security console", AuthMethod: "none", RedirectURIs: []string{adminRedirect},
			GrantTypes: []string{"authorization_code"}, Scopes: []string{"openid", "ward:admin"}, DPoPBoundAccessTokens: true},
		{ID: receiverClient, Name: "Documents gateway (CAE receiver)", AuthMethod: "client_secret_basic", Secret: secret.String(t.ReceiverSecret),
			GrantTypes: []string{"client_credentials"}, Scopes: []string{"ssf.manage", "ssf.poll"}},
		{ID: usageClient, Name: "Documents gateway (usage reports)", AuthMethod: "client_secret_basic", Secret: secret.String(t.UsageSecret),
			GrantTypes: []string{"client_credentials"}, Scopes: []string{"ward:usage"}},
	}
	// The gateway listens on loopback, which pushes may not reach by
	// default (SSRF guard); quick retries keep the demo short.
	cfg.SSF.PushAllowedNetworks = []string{"127.0.0.0/8"}
	cfg.SSF.PushMinBackoff = 20 * time.Millisecond
	cfg.SSF.PushMaxBackoff = 200 * time.Millisecond
	cfg.SSF.RescanInterval = 100 * time.Millisecond
	cfg.ConditionalAccess.PollInterval = 200 * time.Millisecond
	cfg.RiskDetection.Enabled = d.on
	if !d.on {
		cfg.Risk.AutoRevokeLevel = "off"
	}
	if err := cfg.Validate(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo: configuration: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(t.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := app.OpenWith(ctx, cfg, log, app.Options{LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo: open Ward: %w", err)
	}
	h, err := server.New(a)
	if err != nil {
		ln.Close()
		a.Close()
		return nil, err
	}
	w := &ward{target: t, app: a, done: make(chan struct{}),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	go func() {
		defer close(w.done)
		if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve", "err", err)
		}
	}()
	return w, nil
}

// Close stops the HTTP server, then Ward.
func (w *ward) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		_ = w.srv.Close()
	}
	<-w.done
	w.app.Close()
}

// lines returns the log lines that contain any of secrets (never the
// secrets themselves: the caller reports counts).
func countContaining(text string, secrets []string) int {
	n := 0
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(text, s) {
			n++
		}
	}
	return n
}
