package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The CAE stream carries signed Security Event Tokens to resource servers
// that follow Ward over NATS instead of an SSF stream (docs/ssf.md,
// "Direct NATS"). It is separate from the domain-event stream: those
// events hold personal data (IP addresses, user agents) and drive Ward's
// own consumers, while anything in the CAE stream is signed and meant for
// every resource.
const (
	DefaultCAEStream        = "WARD_CAE"
	DefaultCAESubjectPrefix = "ward.cae"
	// DefaultCAEMaxAge covers the longest access token (24 h for CAE
	// clients) plus an hour: a resource that starts replays every event
	// that can still affect a live token.
	DefaultCAEMaxAge = 25 * time.Hour
	// CAEAccount is the embedded server's account of resource servers
	// (subscriber nkeys): it holds the CAE stream and nothing else.
	CAEAccount = "WARD_CAE"
	// maxCAEConsumers bounds the consumers subscribers may create in the
	// CAE account (each following resource has one).
	maxCAEConsumers = 20000
)

// CAEOptions configure the CAE stream.
type CAEOptions struct {
	// Enabled creates the stream and lets PublishCAE publish to it.
	Enabled bool
	// Stream and SubjectPrefix name the stream and its subjects
	// (<prefix>.<caep|risc|ssf>.<event name>).
	Stream        string
	SubjectPrefix string
	// MaxAge is how long the stream keeps SETs (DefaultCAEMaxAge).
	MaxAge time.Duration
	// SubscriberNKeys are the public user nkeys of resource servers
	// allowed to follow the stream through the embedded server's
	// listener. They live in their own account (CAEAccount) that holds
	// only the CAE stream, and may only read it (SubscriberPermissions).
	SubscriberNKeys []string
}

func (o *CAEOptions) setDefaults() {
	if o.Stream == "" {
		o.Stream = DefaultCAEStream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultCAESubjectPrefix
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultCAEMaxAge
	}
}

// SubscriberPermissions are what a resource server needs to follow the
// CAE stream with an ordered consumer, and nothing more: create, read,
// fetch from and delete ephemeral consumers of that stream, read the
// stream's state and the account's JetStream limits, and receive on its
// own inbox. It cannot publish to the
// stream, create durable consumers, purge or delete anything but its
// consumers. Operators of an external NATS give resource users the same
// (docs/ssf.md).
func SubscriberPermissions(stream string) (publish, subscribe []string) {
	api := "$JS.API."
	return []string{
			api + "CONSUMER.CREATE." + stream,
			api + "CONSUMER.CREATE." + stream + ".>",
			api + "CONSUMER.MSG.NEXT." + stream + ".>",
			api + "CONSUMER.INFO." + stream + ".>",
			api + "CONSUMER.DELETE." + stream + ".>",
			api + "STREAM.INFO." + stream,
			api + "INFO", // the account's own JetStream limits; clients ask by default
		},
		[]string{"_INBOX.>"}
}

func subscriberPermissions(stream string) *server.Permissions {
	pub, sub := SubscriberPermissions(stream)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// ClientURL is the embedded server's listener URL ("" when it does not
// listen or the server is external).
func (n *NATS) ClientURL() string { return n.clientURL() }

// CAEStream returns the CAE stream's name and subject prefix.
func (n *NATS) CAEStream() (stream, subjectPrefix string) {
	return n.o.CAE.Stream, n.o.CAE.SubjectPrefix
}

// CAEPublisher publishes signed SETs to the CAE stream that resource
// servers follow (a NATS bus with CAEOptions.Enabled is one).
type CAEPublisher interface {
	// PublishCAE publishes one SET under <prefix>.<name>, de-duplicated
	// by msgID.
	PublishCAE(ctx context.Context, name, msgID string, set []byte) error
}

var _ CAEPublisher = (*NATS)(nil)

// PublishCAE publishes one signed SET to <prefix>.<name>. msgID
// de-duplicates a SET published again within the duplicate window (an
// event handled twice after a restart). It waits for the stream's
// acknowledgement, so a nil error means the SET is stored.
func (n *NATS) PublishCAE(ctx context.Context, name, msgID string, set []byte) error {
	if !n.o.CAE.Enabled {
		return errors.New("bus: the CAE stream is not enabled")
	}
	js := n.caeJetStream()
	if !n.caeOK.Load() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := n.ensureCAEStream(sctx)
		cancel()
		if err != nil {
			return err
		}
	}
	subj := n.o.CAE.SubjectPrefix + "." + name
	if _, err := js.Publish(ctx, subj, set, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(n.o.CAE.Stream)); err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
			n.caeOK.Store(false)
		}
		return fmt.Errorf("bus: publish to %s: %w", n.o.CAE.Stream, err)
	}
	return nil
}

