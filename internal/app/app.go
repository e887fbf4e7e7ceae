// Package app wires Ward together: from a validated configuration it opens
// the store, loads the key-encryption key, starts the event bus with the
// audit persister, builds the key manager and the domain services, applies
// the statically configured clients and users and, in development mode,
// ensures the demo data exists. Commands and the HTTP server work on the
// resulting App.
package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/ward-idp/ward/internal/audit/export"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/metrics"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/graph"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/risk/online"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/ssfrx"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
	"github.com/ward-idp/ward/internal/tpmattest"
)

// ActorSystem is the event actor for changes Ward makes on its own
// (static configuration, demo data).
const ActorSystem = "system"

// App is an opened Ward instance: configuration, store, bus and services.
type App struct {
	Config   *config.Config
	Log      *slog.Logger
	Now      func() time.Time
	Store    store.Store
	Bus      bus.Bus
	Durable  bus.Durable    // cross-instance, at-least-once delivery (bus.NoDurable without JetStream)
	Changes  bus.Subscriber // ChangeEventTypes stored by any process, this one included (see followChanges)
	KEK      *secret.KEK
	Keys     *tokens.KeyManager
	Identity *identity.Service
	Clients  *clients.Service
	Devices  *device.Service
	Sessions *session.Service // every session revocation
	Access   *access.Service
	CAE      *cae.Service  // the Shared Signals transmitter
	Risk     *risk.Service // risk levels, their response and administration
	// Incidents correlates detections into incidents and takes response
	// actions (incidents.go).
	Incidents *incident.Service
	// Geo places addresses (conditional_access.geoip_database and
	// asn_database); nil without either.
	Geo *geo.DB
	// Graph draws investigation graphs from the audit log and the
	// detections.
	Graph *graph.Service
	// Detectors are the online token-theft detectors of a server (nil in
	// a command-line tool or with risk_detection.enabled false).
	Detectors *online.Detector
	// SSFReceivers receives signals from other SSF transmitters
	// (ssf_receivers).
	SSFReceivers *ssfrx.Service
	TokenHasher  *secret.Hasher
	// SignInRisk computes the risk of each sign-in (SSO sign-ins included)
	// before Conditional Access decides it; nil: none.
	SignInRisk SignInRiskAssessor
	// Sealer links the events into the tamper-evident audit log and signs
	// its checkpoints (nil in a command-line tool).
	Sealer *chain.Sealer
	// Metrics is the server's Prometheus registry (nil in a command-line
	// tool); internal/server adds the HTTP series.
	Metrics *metrics.Registry
	// exporter sends the audit log to the SIEM sinks (nil without sinks).
	exporter *export.Exporter

	dev        *DevData
	closers    []func() error
	unsubAudit func()
	// caeStream is the CAE stream of resource servers following NATS
	// (nil without one).
	caeStream bus.CAEPublisher
}

// SignInRiskAssessor computes the risk level (none, low, medium, high) of
// a sign-in from the activity it would record (signin.RiskAssessor).
type SignInRiskAssessor interface {
	AssessSignIn(ctx context.Context, a activity.Activity) (level string, err error)
}

// Options adjust Open for tests; the zero value is production behaviour.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Environ looks up environment variables (default os.LookupEnv); used
	// for the KEK and for secret_env/password_env.
	LookupEnv func(string) (string, bool)
	// Tool marks a short-lived command (ward user …): it stores events
	// but neither starts NATS nor relays; the running server's relay
	// publishes them within its poll interval. The embedded server's
	// files belong to the server process.
	Tool bool
	// KEK, when set, is the key-encryption key instead of the configured
	// one (ward keys rotate-kek opens Ward with the new key).
	KEK *secret.KEK
	// Version is Ward's version, named in exported records.
	Version string
}

// Open opens Ward with cfg, which must have passed Validate.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger) (*App, error) {
	return OpenWith(ctx, cfg, log, Options{})
}

