package main

// The investigation graph: `ward graph --user U | --session S | --device D
// | --ip IP [--from --to] [--json]`, the same graph as the admin API's
// GET /graph, read from the server's database.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/graph"
)

func newGraphCmd(e *cliEnv) *cobra.Command {
	var users, sessions, devices, ips []string
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "graph --user U | --session S | --device D | --ip IP [--from T] [--to T] [--json]",
		Short: "The investigation graph of users, sessions, devices or addresses: root cause, entities, relations over time",
		Long: `Draw the investigation graph (docs/secops.md, "Investigation graph"): the
entities that the events of the named users, sessions, devices and IP
addresses involve within the window (users, sessions, devices, clients,
addresses with their autonomous system and country, access tokens,
refresh-token generations, resources, proof keys, risk detections), their
relations over time, and the root cause of a token theft when the
detections and events show one. The text shows the root cause first, then
the entities and the relations in time order; --json prints the admin
API's JSON. Each of --user (a username or user id), --session, --device
and --ip may repeat (at most 20 together). --from and --to take a duration
ago (24h) or an RFC 3339 time; the default window is the last 7 days.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			var f, t time.Time
			var err error
			if from != "" {
				if f, err = parseSince(from, now); err != nil {
					return &exitError{code: exitUsage, err: fmt.Errorf("--from: %w", err)}
				}
			}
			if to != "" {
				if t, err = parseSince(to, now); err != nil {
					return &exitError{code: exitUsage, err: fmt.Errorf("--to: %w", err)}
				}
			}
			// Checked before opening anything; users are resolved after.
			if _, err := graph.NewQuery(users, sessions, devices, ips, f, t, now); err != nil {
				return &exitError{code: exitUsage, err: errors.New(strings.TrimPrefix(err.Error(), graph.ErrInvalidQuery.Error()+": "))}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				ids := make([]string, 0, len(users))
				for _, ref := range users {
					u, err := findUser(ctx, a, ref)
					if err != nil {
						return err
					}
					ids = append(ids, u.ID)
				}
				q, err := graph.NewQuery(ids, sessions, devices, ips, f, t, a.Now())
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				g, err := a.Graph.Graph(ctx, q)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(g)
				}
				return graph.WriteText(e.stdout, g)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&users, "user", nil, "a user (username or id; repeatable)")
	fl.StringArrayVar(&sessions, "session", nil, "a session id (repeatable)")
	fl.StringArrayVar(&devices, "device", nil, "a device id (repeatable)")
	fl.StringArrayVar(&ips, "ip", nil, "an IP address (repeatable)")
	fl.StringVar(&from, "from", "", "start of the window: a duration ago (24h) or an RFC 3339 time (default: 7 days before --to)")
	fl.StringVar(&to, "to", "", "end of the window (exclusive): a duration ago or an RFC 3339 time (default: now)")
	fl.BoolVar(&asJSON, "json", false, "print the graph as JSON (the admin API's GET /graph)")
	return cmd
}
