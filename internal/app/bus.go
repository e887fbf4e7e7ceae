package app

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
)

// openBus sets a.Bus and a.Durable from the bus configuration: the
// JetStream bus (embedded server, or the external cluster at
// bus.nats.url) with the outbox relay, or a Local bus for bus.driver
// local and for command-line tools.
func (a *App) openBus(ctx context.Context, o Options) error {
	c := a.Config.Bus
	switch {
	case c.Driver == config.BusLocal:
		a.Bus, a.Durable = bus.NewLocal(), bus.NoDurable{Reason: "bus.driver is local"}
		return nil
	case o.Tool:
		a.Bus, a.Durable = bus.NewLocal(), bus.NoDurable{Reason: "a command-line tool does not consume; the server relays its events"}
		return nil
	}
	n := c.NATS
	var token string
	if n.TokenEnv != "" {
		v, _ := o.LookupEnv(n.TokenEnv)
		if token = strings.TrimSpace(v); token == "" {
			return fmt.Errorf("app: bus.nats.token_env: $%s is not set", n.TokenEnv)
		}
	}
	// With an external NATS, every instance sharing the database and the
	// stream could relay: one at a time does, under a lease. The embedded
	// server's stream has this process as its only writer.
	var relayOwner string
	if n.URL.Reveal() != "" {
		relayOwner = instanceName(a.Config, a)
	}
	nb, err := bus.OpenNATS(ctx, bus.NATSOptions{
		URL:       n.URL.Reveal(),
		Token:     token,
		CredsFile: n.CredsFile,
		Embedded: bus.EmbeddedOptions{
			StoreDir: n.Embedded.StoreDir,
			Listen:   n.Embedded.Listen,
			NKeys:    n.Embedded.NKeys,
		},
		Stream:        n.Stream,
		SubjectPrefix: n.SubjectPrefix,
		MaxAge:        n.StreamMaxAge,
		Replicas:      n.Replicas,
		CAE: bus.CAEOptions{
			Enabled:         a.Config.SSF.NATS.Enabled,
			Stream:          a.Config.SSF.NATS.Stream,
			SubjectPrefix:   a.Config.SSF.NATS.SubjectPrefix,
			MaxAge:          a.Config.SSF.NATS.MaxAge,
			SubscriberNKeys: a.Config.SSF.NATS.SubscriberNKeys,
		},
		Outbox:     a.Store,
		RelayOwner: relayOwner,
		Log:        a.Log,
	})
	if errors.Is(err, bus.ErrStoreLocked) {
		return fmt.Errorf("app: %w: another Ward process uses the data directory %s; "+
			"run several instances against an external NATS (bus.nats.url)", err, a.Config.DataDir)
	}
	if err != nil {
		return fmt.Errorf("app: event bus: %w", err)
	}
	a.Bus, a.Durable = nb, nb
	if a.Config.SSF.NATS.Enabled {
		a.caeStream = nb
	}
	a.closers = append(a.closers, nb.Close)
	return nil
}
