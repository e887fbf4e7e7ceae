package main

// Incidents: `ward incidents list | show | assign | comment | resolve |
// reopen | merge | split | act`. They go through the incident service like
// the admin API's incident routes, so they record the same events (actor
// "cli"), and response actions go through the session, device, identity
// and risk services.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

// incidentErr words the incident service's errors for the command line.
func incidentErr(err error) error {
	switch {
	case errors.Is(err, incident.ErrNotFound):
		return fmt.Errorf("no such incident: %w", err)
	case errors.Is(err, incident.ErrReasonRequired):
		return &exitError{code: exitUsage, err: errors.New("a reason is required (--reason)")}
	case errors.Is(err, incident.ErrInvalid), errors.Is(err, incident.ErrConflict):
		return &exitError{code: exitUsage, err: err}
	}
	return err
}

// cliOrigin gives the events of one command a correlation id of their
// own, so that an action's incident.action_taken and the changes it made
// (session.revoked, device.disabled, ...) are found together.
func cliOrigin(ctx context.Context) context.Context {
	return bus.WithOrigin(ctx, bus.Origin{CorrelationID: "cli-" + secret.RandomString(9)})
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newIncidentsCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("incidents", "Incidents: detections correlated by user, session, device and address; assign, resolve, respond")

	var (
		statuses         []string
		severity, user   string
		assignee         string
		limit            int
		listJSON         bool
		showJSON, actOut bool
	)
	list := &cobra.Command{
		Use:   "list [--status S]... [--severity L] [--assignee USER] [--user USER] [--limit N] [--json]",
		Short: "List incidents, newest first (--status open: new and active)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return &exitError{code: exitUsage, err: errors.New("--limit must be from 1 to 1000")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				f := incident.Filter{Statuses: statuses, Severity: severity, Limit: limit}
				for _, p := range []struct {
					name string
					dst  *string
				}{{user, &f.UserID}, {assignee, &f.Assignee}} {
					if p.name == "" {
						continue
					}
					u, err := findUser(ctx, a, p.name)
					if err != nil {
						return err
					}
					*p.dst = u.ID
				}
				l, err := a.Incidents.List(ctx, f)
				if err != nil {
					return incidentErr(err)
				}
				if listJSON {
					return json.NewEncoder(e.stdout).Encode(l)
				}
				names := userNames(ctx, a)
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "INCIDENT\tSEVERITY\tSTATUS\tDETECTIONS\tASSIGNEE\tLAST SEEN\tTACTICS\tTITLE")
				for _, in := range l {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", in.Name, in.Severity, in.Status, in.Detections,
						dash(nameOr(names, in.Assignee)), fmtTime(in.LastSeen), dash(strings.Join(in.Tactics, " ")), in.Title)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringSliceVar(&statuses, "status", nil, "only this status: new, active, resolved, false_positive, open (repeatable)")
	list.Flags().StringVar(&severity, "severity", "", "only this severity: low, medium, high")
	list.Flags().StringVar(&assignee, "assignee", "", "only incidents assigned to this user")
	list.Flags().StringVar(&user, "user", "", "only incidents about this user")
	list.Flags().IntVar(&limit, "limit", 100, "at most this many (1 to 1000)")
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show INCIDENT [--json]",
		Short: "Show an incident (INC-7, 7 or its id): entities, MITRE ATT&CK, detections, triggering events, timeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				d, err := a.Incidents.Get(ctx, args[0])
				if err != nil {
					return incidentErr(err)
				}
				if showJSON {
					return printJSON(e.stdout, d)
				}
				return writeIncident(e.stdout, d, userNames(ctx, a))
			})
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")

	var unassign bool
	assign := &cobra.Command{
		Use:   "assign INCIDENT USER | --none",
		Short: "Assign an incident to a user (--none: unassign)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 2) == unassign {
				return &exitError{code: exitUsage, err: errors.New("name a user or --none")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				id := ""
				if !unassign {
					u, err := findUser(ctx, a, args[1])
					if err != nil {
						return err
					}
					id = u.ID
				}
				in, err := a.Incidents.Assign(cliOrigin(ctx), actorCLI, args[0], id)
				if err != nil {
					return incidentErr(err)
				}
				fmt.Fprintf(e.stdout, "%s assigned to %s (%s)\n", in.Name, dash(nameOr(userNames(ctx, a), in.Assignee)), in.Status)
				return nil
			})
		},
	}
	assign.Flags().BoolVar(&unassign, "none", false, "unassign")

	comment := &cobra.Command{
		Use:   "comment INCIDENT TEXT",
		Short: "Add a comment to an incident's timeline",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				if _, err := a.Incidents.Comment(cliOrigin(ctx), actorCLI, args[0], args[1]); err != nil {
					return incidentErr(err)
				}
				fmt.Fprintln(e.stdout, "comment added")
				return nil
			})
		},
	}

	var reason string
	var falsePositive bool
	resolve := &cobra.Command{
		Use:   "resolve INCIDENT --reason TEXT [--false-positive]",
		Short: "Close an incident as resolved (or as a false positive); a reason is required",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			status := model.IncidentResolved
			if falsePositive {
				status = model.IncidentFalsePositive
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				in, err := a.Incidents.SetStatus(cliOrigin(ctx), actorCLI, args[0], status, reason)
				if err != nil {
					return incidentErr(err)
				}
				fmt.Fprintf(e.stdout, "%s %s: %s\n", in.Name, in.Status, in.StatusReason)
				return nil
			})
		},
	}
	resolve.Flags().StringVar(&reason, "reason", "", "why (required; kept in the timeline and the audit log)")
	resolve.Flags().BoolVar(&falsePositive, "false-positive", false, "close as a false positive")

	var reopenReason string
	reopen := &cobra.Command{
		Use:   "reopen INCIDENT --reason TEXT",
		Short: "Reopen a closed incident (or take up a new one: it becomes active)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				in, err := a.Incidents.SetStatus(cliOrigin(ctx), actorCLI, args[0], model.IncidentActive, reopenReason)
				if err != nil {
					return incidentErr(err)
				}
				fmt.Fprintf(e.stdout, "%s %s\n", in.Name, in.Status)
				return nil
			})
		},
	}
	reopen.Flags().StringVar(&reopenReason, "reason", "", "why (required to reopen a closed incident)")

	var mergeReason string
	merge := &cobra.Command{
		Use:   "merge INCIDENT OTHER... [--reason TEXT]",
		Short: "Merge other incidents into INCIDENT (their detections move; they are resolved as merged)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				in, err := a.Incidents.Merge(cliOrigin(ctx), actorCLI, args[0], args[1:], mergeReason)
				if err != nil {
					return incidentErr(err)
				}
				fmt.Fprintf(e.stdout, "%s now holds %d detection(s), severity %s\n", in.Name, in.Detections, in.Severity)
				return nil
			})
		},
	}
	merge.Flags().StringVar(&mergeReason, "reason", "", "why (kept in the timeline)")

	var splitReason string
	split := &cobra.Command{
		Use:   "split INCIDENT DETECTION... [--reason TEXT]",
		Short: "Move detections of an incident to a new incident",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				in, err := a.Incidents.Split(cliOrigin(ctx), actorCLI, args[0], args[1:], splitReason)
				if err != nil {
					return incidentErr(err)
				}
				fmt.Fprintf(e.stdout, "%s opened with %d detection(s), severity %s\n", in.Name, in.Detections, in.Severity)
				return nil
			})
		},
	}
	split.Flags().StringVar(&splitReason, "reason", "", "why (kept in the timeline)")

	var target, actReason string
	act := &cobra.Command{
		Use:   "act INCIDENT ACTION [--target ID] [--reason TEXT] [--json]",
		Short: "Take a response action: " + strings.Join(incident.Actions, ", "),
		Long: "Take a response action from an incident. The target (a user, session or device id) must be one of the\n" +
			"incident's entities; without one the action applies to every entity of its kind in the incident.\n" +
			"  revoke_sessions          every session of the user (or the one --target session)\n" +
			"  disable_device           disable the device (its sessions end)\n" +
			"  disable_user             disable the user (every session ends)\n" +
			"  require_password_change  raise the user's risk to high: password_change policies apply at the next sign-in\n" +
			"  confirm_compromised      confirm the compromise: risk high, every session revoked\n" +
			"  dismiss                  dismiss the incident's detections and close it as a false positive (--reason required)",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				res, err := a.Incidents.Act(cliOrigin(ctx), actorCLI, args[0], incident.ActionRequest{Action: args[1], Target: target, Reason: actReason})
				if res == nil {
					return incidentErr(err)
				}
				if actOut {
					if jerr := printJSON(e.stdout, res); jerr != nil {
						return jerr
					}
				} else {
					tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "TARGET\tID\tDONE\tDETAIL")
					for _, r := range res.Results {
						fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", r.Kind, r.ID, r.Done, dash(firstOf(r.Error, r.Detail)))
					}
					tw.Flush()
				}
				return err
			})
		},
	}
	act.Flags().StringVar(&target, "target", "", "a user, session or device id of the incident")
	act.Flags().StringVar(&actReason, "reason", "", "why (kept in the audit log)")
	act.Flags().BoolVar(&actOut, "json", false, "print JSON")

	cmd.AddCommand(list, show, assign, comment, resolve, reopen, merge, split, act)
	return cmd
}

