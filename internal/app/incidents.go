package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/risk"
)

// openIncidents starts the incident service: in a server, the consumer
// that correlates risk.detected into incidents; in every process, the
// operations and response actions (through the session, device,
// identity and risk services).
func (a *App) openIncidents(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) error {
	a.Incidents = incident.New(incident.Options{
		Store: a.Store, Bus: a.Bus, Now: o.Now, Log: log, Window: cfg.Incidents.Window, Retention: cfg.Incidents.Retention,
		Sessions: a.Sessions, Devices: a.Devices, Users: a.Identity, Risk: incidentRisk{a.Risk},
	})
	if err := a.Incidents.Start(ctx, incident.Wiring{Bus: a.Bus, Durable: a.Durable, Serve: !o.Tool}); err != nil {
		a.Incidents.Close()
		return fmt.Errorf("app: %w", err)
	}
	a.closers = append(a.closers, a.Incidents.Close)
	return nil
}

// incidentRisk is the incident service's view of the risk service.
type incidentRisk struct{ r *risk.Service }

func (x incidentRisk) SetUserLevel(ctx context.Context, actor, userID, level, reason string) error {
	return x.r.SetUserLevel(ctx, actor, userID, level, reason)
}

func (x incidentRisk) ConfirmCompromised(ctx context.Context, actor, userID, reason string) ([]string, error) {
	return x.r.ConfirmCompromised(ctx, actor, userID, reason)
}

// DismissDetection dismisses one detection; one the risk service does not
// hold (any more) or that is no longer active is not an error.
func (x incidentRisk) DismissDetection(ctx context.Context, actor, id, reason string) (bool, error) {
	_, err := x.r.Dismiss(ctx, actor, risk.Target{DetectionID: id}, reason)
	if errors.Is(err, risk.ErrNotFound) || errors.Is(err, risk.ErrNotActive) {
		return false, nil
	}
	return err == nil, err
}