// OpenWith is Open with test options.
func OpenWith(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) (_ *App, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("app: invalid configuration:\n%w", err)
	}
	a := &App{Config: cfg, Log: log, Now: o.Now}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("app: create data directory: %w", err)
	}

	a.KEK = o.KEK
	if a.KEK == nil {
		if a.KEK, err = loadKEK(cfg, o.LookupEnv); err != nil {
			return nil, err
		}
	}

	if a.Store, err = openStore(ctx, cfg, o.Now); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.Store.Close)
	// Every event this process writes carries its record MAC, which the
	// audit log's sealer checks (internal/audit/chain). The key is sealed
	// under the KEK: a wrong KEK is reported below by the signing keys,
	// which say so in the words operators know.
	_, auditErr := chain.Configure(ctx, a.Store, a.KEK)

	if err := a.openBus(ctx, o); err != nil {
		return nil, err
	}
	if err := a.followChanges(o); err != nil {
		return nil, fmt.Errorf("app: follow changes: %w", err)
	}
	b := a.Bus
	a.unsubAudit = audit.Subscribe(b, audit.Options{Store: a.Store, Now: o.Now, Log: log})
	a.Sessions = session.New(session.Options{Store: a.Store, Bus: b, Now: o.Now, Log: log})
	a.Sessions.Subscribe(b)

	a.TokenHasher = secret.NewHasher(a.KEK.Derive("token-hash"))

	a.Keys, err = tokens.NewKeyManager(ctx, tokens.KeyOptions{
		Store:       a.Store,
		KEK:         a.KEK,
		Now:         o.Now,
		Logger:      log,
		Bus:         b,
		RetireAfter: cfg.Tokens.KeyRetireAfter,
	})
	if err != nil {
		return nil, fmt.Errorf("app: signing keys: %w", err)
	}
	if auditErr != nil {
		return nil, fmt.Errorf("app: audit log: %w", auditErr)
	}

	wa, err := webAuthnOptions(cfg, log)
	if err != nil {
		return nil, err
	}
	a.Identity = identity.New(identity.Options{
		WebAuthn: wa,
		Store:    a.Store,
		Bus:      b,
		KEK:      a.KEK,
		Now:      o.Now,
		Logger:   log,
		Argon2: identity.Argon2Params{
			Time:      cfg.Passwords.Argon2Time,
			MemoryKiB: cfg.Passwords.Argon2MemoryKiB,
			Threads:   cfg.Passwords.Argon2Threads,
		},
		MaxConcurrentHashes:     cfg.Passwords.MaxConcurrent,
		MaxHashQueue:            cfg.Passwords.MaxQueue,
		MaxFailures:             cfg.Lockout.MaxFailures,
		LockoutDuration:         cfg.Lockout.Duration,
		FailureWindow:           cfg.Lockout.FailureWindow,
		IPFailuresPerMinute:     cfg.Lockout.IPFailuresPerMinute,
		IPv4Prefix:              cfg.Lockout.IPv4Prefix,
		IPv6Prefix:              cfg.Lockout.IPv6Prefix,
		GlobalFailuresPerMinute: cfg.Lockout.GlobalFailuresPerMinute,
		MinPasswordLength:       cfg.Passwords.MinLength,
	})
	a.Clients = clients.New(clients.Options{
		Store:  a.Store,
		Bus:    b,
		Hasher: secret.NewHasher(a.KEK.Derive("client-secret")),
		Now:    o.Now,
	})
	var ekCAs *tpmattest.CAs
	if path := cfg.Devices.TPMEKCAFile; path != "" {
		pem, err := os.ReadFile(path)
		if err == nil {
			ekCAs, err = tpmattest.ParseCAs(pem)
		}
		if err != nil {
			return nil, fmt.Errorf("app: devices.tpm_ek_ca_file: %w", err)
		}
	}
	a.Devices = device.New(device.Options{
		Store:          a.Store,
		Bus:            b,
		Sessions:       a.Sessions,
		Now:            o.Now,
		Log:            log,
		NonceKey:       a.KEK.Derive("device-posture-nonce"),
		AttestationKey: a.KEK.Derive("device-attestation-challenge"),
		EKCAs:          ekCAs,
	})

	ca := cfg.ConditionalAccess
	if a.Geo, err = geo.Open(ca.GeoIPDatabase, ca.ASNDatabase); err != nil {
		return nil, fmt.Errorf("app: conditional_access.geoip_database / asn_database: %w", err)
	}
	a.closers = append(a.closers, a.Geo.Close)
	gopts := graph.Options{Store: a.Store, Now: o.Now}
	if a.Geo != nil {
		gopts.Locator = a.Geo
	}
	a.Graph = graph.New(gopts)
	a.Access = access.New(access.Options{
		Store: a.Store, Bus: b, Now: o.Now, Log: log, Locator: a.Geo,
		PollInterval: cfg.ConditionalAccess.PollInterval,
	})
	if err := a.Access.Load(ctx); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	a.subscribeChanges()
	if err := a.openRisk(ctx, cfg, log, o); err != nil {
		return nil, err
	}
	if err := a.openIncidents(ctx, cfg, log, o); err != nil {
		return nil, err
	}
	if err := a.openCAE(ctx, cfg, log, o.Now, !o.Tool); err != nil {
		return nil, err
	}
	if err := a.openDetectors(ctx, cfg, log, o); err != nil {
		return nil, err
	}
	if err := a.openExport(ctx, cfg, log, o); err != nil {
		return nil, err
	}
	if err := a.openSSFReceivers(cfg, log, o); err != nil {
		return nil, err
	}

	// The configuration's clients and users are applied by the server
	// (and tests); a command-line tool works on what is stored, so that it
	// needs none of the clients' secret_env variables.
	if !o.Tool {
		if err := errors.Join(a.applyStaticClients(ctx, o.LookupEnv), a.applyStaticUsers(ctx, o.LookupEnv)); err != nil {
			return nil, fmt.Errorf("app: static configuration:\n%w", err)
		}
	}
	if path := cfg.ConditionalAccess.PoliciesFile; path != "" {
		if err := a.applyPoliciesFile(ctx, path); err != nil {
			return nil, fmt.Errorf("app: conditional_access.policies_file: %w", err)
		}
	}
	if cfg.Dev {
		if a.dev, err = a.ensureDevData(ctx); err != nil {
			return nil, fmt.Errorf("app: dev data: %w", err)
		}
	}
	// A server seals the audit log; a tool's events are sealed by the
	// running server (or the next one to start). Closed first, it seals
	// and signs what was written before the server stops.
	if !o.Tool {
		if a.Sealer, err = chain.Start(ctx, chain.Options{
			Store: a.Store, KEK: a.KEK, Signer: a.Keys, Now: o.Now, Log: log,
			Interval: cfg.Audit.SealInterval, CheckpointEvents: cfg.Audit.CheckpointEvents, CheckpointInterval: cfg.Audit.CheckpointInterval,
		}); err != nil {
			return nil, fmt.Errorf("app: audit log: %w", err)
		}
		a.closers = append(a.closers, a.Sealer.Close)
		a.openMetrics(o.Version)
	}
	return a, nil
}

