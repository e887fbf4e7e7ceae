package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ward-idp/ward/internal/audit/export"
	"github.com/ward-idp/ward/internal/audit/ocsf"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
)

// openExport starts the SIEM export sinks of a server (none in a
// command-line tool: the running server exports the events a tool
// stores). Every local event wakes the sinks; they read the events table
// on their own goroutines, so the request path only sends a wake-up.
func (a *App) openExport(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) error {
	if o.Tool || len(cfg.Export.Sinks) == 0 {
		return nil
	}
	var sinks []export.SinkConfig
	closeAll := func() {
		for _, s := range sinks {
			s.Sink.Close()
		}
	}
	for i, sc := range cfg.Export.Sinks {
		s, err := newSink(sc, log, o.LookupEnv)
		if err != nil {
			closeAll()
			return fmt.Errorf("app: export.sinks[%d] (%s): %w", i, sc.Name, err)
		}
		b := export.Batching{MaxEvents: sc.MaxEvents, MaxBytes: sc.MaxBytes, MaxWait: sc.MaxWait}
		if sc.Type == config.ExportWebhook && b.MaxWait == 0 {
			b.MaxWait = time.Second
		}
		start := export.StartOldest
		if sc.Start == "now" {
			start = export.StartNow
		}
		sinks = append(sinks, export.SinkConfig{Name: sc.Name, Sink: s, Batch: b, MinBackoff: sc.MinBackoff, MaxBackoff: sc.MaxBackoff, Start: start})
	}
	owner := instanceName(cfg, a)
	e, err := export.Start(ctx, export.Options{Store: a.Store, Mapper: ocsf.NewMapper(o.Version), Owner: owner, Log: log,
		PollInterval: cfg.Export.PollInterval}, sinks)
	if err != nil {
		closeAll()
		return fmt.Errorf("app: %w", err)
	}
	a.exporter = e
	unsub := a.Bus.Subscribe("export", func(context.Context, *model.Event) error {
		e.Wake()
		return nil
	})
	a.closers = append(a.closers, func() error {
		unsub()
		return e.Close()
	})
	return nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "ward"
	}
	return h
}

func newSink(sc config.ExportSink, log *slog.Logger, lookup func(string) (string, bool)) (export.Sink, error) {
	switch sc.Type {
	case config.ExportFile:
		f := sc.File
		return export.NewFileSink(export.FileOptions{Path: f.Path, MaxBytes: f.MaxBytes, MaxAge: f.MaxAge, MaxFiles: f.MaxFiles, Fsync: f.Fsync})
	case config.ExportWebhook:
		w := sc.Webhook
		secret, ok := lookup(w.SecretEnv)
		if !ok || secret == "" {
			return nil, fmt.Errorf("webhook.secret_env: $%s is not set", w.SecretEnv)
		}
		headers := map[string]string{}
		for h, env := range w.HeadersEnv {
			v, ok := lookup(env)
			if !ok || v == "" {
				return nil, fmt.Errorf("webhook.headers_env.%s: $%s is not set", h, env)
			}
			headers[h] = v
		}
		return export.NewWebhookSink(export.WebhookOptions{URL: w.URL, Secret: []byte(secret), SignatureHeader: w.SignatureHeader,
			Headers: headers, Format: w.Format, SourceType: w.SourceType, CAFile: w.CAFile, Timeout: w.Timeout, Log: log})
	case config.ExportSyslog:
		s := sc.Syslog
		fac := export.Facilities["authpriv"]
		if s.Facility != "" {
			fac = export.Facilities[s.Facility]
		}
		return export.NewSyslogSink(export.SyslogOptions{Address: s.Address, CAFile: s.CAFile, ServerName: s.ServerName,
			Facility: fac, Hostname: s.Hostname, AppName: s.AppName, SDID: s.StructuredDataID})
	}
	return nil, fmt.Errorf("unknown sink type %q", sc.Type)
}
