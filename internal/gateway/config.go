package gateway

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nkeys"
	"go.yaml.in/yaml/v3"

	"github.com/ward-idp/ward/rs"
)

// Defaults of the configuration.
const (
	DefaultListen           = "127.0.0.1:8800"
	DefaultPushPath         = "/.well-known/ward/ssf/push"
	DefaultMaxTokenLifetime = rs.DefaultMaxTokenLifetime
	DefaultUsageInterval    = rs.DefaultUsageFlushInterval
	DefaultReadHeader       = 10 * time.Second
	DefaultIdle             = 2 * time.Minute
	DefaultUpstreamHeader   = time.Minute
	DefaultShutdown         = 20 * time.Second

	// DefaultUsageTokenEnv holds the gateway's token for Ward's usage
	// endpoint (scope ward:usage): when it is set, the gateway reports
	// token uses without a usage section; DefaultUsagePath is that
	// endpoint under the issuer.
	DefaultUsageTokenEnv = "WARD_GATEWAY_USAGE_TOKEN"
	DefaultUsagePath     = "/usage"
)

// Paths the gateway answers itself, before any route.
const (
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
	PathJWKS    = "/.well-known/ward/gateway-jwks.json"
)

// SSF delivery modes.
const (
	SSFOff  = "off"
	SSFPush = "push"
	SSFPoll = "poll"
	SSFNATS = "nats"
)

// Defaults of ssf.mode nats: Ward's CAE stream (ssf.nats.stream) and the
// audience of its SETs (ssf.nats.audience, config.DefaultCAEAudience).
const (
	DefaultNATSStream   = "WARD_CAE"
	DefaultNATSAudience = "urn:ward:cae:nats"
)

// Config is the gateway's configuration file (YAML, strict: unknown keys
// are errors). See docs/gateway.md for every key.
type Config struct {
	Listen          string   `yaml:"listen"`
	MetricsListen   string   `yaml:"metrics_listen"`
	TLS             TLS      `yaml:"tls"`
	Issuer          string   `yaml:"issuer"`
	ExternalURL     string   `yaml:"external_url"`
	IdentityKeyFile string   `yaml:"identity_key_file"`
	TrustedProxies  []string `yaml:"trusted_proxies"`
	// MaxTokenLifetime is the longest exp - iat accepted, and how long
	// CAE revocations are kept.
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
	Routes           []Route       `yaml:"routes"`
	SSF              SSF           `yaml:"ssf"`
	Usage            *Usage        `yaml:"usage"`
	Timeouts         Timeouts      `yaml:"timeouts"`
	Log              Log           `yaml:"log"`

	// resolved by Validate
	trusted     []netip.Prefix
	identityKey *ecdsa.PrivateKey
	ssfKeys     *jose.JSONWebKeySet
	pushBearer  string
	pollToken   string
	usageToken  string
	natsToken   string
	natsNKey    string // public key of ssf.nats_nkey_seed_file (U...)
	routeURLs   []*url.URL
}

// LogValue implements slog.LogValuer: the config holds resolved secrets
// (push, poll, usage and NATS tokens, the identity key) in unexported fields,
// which a text handler would otherwise print with %+v.
func (cfg *Config) LogValue() slog.Value {
	names := make([]string, len(cfg.Routes))
	for i, r := range cfg.Routes {
		names[i] = r.Name
	}
	return slog.GroupValue(
		slog.String("listen", cfg.Listen), slog.String("issuer", cfg.Issuer),
		slog.String("external_url", cfg.ExternalURL), slog.Any("routes", names),
		slog.String("ssf", cfg.SSF.Mode), slog.Bool("usage", cfg.Usage != nil))
}

// TLS names the certificate and key files for HTTPS (both or neither).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Route maps a path prefix to an upstream and the token it requires.
type Route struct {
	// Name labels the route in metrics and logs (default: PathPrefix).
	Name       string `yaml:"name"`
	PathPrefix string `yaml:"path_prefix"`
	Upstream   string `yaml:"upstream"`
	Audience   string `yaml:"audience"`
	// Scopes must all be granted; the key is required ("[]" requires
	// none) so that an open route is always a visible decision.
	Scopes      []string `yaml:"scopes"`
	StripPrefix bool     `yaml:"strip_prefix"`
}

