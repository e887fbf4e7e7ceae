package app

import (
	"context"
	"github.com/ward-idp/ward/internal/audit"
	"time"
)

// MaintenanceInterval is how often a running server picks up keys rotated
// by another process (`ward keys rotate`, another instance), deletes keys
// past their retirement and purges expired codes, requests, JTIs, tokens
// and sessions.
const MaintenanceInterval = 30 * time.Second

// RunMaintenance runs Maintain every interval until ctx ends.
func (a *App) RunMaintenance(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.Maintain(ctx)
		}
	}
}

// Maintain does one round of housekeeping; failures are logged and retried
// on the next round.
func (a *App) Maintain(ctx context.Context) {
	if err := a.Keys.Reload(ctx); err != nil {
		a.Log.WarnContext(ctx, "maintenance: reload signing keys", "err", err)
	}
	if err := a.Keys.PurgeRetired(ctx); err != nil {
		a.Log.WarnContext(ctx, "maintenance: purge retired keys", "err", err)
	}
	if err := a.Store.PurgeExpired(ctx, a.Now()); err != nil {
		a.Log.WarnContext(ctx, "maintenance: purge expired records", "err", err)
	}
	if n, err := audit.Prune(ctx, a.Store, a.Now(), a.Config.Audit.Retention); err != nil {
		a.Log.WarnContext(ctx, "maintenance: audit retention", "err", err)
	} else if n > 0 {
		a.Log.InfoContext(ctx, "maintenance: audit events past their retention deleted", "events", n, "retention", a.Config.Audit.Retention)
	}
	if _, err := a.Devices.SweepStale(ctx); err != nil {
		a.Log.WarnContext(ctx, "maintenance: device compliance sweep", "err", err)
	}
}