func firstOf(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// writeIncident prints an incident as a few readable sections.
func writeIncident(w io.Writer, d *incident.Detail, names map[string]string) error {
	fmt.Fprintf(w, "%s  %s\n", d.Name, d.Title)
	fmt.Fprintf(w, "severity %s, status %s", d.Severity, d.Status)
	if d.StatusReason != "" {
		fmt.Fprintf(w, " (%s)", d.StatusReason)
	}
	fmt.Fprintf(w, ", assignee %s\n", dash(nameOr(names, d.Assignee)))
	if d.MergedInto != "" {
		fmt.Fprintf(w, "merged into %s\n", d.MergedInto)
	}
	fmt.Fprintf(w, "seen %s .. %s, %d detection(s), id %s\n", fmtTime(d.FirstSeen), fmtTime(d.LastSeen), d.Detections, d.ID)
	fmt.Fprintln(w, "\nMITRE ATT&CK:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, t := range d.Attack {
		var tactics []string
		for _, ta := range t.Tactics {
			tactics = append(tactics, ta.ID+" "+ta.Name)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", t.ID, dash(t.Name), dash(strings.Join(tactics, ", ")))
	}
	tw.Flush()
	ents := d.Entities
	users := make([]string, len(ents.Users))
	for i, u := range ents.Users {
		users[i] = nameOr(names, u)
	}
	fmt.Fprintln(w, "\nEntities:")
	for _, l := range []struct {
		what string
		ids  []string
	}{{"users", users}, {"sessions", ents.Sessions}, {"devices", ents.Devices}, {"clients", ents.Clients}, {"addresses", ents.IPs}} {
		if len(l.ids) > 0 {
			fmt.Fprintf(w, "  %-9s %s\n", l.what, strings.Join(l.ids, ", "))
		}
	}
	fmt.Fprintln(w, "\nDetections:")
	fmt.Fprintln(tw, "DETECTED\tTYPE\tSEVERITY\tTECHNIQUE\tUSER\tSESSION\tDEVICE\tIP\tID\tEVENT")
	for _, x := range d.DetectionList {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(x.DetectedAt), x.Type, x.Severity, dash(x.Technique),
			dash(nameOr(names, x.UserID)), dash(x.SessionID), dash(x.DeviceID), dash(x.IP), x.ID, x.EventID)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nTimeline:")
	fmt.Fprintln(tw, "TIME\tKIND\tBY\tWHAT")
	for _, t := range d.Timeline {
		var parts []string
		for _, k := range []string{"assignee", "status", "action", "result", "merged", "merged_into", "split_into", "detection_id"} {
			if v := t.Data[k]; v != "" {
				if k == "assignee" {
					v = nameOr(names, v)
				}
				parts = append(parts, k+"="+v)
			}
		}
		what := strings.Join(parts, " ")
		if t.Text != "" {
			what = strings.TrimSpace(what + " " + strconv.Quote(t.Text))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", fmtTime(t.At), t.Kind, dash(nameOr(names, t.Actor)), dash(what))
	}
	return tw.Flush()
}
