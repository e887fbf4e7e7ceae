package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/model"
)

// newSSFCmd is the transmitter's side of the Shared Signals streams:
// receivers manage their own streams over HTTP (docs/ssf.md); an
// administrator sees them all and can pause, disable or enable any.
func newSSFCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("ssf", "Shared Signals streams (CAE): list them, pause, disable or enable one")
	list := &cobra.Command{
		Use:   "list",
		Short: "List every receiver's streams with their status and delivery",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				sts, err := a.CAE.ListStreams(ctx, "")
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STREAM\tRECEIVER\tDELIVERY\tSTATUS\tENDPOINT\tUPDATED")
				for _, st := range sts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.ID, st.ClientID, deliveryName(st.Method), st.Status,
						dash(st.EndpointURL), st.UpdatedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	var reason string
	status := &cobra.Command{
		Use:   "status STREAM enabled|paused|disabled",
		Short: "Change a stream's status on the transmitter's side (the receiver gets a stream-updated SET)",
		Long: `Change a receiver's stream status as the transmitter (SSF 1.0 §8.1.2):
paused holds the stream's SETs, which are delivered in order when it is
enabled again; disabled drops them and queues nothing until enabled. The
receiver is told by a stream-updated SET (not when disabled). The change is
recorded in the audit log (ssf.stream_status_changed).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				st, err := a.CAE.SetStatusAsTransmitter(ctx, actorCLI, args[0], strings.ToLower(args[1]), reason)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "stream %s of %s is %s\n", st.ID, st.ClientID, st.Status)
				return nil
			})
		},
	}
	status.Flags().StringVar(&reason, "reason", "", "why, for the receiver (stream-updated reason) and the audit log")
	cmd.AddCommand(list, status)
	return cmd
}

// deliveryName is push or poll for the delivery methods' URNs.
func deliveryName(method string) string {
	switch method {
	case model.DeliveryPush:
		return "push"
	case model.DeliveryPoll:
		return "poll"
	}
	return method
}
