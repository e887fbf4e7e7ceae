package config

import (
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
)

// FieldError is one configuration problem at a field path such as
// "static_clients[1].redirect_uris[0]".
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Known values.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"json", "text"}
	Drivers    = []string{DriverSQLite, DriverPostgres}
)

// Validate checks the whole configuration and reports every problem at
// once: the result is an errors.Join of *FieldError values (nil if fine).
func (c *Config) Validate() error {
	v := &validator{}
	c.validateIssuer(v)
	c.validateListen(v)
	c.validateMetrics(v)
	if c.DataDir == "" {
		v.add("data_dir", "required")
	}
	if l := c.Console.SessionLifetime; l < time.Minute || l > 12*time.Hour {
		v.add("console.session_lifetime", "must be from 1m to 12h")
	}
	switch {
	case c.TLS.CertFile != "" && c.TLS.KeyFile == "":
		v.add("tls.key_file", "required when tls.cert_file is set")
	case c.TLS.KeyFile != "" && c.TLS.CertFile == "":
		v.add("tls.cert_file", "required when tls.key_file is set")
	}
	for _, pf := range [][2]string{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		path, f := pf[0], pf[1]
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err != nil {
			v.add(path, "%v", err)
		} else if st.IsDir() {
			v.add(path, "%s is a directory", f)
		}
	}

	switch c.Storage.Driver {
	case DriverSQLite:
		if c.Storage.SQLite.Path == "" {
			v.add("storage.sqlite.path", "required")
		}
	case DriverPostgres:
		if c.Storage.Postgres.DSN == "" {
			v.add("storage.postgres.dsn", "required when storage.driver is postgres (or set %s)", EnvName("storage.postgres.dsn"))
		}
	default:
		v.add("storage.driver", "%q is not one of %s", c.Storage.Driver, strings.Join(Drivers, ", "))
	}
	c.validatePostgresPool(v)
	if c.KEK.File == "" && c.KEK.Env == "" {
		v.add("kek", "set kek.file or kek.env")
	}
	if !slices.Contains(LogLevels, c.Log.Level) {
		v.add("log.level", "%q is not one of %s", c.Log.Level, strings.Join(LogLevels, ", "))
	}
	if !slices.Contains(LogFormats, c.Log.Format) {
		v.add("log.format", "%q is not one of %s", c.Log.Format, strings.Join(LogFormats, ", "))
	}

	t := c.Tokens
	v.positive("tokens.access_token_ttl", t.AccessTokenTTL)
	v.positive("tokens.id_token_ttl", t.IDTokenTTL)
	v.positive("tokens.refresh_token_ttl", t.RefreshTokenTTL)
	v.positive("tokens.code_ttl", t.CodeTTL)
	v.positive("tokens.par_ttl", t.PARTTL)
	v.positive("tokens.session_idle", t.SessionIdle)
	v.positive("tokens.session_absolute", t.SessionAbsolute)
	v.positive("tokens.key_retire_after", t.KeyRetireAfter)
	v.positive("tokens.cae_access_token_ttl", t.CAEAccessTokenTTL)
	if t.CAEAccessTokenTTL > 0 && t.CAEAccessTokenTTL < t.AccessTokenTTL {
		v.add("tokens.cae_access_token_ttl", "%v is shorter than tokens.access_token_ttl (%v)", t.CAEAccessTokenTTL, t.AccessTokenTTL)
	}
	if t.CAEAccessTokenTTL > 7*24*time.Hour {
		v.add("tokens.cae_access_token_ttl", "%v is longer than 168h", t.CAEAccessTokenTTL)
	}
	if t.SessionIdle > 0 && t.SessionAbsolute > 0 && t.SessionIdle > t.SessionAbsolute {
		v.add("tokens.session_idle", "%v is longer than tokens.session_absolute (%v)", t.SessionIdle, t.SessionAbsolute)
	}
	v.positive("dpop.max_age", c.DPoP.MaxAge)
	if c.DPoP.Leeway < 0 {
		v.add("dpop.leeway", "must not be negative")
	}
	v.positive("dpop.nonce_lifetime", c.DPoP.NonceLifetime)

	p := c.Passwords
	if p.Argon2Time < 1 || p.Argon2Time > 64 {
		v.add("passwords.argon2_time", "must be 1..64")
	}
	if p.Argon2Threads < 1 {
		v.add("passwords.argon2_threads", "must be at least 1")
	}
	if p.Argon2MemoryKiB < 8*uint32(max(p.Argon2Threads, 1)) || p.Argon2MemoryKiB > 4<<20 {
		v.add("passwords.argon2_memory_kib", "must be at least 8 × argon2_threads and at most 4194304 (4 GiB)")
	}
	if p.MaxConcurrent < 1 {
		v.add("passwords.max_concurrent", "must be at least 1")
	}
	if p.MaxQueue < 1 {
		v.add("passwords.max_queue", "must be at least 1")
	}
	if p.MinLength < 8 {
		v.add("passwords.min_length", "must be at least 8")
	}
	if c.Lockout.MaxFailures < 1 {
		v.add("lockout.max_failures", "must be at least 1")
	}
	v.positive("lockout.duration", c.Lockout.Duration)
	v.positive("lockout.failure_window", c.Lockout.FailureWindow)
	if r := c.Audit.Retention; r < 0 || r > 0 && r < 8*24*time.Hour {
		v.add("audit.retention", "%v is too short: at least 192h (8 days), or 0 to keep everything", r)
	}
	if d := c.Audit.SealInterval; d < 10*time.Millisecond || d > time.Minute {
		v.add("audit.seal_interval", "%v: must be between 10ms and 1m", d)
	}
	if n := c.Audit.CheckpointEvents; n < 1 {
		v.add("audit.checkpoint_events", "must be at least 1")
	}
	if d := c.Audit.CheckpointInterval; d < time.Second || d > 24*time.Hour {
		v.add("audit.checkpoint_interval", "%v: must be between 1s and 24h", d)
	}
	if c.Lockout.ClientFailuresPerMinute < 1 {
		v.add("lockout.client_failures_per_minute", "must be at least 1")
	}
	if c.Lockout.IPFailuresPerMinute < 1 {
		v.add("lockout.ip_failures_per_minute", "must be at least 1")
	}
	if c.Lockout.IPv4Prefix < 8 || c.Lockout.IPv4Prefix > 32 {
		v.add("lockout.ipv4_prefix", "must be 8..32")
	}
	if c.Lockout.IPv6Prefix < 32 || c.Lockout.IPv6Prefix > 128 {
		v.add("lockout.ipv6_prefix", "must be 32..128")
	}
	if c.Lockout.GlobalFailuresPerMinute < 1 {
		v.add("lockout.global_failures_per_minute", "must be at least 1")
	}
	v.positive("conditional_access.poll_interval", c.ConditionalAccess.PollInterval)
	for path, l := range map[string]string{"risk.auto_revoke_level": c.Risk.AutoRevokeLevel, "risk.mfa_remediates": c.Risk.MFARemediates} {
		switch l {
		case "low", "medium", "high", "off":
		default:
			v.add(path, "must be low, medium, high or off")
		}
	}
	v.positive("risk.low_lifetime", c.Risk.LowLifetime)
	v.positive("risk.medium_lifetime", c.Risk.MediumLifetime)
	v.positive("risk.retention", c.Risk.Retention)
	c.validatePasskeys(v)
	c.validateRiskDetection(v)
	v.positive("incidents.window", c.Incidents.Window)
	v.positive("incidents.retention", c.Incidents.Retention)
	if c.Incidents.Window > 30*24*time.Hour {
		v.add("incidents.window", "must be at most 720h (30 days)")
	}
	c.validateBus(v)
	c.validateSSFNATS(v)
	c.validateSSFPush(v)
	c.validateSSFLongPoll(v)
	c.validateExport(v)
	c.validateSSFReceivers(v)

	for i, s := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(strings.TrimSpace(s)); err != nil {
			v.add(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not a CIDR (write a single address as 192.0.2.1/32 or 2001:db8::1/128)", s)
		}
	}
	c.validateStaticClients(v)
	c.validateStaticUsers(v)
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.add(path, "must be a positive duration (got %v)", d)
	}
}

