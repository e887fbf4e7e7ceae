// Package tlsutil serves a TLS certificate that is reloaded from disk when
// its files change, so a renewed certificate (ACME, cert-manager) takes
// effect without a restart.
package tlsutil

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CheckInterval is how often, at most, the files are checked for changes.
const CheckInterval = time.Second

// Reloader holds a certificate loaded from a cert/key file pair and
// reloads it when either file's modification time or size changes. The
// files are checked at most once per CheckInterval, during a handshake.
// If a reload fails (for example, the cert was replaced but not yet the
// key), the previous certificate stays in use and the error is logged.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
	checked   time.Time
}

type stamp struct {
	mod  time.Time
	size int64
}

// Option adjusts a Reloader.
type Option func(*Reloader)

// WithClock sets the clock used to rate-limit file checks (tests).
func WithClock(now func() time.Time) Option { return func(r *Reloader) { r.now = now } }

// WithLogger sets the logger for reload messages.
func WithLogger(l *slog.Logger) Option { return func(r *Reloader) { r.log = l } }

// NewReloader loads the pair once; an error here is fatal for the caller.
func NewReloader(certFile, keyFile string, opts ...Option) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(r)
	}
	cs, ks, err := r.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %w", err)
	}
	r.cert, r.certStamp, r.keyStamp, r.checked = &cert, cs, ks, r.now()
	return r, nil
}

func (r *Reloader) stamps() (stamp, stamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return stamp{}, stamp{}, fmt.Errorf("tlsutil: %w", err)
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return stamp{}, stamp{}, fmt.Errorf("tlsutil: %w", err)
	}
	return stamp{c.ModTime(), c.Size()}, stamp{k.ModTime(), k.Size()}, nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Certificate(), nil
}

// Certificate returns the current certificate, reloading it first if the
// files changed and the last check is at least CheckInterval old.
func (r *Reloader) Certificate() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < CheckInterval {
		return r.cert
	}
	r.checked = now
	cs, ks, err := r.stamps()
	if err != nil {
		r.log.Warn("tls: cannot check certificate files; keeping the current certificate", "err", err)
		return r.cert
	}
	if cs == r.certStamp && ks == r.keyStamp {
		return r.cert
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Possibly mid-replacement; retry on a later check.
		r.log.Warn("tls: reloading certificate failed; keeping the current certificate", "err", err)
		return r.cert
	}
	r.cert, r.certStamp, r.keyStamp = &cert, cs, ks
	r.log.Info("tls: certificate reloaded", "cert_file", r.certFile)
	return r.cert
}

// ServerConfig returns a TLS server configuration using r (TLS 1.2+).
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