// SSF configures the Continuous Access Evaluation stream.
type SSF struct {
	Mode string `yaml:"mode"`
	// Issuer is the transmitter's "iss" (default: the gateway's issuer).
	Issuer string `yaml:"issuer"`
	// Audience is the stream's "aud" (required unless mode is off).
	Audience string `yaml:"audience"`
	// JWKSURL or JWKSFile hold the transmitter's keys; neither means
	// discovery from Issuer.
	JWKSURL       string `yaml:"jwks_url"`
	JWKSFile      string `yaml:"jwks_file"`
	PushPath      string `yaml:"push_path"`
	PushBearerEnv string `yaml:"push_bearer_env"`
	PollURL       string `yaml:"poll_url"`
	PollTokenEnv  string `yaml:"poll_token_env"`
	// NATSURL is Ward's NATS (mode nats): nats:// or tls:// URLs,
	// comma-separated, without credentials.
	NATSURL string `yaml:"nats_url"`
	// Exactly one of NATSNKeySeedFile (a user nkey seed), NATSCredsFile
	// (a user JWT and its seed) or NATSTokenEnv authenticates to it.
	NATSNKeySeedFile string `yaml:"nats_nkey_seed_file"`
	NATSCredsFile    string `yaml:"nats_creds_file"`
	NATSTokenEnv     string `yaml:"nats_token_env"`
	// NATSStream is the CAE stream (DefaultNATSStream).
	NATSStream string `yaml:"nats_stream"`
}

// Usage configures token-use reporting to Ward's risk engine (POST
// /usage): every request that presented a token, allowed or refused
// (with the reason and the proof status), aggregated per token and
// client context. URL defaults to the issuer's /usage.
type Usage struct {
	URL      string        `yaml:"url"`
	TokenEnv string        `yaml:"token_env"`
	Interval time.Duration `yaml:"interval"`
}

// Timeouts of the HTTP servers and the upstream transport.
type Timeouts struct {
	ReadHeader     time.Duration `yaml:"read_header"`
	Idle           time.Duration `yaml:"idle"`
	UpstreamHeader time.Duration `yaml:"upstream_header"`
	Shutdown       time.Duration `yaml:"shutdown"`
}

// Log configures the process logger (read at start only).
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// FieldError is one configuration problem at a key path such as
// "routes[1].upstream".
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// defaults returns a Config with every default filled in.
func defaults() *Config {
	return &Config{
		Listen:           DefaultListen,
		MaxTokenLifetime: DefaultMaxTokenLifetime,
		SSF:              SSF{Mode: SSFOff, PushPath: DefaultPushPath, NATSStream: DefaultNATSStream},
		Timeouts: Timeouts{ReadHeader: DefaultReadHeader, Idle: DefaultIdle,
			UpstreamHeader: DefaultUpstreamHeader, Shutdown: DefaultShutdown},
		Log: Log{Level: "info", Format: "json"},
	}
}

// LoadConfig reads and validates the file at path. lookupEnv resolves the
// *_env keys (os.LookupEnv if nil). The error lists every problem: it is
// an errors.Join of *FieldError values.
func LoadConfig(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Join(&FieldError{Msg: err.Error()})
	}
	return ParseConfig(data, lookupEnv)
}

