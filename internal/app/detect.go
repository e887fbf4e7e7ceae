package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/detect"
	"github.com/ward-idp/ward/internal/risk/online"
)

// detectConfig is the detectors' configuration (risk_detection, its IP
// lists loaded), or false when they are off.
func detectConfig(cfg *config.Config) (detect.Config, bool, error) {
	if !cfg.RiskDetection.Enabled {
		return detect.Config{}, false, nil
	}
	dc, err := cfg.DetectConfig()
	if err != nil {
		return detect.Config{}, false, fmt.Errorf("app: risk_detection: %w", err)
	}
	return dc, true, nil
}

// ipListsReload is how often the IP list files of risk_detection are
// looked at (modification time and size) and read again when changed.
const ipListsReload = 30 * time.Second

// watchIPLists keeps dc's IP lists in step with their files until the
// application closes (a server only: a command-line tool reads them once).
func (a *App) watchIPLists(dc detect.Config, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		detect.WatchIPLists(ctx, ipListsReload, log, dc.AnonymousIPs, dc.MaliciousIPs, dc.CorporateIPs)
	}()
	a.closers = append(a.closers, func() error { cancel(); <-done; return nil })
}

// openDetectors starts the online detectors in a server: they follow the
// audit log under a lease (one instance at a time runs them), woken by
// every event this process stores, and record their findings as
// risk.detected events for the risk service.
func (a *App) openDetectors(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) error {
	dc, on, err := detectConfig(cfg)
	if err != nil {
		return err
	}
	if o.Tool || !on {
		return nil
	}
	d, err := online.Start(ctx, online.Options{Store: a.Store, Engine: detect.New(dc), Geo: a.Geo, Bus: a.Bus,
		Owner: instanceName(cfg, a), Log: log, Now: o.Now})
	if err != nil {
		return fmt.Errorf("app: risk detectors: %w", err)
	}
	a.Detectors = d
	a.watchIPLists(dc, log)
	unsub := a.Bus.Subscribe("risk-detect", func(context.Context, *model.Event) error {
		d.Wake()
		return nil
	})
	a.closers = append(a.closers, func() error {
		unsub()
		return d.Close()
	})
	return nil
}

// instanceName names this instance in the leases of the audit log's
// followers (SIEM sinks, detectors). SQLite with the embedded NATS has one
// serving process (the NATS store directory is locked): a stable name lets
// it take its leases back at once after a crash.
func instanceName(cfg *config.Config, a *App) string {
	if cfg.Storage.Driver == config.DriverSQLite && cfg.Bus.Driver == config.BusNATS && cfg.Bus.NATS.URL == "" {
		return "sqlite-single-node"
	}
	return fmt.Sprintf("%s-%d-%d", hostname(), os.Getpid(), a.Now().UnixNano())
}
