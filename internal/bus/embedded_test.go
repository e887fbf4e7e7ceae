package bus

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// A listening embedded server admits only authenticated clients; our own
// in-process connection authenticates too (the relay works).
func TestEmbeddedListenerAuth(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	stranger, _ := nkeys.CreateUser()
	strangerPub, _ := stranger.PublicKey()
	for _, tc := range []struct {
		name  string
		token string
		nkeys []string
		good  nats.Option
		bad   []nats.Option
	}{
		{"token", "s3cret-token", nil, nats.Token("s3cret-token"), []nats.Option{nats.Token("wrong")}},
		{"nkeys", "", []string{pub}, nats.Nkey(pub, kp.Sign), []nats.Option{nats.Nkey(strangerPub, stranger.Sign)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			o := embeddedBackend.base(t)
			o.Token, o.Embedded.NKeys = tc.token, tc.nkeys
			in := openInstance(t, st, o)
			url := in.clientURL()
			if url == "" {
				t.Fatal("not listening")
			}
			if nc, err := nats.Connect(url, tc.good, nats.Timeout(2*time.Second)); err != nil {
				t.Errorf("authenticated client refused: %v", err)
			} else {
				nc.Close()
			}
			for _, bad := range append(tc.bad, nats.Name("anonymous")) {
				if nc, err := nats.Connect(url, bad, nats.Timeout(2*time.Second)); err == nil {
					nc.Close()
					t.Error("a client without the right credentials was admitted")
				}
			}
			publishN(t, in, 3)
			waitFor(t, 5*time.Second, "the relay", func() bool { return streamMsgs(t, in.NATS) == 3 })
		})
	}
}

func TestEmbeddedNotListeningByDefault(t *testing.T) {
	o := NATSOptions{Embedded: EmbeddedOptions{StoreDir: filepath.Join(t.TempDir(), "nats")}}
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.ns.ClientURL() != "" && n.ns.Addr() != nil {
		t.Errorf("the embedded server listens on %v", n.ns.Addr())
	}
	if _, err := OpenNATS(context.Background(), o); !errors.Is(err, ErrStoreLocked) {
		t.Errorf("second server on the same store: %v, want ErrStoreLocked", err)
	}
}

func TestEmbeddedListenNeedsAuth(t *testing.T) {
	o := NATSOptions{Embedded: EmbeddedOptions{StoreDir: filepath.Join(t.TempDir(), "nats"), Listen: "127.0.0.1:0"}}
	if _, err := OpenNATS(context.Background(), o); err == nil {
		t.Fatal("a listening server without authentication started")
	}
}
