package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/dpop"
	prom "github.com/ward-idp/ward/internal/metrics"
	"github.com/ward-idp/ward/rs"
)

// DefaultWatchInterval is how often the configuration file is checked
// for changes.
const DefaultWatchInterval = 2 * time.Second

// Options configure a Gateway.
type Options struct {
	// Config is the validated configuration (LoadConfig); ConfigFile is
	// where reloads read it from.
	Config     *Config
	ConfigFile string
	// LookupEnv resolves the *_env keys on reload (os.LookupEnv if nil).
	LookupEnv func(string) (string, bool)
	// Logger receives the gateway's logs (discarded if nil).
	Logger *slog.Logger
	// HTTPClient fetches the issuer's JWKS, the SSF keys, polls and usage
	// reports (http.DefaultClient if nil).
	HTTPClient *http.Client
	// Transport carries proxied requests (a clone of
	// http.DefaultTransport with the configured timeouts if nil).
	Transport http.RoundTripper
	// WatchInterval is how often Run checks the file for changes
	// (DefaultWatchInterval if zero; negative disables the check).
	WatchInterval time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Gateway is a reverse proxy that lets through requests carrying a valid
// DPoP-bound Ward access token for the route, and passes the verified
// identity to the upstream in a signed header.
type Gateway struct {
	opts  Options
	log   *slog.Logger
	base  *Config // the configuration at start: restart-only keys
	table atomic.Pointer[table]

	keys      *rs.KeySet
	state     *rs.RevocationState
	replay    dpop.ReplayCache
	usage     *rs.UsageReporter
	receiver  *rs.Receiver
	push      http.Handler
	poller    *rs.Poller
	nats      *natsFollower // ssf.mode nats
	signer    *identitySigner
	transport http.RoundTripper
	metrics   *metrics
	// keysReady: the issuer's JWKS was fetched once. caeReady: the CAE
	// state holds every revocation it can know of (with ssf.mode nats,
	// once the stream's replay caught up; at once otherwise).
	keysReady, caeReady atomic.Bool
	readyLogged         atomic.Bool

	reloadMu sync.Mutex
	fileSum  [32]byte // content of the file last loaded or tried
	closed   atomic.Bool
}

// New builds a gateway from a validated configuration. It starts the
// usage reporter (if configured); call Serve (or Run and Close) next.
func New(o Options) (*Gateway, error) {
	cfg := o.Config
	if cfg == nil {
		return nil, errors.New("gateway: no configuration")
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.WatchInterval == 0 {
		o.WatchInterval = DefaultWatchInterval
	}
	g := &Gateway{opts: o, log: o.Logger, base: cfg, metrics: newMetrics()}
	if o.ConfigFile != "" {
		if data, err := os.ReadFile(o.ConfigFile); err == nil {
			g.fileSum = sha256.Sum256(data)
		}
	}
	var err error
	if g.signer, err = newIdentitySigner(cfg.identityKey); err != nil {
		return nil, fmt.Errorf("gateway: identity key: %w", err)
	}
	if cfg.identityKey == nil {
		g.log.Warn("gateway: no identity_key_file; signing Ward-Identity with a key generated for this process (upstreams must refetch the gateway JWKS after a restart)", "kid", g.signer.kid)
	}
	g.keys, err = rs.NewKeySet(rs.KeySetConfig{Issuer: cfg.Issuer, HTTPClient: o.HTTPClient, Now: o.Now, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.state = rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: cfg.MaxTokenLifetime, Now: o.Now})
	// One replay cache for the gateway's life: a reload must not let a
	// proof be used twice.
	g.replay = dpop.NewMemoryReplayCache(o.Now)
	g.transport = o.Transport
	if g.transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = cfg.Timeouts.UpstreamHeader
		t.MaxIdleConnsPerHost = 64
		g.transport = t
	}
	if err := g.setupSSF(cfg); err != nil {
		return nil, err
	}
	if u := cfg.Usage; u != nil {
		tok := cfg.usageToken
		g.usage, err = rs.NewUsageReporter(rs.UsageConfig{
			Endpoint:      u.URL,
			Token:         func(context.Context) (string, error) { return tok, nil },
			HTTPClient:    o.HTTPClient,
			FlushInterval: u.Interval,
			Logger:        o.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("gateway: usage: %w", err)
		}
	}
	g.metrics.state, g.metrics.ready = g.state, g.Ready
	if g.usage != nil {
		g.metrics.setUsage(g.usage)
	}
	t, err := g.buildTable(cfg)
	if err != nil {
		g.closeUsage()
		return nil, err
	}
	g.table.Store(t)
	g.metrics.reloadTime.Set(float64(o.Now().Unix()))
	return g, nil
}

func (g *Gateway) setupSSF(cfg *Config) error {
	s := cfg.SSF
	if s.Mode != SSFNATS {
		g.caeReady.Store(true) // nothing to replay
	}
	if s.Mode == SSFOff {
		g.log.Warn("gateway: ssf.mode is off: no Continuous Access Evaluation, tokens stay valid until they expire")
		return nil
	}
	rc := rs.ReceiverConfig{
		Issuer:     s.Issuer,
		Audience:   s.Audience,
		State:      g.state,
		JWKSURL:    s.JWKSURL,
		HTTPClient: g.opts.HTTPClient,
		Now:        g.opts.Now,
		Logger:     g.log,
		OnEvent: func(_ context.Context, set *rs.SET, actions []rs.Action) error {
			g.metrics.caeEvents.inc(caeEventName(set.Event.Type))
			for _, a := range actions {
				g.metrics.caeActions.inc(a.Kind)
			}
			g.log.Info("gateway: ssf event", "type", caeEventName(set.Event.Type), "jti", set.JTI, "actions", len(actions))
			return nil
		},
	}
	if cfg.ssfKeys != nil {
		ks, err := rs.NewStaticKeySet(*cfg.ssfKeys)
		if err != nil {
			return fmt.Errorf("gateway: ssf.jwks_file: %w", err)
		}
		rc.Keys = ks
	}
	recv, err := rs.NewReceiver(rc)
	if err != nil {
		return fmt.Errorf("gateway: ssf: %w", err)
	}
	g.receiver = recv
	switch s.Mode {
	case SSFPush:
		h := recv.PushHandler(rs.RequireBearer(cfg.pushBearer))
		g.push = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := prom.NewStatusWriter(w)
			h.ServeHTTP(sw, r)
			g.metrics.ssfPush.inc(fmt.Sprint(sw.Code()))
		})
	case SSFPoll:
		tok := cfg.pollToken
		g.poller, err = recv.NewPoller(rs.PollConfig{
			Endpoint:   s.PollURL,
			Token:      func(context.Context) (string, error) { return tok, nil },
			HTTPClient: g.opts.HTTPClient,
			Logger:     g.log,
		})
		if err != nil {
			return fmt.Errorf("gateway: ssf poll: %w", err)
		}
	case SSFNATS:
		if g.nats, err = g.newNATSFollower(cfg); err != nil {
			return fmt.Errorf("gateway: ssf nats: %w", err)
		}
		g.metrics.setNATS(g.nats.metrics)
	}
	return nil
}