// CAEJetStream is the JetStream context of the CAE stream's account (the
// embedded server's CAE account, or the bus's own with an external
// server), for managing the stream's consumers.
func (n *NATS) CAEJetStream() jetstream.JetStream { return n.caeJetStream() }

func (n *NATS) caeJetStream() jetstream.JetStream {
	if n.caeJS != nil {
		return n.caeJS
	}
	return n.js
}

// ensureCAEUntilDone retries ensureCAEStream (1 s, doubling up to 30 s)
// until it succeeds or the bus closes: at start the NATS cluster may
// be unreachable or not yet able to place the stream's replicas.
func (n *NATS) ensureCAEUntilDone() {
	wait := time.Second
	for !n.caeOK.Load() {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
		if !n.nc.IsConnected() {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		err := n.ensureCAEStream(ctx)
		cancel()
		if err == nil {
			n.log.Info("NATS CAE stream ready", "stream", n.o.CAE.Stream)
			return
		}
	}
}

// ensureCAEStream creates the CAE stream or brings it up to date.
func (n *NATS) ensureCAEStream(ctx context.Context) error {
	o := n.o.CAE
	want := jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "Ward Continuous Access Evaluation: signed CAEP/RISC SETs for resource servers",
		Subjects:    []string{o.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		Duplicates:  min(DuplicateWindow, o.MaxAge),
		Replicas:    n.o.Replicas,
	}
	js := n.caeJetStream()
	if s, err := js.Stream(ctx, o.Stream); err == nil {
		have := s.CachedInfo().Config
		if len(have.Subjects) == 1 && have.Subjects[0] == want.Subjects[0] && have.MaxAge == want.MaxAge &&
			have.Duplicates == want.Duplicates && have.Replicas == want.Replicas {
			n.caeOK.Store(true)
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("bus: stream %s: %w", o.Stream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, want); err != nil {
		return fmt.Errorf("bus: stream %s: %w", o.Stream, err)
	}
	n.caeOK.Store(true)
	return nil
}

func noLimits() server.JetStreamAccountLimits {
	return server.JetStreamAccountLimits{MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1, MaxAckPending: -1,
		MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1}
}

// connectCAEAccount enables JetStream in the embedded server's CAE account
// and connects Ward's publisher to it in-process.
func (n *NATS) connectCAEAccount(pub string, sign nats.SignatureHandler) error {
	// With accounts configured, nats-server enables JetStream for none of
	// them by itself: Ward's own (global) account gets no limits, the CAE
	// account its one stream and a bounded number of consumers.
	if g := n.ns.GlobalAccount(); !g.JetStreamEnabled() {
		if err := g.EnableJetStream(map[string]server.JetStreamAccountLimits{"": noLimits()}, nil); err != nil {
			return fmt.Errorf("bus: JetStream for Ward's account: %w", err)
		}
	}
	acc, err := n.ns.LookupAccount(CAEAccount)
	if err != nil {
		return fmt.Errorf("bus: CAE account: %w", err)
	}
	if !acc.JetStreamEnabled() {
		l := noLimits()
		l.MaxStreams, l.MaxConsumers = 1, maxCAEConsumers
		if err := acc.EnableJetStream(map[string]server.JetStreamAccountLimits{"": l}, nil); err != nil {
			return fmt.Errorf("bus: JetStream for the CAE account: %w", err)
		}
	}
	nc, err := nats.Connect("", nats.Name("ward-cae"), nats.InProcessServer(n.ns), nats.Nkey(pub, sign))
	if err != nil {
		return fmt.Errorf("bus: connect to the CAE account: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("bus: jetstream (CAE account): %w", err)
	}
	n.caeNC, n.caeJS = nc, js
	return nil
}
