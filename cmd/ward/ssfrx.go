package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
)

// newSSFReceiverCmd is the receiver's side: Ward's own streams at the
// transmitters listed in ssf_receivers (docs/ssf.md, "Receiving
// signals"). The running server sets them up by itself; these commands
// show and repair them.
func newSSFReceiverCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("ssf-receiver", "Ward's streams at other Shared Signals transmitters (ssf_receivers): list, status, verify, re-create")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the configured receivers with their stored stream",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				l, err := a.SSFReceivers.List(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "RECEIVER\tTRANSMITTER\tDELIVERY\tSTREAM\tSTATUS\tVERIFIED\tLAST ERROR")
				for _, s := range l {
					stream, status, verified, lastErr := "-", "-", "-", "-"
					if st := s.Stream; st != nil {
						stream, status, lastErr = dash(st.StreamID), dash(st.Status), dash(st.LastError)
						if !st.VerifiedAt.IsZero() {
							verified = st.VerifiedAt.UTC().Format(time.RFC3339)
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Issuer, s.Delivery, stream, status, verified, lastErr)
				}
				return tw.Flush()
			})
		},
	}
	status := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a receiver's stream as stored and its status at the transmitter now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				s, err := a.SSFReceivers.Status(ctx, args[0])
				if err != nil {
					return err
				}
				w := e.stdout
				fmt.Fprintf(w, "receiver:     %s\ntransmitter:  %s\ndelivery:     %s\n", s.Name, s.Issuer, s.Delivery)
				if st := s.Stream; st != nil {
					fmt.Fprintf(w, "stream:       %s\nendpoint:     %s\naudience:     %v\nevents:       %d delivered\n",
						dash(st.StreamID), dash(st.EndpointURL), st.Audience, len(st.EventsDelivered))
					if !st.VerifiedAt.IsZero() {
						fmt.Fprintf(w, "verified:     %s\n", st.VerifiedAt.UTC().Format(time.RFC3339))
					}
					if st.LastError != "" {
						fmt.Fprintf(w, "last error:   %s\n", st.LastError)
					}
				} else {
					fmt.Fprintln(w, "stream:       none yet (the server creates it when it starts)")
				}
				if s.LiveErr != nil {
					fmt.Fprintf(w, "status:       unknown (%v)\n", s.LiveErr)
				} else {
					fmt.Fprintf(w, "status:       %s", s.Live)
					if s.LiveReason != "" {
						fmt.Fprintf(w, " (%s)", s.LiveReason)
					}
					fmt.Fprintln(w)
				}
				return nil
			})
		},
	}
	verify := &cobra.Command{
		Use:   "verify NAME",
		Short: "Ask the transmitter for a verification event on the receiver's stream",
		Long: `Ask the transmitter to send a verification event (SSF 1.0 §8.1.4.2) through the
stream's delivery. The running server records its arrival: see the
stream's VERIFIED time in ` + "`ward ssf-receiver list`" + `.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				if err := a.SSFReceivers.Verify(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "verification requested from %s\n", args[0])
				return nil
			})
		},
	}
	recreate := &cobra.Command{
		Use:   "re-create NAME",
		Short: "Delete the receiver's stream at the transmitter and create a new one (new push credential)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				st, err := a.SSFReceivers.Recreate(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "stream %s created at %s\n", st.StreamID, st.Issuer)
				return nil
			})
		},
	}
	cmd.AddCommand(list, status, verify, recreate)
	return cmd
}
