package main

// Risk levels: `ward risk list | explain | dismiss | confirm-compromised`.
// They go through the risk service like the admin API's risk routes, so
// they record the same events (actor "cli") and a confirmed compromise
// revokes through the session service.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/risk"
)

func newRiskCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("risk", "Risk levels of users and sessions: list, explain, dismiss, confirm a compromise")

	var levels []string
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--level LEVEL]... [--limit N] [--json]",
		Short: "List the users and the sessions in use at risk, highest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, l := range levels {
				if !risk.ValidLevel(l) {
					return &exitError{code: exitUsage, err: fmt.Errorf("--level %q: want none, low, medium or high", l)}
				}
			}
			if limit < 1 || limit > 1000 {
				return &exitError{code: exitUsage, err: errors.New("--limit must be from 1 to 1000")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				l, err := a.Risk.List(ctx, levels, limit)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(l)
				}
				names := userNames(ctx, a)
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tID\tUSER\tLEVEL\tSINCE")
				for _, u := range l.Users {
					fmt.Fprintf(tw, "user\t%s\t%s\t%s\t%s\n", u.UserID, u.Username, u.Level, fmtTime(u.UpdatedAt))
				}
				for _, s := range l.Sessions {
					fmt.Fprintf(tw, "session\t%s\t%s\t%s\t%s\n", s.SessionID, nameOr(names, s.UserID), s.Level, fmtTime(s.UpdatedAt))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringSliceVar(&levels, "level", nil, "only this level (repeatable; default low, medium and high)")
	list.Flags().IntVar(&limit, "limit", 100, "at most this many users and this many sessions (1 to 1000)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var sessionID string
	var explainJSON bool
	explain := &cobra.Command{
		Use:   "explain USER | --session ID [--json]",
		Short: "Explain a user's or a session's risk: the detections behind it, their evidence and the level's history",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (sessionID != "") {
				return &exitError{code: exitUsage, err: errors.New("name a user or --session, not both")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				var userID string
				if len(args) == 1 {
					u, err := findUser(ctx, a, args[0])
					if err != nil {
						return err
					}
					userID = u.ID
				}
				x, err := a.Risk.Explain(ctx, userID, sessionID)
				if errors.Is(err, risk.ErrNotFound) {
					return fmt.Errorf("no session %q", sessionID)
				}
				if err != nil {
					return err
				}
				if explainJSON {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(x)
				}
				return writeExplanation(e, x)
			})
		},
	}
	explain.Flags().StringVar(&sessionID, "session", "", "a session id instead of a user")
	explain.Flags().BoolVar(&explainJSON, "json", false, "print JSON")

	var dSession, dDetection, dReason string
	dismiss := &cobra.Command{
		Use:   "dismiss USER | --session ID | --detection ID [--reason TEXT]",
		Short: "Dismiss detections as false positives (all of a user's, a session's, or one) and lower the levels",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := len(args)
			for _, v := range []string{dSession, dDetection} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				return &exitError{code: exitUsage, err: errors.New("name exactly one of a user, --session or --detection")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				t := risk.Target{SessionID: dSession, DetectionID: dDetection}
				if len(args) == 1 {
					u, err := findUser(ctx, a, args[0])
					if err != nil {
						return err
					}
					t.UserID = u.ID
				}
				out, err := a.Risk.Dismiss(ctx, actorCLI, t, dReason)
				switch {
				case errors.Is(err, risk.ErrNotActive):
					return fmt.Errorf("nothing to dismiss: %w", err)
				case errors.Is(err, risk.ErrNotFound):
					return fmt.Errorf("not found: %w", err)
				case err != nil:
					return err
				}
				fmt.Fprintf(e.stdout, "dismissed %d detection(s) of user %s: risk %s -> %s\n", len(out.Detections),
					nameOr(userNames(ctx, a), out.UserID), out.Previous, out.Level)
				return nil
			})
		},
	}
	dismiss.Flags().StringVar(&dSession, "session", "", "dismiss the active detections of this session")
	dismiss.Flags().StringVar(&dDetection, "detection", "", "dismiss this detection")
	dismiss.Flags().StringVar(&dReason, "reason", "", "why (kept in the audit log)")

	var cReason string
	confirm := &cobra.Command{
		Use:   "confirm-compromised USER [--reason TEXT]",
		Short: "Confirm that a user's account is compromised: risk high, every session revoked",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				ids, err := a.Risk.ConfirmCompromised(ctx, actorCLI, u.ID, cReason)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "user %s confirmed compromised: risk high, %d session(s) revoked\n", u.Username, len(ids))
				return nil
			})
		},
	}
	confirm.Flags().StringVar(&cReason, "reason", "", "why (kept in the audit log)")

	cmd.AddCommand(list, explain, dismiss, confirm, newRiskBacktestCmd(e), newRiskGenerateCmd(e), newRiskScoreCmd(e))
	return cmd
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// writeExplanation prints an explanation as a few readable tables.
func writeExplanation(e *cliEnv, x *risk.Explanation) error {
	w := e.stdout
	if x.SessionID != "" {
		fmt.Fprintf(w, "session %s of user %s: risk %s (user risk %s)\n", x.SessionID, x.Username, x.Level, x.UserLevel)
	} else {
		fmt.Fprintf(w, "user %s (%s): risk %s\n", x.Username, x.UserID, x.Level)
	}
	if x.UpdatedAt != nil {
		fmt.Fprintf(w, "since %s\n", fmtTime(*x.UpdatedAt))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(x.Sessions) > 0 {
		fmt.Fprintln(w, "\nSessions at risk:")
		fmt.Fprintln(tw, "SESSION\tLEVEL\tSINCE")
		for _, s := range x.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.SessionID, s.Level, fmtTime(s.UpdatedAt))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nDetections (active ones count):")
	fmt.Fprintln(tw, "DETECTED\tTYPE\tSEVERITY\tCONFIDENCE\tCOUNTS AS\tSTATE\tSESSION\tTECHNIQUE\tSOURCE\tID")
	for _, d := range x.Detections {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(d.DetectedAt), d.Type, d.Severity, d.Confidence,
			d.Weight, d.State, dash(d.SessionID), dash(d.Technique), d.Source, d.ID)
	}
	tw.Flush()
	for _, d := range x.Detections {
		line := "  " + d.ID + ": " + dash(d.Detail)
		if len(d.Evidence) > 0 {
			line += " (evidence: " + strings.Join(d.Evidence, ", ") + ")"
		}
		if d.State != "active" && d.StateReason != "" {
			line += " [" + d.State + " by " + dash(d.StateActor) + ": " + d.StateReason + "]"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "\nHistory:")
	fmt.Fprintln(tw, "TIME\tSUBJECT\tFROM\tTO\tWHY\tBY")
	for _, c := range x.History {
		subject := c.Subject + " " + c.SubjectID
		if c.Subject == "user" {
			subject = "user " + x.Username
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(c.At), subject, c.Previous, c.Level, dash(c.Reason), dash(c.Actor))
	}
	tw.Flush()
	fmt.Fprintln(w, "\nEvents the detections rest on (audit log):")
	if err := writeEventsTable(e, x.Events, map[string]string{x.UserID: x.Username}); err != nil {
		return err
	}
	if len(x.Missing) > 0 {
		fmt.Fprintf(w, "no longer in the audit log: %s\n", strings.Join(x.Missing, ", "))
	}
	return nil
}
