package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/model"
)

// Defaults of NATSOptions.
const (
	DefaultStream        = "WARD_EVENTS"
	DefaultSubjectPrefix = "ward.events"
	DefaultMaxAge        = 168 * time.Hour
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: the
	// relays of several instances, or one relay after a restart, publish
	// an event more than once and the stream keeps it once.
	DuplicateWindow     = 2 * time.Minute
	DefaultPollInterval = time.Second
	// DefaultGapWait is how long the relay waits for a missing sequence
	// number before it publishes the events after it (see relay.go).
	DefaultGapWait = 2 * time.Second
	// DefaultAckWait bounds how long an event delivered to an instance
	// that died stays with it before another instance gets it (with one
	// event in flight, the consumer waits that long). Running handlers
	// extend it.
	DefaultAckWait = 10 * time.Second
)

// NATSOptions configure OpenNATS.
type NATSOptions struct {
	// URL lists external NATS servers (comma-separated); empty starts the
	// embedded server.
	URL string
	// Token authenticates to the external servers, or is required from
	// clients of the embedded server's listener.
	Token string
	// CredsFile is a credentials file (JWT + nkey seed) for external servers.
	CredsFile string
	// Embedded configures the in-process server (URL empty).
	Embedded EmbeddedOptions

	// Stream and SubjectPrefix name the JetStream stream and the subjects
	// of its events (<prefix>.<event type>).
	Stream        string
	SubjectPrefix string
	// MaxAge is how long the stream keeps events (default 168h).
	MaxAge time.Duration
	// Replicas of the stream (external clusters; default 1).
	Replicas int

	// Outbox is where the relay reads stored events; nil runs no relay
	// (this instance consumes but leaves publishing to others).
	Outbox Outbox
	// PollInterval is how often the relay looks for events that no local
	// Publish announced (default 1s).
	PollInterval time.Duration
	// GapWait is how long the relay waits for a missing sequence number.
	GapWait time.Duration
	// RelayOwner names this instance in the relay's lease (Outbox must
	// then be a Leaser): of the instances sharing the database and the
	// stream, only the holder publishes; the others stand by and are
	// woken through NATS (WakeSubject). Empty: no lease, this relay
	// always publishes (the embedded server's stream has one writer).
	RelayOwner string
	// RelayLeaseTTL is the relay lease's length (default 15s).
	RelayLeaseTTL time.Duration
	// RelayWakeInterval is the shortest time between two outbox reads
	// that wake-ups cause (default DefaultRelayWakeInterval, 20ms): the
	// most a relayed event waits under a stream of events. A wake-up
	// after a quiet spell reads at once.
	RelayWakeInterval time.Duration
	// relayWindow, when set (tests), replaces the relay's window size.
	relayWindow int

	// AckWait is how long a delivered event may stay unacknowledged before
	// it goes to another instance (default 10s; a running handler extends
	// it). RedeliveryMin and RedeliveryMax bound the back-off after a
	// handler error (defaults 200ms and 30s).
	AckWait                      time.Duration
	RedeliveryMin, RedeliveryMax time.Duration
	// ReconnectWait is the pause between reconnection attempts to external
	// servers (default 1s).
	ReconnectWait time.Duration

	// CAE configures the stream of signed SETs for resource servers.
	CAE CAEOptions

	// Log receives the bus's and the embedded server's warnings.
	Log *slog.Logger
}

// EmbeddedOptions configure the in-process NATS server.
type EmbeddedOptions struct {
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// Listen (host:port) also serves TCP clients; empty: nothing listens.
	// A listener requires NATSOptions.Token or NKeys.
	Listen string
	// NKeys are public user nkeys allowed to connect to Listen.
	NKeys []string
}

