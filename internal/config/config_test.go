package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// load loads yaml text with the given environment (nil: empty).
func load(t *testing.T, yaml string, env ...string) (*Config, error) {
	t.Helper()
	o := LoadOptions{Environ: append([]string{}, env...)}
	if yaml != "" {
		o.File = filepath.Join(t.TempDir(), "ward.yaml")
		if err := os.WriteFile(o.File, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return LoadWith(o)
}

func TestDefaults(t *testing.T) {
	cfg, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Storage.SQLite.Path = filepath.Join("ward-data", "ward.db")
	want.KEK.File = filepath.Join("ward-data", "kek.key")
	want.Bus.NATS.Embedded.StoreDir = filepath.Join("ward-data", "nats")
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"issuer", cfg.Issuer, "http://127.0.0.1:8700"},
		{"listen", cfg.Listen, "127.0.0.1:8700"},
		{"driver", cfg.Storage.Driver, "sqlite"},
		{"kek.env", cfg.KEK.Env, "WARD_KEK"},
		{"access_token_ttl", cfg.Tokens.AccessTokenTTL, 10 * time.Minute},
		{"refresh_token_ttl", cfg.Tokens.RefreshTokenTTL, 720 * time.Hour},
		{"code_ttl", cfg.Tokens.CodeTTL, 60 * time.Second},
		{"par_ttl", cfg.Tokens.PARTTL, 90 * time.Second},
		{"dpop.max_age", cfg.DPoP.MaxAge, 5 * time.Minute},
		{"argon2_memory_kib", cfg.Passwords.Argon2MemoryKiB, uint32(19456)},
		{"lockout.duration", cfg.Lockout.Duration, 15 * time.Minute},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestDataDirDerivedPaths(t *testing.T) {
	cfg, err := load(t, "data_dir: /var/lib/ward\nkek: {file: /etc/ward/kek}\n")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Storage.SQLite.Path, "/var/lib/ward/ward.db"; got != want {
		t.Errorf("sqlite path: got %q, want %q", got, want)
	}
	if got, want := cfg.KEK.File, "/etc/ward/kek"; got != want {
		t.Errorf("kek file: got %q, want %q", got, want)
	}
}

func TestEnvOverrides(t *testing.T) {
	cfg, err := load(t, "issuer: https://file.example\nstorage:\n  driver: sqlite\n",
		"WARD_ISSUER=https://env.example",
		"WARD_STORAGE__DRIVER=postgres",
		"WARD_STORAGE__POSTGRES__DSN=postgres://u:p@db/ward",
		"WARD_TOKENS__ACCESS_TOKEN_TTL=5m",
		"WARD_DPOP__REQUIRE_NONCE=true",
		"WARD_PASSWORDS__MIN_LENGTH=12",
		"WARD_TRUSTED_PROXIES=10.0.0.0/8,192.168.1.1/32",
		"WARD_KEK=c2VjcmV0", // the KEK itself, not a config key: ignored
		"WARD_NOT_A_KEY=1",  // unknown: ignored
		"OTHER_ISSUER=https://ignored.example",
	)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"issuer", cfg.Issuer, "https://env.example"},
		{"driver", cfg.Storage.Driver, "postgres"},
		{"dsn", cfg.Storage.Postgres.DSN.Reveal(), "postgres://u:p@db/ward"},
		{"access_token_ttl", cfg.Tokens.AccessTokenTTL, 5 * time.Minute},
		{"require_nonce", cfg.DPoP.RequireNonce, true},
		{"min_length", cfg.Passwords.MinLength, 12},
		{"trusted_proxies", cfg.TrustedProxies, []string{"10.0.0.0/8", "192.168.1.1/32"}},
		{"kek.env", cfg.KEK.Env, "WARD_KEK"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestOverridesWinOverEnv(t *testing.T) {
	cfg, err := LoadWith(LoadOptions{Environ: []string{"WARD_DEV=false"}, Overrides: map[string]any{"dev": true}})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Dev {
		t.Error("dev override not applied")
	}
}

func TestEnvNames(t *testing.T) {
	if got, want := EnvName("storage.postgres.dsn"), "WARD_STORAGE__POSTGRES__DSN"; got != want {
		t.Errorf("EnvName: got %q, want %q", got, want)
	}
	if got, want := EnvKey("WARD_TOKENS__ACCESS_TOKEN_TTL", envKeys()), "tokens.access_token_ttl"; got != want {
		t.Errorf("EnvKey: got %q, want %q", got, want)
	}
	if got := EnvKey("WARD_STATIC_CLIENTS", envKeys()); got != "" {
		t.Errorf("EnvKey(static_clients) = %q, want ignored", got)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"unknown key", "isuer: https://x\n", "isuer"},
		{"unknown nested key", "tokens: {acess_token_ttl: 1m}\n", "acess_token_ttl"},
		{"numeric duration", "tokens: {code_ttl: 60}\n", "no unit"},
		{"bad duration", "tokens: {code_ttl: soon}\n", "invalid duration"},
		{"bad yaml", "issuer: [\n", "ward.yaml"},
		{"unknown client key", "static_clients: [{id: a, redirect_uri: x}]\n", "redirect_uri"},
		// In the file's terms: the dotted key, no decoder or Go wording.
		{"unknown top-level key, friendly", "bogus: 1\n", `top level: unknown key "bogus"`},
		{"unknown nested key, friendly", "tokens: {nope: 1}\n", `tokens: unknown key "nope"`},
		{"mapping expected", "tokens: 5\n", "tokens: expected a mapping, got a number"},
		{"bool expected", "static_clients: [{id: a, dpop_bound_access_tokens: maybe}]\n", "static_clients[0].dpop_bound_access_tokens: expected true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.yaml)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want error containing %q", err, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), "''") || strings.Contains(err.Error(), "strconv.") || strings.Contains(err.Error(), "decoding failed")) {
				t.Errorf("decoder wording in %v", err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	key := filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	spa := StaticClient{ID: "spa", AuthMethod: "none", RedirectURIs: []string{"https://app.example/cb"}, GrantTypes: []string{"authorization_code", "refresh_token"}}
	svc := StaticClient{ID: "svc", AuthMethod: "client_secret_basic", Secret: "0123456789abcdef0123", GrantTypes: []string{"client_credentials"}}
	user := StaticUser{Username: "bob", Password: "correct horse battery"}

	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string // field path in the error; "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"https issuer", func(c *Config) { c.Issuer = "https://id.example.com"; c.Listen = "127.0.0.1:1" }, ""},
		{"issuer with path", func(c *Config) { c.Issuer = "https://id.example.com/tenant" }, ""},
		{"issuer relative", func(c *Config) { c.Issuer = "/id" }, "issuer"},
		{"issuer empty", func(c *Config) { c.Issuer = "" }, "issuer"},
		{"issuer query", func(c *Config) { c.Issuer = "https://id.example.com?a=b" }, "issuer"},
		{"issuer fragment", func(c *Config) { c.Issuer = "https://id.example.com#x" }, "issuer"},
		{"issuer http non-loopback", func(c *Config) { c.Issuer = "http://id.example.com" }, "issuer"},
		{"issuer http non-loopback allowed", func(c *Config) { c.Issuer = "http://id.example.com"; c.AllowInsecureIssuer = true }, ""},
		{"issuer http localhost", func(c *Config) { c.Issuer = "http://localhost:8700" }, ""},
		{"issuer http 127.1.2.3", func(c *Config) { c.Issuer = "http://127.1.2.3:8700" }, ""},
		{"issuer http ::1", func(c *Config) { c.Issuer = "http://[::1]:8700" }, ""},
		{"issuer ftp", func(c *Config) { c.Issuer = "ftp://id.example.com" }, "issuer"},
		{"tls cert without key", func(c *Config) { c.TLS.CertFile = cert }, "tls.key_file"},
		{"tls key without cert", func(c *Config) { c.TLS.KeyFile = key }, "tls.cert_file"},
		{"tls both", func(c *Config) { c.TLS = TLS{CertFile: cert, KeyFile: key} }, ""},
		{"tls missing file", func(c *Config) { c.TLS = TLS{CertFile: cert, KeyFile: filepath.Join(dir, "nope")} }, "tls.key_file"},
		{"listen not host:port", func(c *Config) { c.Listen = "8700" }, "listen"},
		{"listen public without tls", func(c *Config) { c.Listen = "0.0.0.0:8700" }, "listen"},
		{"listen all without tls", func(c *Config) { c.Listen = ":8700" }, "listen"},
		{"listen public with tls", func(c *Config) { c.Listen = ":8700"; c.TLS = TLS{CertFile: cert, KeyFile: key} }, ""},
		{"listen public insecure allowed", func(c *Config) { c.Listen = ":8700"; c.AllowInsecureIssuer = true }, ""},
		{"driver unknown", func(c *Config) { c.Storage.Driver = "mysql" }, "storage.driver"},
		{"postgres without dsn", func(c *Config) { c.Storage.Driver = "postgres" }, "storage.postgres.dsn"},
		{"postgres with dsn", func(c *Config) { c.Storage.Driver = "postgres"; c.Storage.Postgres.DSN = "postgres://x" }, ""},
		{"pg max conns zero", func(c *Config) { c.Storage.Postgres.MaxConns = 0 }, "storage.postgres.max_conns"},
		{"pg max conns huge", func(c *Config) { c.Storage.Postgres.MaxConns = 5000 }, "storage.postgres.max_conns"},
		{"pg min conns negative", func(c *Config) { c.Storage.Postgres.MinConns = -1 }, "storage.postgres.min_conns"},
		{"pg min > max", func(c *Config) { c.Storage.Postgres.MaxConns = 4; c.Storage.Postgres.MinConns = 5 }, "storage.postgres.min_conns"},
		{"pg min = max", func(c *Config) { c.Storage.Postgres.MaxConns = 4; c.Storage.Postgres.MinConns = 4 }, ""},
		{"pg lifetime short", func(c *Config) { c.Storage.Postgres.MaxConnLifetime = time.Second }, "storage.postgres.max_conn_lifetime"},
		{"pg idle zero", func(c *Config) { c.Storage.Postgres.MaxConnIdleTime = 0 }, "storage.postgres.max_conn_idle_time"},
		{"pg exec mode", func(c *Config) { c.Storage.Postgres.QueryExecMode = "prepare" }, "storage.postgres.query_exec_mode"},
		{"pg exec mode exec", func(c *Config) { c.Storage.Postgres.QueryExecMode = "exec" }, ""},
		{"pg cache zero", func(c *Config) { c.Storage.Postgres.StatementCacheCapacity = 0 }, "storage.postgres.statement_cache_capacity"},
		{"pg dsn pool param", func(c *Config) {
			c.Storage.Driver = "postgres"
			c.Storage.Postgres.DSN = "postgres://u:hunter2@db/ward?pool_max_conns=32"
		}, "storage.postgres.dsn"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"zero access ttl", func(c *Config) { c.Tokens.AccessTokenTTL = 0 }, "tokens.access_token_ttl"},
		{"negative refresh ttl", func(c *Config) { c.Tokens.RefreshTokenTTL = -time.Second }, "tokens.refresh_token_ttl"},
		{"zero code ttl", func(c *Config) { c.Tokens.CodeTTL = 0 }, "tokens.code_ttl"},
		{"zero par ttl", func(c *Config) { c.Tokens.PARTTL = 0 }, "tokens.par_ttl"},
		{"idle > absolute", func(c *Config) { c.Tokens.SessionIdle = 1000 * time.Hour }, "tokens.session_idle"},
		{"zero key retire", func(c *Config) { c.Tokens.KeyRetireAfter = 0 }, "tokens.key_retire_after"},
		{"zero dpop max age", func(c *Config) { c.DPoP.MaxAge = 0 }, "dpop.max_age"},
		{"negative leeway", func(c *Config) { c.DPoP.Leeway = -time.Second }, "dpop.leeway"},
		{"zero nonce lifetime", func(c *Config) { c.DPoP.NonceLifetime = 0 }, "dpop.nonce_lifetime"},
		{"zero lockout", func(c *Config) { c.Lockout.Duration = 0 }, "lockout.duration"},
		{"zero max failures", func(c *Config) { c.Lockout.MaxFailures = 0 }, "lockout.max_failures"},
		{"argon2 threads", func(c *Config) { c.Passwords.Argon2Threads = 0 }, "passwords.argon2_threads"},
		{"argon2 time", func(c *Config) { c.Passwords.Argon2Time = 0 }, "passwords.argon2_time"},
		{"min length", func(c *Config) { c.Passwords.MinLength = 4 }, "passwords.min_length"},
		{"cidr ok", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "::1/128", "fd00::/8"} }, ""},
		{"bare address", func(c *Config) { c.TrustedProxies = []string{"10.0.0.1"} }, "trusted_proxies[0]"},
		{"cidr bad", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.0/33"} }, "trusted_proxies[1]"},
		{"clients ok", func(c *Config) { c.StaticClients = []StaticClient{spa, svc} }, ""},
		{"audit retention too short", func(c *Config) { c.Audit.Retention = 24 * time.Hour }, "audit.retention"},
		{"audit seal interval zero", func(c *Config) { c.Audit.SealInterval = 0 }, "audit.seal_interval"},
		{"audit checkpoint events zero", func(c *Config) { c.Audit.CheckpointEvents = 0 }, "audit.checkpoint_events"},
		{"audit checkpoint interval too long", func(c *Config) { c.Audit.CheckpointInterval = 48 * time.Hour }, "audit.checkpoint_interval"},
		{"client failure budget", func(c *Config) { c.Lockout.ClientFailuresPerMinute = 0 }, "lockout.client_failures_per_minute"},
		{"long poll beyond the write timeout", func(c *Config) { c.SSF.LongPollTimeout = 2 * time.Minute }, "ssf.long_poll_timeout"},
		{"negative long poll", func(c *Config) { c.SSF.LongPollTimeout = -time.Second }, "ssf.long_poll_timeout"},
		{"unknown static role", func(c *Config) { u := user; u.Roles = []string{"superuser"}; c.StaticUsers = []StaticUser{u} }, "static_users[0].roles[0]"},
		{"application type", func(c *Config) { x := spa; x.ApplicationType = "desktop"; c.StaticClients = []StaticClient{x} }, "static_clients[0].application_type"},
		{"client duplicate id", func(c *Config) { c.StaticClients = []StaticClient{spa, spa} }, "static_clients[1].id"},
		{"client missing id", func(c *Config) { x := spa; x.ID = ""; c.StaticClients = []StaticClient{x} }, "static_clients[0].id"},
		{"client auth method", func(c *Config) { x := spa; x.AuthMethod = "tls_client_auth"; c.StaticClients = []StaticClient{x} }, "static_clients[0].auth_method"},
		{"public with secret", func(c *Config) { x := spa; x.Secret = "0123456789abcdef0123"; c.StaticClients = []StaticClient{x} }, "static_clients[0].secret"},
		{"public with secret_env", func(c *Config) { x := spa; x.SecretEnv = "S"; c.StaticClients = []StaticClient{x} }, "static_clients[0].secret"},
		{"confidential without secret", func(c *Config) { x := svc; x.Secret = ""; c.StaticClients = []StaticClient{x} }, "static_clients[0].secret"},
		{"confidential with secret_env", func(c *Config) {
			x := svc
			x.Secret = ""
			x.SecretEnv = "SVC_SECRET"
			c.StaticClients = []StaticClient{x}
		}, ""},
		{"secret and secret_env", func(c *Config) { x := svc; x.SecretEnv = "SVC_SECRET"; c.StaticClients = []StaticClient{x} }, "static_clients[0].secret"},
		{"short secret", func(c *Config) { x := svc; x.Secret = "short"; c.StaticClients = []StaticClient{x} }, "static_clients[0].secret"},
		{"redirect relative", func(c *Config) { x := spa; x.RedirectURIs = []string{"/cb"}; c.StaticClients = []StaticClient{x} }, "static_clients[0].redirect_uris[0]"},
		{"redirect fragment", func(c *Config) {
			x := spa
			x.RedirectURIs = []string{"https://a.example/cb", "https://a.example/cb#x"}
			c.StaticClients = []StaticClient{x}
		}, "static_clients[0].redirect_uris[1]"},
		{"redirect native scheme", func(c *Config) {
			x := spa
			x.RedirectURIs = []string{"com.example.app:/cb"}
			c.StaticClients = []StaticClient{x}
		}, ""},
		{"post logout fragment", func(c *Config) {
			x := spa
			x.PostLogoutRedirectURIs = []string{"https://a.example/#"}
			c.StaticClients = []StaticClient{x}
		}, "static_clients[0].post_logout_redirect_uris[0]"},
		{"grant unknown", func(c *Config) { x := spa; x.GrantTypes = []string{"password"}; c.StaticClients = []StaticClient{x} }, "static_clients[0].grant_types[0]"},
		{"device code ok", func(c *Config) {
			x := spa
			x.GrantTypes = []string{"urn:ietf:params:oauth:grant-type:device_code"}
			c.StaticClients = []StaticClient{x}
		}, ""},
		{"code without redirect", func(c *Config) { x := spa; x.RedirectURIs = nil; c.StaticClients = []StaticClient{x} }, "static_clients[0].redirect_uris"},
		{"default grant needs redirect", func(c *Config) {
			x := spa
			x.RedirectURIs = nil
			x.GrantTypes = nil
			c.StaticClients = []StaticClient{x}
		}, "static_clients[0].redirect_uris"},
		{"public client credentials", func(c *Config) {
			x := spa
			x.GrantTypes = []string{"client_credentials"}
			c.StaticClients = []StaticClient{x}
		}, "static_clients[0].grant_types"},
		{"private_key_jwt without jwks", func(c *Config) {
			c.StaticClients = []StaticClient{{ID: "pkj", AuthMethod: "private_key_jwt", GrantTypes: []string{"client_credentials"}}}
		}, "static_clients[0].jwks"},
		{"private_key_jwt bad jwks", func(c *Config) {
			c.StaticClients = []StaticClient{{ID: "pkj", AuthMethod: "private_key_jwt", GrantTypes: []string{"client_credentials"}, JWKS: "{"}}
		}, "static_clients[0].jwks"},
		{"private_key_jwt ok", func(c *Config) {
			c.StaticClients = []StaticClient{{ID: "pkj", AuthMethod: "private_key_jwt", GrantTypes: []string{"client_credentials"}, JWKS: `{"keys":[{"kty":"EC"}]}`}}
		}, ""},
		{"private_key_jwt with secret", func(c *Config) {
			c.StaticClients = []StaticClient{{ID: "pkj", AuthMethod: "private_key_jwt", Secret: "0123456789abcdef0123", GrantTypes: []string{"client_credentials"}, JWKS: `{"keys":[{"kty":"EC"}]}`}}
		}, "static_clients[0].secret"},
		{"users ok", func(c *Config) { c.StaticUsers = []StaticUser{user, {Username: "carol", PasswordEnv: "CAROL_PW"}} }, ""},
		{"user duplicate", func(c *Config) { x := user; x.Username = "BOB"; c.StaticUsers = []StaticUser{user, x} }, "static_users[1].username"},
		{"user no name", func(c *Config) { x := user; x.Username = ""; c.StaticUsers = []StaticUser{x} }, "static_users[0].username"},
		{"user no password", func(c *Config) { x := user; x.Password = ""; c.StaticUsers = []StaticUser{x} }, "static_users[0].password"},
		{"user both passwords", func(c *Config) { x := user; x.PasswordEnv = "P"; c.StaticUsers = []StaticUser{x} }, "static_users[0].password"},
		{"user bad totp", func(c *Config) { x := user; x.TOTPSecret = "not base32!"; c.StaticUsers = []StaticUser{x} }, "static_users[0].totp_secret"},
		{"user good totp", func(c *Config) {
			x := user
			x.TOTPSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
			c.StaticUsers = []StaticUser{x}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ResolvePaths()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got valid, want error at %s", tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %T %v, want *FieldError", err, err)
			}
			found := false
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				if errors.As(e, &fe) && fe.Path == tt.want {
					found = true
				}
			}
			if !found {
				t.Errorf("got %v, want an error at %s", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	cfg, err := load(t, `
issuer: http://id.example.com
storage:
  driver: postgres
tokens:
  access_token_ttl: -1m
`)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	errs := err.(interface{ Unwrap() []error }).Unwrap()
	var paths []string
	for _, e := range errs {
		paths = append(paths, e.(*FieldError).Path)
	}
	want := []string{"issuer", "storage.postgres.dsn", "tokens.access_token_ttl"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("got %v (%v), want %v", paths, err, want)
	}
	for _, p := range want {
		if !strings.Contains(err.Error(), p+":") {
			t.Errorf("message %q does not name %s", err, p)
		}
	}
}

func TestStaticEntriesFromFile(t *testing.T) {
	cfg, err := load(t, `
static_clients:
  - id: web
    auth_method: client_secret_post
    secret_env: WEB_SECRET
    redirect_uris: [https://web.example/cb]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile]
    dpop_bound_access_tokens: true
static_users:
  - username: dana
    password_env: DANA_PW
    roles: [admin]
    groups: [ops]
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := cfg.StaticClients[0]
	if c.ID != "web" || !c.DPoPBoundAccessTokens || len(c.Scopes) != 2 || c.SecretEnv != "WEB_SECRET" {
		t.Errorf("client decoded as %+v", c)
	}
	u := cfg.StaticUsers[0]
	if u.Username != "dana" || u.Roles[0] != "admin" || u.Groups[0] != "ops" {
		t.Errorf("user decoded as %+v", u)
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "127.0.0.1": true, "127.9.9.9": true, "::1": true, "[::1]": true,
		"": false, "0.0.0.0": false, "10.0.0.1": false, "example.com": false, "localhost.example.com": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestExampleFile keeps examples/ward.yaml loadable; its only problems are
// the example TLS files, which do not exist here.
func TestExampleFile(t *testing.T) {
	cfg, err := LoadWith(LoadOptions{File: "../../examples/ward.yaml", Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	if err := cfg.Validate(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			paths = append(paths, e.(*FieldError).Path)
		}
	}
	if want := []string{"tls.cert_file", "tls.key_file"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("got problems at %v, want only %v", paths, want)
	}
	if len(cfg.StaticClients) != 3 || len(cfg.StaticUsers) != 1 {
		t.Errorf("example has %d clients and %d users", len(cfg.StaticClients), len(cfg.StaticUsers))
	}
}

// devices.tpm_ek_ca_file from the file and from the environment.
func TestDevicesConfig(t *testing.T) {
	cfg, err := load(t, "devices:\n  tpm_ek_ca_file: /etc/ward/tpm-vendors.pem\n")
	if err != nil || cfg.Devices.TPMEKCAFile != "/etc/ward/tpm-vendors.pem" {
		t.Fatalf("file: %+v %v", cfg.Devices, err)
	}
	cfg, err = load(t, "", "WARD_DEVICES__TPM_EK_CA_FILE=/srv/vendors.pem")
	if err != nil || cfg.Devices.TPMEKCAFile != "/srv/vendors.pem" {
		t.Fatalf("environment: %+v %v", cfg.Devices, err)
	}
	if _, err := load(t, "devices:\n  tpm_ek_roots: x\n"); err == nil || !strings.Contains(err.Error(), "devices") {
		t.Fatalf("unknown key: %v", err)
	}
}

// console.*: defaults, the file, the environment and the bounds.
func TestConsoleConfig(t *testing.T) {
	cfg, err := load(t, "")
	if err != nil || cfg.Console.Disabled || cfg.Console.SessionLifetime != time.Hour {
		t.Fatalf("default: %+v %v", cfg.Console, err)
	}
	cfg, err = load(t, "console:\n  disabled: true\n  session_lifetime: 20m\n")
	if err != nil || !cfg.Console.Disabled || cfg.Console.SessionLifetime != 20*time.Minute {
		t.Fatalf("file: %+v %v", cfg.Console, err)
	}
	cfg, err = load(t, "", "WARD_CONSOLE__SESSION_LIFETIME=2h")
	if err != nil || cfg.Console.SessionLifetime != 2*time.Hour {
		t.Fatalf("environment: %+v %v", cfg.Console, err)
	}
	for _, bad := range []string{"30s", "13h"} {
		cfg, err := load(t, "console:\n  session_lifetime: "+bad+"\n")
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "console.session_lifetime") {
			t.Errorf("session_lifetime %s: %v", bad, err)
		}
	}
}

func TestPostgresPoolKeys(t *testing.T) {
	cfg, err := load(t, "storage:\n  driver: postgres\n  postgres:\n    max_conns: 24\n    min_conns: 2\n    max_conn_lifetime: 20m\n",
		"WARD_STORAGE__POSTGRES__DSN=postgres://u:p@db/ward",
		"WARD_STORAGE__POSTGRES__QUERY_EXEC_MODE=describe_exec",
		"WARD_STORAGE__POSTGRES__STATEMENT_CACHE_CAPACITY=64",
		"WARD_STORAGE__POSTGRES__MAX_CONN_IDLE_TIME=5m",
	)
	if err != nil {
		t.Fatal(err)
	}
	pg := cfg.Storage.Postgres
	got := []any{pg.MaxConns, pg.MinConns, pg.MaxConnLifetime, pg.MaxConnIdleTime, pg.QueryExecMode, pg.StatementCacheCapacity}
	want := []any{int32(24), int32(2), 20 * time.Minute, 5 * time.Minute, "describe_exec", 64}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("pool keys: got %v, want %v", got, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	d := Default()
	if d.Storage.Postgres.MaxConns != 16 || d.Storage.Postgres.QueryExecMode != "cache_statement" {
		t.Errorf("defaults: max_conns %d, mode %q; want 16, cache_statement", d.Storage.Postgres.MaxConns, d.Storage.Postgres.QueryExecMode)
	}

	// A pool parameter in the DSN conflicts with the keys; the error
	// names the parameter but never echoes the DSN (it holds a password).
	d.Storage.Driver = DriverPostgres
	d.Storage.Postgres.DSN = "postgres://ward:hunter2-secret@db/ward?pool_max_conns=32&default_query_exec_mode=exec"
	d.ResolvePaths()
	err = d.Validate()
	if err == nil {
		t.Fatal("a DSN with pool_max_conns validated")
	}
	msg := err.Error()
	for _, want := range []string{"pool_max_conns: set storage.postgres.max_conns", "default_query_exec_mode: set storage.postgres.query_exec_mode"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error leaks the DSN's password: %q", msg)
	}
}
