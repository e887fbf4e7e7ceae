package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ErrStoreLocked is returned when another process runs an embedded NATS
// server on the same store directory (JetStream's files must have one
// owner; nats-server does not check this itself).
var ErrStoreLocked = errors.New("bus: the embedded NATS store is in use by another process")

// startEmbedded starts nats-server in-process with JetStream under
// StoreDir and connects to it without a socket.
func (n *NATS) startEmbedded() error {
	e := n.o.Embedded
	if e.StoreDir == "" {
		return errors.New("bus: embedded NATS needs a store directory")
	}
	if err := os.MkdirAll(e.StoreDir, 0o700); err != nil {
		return fmt.Errorf("bus: create NATS store directory: %w", err)
	}
	unlock, err := lockDir(filepath.Join(e.StoreDir, "ward.lock"))
	if err != nil {
		return err
	}
	n.unlock = unlock

	opts := &server.Options{
		ServerName:             "ward-embedded",
		JetStream:              true,
		StoreDir:               e.StoreDir,
		DontListen:             e.Listen == "",
		NoSigs:                 true,
		DisableJetStreamBanner: true,
	}
	var (
		clientOpts []nats.Option
		caePub     string
		caeSign    nats.SignatureHandler
	)
	if e.Listen != "" {
		host, port, err := net.SplitHostPort(e.Listen)
		if err != nil {
			return fmt.Errorf("bus: embedded listen address: %w", err)
		}
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return fmt.Errorf("bus: embedded listen port: %w", err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
		}
		opts.Host = host
		subs := n.o.CAE.SubscriberNKeys
		switch {
		case n.o.Token != "" && len(subs) > 0:
			// nats-server checks a token only when no nkeys are configured.
			return errors.New("bus: CAE subscriber nkeys cannot be combined with a token: use nkeys")
		case n.o.Token != "":
			opts.Authorization = n.o.Token
			clientOpts = append(clientOpts, nats.Token(n.o.Token))
		case len(e.NKeys) > 0 || len(subs) > 0:
			for _, k := range e.NKeys {
				if !nkeys.IsValidPublicUserKey(k) {
					return fmt.Errorf("bus: %q is not a public user nkey", k)
				}
				opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
			}
			// Our own in-process connection authenticates like any other
			// client, with a key that lives as long as this process.
			pub, sign, err := processKey()
			if err != nil {
				return err
			}
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub})
			clientOpts = append(clientOpts, nats.Nkey(pub, sign))
			if len(subs) > 0 {
				// Resource servers get an account of their own holding
				// only the CAE stream, where they may only read it.
				acc := server.NewAccount(CAEAccount)
				opts.Accounts = append(opts.Accounts, acc)
				perms := subscriberPermissions(n.o.CAE.Stream)
				for _, k := range subs {
					if !nkeys.IsValidPublicUserKey(k) {
						return fmt.Errorf("bus: %q is not a public user nkey", k)
					}
					opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k, Account: acc, Permissions: perms})
				}
				if caePub, caeSign, err = processKey(); err != nil {
					return err
				}
				opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: caePub, Account: acc})
			}
		default:
			return errors.New("bus: a listening embedded NATS server needs a token or nkeys")
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("bus: embedded NATS: %w", err)
	}
	ns.SetLoggerV2(serverLogger{n.o.Log.With("component", "nats-server")}, false, false, false)
	n.ns = ns
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("bus: embedded NATS did not start")
	}
	if !ns.JetStreamEnabled() {
		return errors.New("bus: embedded NATS started without JetStream (see the log)")
	}
	clientOpts = append(clientOpts, nats.Name("ward"), nats.InProcessServer(ns))
	nc, err := nats.Connect("", clientOpts...)
	if err != nil {
		return fmt.Errorf("bus: connect to embedded NATS: %w", err)
	}
	n.nc = nc
	if caePub != "" {
		if err := n.connectCAEAccount(caePub, caeSign); err != nil {
			return err
		}
	}
	if e.Listen != "" {
		n.log.Info("embedded NATS listening", "addr", ns.ClientURL())
	}
	return nil
}

// processKey creates a user nkey that lives as long as this process.
func processKey() (string, nats.SignatureHandler, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", nil, fmt.Errorf("bus: nkey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", nil, fmt.Errorf("bus: nkey: %w", err)
	}
	return pub, kp.Sign, nil
}

// serverLogger sends nats-server's log to slog. Notices (start-up
// chatter) are debug messages here.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Tracef(format string, v ...any)  {}
