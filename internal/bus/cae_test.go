package bus

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// TestBusCAEStream (conformance): PublishCAE stores each SET once under
// <prefix>.<name>, de-duplicating by message id, in a stream of its own.
func TestBusCAEStream(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		o := be.base(t)
		stream, prefix := uniqueNames()
		o.CAE = CAEOptions{Enabled: true, Stream: stream + "_CAE", SubjectPrefix: prefix + "-cae", MaxAge: 3 * time.Hour}
		if o.URL != "" {
			t.Cleanup(func() { deleteStream(o.URL, o.CAE.Stream) })
		}
		in := openInstance(t, openStore(t), o)
		ctx := context.Background()
		for _, m := range []struct{ name, id, data string }{
			{"caep.session-revoked", "ev1/0", "set-1"},
			{"risc.account-disabled", "ev2/0", "set-2"},
			{"caep.session-revoked", "ev1/0", "set-1-again"}, // the same event handled twice
		} {
			if err := in.PublishCAE(ctx, m.name, m.id, []byte(m.data)); err != nil {
				t.Fatal(err)
			}
		}
		s, err := in.caeJetStream().Stream(ctx, o.CAE.Stream)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if info.State.Msgs != 2 || info.Config.MaxAge != 3*time.Hour || info.Config.Subjects[0] != o.CAE.SubjectPrefix+".>" {
			t.Fatalf("stream: %d messages, max age %v, subjects %v", info.State.Msgs, info.Config.MaxAge, info.Config.Subjects)
		}
		m, err := s.GetMsg(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != o.CAE.SubjectPrefix+".risc.account-disabled" || string(m.Data) != "set-2" {
			t.Fatalf("message 2: %s %q", m.Subject, m.Data)
		}
		// The domain-event stream holds none of it.
		if n := streamMsgs(t, in.NATS); n != 0 {
			t.Fatalf("event stream holds %d messages", n)
		}
	})
}

func TestBusCAEOptionsRefused(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	for name, mod := range map[string]func(*NATSOptions){
		"overlapping prefix": func(o *NATSOptions) { o.CAE.SubjectPrefix = o.SubjectPrefix + ".cae" },
		"same stream":        func(o *NATSOptions) { o.CAE.Stream = o.Stream },
		"keys with a token":  func(o *NATSOptions) { o.CAE.SubscriberNKeys = []string{pub} },
		"keys, no listener": func(o *NATSOptions) {
			o.Token, o.Embedded.Listen, o.CAE.SubscriberNKeys = "", "", []string{pub}
		},
		"not a key": func(o *NATSOptions) { o.Token, o.CAE.SubscriberNKeys = "", []string{"UNOTAKEY"} },
	} {
		t.Run(name, func(t *testing.T) {
			o := embeddedBackend.base(t)
			o.CAE = CAEOptions{Enabled: true, Stream: o.Stream + "_CAE", SubjectPrefix: o.SubjectPrefix + "-cae"}
			o.Outbox = openStore(t)
			o.Log = testLog(t)
			mod(&o)
			if n, err := OpenNATS(context.Background(), o); err == nil {
				n.Close()
				t.Fatal("opened")
			} else if strings.Contains(err.Error(), "token-") {
				t.Fatalf("error names the token: %v", err)
			}
		})
	}
}