// ParseConfig decodes and validates a YAML configuration.
func ParseConfig(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	cfg, errs := decode(data)
	if cfg == nil {
		return nil, errors.Join(errs...)
	}
	errs = append(errs, cfg.validate(lookupEnv)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// decode strictly decodes data over the defaults. When the only problems
// are unknown keys or wrong types (the YAML decoder lists them all and
// goes on), the partly decoded config is returned with them, so that
// validation can report its own problems in the same run.
func decode(data []byte) (*Config, []error) {
	cfg := defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	if errors.Is(err, io.EOF) {
		return cfg, nil // empty file: validation says what is missing
	}
	var errs []error
	if err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, []error{&FieldError{Msg: "yaml: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
		}
		for _, m := range te.Errors {
			errs = append(errs, &FieldError{Msg: "yaml: " + m})
		}
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		errs = append(errs, &FieldError{Msg: "yaml: more than one document"})
	}
	return cfg, errs
}

type checker struct{ errs []error }

func (c *checker) add(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		c.add(path, "must be a positive duration (got %v)", d)
	}
}

// validate checks every key and resolves files, secrets from the
// environment and CIDRs; it reports every problem.
func (cfg *Config) validate(lookupEnv func(string) (string, bool)) []error {
	c := &checker{}
	checkAddr(c, "listen", cfg.Listen, true)
	checkAddr(c, "metrics_listen", cfg.MetricsListen, false)
	if cfg.MetricsListen != "" && cfg.MetricsListen == cfg.Listen {
		c.add("metrics_listen", "must differ from listen (leave it empty to serve /metrics on listen)")
	}
	switch {
	case cfg.TLS.CertFile != "" && cfg.TLS.KeyFile == "":
		c.add("tls.key_file", "required when tls.cert_file is set")
	case cfg.TLS.KeyFile != "" && cfg.TLS.CertFile == "":
		c.add("tls.cert_file", "required when tls.key_file is set")
	}
	for _, pf := range [][2]string{{"tls.cert_file", cfg.TLS.CertFile}, {"tls.key_file", cfg.TLS.KeyFile}} {
		if pf[1] == "" {
			continue
		}
		if st, err := os.Stat(pf[1]); err != nil {
			c.add(pf[0], "%v", err)
		} else if st.IsDir() {
			c.add(pf[0], "%s is a directory", pf[1])
		}
	}
	checkURL(c, "issuer", cfg.Issuer, true)
	cfg.ExternalURL = strings.TrimSuffix(cfg.ExternalURL, "/")
	checkURL(c, "external_url", cfg.ExternalURL, true)

	if cfg.IdentityKeyFile != "" {
		k, err := readIdentityKey(cfg.IdentityKeyFile)
		if err != nil {
			c.add("identity_key_file", "%v", err)
		}
		cfg.identityKey = k
	}
	cfg.trusted = nil
	for i, s := range cfg.TrustedProxies {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			c.add(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not a CIDR (write a single address as 192.0.2.1/32 or 2001:db8::1/128)", s)
			continue
		}
		cfg.trusted = append(cfg.trusted, p.Masked())
	}
	c.positive("max_token_lifetime", cfg.MaxTokenLifetime)
	cfg.validateRoutes(c)
	cfg.validateSSF(c, lookupEnv)
	if _, set := lookupEnv(DefaultUsageTokenEnv); cfg.Usage == nil && set {
		// Reports by default whenever there is a token to send them with.
		cfg.Usage = &Usage{TokenEnv: DefaultUsageTokenEnv}
	}
	if u := cfg.Usage; u != nil {
		if u.URL == "" && cfg.Issuer != "" {
			u.URL = strings.TrimSuffix(cfg.Issuer, "/") + DefaultUsagePath
		}
		checkURL(c, "usage.url", u.URL, true)
		cfg.usageToken = envSecret(c, "usage.token_env", u.TokenEnv, lookupEnv)
		if u.Interval == 0 {
			u.Interval = DefaultUsageInterval
		}
		c.positive("usage.interval", u.Interval)
	}
	c.positive("timeouts.read_header", cfg.Timeouts.ReadHeader)
	c.positive("timeouts.idle", cfg.Timeouts.Idle)
	c.positive("timeouts.upstream_header", cfg.Timeouts.UpstreamHeader)
	c.positive("timeouts.shutdown", cfg.Timeouts.Shutdown)
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, cfg.Log.Level) {
		c.add("log.level", "%q is not one of debug, info, warn, error", cfg.Log.Level)
	}
	if !slices.Contains([]string{"json", "text"}, cfg.Log.Format) {
		c.add("log.format", "%q is not one of json, text", cfg.Log.Format)
	}
	return c.errs
}