// openStore opens the configured store (the data directory exists).
func openStore(ctx context.Context, cfg *config.Config, now func() time.Time) (store.Store, error) {
	switch cfg.Storage.Driver {
	case config.DriverSQLite:
		s, err := sqlite.Open(ctx, cfg.Storage.SQLite.Path, sqlite.WithClock(now))
		if err != nil {
			return nil, fmt.Errorf("app: open sqlite store %s: %w", cfg.Storage.SQLite.Path, err)
		}
		// The data directory is 0700 already; keep the files private too.
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Chmod(cfg.Storage.SQLite.Path+suffix, 0o600)
		}
		return s, nil
	case config.DriverPostgres:
		pg := cfg.Storage.Postgres
		s, err := postgres.Open(ctx, pg.DSN.Reveal(), postgres.WithClock(now), postgres.WithPool(postgres.Pool{
			MaxConns:               pg.MaxConns,
			MinConns:               pg.MinConns,
			MaxConnLifetime:        pg.MaxConnLifetime,
			MaxConnIdleTime:        pg.MaxConnIdleTime,
			QueryExecMode:          pg.QueryExecMode,
			StatementCacheCapacity: pg.StatementCacheCapacity,
		}))
		if err != nil {
			return nil, fmt.Errorf("app: open postgres store: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("app: unknown storage driver %q", cfg.Storage.Driver)
}

// Close releases the store. It is safe to call more than once.
func (a *App) Close() error {
	if a.unsubAudit != nil {
		a.unsubAudit()
		a.unsubAudit = nil
	}
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// ErrNoKEK is returned when no key-encryption key is configured outside dev
// mode.
var ErrNoKEK = errors.New("app: no key-encryption key")

// LoadKEK returns the configured key-encryption key ($kek.env, else
// kek.file; created in dev mode), as Open does.
func LoadKEK(cfg *config.Config, lookup func(string) (string, bool)) (*secret.KEK, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return loadKEK(cfg, lookup)
}

func loadKEK(cfg *config.Config, lookup func(string) (string, bool)) (*secret.KEK, error) {
	if cfg.KEK.Env != "" {
		if v, ok := lookup(cfg.KEK.Env); ok && strings.TrimSpace(v) != "" {
			k, err := secret.ParseKEK(v)
			if err != nil {
				return nil, fmt.Errorf("app: key-encryption key in $%s: %w", cfg.KEK.Env, err)
			}
			return k, nil
		}
	}
	if cfg.KEK.File == "" {
		return nil, fmt.Errorf("%w: set $%s or kek.file; generate a key with `ward keys kek`", ErrNoKEK, cfg.KEK.Env)
	}
	_, statErr := os.Stat(cfg.KEK.File)
	if errors.Is(statErr, os.ErrNotExist) && !cfg.Dev {
		env := cfg.KEK.Env
		if env == "" {
			env = "WARD_KEK"
		}
		return nil, fmt.Errorf("%w: %s does not exist and $%s is not set.\n"+
			"Generate one and keep it safe (it encrypts signing keys and TOTP seeds; losing it loses them):\n"+
			"    umask 077; ward keys kek > %s\n"+
			"or put the output of `ward keys kek` into $%s. In development, `--dev` creates it for you",
			ErrNoKEK, cfg.KEK.File, env, cfg.KEK.File, env)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.KEK.File), 0o700); err != nil {
		return nil, fmt.Errorf("app: create key directory: %w", err)
	}
	k, err := secret.LoadKEK(cfg.KEK.File, cfg.Dev)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	return k, nil
}

// openRisk starts the risk service: its remediation subscriber in every
// process and, in a server, the consumer of risk.detected and the expiry
// sweep. The detectors' sign-in family judges each sign-in before its code
// is issued (online.SignInJudge, against the user's history in the audit
// log).
func (a *App) openRisk(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) error {
	r := cfg.Risk
	var judge assess.Detector
	dc, on, err := detectConfig(cfg)
	if err != nil {
		return err
	}
	if on {
		judge = &online.SignInJudge{Store: a.Store, Config: dc, Geo: a.Geo, Now: o.Now}
		if !o.Tool {
			a.watchIPLists(dc, log)
		}
	}
	a.Risk = risk.New(risk.Options{
		Store: a.Store, Sessions: a.Sessions, Bus: a.Bus, Now: o.Now, Log: log, Detector: judge,
		AutoRevokeLevel: r.AutoRevokeLevel, LowLifetime: r.LowLifetime, MediumLifetime: r.MediumLifetime,
		MFARemediates: r.MFARemediates, Retention: r.Retention,
	})
	if err := a.Risk.Start(ctx, risk.Wiring{Bus: a.Bus, Durable: a.Durable, Serve: !o.Tool}); err != nil {
		a.Risk.Close()
		return fmt.Errorf("app: %w", err)
	}
	a.closers = append(a.closers, a.Risk.Close)
	a.SignInRisk = signInRisk{a.Risk}
	return nil
}

// signInRisk is the sign-in pages' view of the risk service: the level
// alone (the service records the detections behind it itself).
type signInRisk struct{ r *risk.Service }

func (s signInRisk) AssessSignIn(ctx context.Context, a activity.Activity) (string, error) {
	level, _, err := s.r.AssessSignIn(ctx, a)
	return level, err
}

// openCAE starts the Shared Signals transmitter on the bus (after the
// audit persister, so events are recorded before their SETs are queued).
// A server (serve true) also delivers; a short-lived tool only queues
// SETs, which the running server delivers within its rescan interval.
// Close stops it before the bus and the store close.
func (a *App) openCAE(ctx context.Context, cfg *config.Config, log *slog.Logger, now func() time.Time, serve bool) error {
	c := cfg.SSF
	// Push leases name the instance holding them. SQLite with the embedded
	// NATS has one serving process (the NATS store directory is locked),
	// so a stable name lets it take its streams back at once after a
	// crash instead of waiting for its dead predecessor's leases to expire.
	var instance string
	if cfg.Storage.Driver == config.DriverSQLite && cfg.Bus.Driver == config.BusNATS && cfg.Bus.NATS.URL == "" {
		instance = "sqlite-single-node"
	}
	// Instances sharing NATS wake each other when SETs are queued for a
	// stream another pushes, and spread the push streams (cae/share.go);
	// they wake each other's long polls when SETs are queued for a poll
	// stream (cae/handoff.go).
	var notifier, pollNotifier cae.Notifier
	if nb, ok := a.Bus.(*bus.NATS); ok {
		if sig := nb.Signal("cae-push.wake"); sig != nil {
			notifier = sig
		}
		if sig := nb.Signal("cae-poll.wake"); sig != nil {
			pollNotifier = sig
		}
	}
	svc, err := cae.Start(ctx, cae.Options{
		Issuer: cfg.Issuer, Store: a.Store, Keys: a.Keys, KEK: a.KEK, Now: now, Log: log, InstanceID: instance,
		MaxStreamsPerClient: c.MaxStreamsPerClient, LongPollTimeout: c.LongPollTimeout, PollHold: c.PollHold,
		MinBackoff: c.PushMinBackoff, MaxBackoff: c.PushMaxBackoff, PushTimeout: c.PushTimeout, DirectWait: c.DirectWait,
		RescanInterval: c.RescanInterval, MinVerificationInterval: c.MinVerificationInterval,
		PushAllowedNetworks: c.PushNetworks(), UserEmailAlias: c.UserEmailAlias, Notifier: notifier,
		PollNotifier: pollNotifier,
	}, cae.Wiring{Bus: a.Bus, Durable: a.Durable, Stream: a.caeStream, Audience: c.NATS.Audience, Serve: serve})
	if err != nil {
		return fmt.Errorf("app: %w", err)
	}
	a.CAE = svc
	a.closers = append(a.closers, svc.Close)
	return nil
}