func (c *Config) validateIssuer(v *validator) {
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "":
		v.add("issuer", "required")
		return
	case err != nil:
		v.add("issuer", "not a URL: %v", err)
		return
	case !u.IsAbs() || u.Host == "":
		v.add("issuer", "%q is not an absolute URL", c.Issuer)
		return
	case u.RawQuery != "" || u.ForceQuery:
		v.add("issuer", "must not have a query")
	case u.Fragment != "" || strings.Contains(c.Issuer, "#"):
		v.add("issuer", "must not have a fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !IsLoopbackHost(u.Hostname()) && !c.AllowInsecureIssuer {
			v.add("issuer", "must use https unless the host is loopback (set allow_insecure_issuer to override)")
		}
	default:
		v.add("issuer", "scheme %q is not https", u.Scheme)
	}
}

func (c *Config) validateListen(v *validator) {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		v.add("listen", "%q is not host:port: %v", c.Listen, err)
		return
	}
	if port == "" {
		v.add("listen", "%q has no port", c.Listen)
	}
	if !c.TLS.Enabled() && !IsLoopbackHost(host) && !c.AllowInsecureIssuer {
		v.add("listen", "%q is not a loopback address and tls is not configured; configure tls or set allow_insecure_issuer (e.g. behind a TLS-terminating proxy)", c.Listen)
	}
	c.validateIssuerMatchesListen(v, host, port)
}