func checkAddr(c *checker, path, addr string, required bool) {
	if addr == "" {
		if required {
			c.add(path, "required")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.add(path, "%q is not host:port", addr)
		return
	}
	if port == "" {
		c.add(path, "%q has no port", addr)
	}
}

// checkURL requires an absolute http(s) URL without query, fragment or
// user info; plain http only for loopback hosts.
func checkURL(c *checker, path, raw string, required bool) *url.URL {
	if raw == "" {
		if required {
			c.add(path, "required")
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		c.add(path, "%q is not an absolute http(s) URL", raw)
		return nil
	}
	switch {
	case u.User != nil:
		c.add(path, "must not contain user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		c.add(path, "must not have a query or fragment")
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		c.add(path, "plain http is allowed only for loopback hosts; use https")
	default:
		return u
	}
	return nil
}

// checkUpstream is checkURL for upstreams: plain http is fine (the
// upstream is usually on a private network) and a path is a base path.
func checkUpstream(c *checker, path, raw string) *url.URL {
	if raw == "" {
		c.add(path, "required")
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		c.add(path, "%q is not an absolute http(s) URL", raw)
		return nil
	}
	if u.User != nil {
		c.add(path, "must not contain user info")
		return nil
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		c.add(path, "must not have a query or fragment")
		return nil
	}
	return u
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// reserved reports whether p is served by the gateway itself.
func (cfg *Config) reserved(p string) bool {
	for _, r := range []string{PathHealthz, PathReadyz, PathMetrics, PathJWKS} {
		if p == r {
			return true
		}
	}
	return cfg.SSF.Mode == SSFPush && p == cfg.SSF.PushPath
}

func (cfg *Config) validateRoutes(c *checker) {
	if len(cfg.Routes) == 0 {
		c.add("routes", "at least one route is required")
	}
	cfg.routeURLs = make([]*url.URL, len(cfg.Routes))
	prefixes := map[string]int{}
	names := map[string]int{}
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		at := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.PathPrefix == "":
			c.add(at+".path_prefix", "required")
		case !validPrefix(r.PathPrefix):
			c.add(at+".path_prefix", "%q must start with / and hold only letters, digits, - . _ ~ and single slashes, no . or .. segments and no trailing slash", r.PathPrefix)
		default:
			if j, dup := prefixes[r.PathPrefix]; dup {
				c.add(at+".path_prefix", "%q is also routes[%d]", r.PathPrefix, j)
			}
			prefixes[r.PathPrefix] = i
			if cfg.reserved(r.PathPrefix) {
				c.add(at+".path_prefix", "%q is served by the gateway itself (choose another prefix)", r.PathPrefix)
			}
		}
		if r.Name == "" {
			r.Name = r.PathPrefix
		}
		if j, dup := names[r.Name]; dup && r.Name != "" {
			c.add(at+".name", "%q is also the name of routes[%d]", r.Name, j)
		}
		names[r.Name] = i
		cfg.routeURLs[i] = checkUpstream(c, at+".upstream", r.Upstream)
		if r.Audience == "" {
			c.add(at+".audience", "required")
		}
		if r.Scopes == nil {
			c.add(at+".scopes", "required (write scopes: [] to require none)")
		}
		for j, s := range r.Scopes {
			if !validScope(s) {
				c.add(fmt.Sprintf("%s.scopes[%d]", at, j), "%q is not a scope token", s)
			}
		}
	}
}

// pathUnder reports whether p would be routed to prefix: prefix == p, or
// p continues prefix at a segment boundary.
func pathUnder(prefix, p string) bool {
	if prefix == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == prefix || (strings.HasPrefix(p, prefix) && p[len(prefix)] == '/')
}

// validPrefix: "/" or "/seg(/seg)*" with unreserved characters only.
func validPrefix(p string) bool {
	if p == "/" {
		return true
	}
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return false
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for _, ch := range []byte(seg) {
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
				return false
			}
		}
	}
	return true
}

// validScope: RFC 6749 §3.3 scope-token.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for _, ch := range []byte(s) {
		if ch < 0x21 || ch == 0x22 || ch == 0x5c || ch > 0x7e {
			return false
		}
	}
	return true
}