func (o *NATSOptions) setDefaults() {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.RelayLeaseTTL <= 0 {
		o.RelayLeaseTTL = DefaultRelayLeaseTTL
	}
	if o.GapWait <= 0 {
		o.GapWait = DefaultGapWait
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.RedeliveryMin <= 0 {
		o.RedeliveryMin = 200 * time.Millisecond
	}
	if o.RedeliveryMax < o.RedeliveryMin {
		o.RedeliveryMax = max(30*time.Second, o.RedeliveryMin)
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.CAE.setDefaults()
}

// NATS is the JetStream bus: a Local bus for synchronous subscribers, a
// relay that publishes the outbox to the stream, durable consumers and
// followers.
type NATS struct {
	*Local
	o   NATSOptions
	log *slog.Logger

	ns     *server.Server // embedded server, nil for external
	unlock func()         // releases the embedded store directory
	nc     *nats.Conn
	js     jetstream.JetStream
	relay  *relay
	// wakeStop ends the relay's wake-up subscription (nil: none).
	wakeStop func()

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	streamOK atomic.Bool // ensureStream succeeded (and no publish said otherwise since)

	// The CAE stream's connection when it lives in its own account of the
	// embedded server (subscriber nkeys); nil: the main connection.
	caeNC *nats.Conn
	caeJS jetstream.JetStream
	caeOK atomic.Bool // ensureCAEStream succeeded

	mu        sync.Mutex
	closed    bool
	consumers map[*consumer]struct{}
	followers map[*natsFollow]struct{}
}

var (
	_ Bus     = (*NATS)(nil)
	_ Durable = (*NATS)(nil)
)

// ErrClosed is returned by Consume and Follow after Close.
var ErrClosed = errors.New("bus: closed")

// OpenNATS starts the embedded server (o.URL empty) or connects to the
// external one, makes sure the stream exists and starts the relay. An
// unreachable external server is not an error: Publish goes on storing
// events, and the relay and consumers start once the server answers.
func OpenNATS(ctx context.Context, o NATSOptions) (_ *NATS, err error) {
	o.setDefaults()
	if !validSubjectPrefix(o.SubjectPrefix) {
		return nil, fmt.Errorf("bus: invalid subject prefix %q", o.SubjectPrefix)
	}
	if o.CAE.Enabled {
		if !validSubjectPrefix(o.CAE.SubjectPrefix) {
			return nil, fmt.Errorf("bus: invalid CAE subject prefix %q", o.CAE.SubjectPrefix)
		}
		if overlaps(o.CAE.SubjectPrefix, o.SubjectPrefix) {
			return nil, fmt.Errorf("bus: the CAE subject prefix %q overlaps the event prefix %q", o.CAE.SubjectPrefix, o.SubjectPrefix)
		}
		if o.CAE.Stream == o.Stream {
			return nil, fmt.Errorf("bus: the CAE stream cannot be the event stream %q", o.Stream)
		}
	}
	if len(o.CAE.SubscriberNKeys) > 0 && (o.URL != "" || o.Embedded.Listen == "" || !o.CAE.Enabled) {
		return nil, errors.New("bus: CAE subscriber nkeys need the CAE stream and the embedded server's listener")
	}
	n := &NATS{Local: NewLocal(), o: o, log: o.Log.With("component", "bus"), consumers: map[*consumer]struct{}{},
		followers: map[*natsFollow]struct{}{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if o.Outbox != nil {
		var lease Leaser
		if o.RelayOwner != "" {
			l, ok := o.Outbox.(Leaser)
			if !ok {
				return nil, errors.New("bus: RelayOwner needs an Outbox that holds leases")
			}
			lease = l
		}
		n.relay = newRelay(n, o.Outbox, lease, o.RelayOwner, o.RelayLeaseTTL) // before connecting: the connect handlers wake it
		n.relay.window = o.relayWindow
	}
	if o.URL == "" {
		if err := n.startEmbedded(); err != nil {
			return nil, err
		}
	} else if err := n.connectExternal(); err != nil {
		return nil, err
	}
	if n.js, err = jetstream.New(n.nc, jetstream.WithPublishAsyncTimeout(publishTimeout)); err != nil {
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	if n.nc.IsConnected() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := n.ensureStream(sctx); err != nil {
			if o.URL == "" {
				return nil, err // in-process: nothing to wait for
			}
			n.log.Warn("NATS stream not ready yet; events are stored and will be relayed when NATS answers", "stream", o.Stream, "err", err)
		}
		if o.CAE.Enabled {
			if err := n.ensureCAEStream(sctx); err != nil {
				if o.URL == "" {
					return nil, err
				}
				n.log.Warn("NATS CAE stream not ready yet", "stream", o.CAE.Stream, "err", err)
			}
		}
	} else {
		n.log.Warn("NATS unreachable; events are stored and will be relayed when it answers")
	}
	if o.CAE.Enabled && !n.caeOK.Load() {
		// Followers (ward gateway, rs/caenats) wait for the stream to
		// exist before they are ready: create it as soon as NATS can,
		// not only with the first SET, which may come much later.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.ensureCAEUntilDone()
		}()
	}
	if n.relay != nil {
		// Instances that do not hold the relay's lease wake the one that
		// does (see Publish); a lost wake-up costs a poll interval. Under
		// a lease, the relay listens while it holds it (lease.go).
		if n.relay.lease == nil {
			if err := n.listenWake(true); err != nil {
				return nil, err
			}
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.relay.run(n.ctx)
		}()
	}
	return n, nil
}

// listenWake subscribes to the relay's wake-up signal, or unsubscribes.
// Called by OpenNATS, then by the relay's goroutine only.
func (n *NATS) listenWake(on bool) error {
	if !on {
		if n.wakeStop != nil {
			n.wakeStop()
			n.wakeStop = nil
		}
		return nil
	}
	if n.wakeStop != nil {
		return nil
	}
	stop, err := n.relayWake().Listen(func([]byte) { n.relay.wake() })
	if err != nil {
		return err
	}
	n.wakeStop = stop
	return nil
}

// relayWake is the signal (empty messages, outside the stream) by which
// an instance that stored events wakes the relay of another: the relay of
// whichever instance holds the lease.
func (n *NATS) relayWake() *Signal { return n.Signal("relay.wake") }

func (n *NATS) connectExternal() error {
	opts := []nats.Option{
		nats.Name("ward"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(n.o.ReconnectWait),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				n.log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.log.Info("NATS connected", "server", c.ConnectedUrlRedacted())
			n.relay.wake()
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			n.log.Info("NATS connected", "server", c.ConnectedUrlRedacted())
			n.relay.wake()
		}),
	}
	if n.o.Token != "" {
		opts = append(opts, nats.Token(n.o.Token))
	}
	if n.o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(n.o.CredsFile))
	}
	nc, err := nats.Connect(n.o.URL, opts...)
	if err != nil {
		// The URL may hold a password: say what failed, not the URL.
		return fmt.Errorf("bus: connect to NATS: %s", redactURLs(err.Error(), n.o.URL))
	}
	n.nc = nc
	return nil
}

