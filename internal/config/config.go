// Package config holds Ward's typed configuration: the defaults, loading
// from a YAML file with environment-variable overrides (koanf), and
// Validate, which reports every problem at once, each naming its field path.
//
// Environment overrides use the WARD_ prefix; a double underscore separates
// nesting levels and single underscores stay part of the key name:
//
//	WARD_ISSUER=https://id.example.com            -> issuer
//	WARD_STORAGE__DRIVER=postgres                 -> storage.driver
//	WARD_STORAGE__POSTGRES__DSN=postgres://...    -> storage.postgres.dsn
//	WARD_TOKENS__ACCESS_TOKEN_TTL=5m              -> tokens.access_token_ttl
//	WARD_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16 -> trusted_proxies (comma-separated)
//
// Only variables that name a known scalar or string-list key are used;
// others (such as WARD_KEK, which holds the key-encryption key itself) are
// ignored. static_clients and static_users can only be set in the file.
package config

import (
	"path/filepath"
	"time"

	"github.com/ward-idp/ward/internal/secret"
)

// EnvPrefix is the prefix of environment overrides.
const EnvPrefix = "WARD_"

// EnvDelim separates nesting levels in environment override names.
const EnvDelim = "__"

// Config is Ward's whole configuration.
type Config struct {
	// Issuer is the OAuth/OIDC issuer URL (iss).
	Issuer string `koanf:"issuer"`
	// Listen is the host:port the server binds.
	Listen string `koanf:"listen"`

	// Whether issuer and listen were given (file, environment or flag)
	// rather than defaulted: a listen address moved without the issuer
	// would make discovery advertise the wrong place.
	explicitIssuer, explicitListen bool
	// Dev enables development mode: demo data, a generated KEK file.
	Dev bool `koanf:"dev"`
	// DataDir holds the SQLite database, the dev KEK and dev credentials.
	DataDir string `koanf:"data_dir"`
	// AllowInsecureIssuer permits an http:// issuer on a non-loopback host
	// and plain HTTP on a non-loopback listen address (behind a TLS proxy).
	AllowInsecureIssuer bool `koanf:"allow_insecure_issuer"`

	TLS       TLS       `koanf:"tls"`
	Storage   Storage   `koanf:"storage"`
	KEK       KEK       `koanf:"kek"`
	Log       Log       `koanf:"log"`
	Audit     Audit     `koanf:"audit"`
	Tokens    Tokens    `koanf:"tokens"`
	DPoP      DPoP      `koanf:"dpop"`
	Passwords Passwords `koanf:"passwords"`
	Lockout   Lockout   `koanf:"lockout"`
	// Passkeys configures WebAuthn (config/passkeys.go).
	Passkeys Passkeys `koanf:"passkeys"`

	ConditionalAccess ConditionalAccess `koanf:"conditional_access"`
	Bus               Bus               `koanf:"bus"`

	// Risk configures risk levels and their response (docs/risk-response.md).
	Risk Risk `koanf:"risk"`
	// RiskDetection configures the token-theft detectors (docs/risk.md).
	RiskDetection RiskDetection `koanf:"risk_detection"`
	// Incidents configures the correlation of detections into incidents
	// (docs/secops.md).
	Incidents Incidents `koanf:"incidents"`

	// Devices configures device registration (docs/devices.md).
	Devices Devices `koanf:"devices"`

	// Console configures the web console at /console (docs/console.md).
	Console Console `koanf:"console"`

	// SSF tunes the Shared Signals transmitter (config/ssf.go).
	SSF SSF `koanf:"ssf"`

	// SSFReceivers are the Shared Signals transmitters Ward receives
	// security events from (config/ssfrx.go).
	SSFReceivers []SSFReceiver `koanf:"ssf_receivers"`

	// Export sends the audit log to SIEMs (config/export.go).
	Export Export `koanf:"export"`

	// Metrics configures the Prometheus endpoint (config/metrics.go).
	Metrics Metrics `koanf:"metrics"`

	// TrustedProxies lists CIDRs whose Forwarded /
	// X-Forwarded-For headers are honoured.
	TrustedProxies []string `koanf:"trusted_proxies"`

	StaticClients []StaticClient `koanf:"static_clients"`
	StaticUsers   []StaticUser   `koanf:"static_users"`
}