func (cfg *Config) validateSSF(c *checker, lookupEnv func(string) (string, bool)) {
	s := &cfg.SSF
	switch s.Mode {
	case SSFOff, SSFPush, SSFPoll:
		for _, k := range [][2]string{{"ssf.nats_url", s.NATSURL}, {"ssf.nats_nkey_seed_file", s.NATSNKeySeedFile},
			{"ssf.nats_creds_file", s.NATSCredsFile}, {"ssf.nats_token_env", s.NATSTokenEnv}} {
			if k[1] != "" {
				c.add(k[0], "only used with ssf.mode nats")
			}
		}
		if s.Mode == SSFOff {
			return
		}
	case SSFNATS:
	default:
		c.add("ssf.mode", "%q is not one of push, poll, nats, off", s.Mode)
		return
	}
	if s.Issuer == "" {
		s.Issuer = cfg.Issuer
	} else {
		checkURL(c, "ssf.issuer", s.Issuer, true)
	}
	if s.Audience == "" && s.Mode == SSFNATS {
		s.Audience = DefaultNATSAudience
	}
	if s.Audience == "" {
		c.add("ssf.audience", "required (the stream's aud) when ssf.mode is %s", s.Mode)
	}
	if s.JWKSURL != "" && s.JWKSFile != "" {
		c.add("ssf.jwks_file", "set ssf.jwks_url or ssf.jwks_file, not both")
	}
	checkURL(c, "ssf.jwks_url", s.JWKSURL, false)
	if s.JWKSFile != "" {
		set, err := readJWKS(s.JWKSFile)
		if err != nil {
			c.add("ssf.jwks_file", "%v", err)
		}
		cfg.ssfKeys = set
	}
	switch s.Mode {
	case SSFPush:
		if !strings.HasPrefix(s.PushPath, "/") || !validPrefix(s.PushPath) || s.PushPath == "/" {
			c.add("ssf.push_path", "%q must be an absolute path like %s", s.PushPath, DefaultPushPath)
		} else if slices.Contains([]string{PathHealthz, PathReadyz, PathMetrics, PathJWKS}, s.PushPath) {
			c.add("ssf.push_path", "%q is already served by the gateway", s.PushPath)
		}
		cfg.pushBearer = envSecret(c, "ssf.push_bearer_env", s.PushBearerEnv, lookupEnv)
	case SSFPoll:
		checkURL(c, "ssf.poll_url", s.PollURL, true)
		cfg.pollToken = envSecret(c, "ssf.poll_token_env", s.PollTokenEnv, lookupEnv)
	case SSFNATS:
		cfg.validateNATS(c, lookupEnv)
	}
}

// validateNATS checks the keys of ssf.mode nats. No message quotes a URL
// (it could hold a password) or a file's content.
func (cfg *Config) validateNATS(c *checker, lookupEnv func(string) (string, bool)) {
	s := &cfg.SSF
	for _, k := range [][2]string{{"ssf.poll_url", s.PollURL}, {"ssf.poll_token_env", s.PollTokenEnv}, {"ssf.push_bearer_env", s.PushBearerEnv}} {
		if k[1] != "" {
			c.add(k[0], "not used with ssf.mode nats")
		}
	}
	checkNATSURLs(c, "ssf.nats_url", s.NATSURL)
	if !streamNameRE.MatchString(s.NATSStream) {
		c.add("ssf.nats_stream", "%q is not a stream name (1-64 letters, digits, '_' or '-')", s.NATSStream)
	}
	var set []string
	for _, k := range [][2]string{{"ssf.nats_nkey_seed_file", s.NATSNKeySeedFile}, {"ssf.nats_creds_file", s.NATSCredsFile}, {"ssf.nats_token_env", s.NATSTokenEnv}} {
		if k[1] != "" {
			set = append(set, k[0])
		}
	}
	switch {
	case len(set) == 0:
		c.add("ssf.nats_nkey_seed_file", "ssf.mode nats needs credentials: ssf.nats_nkey_seed_file, ssf.nats_creds_file or ssf.nats_token_env")
	case len(set) > 1:
		c.add(set[1], "set only one of %s", strings.Join(set, ", "))
	case s.NATSNKeySeedFile != "":
		pub, err := readNKeySeed(s.NATSNKeySeedFile)
		if err != nil {
			c.add("ssf.nats_nkey_seed_file", "%v", err)
		}
		cfg.natsNKey = pub
	case s.NATSCredsFile != "":
		if err := checkCredsFile(s.NATSCredsFile); err != nil {
			c.add("ssf.nats_creds_file", "%v", err)
		}
	default:
		cfg.natsToken = envSecret(c, "ssf.nats_token_env", s.NATSTokenEnv, lookupEnv)
	}
}

var streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkNATSURLs requires one or more comma-separated nats:// or tls://
// URLs with a host, and nothing else: credentials come from the
// nats_* keys, never from the URL. Entries are named by position only.
func checkNATSURLs(c *checker, path, raw string) {
	if strings.TrimSpace(raw) == "" {
		c.add(path, "required (nats://host:port or tls://host:port, comma-separated for a cluster)")
		return
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		at := path
		if len(parts) > 1 {
			at = fmt.Sprintf("%s (entry %d)", path, i+1)
		}
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Opaque != "" || u.Host == "" || u.Hostname() == "":
			c.add(at, "not a nats://host[:port] or tls://host[:port] URL")
		case u.User != nil:
			c.add(at, "must not contain credentials (use ssf.nats_nkey_seed_file, ssf.nats_creds_file or ssf.nats_token_env)")
		case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
			c.add(at, "must not have a path, query or fragment")
		}
	}
}