// redactURLs removes the configured URLs from an error text.
func redactURLs(msg, urls string) string {
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			msg = strings.ReplaceAll(msg, u, "[url]")
		}
	}
	return msg
}

// Publish delivers e to the synchronous subscribers (the audit persister
// stores it) and wakes the relay, which publishes it to the stream.
func (n *NATS) Publish(ctx context.Context, e *model.Event) error {
	err := n.Local.Publish(ctx, e)
	if n.relay != nil && n.relay.holding.Load() {
		n.relay.wake()
	} else {
		// The relay is another instance's: a core NATS message, not
		// stored (the relay also polls), sent after the event committed.
		_ = n.relayWake().Notify(nil)
	}
	return err
}

// RelayStats reports the relay's publishes to the stream: acknowledged
// (duplicates included) and failed (retried later from the outbox).
func (n *NATS) RelayStats() (published, failed int64) {
	if n.relay == nil {
		return 0, 0
	}
	return n.relay.counts()
}

// RelayRefused reports how many of the relay's messages the stream
// refused because their expected predecessor was not its last message
// (another relay was first, or an earlier one of the window failed).
func (n *NATS) RelayRefused() int64 {
	if n.relay == nil {
		return 0
	}
	n.relay.mu.Lock()
	defer n.relay.mu.Unlock()
	return n.relay.refused
}

