// Package ssfrx makes Ward a receiver of Shared Signals (SSF 1.0, CAEP
// 1.0, RISC): it keeps a stream at each configured transmitter (another
// IdP, an EDR, a CASB) with the SSF stream management API, takes their
// Security Event Tokens by push (RFC 8935) or poll (RFC 8936), verifies
// each one (signature by the transmitter's published keys, iss, aud, iat
// window, a jti never accepted twice, across restarts and instances), maps
// its subject to a Ward user (and session) and records it as an
// ssf.signal_received domain event, which the activity record reads as a
// signal. It decides nothing about risk: the detectors do.
package ssfrx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/jws"
)

// Defaults of ReceiverConfig fields left zero.
const (
	DefaultMaxAge    = 24 * time.Hour
	DefaultClockSkew = 2 * time.Minute
)

// DefaultAlgorithms are the JWS algorithms accepted when a receiver lists
// none: the asymmetric ones transmitters use. none and HMAC never are
// (package jws refuses them whatever the list says).
var DefaultAlgorithms = []jws.Algorithm{jws.ES256, jws.ES384, jws.PS256, jws.RS256, jws.EdDSA}

// Delivery methods.
const (
	Push = "push"
	Poll = "poll"
)

// Subject mapping targets (config.SubjectMap*).
const (
	MapID       = "id"
	MapUsername = "username"
	MapEmail    = "email"
	MapNone     = "none"
)

// Credentials gives the Authorization header value ("Bearer …") for the
// transmitter's endpoints. It is called for every request; it never logs
// what it returns.
type Credentials func(ctx context.Context) (string, error)

// ReceiverConfig is one transmitter.
type ReceiverConfig struct {
	Name             string
	Issuer           string
	ConfigurationURL string // "" : <Issuer>/.well-known/ssf-configuration
	Delivery         string // Push or Poll
	Audience         string // "" : Ward's issuer
	EventsRequested  []string
	Description      string
	Credentials      Credentials
	// Subject mapping per format: MapID, MapUsername, MapEmail or MapNone
	// ("" : email for EmailMap, none for the others).
	EmailMap, IssSubMap, OpaqueMap string
	// Algorithms are JWS alg names (DefaultAlgorithms when empty).
	Algorithms        []string
	MaxAge, ClockSkew time.Duration
	AllowedNetworks   []netip.Prefix
}

// Options configure the Service.
type Options struct {
	// Issuer is Ward's issuer: the default audience, the iss of subjects
	// that name Ward's own users, and the base of push endpoints
	// (<Issuer>/ssf/receive/<name>).
	Issuer    string
	Store     store.Store
	Bus       bus.Bus
	Now       func() time.Time
	Log       *slog.Logger
	Receivers []ReceiverConfig
	// RetryMin and RetryMax bound the back-off of stream management and
	// polling after a failure (1s, 5m).
	RetryMin, RetryMax time.Duration
	// PollTimeout bounds one poll request, long-poll wait included (2m).
	PollTimeout time.Duration
}

// Stats counts what the receivers did since the service started.
type Stats struct {
	Received      atomic.Int64 // SETs that reached verification
	Recorded      atomic.Int64 // signals recorded (ssf.signal_received)
	Refused       atomic.Int64 // SETs refused (bad signature, aud, subject, ...)
	Duplicates    atomic.Int64 // SETs whose jti was recorded before: acknowledged, not recorded again
	Verifications atomic.Int64 // stream verification events received
	Failures      atomic.Int64 // temporary failures (keys or store unavailable): delivered again
}

// Service runs Ward's receivers.
type Service struct {
	o      Options
	events *bus.Emitter
	log    *slog.Logger
	byName map[string]*receiver
	order  []*receiver
	stats  Stats

	mu      sync.Mutex
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
}

// New returns the service; it starts nothing (see Start).
func New(o Options) (*Service, error) {
	if o.Issuer == "" || o.Store == nil {
		return nil, errors.New("ssfrx: Issuer and Store are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Minute, o.RetryMin)
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = 2 * time.Minute
	}
	s := &Service{o: o, events: bus.NewEmitter(o.Bus, o.Now), log: o.Log.With("component", "ssf-receiver"), byName: map[string]*receiver{}}
	for _, c := range o.Receivers {
		if c.Name == "" || c.Issuer == "" || c.Credentials == nil {
			return nil, fmt.Errorf("ssfrx: receiver %q: Name, Issuer and Credentials are required", c.Name)
		}
		if _, dup := s.byName[c.Name]; dup {
			return nil, fmt.Errorf("ssfrx: receiver %q configured twice", c.Name)
		}
		r := newReceiver(s, c)
		s.byName[c.Name] = r
		s.order = append(s.order, r)
	}
	return s, nil
}

// Stats returns the counters.
func (s *Service) Stats() *Stats { return &s.stats }

// Names returns the configured receivers' names, in configuration order.
func (s *Service) Names() []string {
	out := make([]string, len(s.order))
	for i, r := range s.order {
		out[i] = r.cfg.Name
	}
	return out
}

// Start brings every receiver's stream up in the background (creating
// or updating it at its transmitter, retrying with back-off while the
// transmitter is unreachable), then polls the poll streams; pushes are
// taken by PushHandler. It returns at once: an unreachable transmitter
// never keeps Ward from serving.
func (s *Service) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, r := range s.order {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			r.run(ctx)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.purge(ctx)
	}()
}

// Close stops the receivers (a poller sends its pending acknowledgements
// first) and waits for them.
func (s *Service) Close() error {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	return nil
}

// purge forgets expired records of accepted SETs now and then.
func (s *Service) purge(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.o.Store.PurgeSSFSignals(ctx, s.o.Now()); err != nil {
				s.log.WarnContext(ctx, "ssf receiver: purge failed", "err", err)
			} else if n > 0 {
				s.log.DebugContext(ctx, "ssf receiver: purged accepted SETs", "count", n)
			}
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is exponential from lo to hi with jitter in [d/2, d).
func backoff(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(randN(int64(d/2)+1))
}