// readSecretFile reads a file that holds a private key: it must not be
// accessible by group or others.
func readSecretFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by group or others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	return os.ReadFile(path)
}

// readNKeySeed reads a user nkey seed (SU..., alone or in a decorated
// block) and returns its public key. Errors never quote the content.
func readNKeySeed(path string) (string, error) {
	kp, err := loadNKey(path)
	if err != nil {
		return "", err
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

// loadNKey reads the user key pair of an nkey seed file (the caller wipes
// it).
func loadNKey(path string) (nkeys.KeyPair, error) {
	data, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	kp, err := nkeys.ParseDecoratedUserNKey(bytes.TrimSpace(data))
	if err != nil {
		return nil, errors.New("does not hold a NATS user nkey seed (SU...)")
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		kp.Wipe()
		return nil, errors.New("does not hold a NATS user nkey seed (SU...)")
	}
	return kp, nil
}

// checkCredsFile checks a NATS credentials file: a user JWT and the user
// nkey seed that signs for it (nsc's format).
func checkCredsFile(path string) error {
	data, err := readSecretFile(path)
	if err != nil {
		return err
	}
	defer clear(data)
	const bad = "is not a NATS credentials file (a user JWT and its nkey seed)"
	jwt, err := nkeys.ParseDecoratedJWT(data)
	if err != nil || strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \n") {
		return errors.New(bad)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return errors.New(bad)
	}
	kp.Wipe()
	return nil
}

// envSecret reads the secret in the environment variable named by the
// key at path; both the name and a non-empty value are required.
func envSecret(c *checker, path, name string, lookupEnv func(string) (string, bool)) string {
	if name == "" {
		c.add(path, "required (the name of an environment variable holding the secret)")
		return ""
	}
	v, ok := lookupEnv(name)
	if !ok || strings.TrimSpace(v) == "" {
		c.add(path, "environment variable %s is not set or empty", name)
		return ""
	}
	return strings.TrimSpace(v)
}

// readIdentityKey reads an EC P-256 private key (PEM: "EC PRIVATE KEY" or
// PKCS #8 "PRIVATE KEY").
func readIdentityKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no EC PRIVATE KEY or PRIVATE KEY PEM block")
		}
		var key any
		switch b.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		default:
			continue // "EC PARAMETERS" from openssl ecparam
		}
		if err != nil {
			return nil, fmt.Errorf("parse key: %v", err)
		}
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, errors.New("the key must be an EC P-256 private key (ES256)")
		}
		return k, nil
	}
}

// readJWKS reads a JWKS file holding at least one usable ES256 key.
func readJWKS(path string) (*jose.JSONWebKeySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %v", err)
	}
	if _, err := rs.NewStaticKeySet(set); err != nil {
		return nil, err
	}
	return &set, nil
}

// restartOnly lists the keys whose change a reload cannot apply, with
// their old and new values differing between a and b.
func restartOnly(a, b *Config) []string {
	var out []string
	add := func(changed bool, key string) {
		if changed {
			out = append(out, key)
		}
	}
	add(a.Listen != b.Listen, "listen")
	add(a.MetricsListen != b.MetricsListen, "metrics_listen")
	add(a.TLS != b.TLS, "tls")
	add(a.Issuer != b.Issuer, "issuer")
	add(a.IdentityKeyFile != b.IdentityKeyFile, "identity_key_file")
	add(a.MaxTokenLifetime != b.MaxTokenLifetime, "max_token_lifetime")
	add(a.SSF != b.SSF || a.pushBearer != b.pushBearer || a.pollToken != b.pollToken ||
		a.natsToken != b.natsToken || a.natsNKey != b.natsNKey, "ssf")
	ua, ub := a.Usage, b.Usage
	add((ua == nil) != (ub == nil) || (ua != nil && (*ua != *ub || a.usageToken != b.usageToken)), "usage")
	add(a.Timeouts != b.Timeouts, "timeouts")
	add(a.Log != b.Log, "log")
	return out
}
