package gateway

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ward-idp/ward/rs/caenats"
)

// Pauses of ssf.mode nats: between two reconnection rounds (doubling from
// natsDelayMin) and between two attempts to start following the stream
// (doubling from natsFollowMin).
const (
	natsDelayMin  = 250 * time.Millisecond
	natsDelayMax  = 30 * time.Second
	natsFollowMin = time.Second
	natsFollowMax = 30 * time.Second
	// natsFollowTimeout bounds one attempt to look up the stream and
	// create the consumer.
	natsFollowTimeout = 10 * time.Second
)

// natsFollower feeds the gateway's Receiver from Ward's CAE stream in
// NATS (ssf.mode nats) with an rs/caenats Follower. The gateway's CAE
// state is complete, and the gateway ready, once the Follower's replay of
// the stored SETs has caught up.
type natsFollower struct {
	g      *Gateway
	url    string
	stream string
	auth   []any // log attributes naming the credentials, never holding them
	opts   []nats.Option

	conn     atomic.Pointer[nats.Conn]
	follower atomic.Pointer[caenats.Follower]
	closing  atomic.Bool
}

// natsMetrics is what /metrics shows of the follower.
type natsMetrics struct {
	stats               caenats.Stats
	connected, replayed bool
}

func (g *Gateway) newNATSFollower(cfg *Config) (*natsFollower, error) {
	s := cfg.SSF
	n := &natsFollower{g: g, url: s.NATSURL, stream: s.NATSStream}
	switch {
	case s.NATSNKeySeedFile != "":
		path := s.NATSNKeySeedFile
		pub, err := readNKeySeed(path)
		if err != nil {
			return nil, err
		}
		// The seed is read for each signature (each connection), not kept.
		sign := func(nonce []byte) ([]byte, error) {
			kp, err := loadNKey(path)
			if err != nil {
				return nil, err
			}
			defer kp.Wipe()
			return kp.Sign(nonce)
		}
		n.opts = append(n.opts, nats.Nkey(pub, sign))
		n.auth = []any{"auth", "nkey", "nkey", pub}
	case s.NATSCredsFile != "":
		n.opts = append(n.opts, nats.UserCredentials(s.NATSCredsFile))
		n.auth = []any{"auth", "creds", "creds_file", s.NATSCredsFile}
	case cfg.natsToken != "":
		n.opts = append(n.opts, nats.Token(cfg.natsToken))
		n.auth = []any{"auth", "token"}
	}
	return n, nil
}

func (n *natsFollower) metrics() natsMetrics {
	var m natsMetrics
	if f := n.follower.Load(); f != nil {
		m.stats = f.Stats()
	}
	if nc := n.conn.Load(); nc != nil {
		m.connected = nc.IsConnected()
	}
	m.replayed = n.g.caeReady.Load()
	return m
}

// reconnectDelay is the pause after a round of failed connection attempts
// to every server: doubling, capped, with 20 % jitter.
func reconnectDelay(attempts int) time.Duration {
	d := natsDelayMax
	if attempts < 8 {
		d = min(natsDelayMin<<max(attempts, 0), natsDelayMax)
	}
	return d + rand.N(d/5+1)
}

// run connects (retrying forever), follows the stream until ctx ends, then
// stops the Follower and closes the connection.
func (n *natsFollower) run(ctx context.Context) {
	log := n.g.log
	wake := make(chan struct{}, 1)
	notify := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	// No URL is logged: the servers are named by address only.
	opts := append(slices.Clone(n.opts),
		nats.Name("ward-gateway"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.IgnoreAuthErrorAbort(), // a key added to Ward later must still let us in
		nats.CustomReconnectDelay(reconnectDelay),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("gateway: connected to NATS", "server", nc.ConnectedAddr())
			notify()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("gateway: reconnected to NATS", "server", nc.ConnectedAddr())
			notify()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if !n.closing.Load() {
				log.Warn("gateway: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("gateway: cannot connect to NATS; retrying", append([]any{"err", err}, n.auth...)...)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if !n.closing.Load() {
				log.Warn("gateway: NATS error", append([]any{"err", err}, n.auth...)...)
			}
		}),
	)
	nc, err := nats.Connect(n.url, opts...)
	if err != nil { // only a bad option: connection failures are retried
		log.Error("gateway: cannot set up the NATS connection; the CAE stream will not be followed", "err", err)
		return
	}
	n.conn.Store(nc)
	defer func() {
		n.closing.Store(true)
		nc.Close()
	}()
	log.Info("gateway: following the CAE stream in NATS", append([]any{"stream", n.stream}, n.auth...)...)

	var f *caenats.Follower
	for wait := natsFollowMin; f == nil; wait = min(wait*2, natsFollowMax) {
		if nc.IsConnected() {
			fctx, cancel := context.WithTimeout(ctx, natsFollowTimeout)
			f, err = caenats.Follow(fctx, caenats.Config{Conn: nc, Receiver: n.g.receiver, Stream: n.stream,
				Logger: log, Now: n.g.opts.Now})
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("gateway: cannot follow the CAE stream yet; retrying", "stream", n.stream, "retry_in", wait.String(), "err", err)
		} else {
			attrs := append([]any{"retry_in", wait.String()}, n.auth...)
			if err := nc.LastError(); err != nil {
				attrs = append(attrs, "err", err)
				if strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
					attrs = append(attrs, "hint", "the server refuses these credentials; with Ward's embedded NATS, list the public nkey in Ward's ssf.nats.subscriber_nkeys")
				}
			}
			log.Warn("gateway: not connected to NATS; the CAE stream cannot be replayed yet (not ready)", attrs...)
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-time.After(wait):
		}
	}
	n.follower.Store(f)
	defer f.Close()
	select {
	case <-f.Ready():
		n.g.caeReady.Store(true)
		st := f.Stats()
		log.Info("gateway: CAE stream replayed", slog.String("stream", n.stream), slog.Int64("applied", st.Applied),
			slog.Int64("refused", st.Refused), slog.Int64("duplicates", st.Duplicates))
		n.g.logReady()
	case <-ctx.Done():
		return
	}
	<-ctx.Done()
}
