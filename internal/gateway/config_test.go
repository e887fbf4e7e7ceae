package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nkeys"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/rs/caenats"
)

const minimalConfig = `issuer: https://ward.example.com
external_url: https://apps.example.com
routes:
  - path_prefix: /docs
    upstream: http://10.0.0.5:8080
    audience: https://docs.example.com
    scopes: [docs.read]
`

func noEnv(string) (string, bool) { return "", false }

func TestGatewayConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimalConfig), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != DefaultListen || cfg.SSF.Mode != SSFOff || cfg.SSF.PushPath != DefaultPushPath ||
		cfg.MaxTokenLifetime != 24*time.Hour || cfg.Timeouts.Shutdown != DefaultShutdown || cfg.Log.Format != "json" ||
		cfg.Routes[0].Name != "/docs" || cfg.Usage != nil {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestGatewayConfigReportsEveryProblem(t *testing.T) {
	bad := `listen: nope
issuer: http://ward.example.com
external_url: https://apps.example.com/?x=1
trusted_proxies: [10.0.0.0/8, 10.0.0.1]
max_token_lifetime: 86400
colour: blue
routes:
  - path_prefix: docs
    upstream: ftp://x
    audience: https://docs.example.com
    scopes: [docs.read]
  - path_prefix: /a/../b
    upstream: http://10.0.0.5
    audience: ""
  - path_prefix: /docs/
    upstream: http://10.0.0.5
    audience: x
    scopes: ["bad scope"]
    strip: true
  - path_prefix: /healthz
    upstream: http://10.0.0.5
    audience: x
    scopes: []
ssf:
  mode: push
  push_bearer_env: MISSING
usage:
  url: https://ward.example.com/usage
  interval: -1s
log: {level: loud}
`
	_, err := ParseConfig([]byte(bad), noEnv)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	want := []string{
		"listen: \"nope\" is not host:port",
		"issuer: plain http is allowed only for loopback hosts",
		"external_url: must not have a query",
		"trusted_proxies[1]: \"10.0.0.1\" is not a CIDR",
		"cannot unmarshal !!int `86400` into time.Duration",
		"field colour not found",
		"field strip not found",
		"routes[0].path_prefix: \"docs\" must start with /",
		"routes[0].upstream: \"ftp://x\" is not an absolute http(s) URL",
		"routes[1].path_prefix: \"/a/../b\"",
		"routes[1].audience: required",
		"routes[1].scopes: required (write scopes: [] to require none)",
		"routes[2].path_prefix: \"/docs/\"",
		"routes[2].scopes[0]: \"bad scope\" is not a scope token",
		"routes[3].path_prefix: \"/healthz\" is served by the gateway itself",
		"ssf.audience: required",
		"ssf.push_bearer_env: environment variable MISSING is not set or empty",
		"usage.token_env: required",
		"usage.interval: must be a positive duration",
		"log.level: \"loud\" is not one of",
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q", w)
		}
	}
	var list interface{ Unwrap() []error }
	if !errors.As(err, &list) || len(list.Unwrap()) != len(want) {
		t.Errorf("%d problems reported, want %d:\n%s", len(flatten(err)), len(want), msg)
	}
	for _, e := range flatten(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("%T is not a *FieldError: %v", e, e)
		}
	}
}