// TestBusCAESubscriberAccount: with subscriber keys, the CAE stream lives
// in an account of its own, where a subscriber finds it and Ward's
// events are out of reach; Ward's own key still reaches its events.
func TestBusCAESubscriberAccount(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	admin, _ := nkeys.CreateUser()
	adminPub, _ := admin.PublicKey()
	o := embeddedBackend.base(t)
	o.Token = ""
	o.Embedded.NKeys = []string{adminPub}
	o.CAE = CAEOptions{Enabled: true, Stream: o.Stream + "_CAE", SubjectPrefix: o.SubjectPrefix + "-cae", SubscriberNKeys: []string{pub}}
	in := openInstance(t, openStore(t), o)
	publishN(t, in, 3)
	if err := in.PublishCAE(context.Background(), "caep.session-revoked", "x/0", []byte("set")); err != nil {
		t.Fatal(err)
	}
	look := func(kp nkeys.KeyPair, stream string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p, _ := kp.PublicKey()
		nc, err := nats.Connect(in.ClientURL(), nats.Nkey(p, kp.Sign))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		_, err = js.Stream(ctx, stream)
		return err
	}
	if err := look(kp, o.CAE.Stream); err != nil {
		t.Fatalf("subscriber cannot see the CAE stream: %v", err)
	}
	if err := look(kp, o.Stream); err == nil {
		t.Fatal("subscriber sees the event stream")
	}
	if err := look(admin, o.Stream); err != nil {
		t.Fatalf("an nkey user of Ward's account cannot see the event stream: %v", err)
	}
	waitFor(t, 10*time.Second, "3 events relayed", func() bool { return streamMsgs(t, in.NATS) == 3 })
}

// TestBusConsumeOnlyNew (conformance): a consumer created with OnlyNew
// skips the history the stream already holds, then resumes where it was
// after a stop, like any durable consumer.
func TestBusConsumeOnlyNew(t *testing.T) {
	forBackends(t, func(t *testing.T, be backend) {
		in := openInstance(t, openStore(t), be.base(t))
		old := publishN(t, in, 5)
		waitFor(t, 10*time.Second, "5 events relayed", func() bool { return streamMsgs(t, in.NATS) == 5 })
		g := newGot()
		stop, err := in.Consume(context.Background(), "only-new", nil, g.handle, OnlyNew())
		if err != nil {
			t.Fatal(err)
		}
		// The consumer exists once it has been created on the server.
		waitFor(t, 10*time.Second, "consumer created", func() bool {
			_, err := in.js.Consumer(context.Background(), in.Stream(), "only-new")
			return err == nil
		})
		fresh := publishN(t, in, 3)
		waitFor(t, 10*time.Second, "3 new events", func() bool { return g.uniqueIDs() == 3 })
		stop()
		later := publishN(t, in, 2)
		g2 := newGot()
		stop2, err := in.Consume(context.Background(), "only-new", nil, g2.handle, OnlyNew())
		if err != nil {
			t.Fatal(err)
		}
		defer stop2()
		waitFor(t, 10*time.Second, "2 events after the restart", func() bool { return g2.uniqueIDs() == 2 })
		evs, _ := g.events()
		evs2, _ := g2.events()
		seen := map[string]bool{}
		for _, e := range append(evs, evs2...) {
			seen[e.ID] = true
		}
		for _, id := range old {
			if seen[id] {
				t.Errorf("history event %s delivered", id)
			}
		}
		for _, id := range append(fresh, later...) {
			if !seen[id] {
				t.Errorf("event %s not delivered", id)
			}
		}
	})
}

// TestBusCAEStreamCreatedWhenNATSAnswers: Ward started while its NATS
// was unreachable (or could not yet place the stream) creates the CAE
// stream as soon as NATS answers, without waiting for a first SET:
// followers (ward gateway) are not ready until the stream exists, so
// they would otherwise refuse every request until the first revocation.
func TestBusCAEStreamCreatedWhenNATSAnswers(t *testing.T) {
	port := freeTCPPort(t)
	stream, prefix := uniqueNames()
	o := NATSOptions{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Stream: stream, SubjectPrefix: prefix,
		ReconnectWait: 50 * time.Millisecond, Log: testLog(t),
		CAE: CAEOptions{Enabled: true, Stream: stream + "_CAE", SubjectPrefix: prefix + "-cae", MaxAge: 3 * time.Hour}}
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	// NATS comes up after Ward.
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: filepath.Join(t.TempDir(), "nats"), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	waitFor(t, 15*time.Second, "the CAE stream to be created without any SET", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Stream(ctx, o.CAE.Stream)
		return err == nil
	})
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
