package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/server"
	"github.com/ward-idp/ward/internal/tlsutil"
)

// HTTP server limits.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = config.HTTPWriteTimeout
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	shutdownTimeout   = 20 * time.Second
)

func newServeCmd(e *cliEnv) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the identity provider",
		Long: `Run the identity provider on the configured listen address: HTTPS when
tls.cert_file and tls.key_file are set (reloaded when the files change),
plain HTTP otherwise. SIGINT or SIGTERM shut it down gracefully.

--listen (or listen, $WARD_LISTEN) sets the address. With --dev the issuer
follows it; otherwise set issuer ($WARD_ISSUER) to the URL clients use.

With --dev, demo data is created and its credentials are printed to stdout;
the data lives in ~/.local/share/ward/dev (or $XDG_DATA_HOME/ward/dev)
unless data_dir is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.serve(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&e.listen, "listen", "", "host:port to listen on (default 127.0.0.1:8700, or listen in the configuration)")
	return cmd
}

func (e *cliEnv) serve(ctx context.Context) error {
	cfg, err := e.loadConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, e.stderr, slog.LevelDebug)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Listen first: with --dev and port 0 the issuer is the port we got.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	cfg.FollowListener(ln.Addr().String())

	a, err := app.OpenWith(ctx, cfg, log, app.Options{LookupEnv: e.lookupEnv, Version: readVersion().Version})
	if err != nil {
		return err
	}
	defer a.Close()
	h, err := server.New(a)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	go a.RunMaintenance(ctx, app.MaintenanceInterval)

	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(a.CAE.StopPolling) // SSF long polls answer at once
	if cfg.TLS.Enabled() {
		r, err := tlsutil.NewReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, tlsutil.WithLogger(log))
		if err != nil {
			return err
		}
		srv.TLSConfig = r.ServerConfig()
	}

	if cfg.Dev {
		fmt.Fprint(e.stdout, a.DevBanner())
	}
	log.Info("listening", "addr", ln.Addr().String(), "tls", cfg.TLS.Enabled(), "issuer", cfg.Issuer, "dev", cfg.Dev, "data_dir", dataDirOf(cfg))
	if !cfg.Console.Disabled {
		log.Info("web console", "url", strings.TrimSuffix(cfg.Issuer, "/")+"/console/")
	}

	errc := make(chan error, 2)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	msrv, err := serveMetrics(cfg, h.Metrics, log, errc)
	if err != nil {
		srv.Close()
		return err
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if msrv != nil {
		msrv.Close() // a scrape has nothing to finish
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// serveMetrics serves /metrics on metrics.listen (nothing when it is
// empty): plain HTTP on its own listener, apart from the issuer's, so
// that a network policy or firewall can keep it to the monitoring
// system. A failure of that server is sent to errc.
func serveMetrics(cfg *config.Config, h http.Handler, log *slog.Logger, errc chan<- error) (*http.Server, error) {
	if cfg.Metrics.Listen == "" || h == nil {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("metrics", "addr", ln.Addr().String(), "path", "/metrics")
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return srv, nil
}

// dataDirOf is where the configuration keeps Ward's data, as an absolute
// path (the start-up log says it, so that a second data directory created
// by running from another folder does not go unnoticed).
func dataDirOf(cfg *config.Config) string {
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		return abs
	}
	return cfg.DataDir
}