// validateIssuerMatchesListen catches a listen address moved without the
// issuer: discovery, redirects and token audiences would all name a place
// where Ward is not. With --dev the issuer follows the listen address (Load);
// otherwise the default issuer with an explicit listen address, or a
// loopback issuer on another port than a loopback listener, is an error.
// (An https issuer in front of a proxy may of course differ.)
func (c *Config) validateIssuerMatchesListen(v *validator, host, port string) {
	if !c.explicitListen || port == "0" { // port 0: the issuer follows the port the listener gets (FollowListener)
		return
	}
	if !c.explicitIssuer && c.Issuer == Default().Issuer && c.Listen != Default().Listen {
		v.add("issuer", "not set, so it defaults to %s, but Ward listens on %s: set issuer (%s) to the URL clients use to reach Ward, for example %s", c.Issuer, c.Listen, EnvName("issuer"), devIssuer(c.Listen))
		return
	}
	u, err := url.Parse(c.Issuer)
	if err != nil || u.Scheme != "http" || !IsLoopbackHost(u.Hostname()) || !(IsLoopbackHost(host) || host == "" || net.ParseIP(host).IsUnspecified()) {
		return
	}
	iport := u.Port()
	if iport == "" {
		iport = "80"
	}
	if iport != port {
		v.add("issuer", "%s is a loopback URL on port %s, but Ward listens on port %s: clients would not reach it", c.Issuer, iport, port)
	}
}

func (c *Config) validateStaticClients(v *validator) {
	seen := map[string]int{}
	for i, sc := range c.StaticClients {
		prefix := fmt.Sprintf("static_clients[%d]", i)
		if j, dup := seen[sc.ID]; dup && sc.ID != "" {
			v.add(prefix+".id", "%q is also used by static_clients[%d]", sc.ID, j)
		} else {
			seen[sc.ID] = i
		}
		if sc.Secret != "" && sc.SecretEnv != "" {
			v.add(prefix+".secret", "set secret or secret_env, not both")
		}
		spec := sc.Spec()
		spec.Normalize()
		if err := clientspec.Validate(spec); err != nil {
			v.addClientErrs(prefix, err)
		}
		if err := clientspec.CheckSecretPresence(sc.AuthMethod, sc.Secret != "" || sc.SecretEnv != "", "secret"); err != nil {
			v.addClientErrs(prefix, err)
		}
		if sc.Secret != "" && clientspec.UsesSecret(sc.AuthMethod) && len(sc.Secret.Reveal()) < clientspec.MinSecretLength {
			v.add(prefix+".secret", "shorter than %d characters", clientspec.MinSecretLength)
		}
	}
}

func (v *validator) addClientErrs(prefix string, err error) {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var fe *clientspec.FieldError
		if errors.As(e, &fe) {
			v.add(prefix+"."+fe.Field, "%s", fe.Msg)
		} else {
			v.add(prefix, "%v", e)
		}
	}
}