// TLS configures HTTPS. Both files or neither.
type TLS struct {
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Storage drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Storage selects and configures the store.
type Storage struct {
	Driver   string   `koanf:"driver"`
	SQLite   SQLite   `koanf:"sqlite"`
	Postgres Postgres `koanf:"postgres"`
}

// SQLite configures the embedded database.
type SQLite struct {
	// Path defaults to <data_dir>/ward.db.
	Path string `koanf:"path"`
}

// Postgres configures PostgreSQL.
type Postgres struct {
	DSN secret.String `koanf:"dsn"`
	// MaxConns is the connection pool's size (default 16). Each
	// concurrent request that reaches the database holds one connection
	// for the length of its statement or transaction.
	MaxConns int32 `koanf:"max_conns"`
	// MinConns connections are kept open even when idle (default 0).
	MinConns int32 `koanf:"min_conns"`
	// MaxConnLifetime closes a connection this long after it was opened
	// (default 1h), so that a pool follows a failover or a changed DNS
	// name and spreads over replicas behind a connection balancer.
	MaxConnLifetime time.Duration `koanf:"max_conn_lifetime"`
	// MaxConnIdleTime closes a connection idle this long (default 30m).
	MaxConnIdleTime time.Duration `koanf:"max_conn_idle_time"`
	// QueryExecMode is how statements are sent (pgx's names):
	// cache_statement (default: prepared once per connection and cached),
	// cache_describe, describe_exec, exec or simple_protocol. Behind a
	// transaction-pooling PgBouncer use describe_exec or exec.
	QueryExecMode string `koanf:"query_exec_mode"`
	// StatementCacheCapacity is the number of prepared statements (or
	// descriptions) cached per connection (default 512).
	StatementCacheCapacity int `koanf:"statement_cache_capacity"`
}

// PostgresQueryExecModes are the accepted storage.postgres.query_exec_mode values.
var PostgresQueryExecModes = []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"}

// KEK says where the key-encryption key comes from.
type KEK struct {
	// File defaults to <data_dir>/kek.key; created (0600) in dev mode only.
	File string `koanf:"file"`
	// Env names the environment variable holding the base64 KEK; it wins
	// over File when set. Default WARD_KEK.
	Env string `koanf:"env"`
}

// Log configures the server logger.
type Log struct {
	Level  string `koanf:"level"`  // debug|info|warn|error
	Format string `koanf:"format"` // json|text
}

// Tokens holds token and session lifetimes.
type Tokens struct {
	AccessTokenTTL  time.Duration `koanf:"access_token_ttl"`
	IDTokenTTL      time.Duration `koanf:"id_token_ttl"`
	RefreshTokenTTL time.Duration `koanf:"refresh_token_ttl"`
	CodeTTL         time.Duration `koanf:"code_ttl"`
	PARTTL          time.Duration `koanf:"par_ttl"`
	SessionIdle     time.Duration `koanf:"session_idle"`
	SessionAbsolute time.Duration `koanf:"session_absolute"`
	KeyRetireAfter  time.Duration `koanf:"key_retire_after"`
	// CAEAccessTokenTTL is the access-token lifetime for clients marked
	// cae_capable whose token request declares the CAE capability: such
	// tokens are revoked at resources through continuous access
	// evaluation, so they can live long.
	CAEAccessTokenTTL time.Duration `koanf:"cae_access_token_ttl"`
}

// DPoP configures proof checking (RFC 9449).
type DPoP struct {
	MaxAge        time.Duration `koanf:"max_age"`
	Leeway        time.Duration `koanf:"leeway"`
	RequireNonce  bool          `koanf:"require_nonce"`
	NonceLifetime time.Duration `koanf:"nonce_lifetime"`
}

// Passwords configures argon2id hashing and the password policy.
type Passwords struct {
	Argon2Time      uint32 `koanf:"argon2_time"`
	Argon2MemoryKiB uint32 `koanf:"argon2_memory_kib"`
	Argon2Threads   uint8  `koanf:"argon2_threads"`
	// MaxConcurrent bounds simultaneous hash computations (memory).
	MaxConcurrent int `koanf:"max_concurrent"`
	// MaxQueue bounds the sign-ins waiting for one of those; one more is
	// refused at once ("too many attempts") instead of waiting.
	MaxQueue  int `koanf:"max_queue"`
	MinLength int `koanf:"min_length"`
}

// Lockout configures brute-force protection.
type Lockout struct {
	MaxFailures int           `koanf:"max_failures"`
	Duration    time.Duration `koanf:"duration"`
	// FailureWindow: a failure count whose last failure is this old
	// starts afresh (accounts and unknown names alike).
	FailureWindow       time.Duration `koanf:"failure_window"`
	IPFailuresPerMinute int           `koanf:"ip_failures_per_minute"`
	// IPv4Prefix and IPv6Prefix group client addresses into the networks
	// that share one IPFailuresPerMinute budget.
	IPv4Prefix int `koanf:"ipv4_prefix"`
	IPv6Prefix int `koanf:"ipv6_prefix"`
	// GlobalFailuresPerMinute is the failed sign-in budget of one
	// instance, all networks together.
	GlobalFailuresPerMinute int `koanf:"global_failures_per_minute"`
	// ClientFailuresPerMinute is how many failed client authentications
	// (token, PAR, introspection and revocation endpoints) one network may
	// make a minute before it is answered 429 without further checks or
	// audit records.
	ClientFailuresPerMinute int `koanf:"client_failures_per_minute"`
}

// Audit configures the audit log (the events table, docs/configuration.md).
type Audit struct {
	// Retention is how long events are kept (2160h = 90 days); 0 keeps
	// everything. At least 192h (8 days): the event stream and the CAE
	// transmitter still read events that recent.
	Retention time.Duration `koanf:"retention"`
	// SealInterval is how often each server links newly committed events
	// into the tamper-evident hash chain (1s): how long an event stays
	// unsealed (docs/secops.md, "Tamper-evident audit log").
	SealInterval time.Duration `koanf:"seal_interval"`
	// CheckpointEvents and CheckpointInterval: a signed checkpoint of the
	// chain is made after this many sealed events (10000), or this long
	// (10m) after the last one if any event was sealed since. They bound
	// the unsigned tail of the chain and the segments retention deletes.
	CheckpointEvents   int64         `koanf:"checkpoint_events"`
	CheckpointInterval time.Duration `koanf:"checkpoint_interval"`
}

// ConditionalAccess configures policy evaluation (docs/conditional-access.md).
type ConditionalAccess struct {
	// GeoIPDatabase is an MMDB file (DB-IP Lite Country, GeoLite2
	// Country or City) for country named locations; empty: countries are
	// unknown and country locations never match.
	GeoIPDatabase string `koanf:"geoip_database"`
	// ASNDatabase is an MMDB file of autonomous systems (DB-IP Lite ASN,
	// GeoLite2 ASN). With GeoIPDatabase (a city database gives
	// coordinates too) it places every address the risk detections and
	// the activity export see; both are optional.
	ASNDatabase string `koanf:"asn_database"`
	// PoliciesFile, when set, is applied (idempotently) on every start,
	// like the static clients: policy as code from the configuration.
	PoliciesFile string `koanf:"policies_file"`
	// PollInterval is how often an instance checks for a policy version
	// stored by another instance or by `ward policy apply`: a safety net,
	// the version's access.policy_changed event installs it at once.
	PollInterval time.Duration `koanf:"poll_interval"`
}

// Risk configures Identity Protection's risk levels and response.
type Risk struct {
	// AutoRevokeLevel is the user risk level at which every session of
	// the user is revoked at once (low, medium, high; "off": never).
	AutoRevokeLevel string `koanf:"auto_revoke_level"`
	// LowLifetime and MediumLifetime are how long a low and a medium
	// detection count; a high one counts until it is dismissed or
	// remediated.
	LowLifetime    time.Duration `koanf:"low_lifetime"`
	MediumLifetime time.Duration `koanf:"medium_lifetime"`
	// MFARemediates is the highest user risk level a sign-in with a
	// second factor remediates (low, medium, high; "off": none).
	MFARemediates string `koanf:"mfa_remediates"`
	// Retention is how long dismissed, remediated and expired detections
	// and the level history are kept.
	Retention time.Duration `koanf:"retention"`
}

// Incidents configures the correlation of risk detections into
// incidents.
type Incidents struct {
	// Window is how far apart detections about the same user, session,
	// device or address may be and still join one incident, and how long
	// after its resolution a new detection reopens an incident.
	Window time.Duration `koanf:"window"`
	// Retention is how long a closed incident is kept after it closed.
	Retention time.Duration `koanf:"retention"`
}

// Console configures the web console.
type Console struct {
	// Disabled turns the console (and its client, ward-console) off.
	Disabled bool `koanf:"disabled"`
	// SessionLifetime is the longest a console session lasts before the
	// console signs the operator in again through Ward (silently while
	// the Ward session lives, with Conditional Access evaluated anew): the
	// lifetime of the console client's access token. Default 1h; 1m..12h.
	SessionLifetime time.Duration `koanf:"session_lifetime"`
}

// Devices configures device registration.
type Devices struct {
	// TPMEKCAFile is a PEM file of the TPM vendor CAs (roots, and the
	// intermediates between them and the EK certificates) trusted to
	// certify TPM endorsement keys. When set, a device's key attestation is
	// accepted only from a TPM whose EK certificate chains to one of them;
	// when empty, from any TPM, and attested devices say that their
	// endorsement key is not chained to a trusted vendor.
	TPMEKCAFile string `koanf:"tpm_ek_ca_file"`
}

// Bus drivers.
const (
	// BusNATS is NATS JetStream: an embedded, in-process server unless
	// bus.nats.url names an external cluster.
	BusNATS = "nats"
	// BusLocal delivers in-process only: events are still stored, but no
	// durable consumers run and nothing is relayed.
	BusLocal = "local"
)

// Bus configures the event bus (docs/architecture.md, "Events").
type Bus struct {
	Driver string  `koanf:"driver"`
	NATS   NATSBus `koanf:"nats"`
}

// NATSBus configures the JetStream bus.
type NATSBus struct {
	// URL lists external NATS servers (comma-separated nats:// or tls://
	// URLs); empty runs the embedded server. It may carry credentials.
	URL secret.String `koanf:"url"`
	// TokenEnv names the environment variable holding the NATS token: the
	// client token for an external cluster, the required token for the
	// embedded server's listener.
	TokenEnv string `koanf:"token_env"`
	// CredsFile is a NATS credentials file (JWT + nkey seed) for an
	// external cluster.
	CredsFile string `koanf:"creds_file"`
	// Stream is the JetStream stream name; SubjectPrefix the subject its
	// events go to (<prefix>.<event type>). Change them only to share a
	// NATS account between deployments or tests.
	Stream        string `koanf:"stream"`
	SubjectPrefix string `koanf:"subject_prefix"`
	// StreamMaxAge is how long the stream keeps events: the longest a
	// durable consumer may be away and still get everything it missed.
	StreamMaxAge time.Duration `koanf:"stream_max_age"`
	// Replicas of the stream in a clustered external NATS (1..5).
	Replicas int          `koanf:"replicas"`
	Embedded NATSEmbedded `koanf:"embedded"`
}

// NATSEmbedded configures the in-process NATS server.
type NATSEmbedded struct {
	// StoreDir holds JetStream's files; default <data_dir>/nats.
	StoreDir string `koanf:"store_dir"`
	// Listen, when set (host:port), also serves NATS clients over TCP
	// (other tools, resource servers subscribing directly). Empty: nothing
	// listens. A listener requires token_env or nkeys.
	Listen string `koanf:"listen"`
	// NKeys are the public user nkeys (U...) allowed to connect to Listen.
	NKeys []string `koanf:"nkeys"`
}

// StaticClient is an OAuth client declared in the configuration and
// applied (created or updated) on every start.
type StaticClient struct {
	ID   string `koanf:"id"`
	Name string `koanf:"name"`
	// Secret is a literal secret (for development and tests); SecretEnv
	// names an environment variable holding it. At most one.
	Secret                 secret.String `koanf:"secret"`
	SecretEnv              string        `koanf:"secret_env"`
	AuthMethod             string        `koanf:"auth_method"`
	RedirectURIs           []string      `koanf:"redirect_uris"`
	PostLogoutRedirectURIs []string      `koanf:"post_logout_redirect_uris"`
	GrantTypes             []string      `koanf:"grant_types"`
	Scopes                 []string      `koanf:"scopes"`
	Audience               []string      `koanf:"audience"`
	DPoPBoundAccessTokens  bool          `koanf:"dpop_bound_access_tokens"`
	// RequireProtectedSessions accepts only sessions bound to the key of a
	// registered, active device (token protection).
	RequireProtectedSessions bool `koanf:"require_protected_sessions"`
	// CAECapable lets the client's access tokens live up to
	// tokens.cae_access_token_ttl when a request declares the capability.
	CAECapable bool `koanf:"cae_capable"`
	// JWKS is the client's public key set as inline JSON (private_key_jwt).
	JWKS string `koanf:"jwks"`
	// ApplicationType is web or native; empty: inferred from the redirect
	// URIs (loopback and private-use schemes are native).
	ApplicationType string `koanf:"application_type"`
}

// StaticUser is a local account declared in the configuration. It is
// created when missing; roles, groups and TOTP are applied on every start,
// the password only on creation.
type StaticUser struct {
	Username    string        `koanf:"username"`
	Email       string        `koanf:"email"`
	DisplayName string        `koanf:"display_name"`
	Password    secret.String `koanf:"password"`
	PasswordEnv string        `koanf:"password_env"`
	TOTPSecret  secret.String `koanf:"totp_secret"`
	Roles       []string      `koanf:"roles"`
	Groups      []string      `koanf:"groups"`
}

// Default returns the configuration with every default applied. Paths that
// depend on data_dir are filled in by Load (see ResolvePaths).
func Default() *Config {
	return &Config{
		Issuer:  "http://127.0.0.1:8700",
		Listen:  "127.0.0.1:8700",
		DataDir: "./ward-data",
		Storage: Storage{Driver: DriverSQLite, Postgres: Postgres{
			MaxConns:               16,
			MaxConnLifetime:        time.Hour,
			MaxConnIdleTime:        30 * time.Minute,
			QueryExecMode:          "cache_statement",
			StatementCacheCapacity: 512,
		}},
		KEK:               KEK{Env: "WARD_KEK"},
		ConditionalAccess: ConditionalAccess{PollInterval: 5 * time.Second},
		Incidents:         Incidents{Window: 24 * time.Hour, Retention: 365 * 24 * time.Hour},
		Risk: Risk{AutoRevokeLevel: "high", LowLifetime: 7 * 24 * time.Hour, MediumLifetime: 30 * 24 * time.Hour,
			MFARemediates: "medium", Retention: 90 * 24 * time.Hour},
		RiskDetection: defaultRiskDetection(),
		Log:           Log{Level: "info", Format: "json"},
		Audit:         Audit{Retention: 90 * 24 * time.Hour, SealInterval: time.Second, CheckpointEvents: 10000, CheckpointInterval: 10 * time.Minute},
		Console:       Console{SessionLifetime: time.Hour},
		Tokens: Tokens{
			AccessTokenTTL:    10 * time.Minute,
			IDTokenTTL:        10 * time.Minute,
			RefreshTokenTTL:   720 * time.Hour,
			CodeTTL:           60 * time.Second,
			PARTTL:            90 * time.Second,
			SessionIdle:       72 * time.Hour,
			SessionAbsolute:   720 * time.Hour,
			KeyRetireAfter:    24 * time.Hour,
			CAEAccessTokenTTL: 24 * time.Hour,
		},
		DPoP: DPoP{
			MaxAge:        5 * time.Minute,
			Leeway:        30 * time.Second,
			NonceLifetime: 5 * time.Minute,
		},
		Passwords: Passwords{
			Argon2Time:      2,
			Argon2MemoryKiB: 19456,
			Argon2Threads:   1,
			MaxConcurrent:   2,
			MaxQueue:        8,
			MinLength:       10,
		},
		Lockout: Lockout{
			MaxFailures:             5,
			Duration:                15 * time.Minute,
			FailureWindow:           24 * time.Hour,
			IPFailuresPerMinute:     30,
			IPv4Prefix:              32,
			IPv6Prefix:              64,
			GlobalFailuresPerMinute: 600,
			ClientFailuresPerMinute: 60,
		},
		SSF: SSF{NATS: SSFNATS{
			Enabled:       true,
			Stream:        "WARD_CAE",
			SubjectPrefix: "ward.cae",
			Audience:      DefaultCAEAudience,
			MaxAge:        25 * time.Hour,
		}},
		Bus: Bus{Driver: BusNATS, NATS: NATSBus{
			Stream:        "WARD_EVENTS",
			SubjectPrefix: "ward.events",
			StreamMaxAge:  168 * time.Hour,
			Replicas:      1,
		}},
	}
}

// ResolvePaths fills the paths that default to locations under DataDir.
func (c *Config) ResolvePaths() {
	if c.Storage.SQLite.Path == "" {
		c.Storage.SQLite.Path = filepath.Join(c.DataDir, "ward.db")
	}
	if c.KEK.File == "" {
		c.KEK.File = filepath.Join(c.DataDir, "kek.key")
	}
	if c.Bus.NATS.Embedded.StoreDir == "" {
		c.Bus.NATS.Embedded.StoreDir = filepath.Join(c.DataDir, "nats")
	}
}