// RelayHolding reports whether this instance's relay publishes: it holds
// the relay's lease, or needs none.
func (n *NATS) RelayHolding() bool { return n.relay != nil && n.relay.holding.Load() }

// Close stops the consumers and the relay, then the connection and the
// embedded server. Events stored but not yet relayed stay in the outbox:
// the next start (or another instance) publishes them.
func (n *NATS) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	cs := make([]*consumer, 0, len(n.consumers))
	for c := range n.consumers {
		cs = append(cs, c)
	}
	fs := make([]*natsFollow, 0, len(n.followers))
	for f := range n.followers {
		fs = append(fs, f)
	}
	n.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
	for _, f := range fs {
		f.stop()
	}
	n.cancel()
	n.wg.Wait()
	if n.nc != nil {
		_ = n.nc.FlushTimeout(time.Second) // acknowledgements in flight
		n.nc.Close()
	}
	if n.caeNC != nil {
		n.caeNC.Close()
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	if n.unlock != nil {
		n.unlock()
	}
	return nil
}

// clientURL is the embedded server's listener URL ("" when not listening).
func (n *NATS) clientURL() string {
	if n.ns == nil || n.o.Embedded.Listen == "" {
		return ""
	}
	return n.ns.ClientURL()
}

// Stream returns the stream's name (for tools and tests).
func (n *NATS) Stream() string { return n.o.Stream }

// JetStream returns the JetStream context (for tools and tests).
func (n *NATS) JetStream() jetstream.JetStream { return n.js }

// ensureStream creates the stream or brings its configuration up to date.
// An unchanged stream is left alone: an update is not free, and
// nats-server does not expect one to race consumer creation.
func (n *NATS) ensureStream(ctx context.Context) error {
	want := jetstream.StreamConfig{
		Name:        n.o.Stream,
		Description: "Ward domain events, relayed from the events table (outbox)",
		Subjects:    []string{n.o.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      n.o.MaxAge,
		Duplicates:  min(DuplicateWindow, n.o.MaxAge),
		Replicas:    n.o.Replicas,
	}
	if s, err := n.js.Stream(ctx, n.o.Stream); err == nil {
		have := s.CachedInfo().Config
		if slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage && have.MaxAge == want.MaxAge &&
			have.Duplicates == want.Duplicates && have.Replicas == want.Replicas && have.Retention == want.Retention {
			n.streamOK.Store(true)
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("bus: stream %s: %w", n.o.Stream, err)
	}
	if _, err := n.js.CreateOrUpdateStream(ctx, want); err != nil {
		return fmt.Errorf("bus: stream %s: %w", n.o.Stream, err)
	}
	n.streamOK.Store(true)
	return nil
}

// Subject returns the subject of events of type t: <prefix>.<type>, the
// type's dots kept as token separators (session.revoked ->
// ward.events.session.revoked). Characters a subject token cannot hold
// become '_', so a malformed type cannot become a wildcard.
func (n *NATS) Subject(t model.EventType) string { return subjectFor(n.o.SubjectPrefix, t) }

func subjectFor(prefix string, t model.EventType) string {
	toks := strings.Split(string(t), ".")
	for i, tok := range toks {
		toks[i] = sanitizeToken(tok)
	}
	return prefix + "." + strings.Join(toks, ".")
}

func sanitizeToken(tok string) string {
	if tok == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if tokenChar(r) {
			return r
		}
		return '_'
	}, tok)
}

func tokenChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

func validSubjectPrefix(p string) bool {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || sanitizeToken(tok) != tok {
			return false
		}
	}
	return true
}

// overlaps reports whether subjects under prefixes a and b can collide
// (one is a token-wise prefix of the other).
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}

// validName reports whether s can name a durable consumer: no
// whitespace, dots, wildcards or path separators.
func validName(s string) bool {
	return s != "" && len(s) <= 64 && sanitizeToken(s) == s
}
