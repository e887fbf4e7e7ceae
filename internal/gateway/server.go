package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/tlsutil"
)

const maxHeaderBytes = 64 << 10

// usageFlushTimeout bounds the last usage report at shutdown.
const usageFlushTimeout = 5 * time.Second

// ListenAndServe listens on the configured addresses and serves until ctx
// ends (see Serve).
func (g *Gateway) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.base.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	var mln net.Listener
	if g.base.MetricsListen != "" {
		if mln, err = net.Listen("tcp", g.base.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("gateway: metrics listen: %w", err)
		}
	}
	return g.Serve(ctx, ln, mln)
}

// Serve serves the gateway on ln (HTTPS when tls is configured) and, if
// metricsLn is not nil, /metrics, /healthz and /readyz on metricsLn, and
// runs the background work (Run). When ctx ends it stops accepting
// connections, lets running requests finish for timeouts.shutdown, and
// sends the last usage records. It returns nil after a clean shutdown.
func (g *Gateway) Serve(ctx context.Context, ln, metricsLn net.Listener) error {
	cfg := g.base
	errLog := slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		IdleTimeout:       cfg.Timeouts.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	tlsOn := cfg.TLS.CertFile != ""
	if tlsOn {
		rl, err := tlsutil.NewReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, tlsutil.WithLogger(g.log))
		if err != nil {
			ln.Close()
			if metricsLn != nil {
				metricsLn.Close()
			}
			return fmt.Errorf("gateway: tls: %w", err)
		}
		srv.TLSConfig = rl.ServerConfig()
	}
	servers := []*http.Server{srv}
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle(PathMetrics, g.metrics)
		mux.HandleFunc(PathHealthz, func(w http.ResponseWriter, r *http.Request) { g.serveHealth(w, r, true, "") })
		mux.HandleFunc(PathReadyz, func(w http.ResponseWriter, r *http.Request) {
			why := g.notReady()
			g.serveHealth(w, r, why == "", why)
		})
		servers = append(servers, &http.Server{Handler: mux, ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
			IdleTimeout: cfg.Timeouts.Idle, MaxHeaderBytes: maxHeaderBytes, ErrorLog: errLog})
	}

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bgDone sync.WaitGroup
	bgDone.Go(func() { g.Run(bg) })

	attrs := []any{"addr", ln.Addr().String(), "tls", tlsOn, "issuer", cfg.Issuer, "external_url", g.table.Load().externalURL,
		"routes", len(g.table.Load().routes), "ssf", cfg.SSF.Mode}
	if metricsLn != nil {
		attrs = append(attrs, "metrics_addr", metricsLn.Addr().String())
	}
	g.log.Info("listening", attrs...)

	errc := make(chan error, len(servers))
	go func() {
		if tlsOn {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	if metricsLn != nil {
		go func() { errc <- servers[1].Serve(metricsLn) }()
	}
	var serveErr error
	received := 0
	select {
	case err := <-errc:
		received++
		serveErr = fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	g.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Timeouts.Shutdown)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			g.log.Warn("shutdown incomplete", "err", err)
			_ = s.Close()
		}
	}
	stopBG()
	bgDone.Wait()
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), usageFlushTimeout)
	defer ucancel()
	if err := g.Close(uctx); err != nil {
		g.log.Warn("usage reports not all sent", "err", err)
	}
	for ; received < len(servers); received++ {
		if err := <-errc; serveErr == nil && err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr = fmt.Errorf("gateway: serve: %w", err)
		}
	}
	g.log.Info("stopped")
	return serveErr
}