func TestGatewayConfigSyntaxAndDocuments(t *testing.T) {
	for name, in := range map[string]string{
		"not yaml":      "routes: [",
		"two documents": minimalConfig + "---\nlisten: 127.0.0.1:1\n",
		"duplicate key": minimalConfig + "issuer: https://other.example\n",
	} {
		if _, err := ParseConfig([]byte(in), noEnv); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseConfig(nil, noEnv); err == nil || !strings.Contains(err.Error(), "routes: at least one route") {
		t.Errorf("empty file: %v", err)
	}
}

func TestGatewayConfigSSFAndUsage(t *testing.T) {
	_, jwksFile := testKeyFile(t)
	env := map[string]string{"PUSH": "p-secret", "POLL": "q-secret", "USAGE": "u-secret", "EMPTY": " "}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ok := minimalConfig + "ssf: {mode: push, audience: https://apps.example.com, push_bearer_env: PUSH, jwks_file: " + jwksFile + "}\n" +
		"usage: {url: https://ward.example.com/usage, token_env: USAGE}\n"
	cfg, err := ParseConfig([]byte(ok), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.pushBearer != "p-secret" || cfg.usageToken != "u-secret" || cfg.SSF.Issuer != "https://ward.example.com" ||
		cfg.ssfKeys == nil || cfg.Usage.Interval != DefaultUsageInterval {
		t.Errorf("resolved: %+v", cfg)
	}
	for name, c := range map[string]struct{ yaml, want string }{
		"poll without url":  {"ssf: {mode: poll, audience: a, poll_token_env: POLL}", "ssf.poll_url: required"},
		"empty secret":      {"ssf: {mode: poll, audience: a, poll_url: https://ward.example.com/poll, poll_token_env: EMPTY}", "EMPTY is not set or empty"},
		"both key sources":  {"ssf: {mode: push, audience: a, push_bearer_env: PUSH, jwks_file: " + jwksFile + ", jwks_url: https://ward.example.com/jwks}", "not both"},
		"bad jwks file":     {"ssf: {mode: push, audience: a, push_bearer_env: PUSH, jwks_file: " + filepath.Join(t.TempDir(), "none") + "}", "ssf.jwks_file:"},
		"unknown mode":      {"ssf: {mode: kafka}", `ssf.mode: "kafka" is not one of push, poll, nats, off`},
		"bad push path":     {"ssf: {mode: push, audience: a, push_bearer_env: PUSH, push_path: ssf}", "ssf.push_path"},
		"push path clashes": {"ssf: {mode: push, audience: a, push_bearer_env: PUSH, push_path: /metrics}", "already served"},
	} {
		_, err := ParseConfig([]byte(minimalConfig+c.yaml+"\n"), lookup)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestGatewayIdentityKeyFile(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wantKID, _ := dpop.Thumbprint(&jose.JSONWebKey{Key: &k.PublicKey})
	dir := t.TempDir()
	sec1, _ := x509.MarshalECPrivateKey(k)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384der, _ := x509.MarshalECPrivateKey(p384)
	files := map[string][]byte{
		// openssl ecparam -genkey writes EC PARAMETERS first
		"sec1.pem":  append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...),
		"pkcs8.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		"p384.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: p384der}),
		"junk.pem":  []byte("not a key"),
	}
	for n, b := range files {
		os.WriteFile(filepath.Join(dir, n), b, 0o600)
	}
	for _, n := range []string{"sec1.pem", "pkcs8.pem"} {
		cfg, err := ParseConfig([]byte(minimalConfig+"identity_key_file: "+filepath.Join(dir, n)+"\n"), noEnv)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		g, err := New(Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(g.JWKS(), &set); err != nil || len(set.Keys) != 1 {
			t.Fatalf("%s: jwks %s", n, g.JWKS())
		}
		if got := set.Keys[0]; got.KeyID != wantKID || got.Algorithm != "ES256" || got.Use != "sig" || !got.IsPublic() {
			t.Errorf("%s: jwk %+v", n, got)
		}
	}
	for _, n := range []string{"p384.pem", "junk.pem", "absent.pem"} {
		if _, err := ParseConfig([]byte(minimalConfig+"identity_key_file: "+filepath.Join(dir, n)+"\n"), noEnv); err == nil || !strings.Contains(err.Error(), "identity_key_file:") {
			t.Errorf("%s: %v", n, err)
		}
	}
}

func TestGatewayCanonicalPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/a": true, "/a/": true, "/a/b.c/~d": true, "/a/.well-known": true,
		"": false, "a": false, "//": false, "/a//b": false, "/./a": false, "/a/..": false, "/a/../b": false,
		"/a\\b": false, "/a\x00": false, "/a\nb": false, "*": false,
	} {
		if got := canonicalPath(p); got != want {
			t.Errorf("canonicalPath(%q) = %v, want %v", p, got, want)
		}
	}
	for _, c := range []struct {
		prefix, path string
		want         bool
	}{{"/", "/x", true}, {"/api", "/api", true}, {"/api", "/api/", true}, {"/api", "/api/x", true}, {"/api", "/apix", false}, {"/api/v1", "/api", false}} {
		if got := pathUnder(c.prefix, c.path); got != c.want {
			t.Errorf("pathUnder(%q, %q) = %v", c.prefix, c.path, got)
		}
	}
	for k, want := range map[string]bool{"Ward-Subject": true, "Ward_subject": true, "WARD-X": true, "ward-": true, "Wardrobe": false, "Ward": false, "X-Ward-Id": false} {
		if isWardHeader(k) != want {
			t.Errorf("isWardHeader(%q) != %v", k, want)
		}
	}
}

func TestGatewayConfigLogValueHidesSecrets(t *testing.T) {
	env := map[string]string{"PUSH": "p-secret-value-0123"}
	cfg, err := ParseConfig([]byte(minimalConfig+"ssf: {mode: push, audience: a, push_bearer_env: PUSH}\n"), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "cfg", cfg)
	if strings.Contains(b.String(), "p-secret-value-0123") || !strings.Contains(b.String(), "cfg.ssf=push") {
		t.Errorf("log line: %s", b.String())
	}
}