func (c *Config) validateStaticUsers(v *validator) {
	seen := map[string]int{}
	for i, su := range c.StaticUsers {
		prefix := fmt.Sprintf("static_users[%d]", i)
		name := strings.ToLower(strings.TrimSpace(su.Username))
		switch {
		case name == "":
			v.add(prefix+".username", "required")
		default:
			if j, dup := seen[name]; dup {
				v.add(prefix+".username", "%q is also used by static_users[%d]", su.Username, j)
			} else {
				seen[name] = i
			}
		}
		switch {
		case su.Password == "" && su.PasswordEnv == "":
			v.add(prefix+".password", "set password or password_env")
		case su.Password != "" && su.PasswordEnv != "":
			v.add(prefix+".password", "set password or password_env, not both")
		}
		if su.TOTPSecret != "" {
			s := strings.ToUpper(strings.TrimRight(strings.ReplaceAll(su.TOTPSecret.Reveal(), " ", ""), "="))
			if b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s); err != nil || len(b) < 10 {
				v.add(prefix+".totp_secret", "must be base32 encoding at least 80 bits")
			}
		}
		for j, r := range su.Roles {
			switch r = strings.TrimSpace(r); {
			case r == "":
				v.add(fmt.Sprintf("%s.roles[%d]", prefix, j), "empty")
			case !model.KnownRole(r):
				v.add(fmt.Sprintf("%s.roles[%d]", prefix, j), "unknown role %q: known roles are %s", r, strings.Join(model.KnownRoles, ", "))
			}
		}
		for j, g := range su.Groups {
			if strings.TrimSpace(g) == "" {
				v.add(fmt.Sprintf("%s.groups[%d]", prefix, j), "empty")
			}
		}
	}
}

// Spec converts a static client to the clients service's spec.
func (sc StaticClient) Spec() clientspec.Spec {
	s := clientspec.Spec{
		ID:                       sc.ID,
		Name:                     sc.Name,
		AuthMethod:               sc.AuthMethod,
		RedirectURIs:             sc.RedirectURIs,
		PostLogoutRedirectURIs:   sc.PostLogoutRedirectURIs,
		GrantTypes:               sc.GrantTypes,
		Scopes:                   sc.Scopes,
		Audience:                 sc.Audience,
		DPoPBoundAccessTokens:    sc.DPoPBoundAccessTokens,
		RequireProtectedSessions: sc.RequireProtectedSessions,
		CAECapable:               sc.CAECapable,
		ApplicationType:          sc.ApplicationType,
	}
	if sc.JWKS != "" {
		s.JWKS = json.RawMessage(sc.JWKS)
	}
	return s
}

// IsLoopbackHost reports whether host (a name or IP literal, brackets
// allowed) is localhost or a loopback address (127.0.0.0/8, ::1).
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// TrustedProxyPrefixes returns the parsed trusted_proxies; call after
// Validate (invalid entries are skipped).
func (c *Config) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// validatePostgresPool checks the pool and statement settings (whatever
// the driver, so that a mistake shows before a switch to PostgreSQL).
func (c *Config) validatePostgresPool(v *validator) {
	pg := c.Storage.Postgres
	if pg.MaxConns < 1 || pg.MaxConns > 1000 {
		v.add("storage.postgres.max_conns", "must be 1..1000")
	}
	if pg.MinConns < 0 {
		v.add("storage.postgres.min_conns", "must not be negative")
	} else if pg.MinConns > pg.MaxConns && pg.MaxConns >= 1 {
		v.add("storage.postgres.min_conns", "%d is more than storage.postgres.max_conns (%d)", pg.MinConns, pg.MaxConns)
	}
	if pg.MaxConnLifetime < time.Minute {
		v.add("storage.postgres.max_conn_lifetime", "must be at least 1m")
	}
	if pg.MaxConnIdleTime < time.Second {
		v.add("storage.postgres.max_conn_idle_time", "must be at least 1s")
	}
	if !slices.Contains(PostgresQueryExecModes, pg.QueryExecMode) {
		v.add("storage.postgres.query_exec_mode", "%q is not one of %s", pg.QueryExecMode, strings.Join(PostgresQueryExecModes, ", "))
	}
	if pg.StatementCacheCapacity < 1 || pg.StatementCacheCapacity > 100000 {
		v.add("storage.postgres.statement_cache_capacity", "must be 1..100000")
	}
	// The DSN's own pool parameters would be silently overridden by the
	// keys above: refuse the ambiguity. (Only parameter names are
	// reported, never the DSN, which can hold a password.)
	dsn := strings.ToLower(pg.DSN.Reveal())
	for param, key := range map[string]string{
		"pool_max_conns": "max_conns", "pool_min_conns": "min_conns",
		"pool_max_conn_lifetime": "max_conn_lifetime", "pool_max_conn_idle_time": "max_conn_idle_time",
		"default_query_exec_mode": "query_exec_mode", "statement_cache_capacity": "statement_cache_capacity",
		"description_cache_capacity": "statement_cache_capacity",
	} {
		if strings.Contains(dsn, param+"=") {
			v.add("storage.postgres.dsn", "has %s: set storage.postgres.%s instead", param, key)
		}
	}
}