// Reload re-reads the configuration file and, if it is valid, swaps the
// route table atomically: requests already running finish with the table
// they started with. On failure the running configuration stays and
// every problem is logged. trigger names the cause in the log ("sighup",
// "file").
func (g *Gateway) Reload(trigger string) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.opts.ConfigFile == "" {
		return errors.New("gateway: no configuration file to reload")
	}
	data, err := os.ReadFile(g.opts.ConfigFile)
	if err == nil {
		g.fileSum = sha256.Sum256(data)
	}
	var cfg *Config
	if err == nil {
		cfg, err = ParseConfig(data, g.opts.LookupEnv)
	}
	var t *table
	if err == nil {
		t, err = g.buildTable(cfg)
	}
	if err != nil {
		g.metrics.reloads.inc(reloadFailure)
		problems := flatten(err)
		attrs := []any{"trigger", trigger, "file", g.opts.ConfigFile, "problems", len(problems)}
		for i, p := range problems {
			attrs = append(attrs, fmt.Sprintf("problem_%d", i+1), p.Error())
		}
		g.log.Error("gateway: configuration reload failed; keeping the running configuration", attrs...)
		return err
	}
	if keys := restartOnly(g.base, cfg); len(keys) > 0 {
		g.log.Warn("gateway: configuration keys changed that only a restart applies; they keep their running values", "keys", keys)
	}
	g.table.Store(t)
	g.metrics.reloads.inc(reloadSuccess)
	g.metrics.reloadTime.Set(float64(g.opts.Now().Unix()))
	g.log.Info("gateway: configuration reloaded", "trigger", trigger, "routes", len(t.routes))
	return nil
}