// natsSeedFile writes a user nkey seed with mode perm and returns the
// path, the seed and the public key.
func natsSeedFile(t testing.TB, dir string, perm os.FileMode) (path, seed, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := kp.Seed()
	pub, _ = kp.PublicKey()
	path = filepath.Join(dir, "gateway-"+pub[:8]+".nk")
	if err := os.WriteFile(path, append(s, '\n'), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path, string(s), pub
}

func TestGatewayConfigSSFNATS(t *testing.T) {
	dir := t.TempDir()
	seedFile, seed, pub := natsSeedFile(t, dir, 0o600)
	openSeed, _, _ := natsSeedFile(t, dir, 0o640)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acct, _ := nkeys.CreateAccount()
	acctSeed, _ := acct.Seed()
	accountSeed := write("account.nk", string(acctSeed))
	junk := write("junk.nk", "not a seed\n")
	user, _ := nkeys.CreateUser()
	userSeed, _ := user.Seed()
	creds := write("gateway.creds", "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5LW5rZXkiLCJ0eXAiOiJKV1QifQ.eyJzdWIiOiJVIn0.c2ln\n------END NATS USER JWT------\n\n"+
		"-----BEGIN USER NKEY SEED-----\n"+string(userSeed)+"\n------END USER NKEY SEED------\n")
	badCreds := write("bad.creds", "-----BEGIN NATS USER JWT-----\nnot-a-jwt\n------END NATS USER JWT------\n")
	env := map[string]string{"NATS_TOKEN": "t0ken-secret-4711", "PUSH": "p"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	cfg, err := ParseConfig([]byte(minimalConfig+"ssf: {mode: nats, nats_url: 'nats://127.0.0.1:4222, tls://nats.example.com', nats_nkey_seed_file: "+seedFile+"}\n"), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.SSF; s.Audience != DefaultNATSAudience || s.NATSStream != DefaultNATSStream || s.Issuer != cfg.Issuer || cfg.natsNKey != pub {
		t.Errorf("defaults: %+v, nkey %q", s, cfg.natsNKey)
	}
	for _, p := range [][2]string{{DefaultNATSAudience, config.DefaultCAEAudience}, {DefaultNATSStream, caenats.DefaultStream}, {DefaultNATSStream, bus.DefaultCAEStream}} {
		if p[0] != p[1] {
			t.Errorf("the gateway's default %q differs from Ward's %q", p[0], p[1])
		}
	}
	cfg, err = ParseConfig([]byte(minimalConfig+"ssf: {mode: nats, nats_url: tls://nats.example.com:4222, nats_token_env: NATS_TOKEN, nats_stream: CAE-2, audience: urn:x}\n"), lookup)
	if err != nil || cfg.natsToken != "t0ken-secret-4711" || cfg.SSF.Audience != "urn:x" || cfg.SSF.NATSStream != "CAE-2" {
		t.Fatalf("token: %v %+v", err, cfg)
	}
	if _, err := ParseConfig([]byte(minimalConfig+"ssf: {mode: nats, nats_url: nats://10.0.0.9, nats_creds_file: "+creds+"}\n"), lookup); err != nil {
		t.Fatalf("creds: %v", err)
	}

	for name, c := range map[string]struct{ yaml, want string }{
		"missing url":        {"ssf: {mode: nats, nats_token_env: NATS_TOKEN}", "ssf.nats_url: required"},
		"http url":           {"ssf: {mode: nats, nats_url: 'https://nats.example.com', nats_token_env: NATS_TOKEN}", "ssf.nats_url: not a nats://host[:port] or tls://host[:port] URL"},
		"bad second url":     {"ssf: {mode: nats, nats_url: 'nats://a:4222,nats:/x', nats_token_env: NATS_TOKEN}", "ssf.nats_url (entry 2): not a nats://"},
		"empty entry":        {"ssf: {mode: nats, nats_url: 'nats://a:4222,', nats_token_env: NATS_TOKEN}", "ssf.nats_url (entry 2): not a nats://"},
		"password in url":    {"ssf: {mode: nats, nats_url: 'nats://gw:pa55word-inline@a:4222', nats_token_env: NATS_TOKEN}", "ssf.nats_url: must not contain credentials"},
		"token in url":       {"ssf: {mode: nats, nats_url: 'nats://pa55word-inline@a:4222', nats_token_env: NATS_TOKEN}", "ssf.nats_url: must not contain credentials"},
		"url with path":      {"ssf: {mode: nats, nats_url: 'nats://a:4222/x?y', nats_token_env: NATS_TOKEN}", "must not have a path, query or fragment"},
		"no credentials":     {"ssf: {mode: nats, nats_url: nats://a}", "ssf.nats_nkey_seed_file: ssf.mode nats needs credentials"},
		"two credentials":    {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + seedFile + ", nats_token_env: NATS_TOKEN}", "ssf.nats_token_env: set only one of ssf.nats_nkey_seed_file, ssf.nats_token_env"},
		"three credentials":  {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + seedFile + ", nats_creds_file: " + creds + ", nats_token_env: NATS_TOKEN}", "set only one of"},
		"seed file absent":   {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + filepath.Join(dir, "none") + "}", "ssf.nats_nkey_seed_file: stat"},
		"seed file readable": {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + openSeed + "}", "is accessible by group or others (mode -rw-r-----); chmod 600 it"},
		"not a seed":         {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + junk + "}", "ssf.nats_nkey_seed_file: does not hold a NATS user nkey seed"},
		"account seed":       {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + accountSeed + "}", "ssf.nats_nkey_seed_file: does not hold a NATS user nkey seed"},
		"seed is a dir":      {"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: " + dir + "}", "is a directory"},
		"bad creds":          {"ssf: {mode: nats, nats_url: nats://a, nats_creds_file: " + badCreds + "}", "ssf.nats_creds_file: is not a NATS credentials file"},
		"token env unset":    {"ssf: {mode: nats, nats_url: nats://a, nats_token_env: NOPE}", "ssf.nats_token_env: environment variable NOPE is not set"},
		"bad stream":         {"ssf: {mode: nats, nats_url: nats://a, nats_token_env: NATS_TOKEN, nats_stream: 'ward.cae'}", `ssf.nats_stream: "ward.cae" is not a stream name`},
		"poll keys":          {"ssf: {mode: nats, nats_url: nats://a, nats_token_env: NATS_TOKEN, poll_url: https://x.example}", "ssf.poll_url: not used with ssf.mode nats"},
		"nats keys in push":  {"ssf: {mode: push, audience: a, push_bearer_env: PUSH, nats_url: nats://a}", "ssf.nats_url: only used with ssf.mode nats"},
		"nats keys when off": {"ssf: {mode: off, nats_token_env: NATS_TOKEN}", "ssf.nats_token_env: only used with ssf.mode nats"},
	} {
		_, err := ParseConfig([]byte(minimalConfig+c.yaml+"\n"), lookup)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
			continue
		}
		for _, secret := range []string{"pa55word-inline", seed, string(userSeed), string(acctSeed), "t0ken-secret-4711"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error quotes a secret: %v", name, err)
			}
		}
	}

	// A valid seed file's public key is what the operator registers with
	// Ward; a changed key is a restart-only change.
	a, _ := ParseConfig([]byte(minimalConfig+"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: "+seedFile+"}\n"), lookup)
	other, _, _ := natsSeedFile(t, dir, 0o600)
	b, err := ParseConfig([]byte(minimalConfig+"ssf: {mode: nats, nats_url: nats://a, nats_nkey_seed_file: "+other+"}\n"), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if keys := restartOnly(a, b); !slices.Equal(keys, []string{"ssf"}) {
		t.Errorf("restart-only keys %v", keys)
	}
}

// With its usage token in the environment the gateway reports token uses
// to its issuer's /usage without a usage section; without it, it does
// not; an explicit section keeps its URL.
func TestGatewayConfigUsageByDefault(t *testing.T) {
	env := map[string]string{DefaultUsageTokenEnv: "u-secret"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := ParseConfig([]byte(minimalConfig), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Usage == nil || cfg.Usage.URL != strings.TrimSuffix(cfg.Issuer, "/")+"/usage" || cfg.usageToken != "u-secret" || cfg.Usage.Interval != DefaultUsageInterval {
		t.Fatalf("usage by default: %+v", cfg.Usage)
	}
	cfg, err = ParseConfig([]byte(minimalConfig), func(string) (string, bool) { return "", false })
	if err != nil || cfg.Usage != nil {
		t.Fatalf("usage without a token: %+v %v", cfg.Usage, err)
	}
	cfg, err = ParseConfig([]byte(minimalConfig+"usage: {url: https://other.example/u, token_env: "+DefaultUsageTokenEnv+"}\n"), lookup)
	if err != nil || cfg.Usage.URL != "https://other.example/u" {
		t.Fatalf("explicit usage: %+v %v", cfg.Usage, err)
	}
}