// flatten lists the errors of an errors.Join.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// fileChanged reports whether the configuration file's content differs
// from what was last loaded or tried.
func (g *Gateway) fileChanged() bool {
	data, err := os.ReadFile(g.opts.ConfigFile)
	if err != nil {
		return false // a file being replaced; look again next time
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	return sha256.Sum256(data) != g.fileSum
}

// Run runs the background work until ctx ends: the first JWKS fetch
// (readiness), the configuration file watch and the SSF poller or NATS
// follower (stopped when ctx ends).
func (g *Gateway) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { g.warmKeys(ctx) })
	if g.opts.ConfigFile != "" && g.opts.WatchInterval > 0 {
		wg.Go(func() {
			tick := time.NewTicker(g.opts.WatchInterval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if g.fileChanged() {
						_ = g.Reload("file")
					}
				}
			}
		})
	}
	if g.poller != nil {
		wg.Go(func() { _ = g.poller.Run(ctx) })
	}
	if g.nats != nil {
		wg.Go(func() { g.nats.run(ctx) })
	}
	wg.Wait()
}

// warmKeys loads the issuer's JWKS until it succeeds once (the key set
// refreshes itself from then on).
func (g *Gateway) warmKeys(ctx context.Context) {
	for {
		_, err := g.keys.Key(ctx, "", false)
		if err == nil || errors.Is(err, rs.ErrUnknownKey) {
			g.keysReady.Store(true)
			g.log.Info("gateway: issuer keys loaded")
			g.logReady()
			return
		}
		if ctx.Err() != nil {
			return
		}
		g.log.Warn("gateway: issuer keys not available yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// Ready reports whether the issuer's JWKS has been fetched and, with
// ssf.mode nats, the CAE stream replayed.
func (g *Gateway) Ready() bool { return g.notReady() == "" }

// notReady says why the gateway is not ready ("" when it is).
func (g *Gateway) notReady() string {
	switch {
	case !g.keysReady.Load():
		return "the issuer's keys have not been fetched yet"
	case !g.caeReady.Load():
		return "the CAE stream has not been replayed yet"
	}
	return ""
}

// logReady logs "ready" the first time both conditions hold.
func (g *Gateway) logReady() {
	if g.Ready() && !g.readyLogged.Swap(true) {
		g.log.Info("gateway: ready")
	}
}

// State returns the CAE revocation state (shared by every route).
func (g *Gateway) State() *rs.RevocationState { return g.state }

// MetricsHandler serves /metrics (for a separate metrics listener).
func (g *Gateway) MetricsHandler() http.Handler { return g.metrics }

// JWKS returns the gateway's public key set (the Ward-Identity keys).
func (g *Gateway) JWKS() []byte { return slices.Clone(g.signer.jwks) }

// Close stops the usage reporter, sending what it holds until ctx ends.
func (g *Gateway) Close(ctx context.Context) error {
	if g.closed.Swap(true) || g.usage == nil {
		return nil
	}
	return g.usage.Close(ctx)
}

func (g *Gateway) closeUsage() {
	if g.usage != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = g.usage.Close(ctx)
	}
}

// writeJSONError writes {"error": code, "error_description": desc}.
func writeJSONError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// peerAddr is the connection's peer address.
func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
