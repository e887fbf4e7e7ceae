package main

// Administration of registered devices and compliance policies:
// `ward device list | show | disable | lost | enable | delete` and
// `ward compliance set | list | delete`. They open the server's store
// like the other admin commands. The agent's own subcommands
// (`ward device enroll | posture | …`) live in device_agent.go and share
// the `device` parent.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
)

func newDeviceCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("device", "Manage registered devices (admin) and enrol this device (agent)")

	var userRef, status string
	list := &cobra.Command{
		Use:   "list [--user USER] [--status active|disabled|lost]",
		Short: "List registered devices with their compliance",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				f := device.Filter{Status: status, Limit: 1000}
				if userRef != "" {
					u, err := findUser(ctx, a, userRef)
					if err != nil {
						return err
					}
					f.UserID = u.ID
				}
				ds, err := a.Devices.List(ctx, f)
				if err != nil {
					return err
				}
				names := userNames(ctx, a)
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tUSER\tPLATFORM\tHOSTNAME\tKEY\tSTATUS\tCOMPLIANCE\tLAST SEEN")
				for _, d := range ds {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, nameOr(names, d.UserID), d.Platform, dash(d.Hostname),
						keyColumn(d), d.Status, d.Compliance, d.LastSeen.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&userRef, "user", "", "only this user's devices (name or id)")
	list.Flags().StringVar(&status, "status", "", "only devices with this status")

	show := &cobra.Command{
		Use:   "show DEVICE",
		Short: "Show a device, its compliance and every failing rule with how to fix it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				d, err := findDevice(ctx, a, args[0])
				if err != nil {
					return err
				}
				printDevice(e.stdout, d, nameOr(userNames(ctx, a), d.UserID))
				return nil
			})
		},
	}

	status2 := func(use, short, done string, op func(*app.App) func(context.Context, string, string) (*model.Device, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " DEVICE",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
					d, err := findDevice(ctx, a, args[0])
					if err != nil {
						return err
					}
					if d, err = op(a)(ctx, actorCLI, d.ID); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "%s device %s (%s); every session bound to it was revoked\n", done, d.ID, dash(d.Hostname))
					return nil
				})
			},
		}
	}
	disable := status2("disable", "Disable a device and revoke every session bound to it", "disabled",
		func(a *app.App) func(context.Context, string, string) (*model.Device, error) {
			return a.Devices.Disable
		})
	lost := status2("lost", "Mark a device lost or stolen and revoke every session bound to it", "marked lost:",
		func(a *app.App) func(context.Context, string, string) (*model.Device, error) {
			return a.Devices.MarkLost
		})

	enable := &cobra.Command{
		Use:   "enable DEVICE",
		Short: "Enable a disabled device again (a lost one is deleted and enrolled again instead)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				d, err := findDevice(ctx, a, args[0])
				if err != nil {
					return err
				}
				was := d.Status
				if d, err = a.Devices.Enable(ctx, actorCLI, d.ID); err != nil {
					return err
				}
				if was == model.DeviceActive {
					fmt.Fprintf(e.stdout, "device %s (%s) is active already; nothing changed\n", d.ID, dash(d.Hostname))
					return nil
				}
				fmt.Fprintf(e.stdout, "enabled device %s (%s); compliance: %s\n", d.ID, dash(d.Hostname), d.Compliance)
				fmt.Fprintln(e.stdout, "Its sessions ended when it was disabled: its agent signs in again (ward device curl --interactive, or ward device enroll --force).")
				return nil
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete DEVICE",
		Short: "Revoke every session bound to a device and delete it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				d, err := findDevice(ctx, a, args[0])
				if err != nil {
					return err
				}
				if err := a.Devices.Delete(ctx, actorCLI, d.ID); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "deleted device %s (%s)\n", d.ID, dash(d.Hostname))
				return nil
			})
		},
	}

	cmd.AddCommand(list, show, disable, lost, enable, del)
	addAgentCommands(cmd, e)
	return cmd
}

func newComplianceCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("compliance", "Manage device compliance policies")

	var platform, file string
	set := &cobra.Command{
		Use:   "set --platform PLATFORM -f RULES.json",
		Short: "Create or replace the compliance policy of a platform (\"*\" for all)",
		Long: `Create or replace the compliance policy of a platform ("*" applies to every
platform without a policy of its own). The rules are a JSON object, read from
the file given with -f ("-" for stdin), for example:

  {"require_disk_encryption": true, "require_firewall": true,
   "require_standard_user": true, "min_os_version": "12",
   "max_posture_age_hours": 24}

See docs/devices.md for every rule. Active devices of the platform are
re-evaluated at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rules, err := readRulesFile(e, file)
			if err != nil {
				return err
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				p, err := a.Devices.PutPolicy(ctx, actorCLI, platform, rules)
				if err != nil {
					return rulesError(err)
				}
				fmt.Fprintf(e.stdout, "compliance policy for %s: %s\n", p.Platform, p.Rules)
				return nil
			})
		},
	}
	set.Flags().StringVar(&platform, "platform", "", `platform: linux, darwin, windows, … or "*" for all`)
	set.Flags().StringVarP(&file, "file", "f", "", `rules file (JSON object; "-" for stdin)`)
	_ = set.MarkFlagRequired("platform")
	_ = set.MarkFlagRequired("file")

	list := &cobra.Command{
		Use:   "list",
		Short: "List compliance policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				ps, err := a.Devices.ListPolicies(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PLATFORM\tUPDATED\tRULES")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Platform, p.UpdatedAt.UTC().Format(time.RFC3339), p.Rules)
				}
				return tw.Flush()
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete PLATFORM",
		Short: "Delete the compliance policy of a platform",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				if err := a.Devices.DeletePolicy(ctx, actorCLI, args[0]); err != nil {
					if errors.Is(err, device.ErrNotFound) {
						return fmt.Errorf("no compliance policy for %q", args[0])
					}
					return err
				}
				fmt.Fprintf(e.stdout, "deleted the compliance policy for %s\n", args[0])
				return nil
			})
		},
	}

	cmd.AddCommand(set, list, del)
	return cmd
}

// maxRulesFile bounds a rules file.
const maxRulesFile = 64 << 10

func readRulesFile(e *cliEnv, path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxRulesFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxRulesFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxRulesFile)
	}
	return b, nil
}

// rulesError prints every problem of an invalid rule set on its own line.
func rulesError(err error) error {
	if re, ok := errors.AsType[*device.RulesError](err); ok {
		var b strings.Builder
		fmt.Fprintf(&b, "invalid compliance rules (%d problem", len(re.Problems))
		if len(re.Problems) != 1 {
			b.WriteString("s")
		}
		b.WriteString("):")
		for _, p := range re.Problems {
			b.WriteString("\n  - " + p)
		}
		return &exitError{code: exitUsage, err: errors.New(b.String())}
	}
	return err
}

// findDevice resolves a device id or key thumbprint.
func findDevice(ctx context.Context, a *app.App, ref string) (*model.Device, error) {
	d, err := a.Devices.Get(ctx, ref)
	if errors.Is(err, device.ErrNotFound) {
		d, err = a.Devices.LookupByJKT(ctx, ref)
	}
	if errors.Is(err, device.ErrNotFound) {
		return nil, fmt.Errorf("no device %q", ref)
	}
	return d, err
}

func userNames(ctx context.Context, a *app.App) map[string]string {
	names := map[string]string{}
	if us, err := a.Store.ListUsers(ctx); err == nil {
		for _, u := range us {
			names[u.ID] = u.Username
		}
	}
	return names
}

func nameOr(names map[string]string, id string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id
}

// keyColumn is the KEY column of `ward device list`: the reported
// storage, and whether Ward attested it.
func keyColumn(d *model.Device) string {
	if d.KeyAttested {
		return dash(d.KeyStorage) + " (attested)"
	}
	return dash(d.KeyStorage) + " (not attested)"
}

func printDevice(w io.Writer, d *model.Device, user string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, row := range [][2]string{
		{"ID", d.ID}, {"User", user}, {"Key thumbprint", d.JKT}, {"Key storage", device.DescribeKey(d)},
		{"Trust type", d.TrustType}, {"Status", d.Status}, {"Platform", d.Platform},
		{"OS", dash(strings.TrimSpace(d.OSName + " " + d.OSVersion))}, {"Hostname", dash(d.Hostname)},
		{"Agent version", dash(d.AgentVersion)}, {"Registered", ts(d.CreatedAt)}, {"Last seen", ts(d.LastSeen)},
		{"Posture collected", ts(d.PostureAt)}, {"Compliance", d.Compliance}, {"Evaluated", ts(d.ComplianceAt)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	tw.Flush()
	fs := device.DecodeFailures(d)
	if len(fs) == 0 {
		if d.Compliance == model.Compliant {
			fmt.Fprintln(w, "\nEvery compliance rule passes.")
		}
		return
	}
	fmt.Fprintln(w, "\nRules not satisfied:")
	for _, f := range fs {
		mark := "FAIL"
		if f.Unknown {
			mark = "UNKNOWN"
		}
		fmt.Fprintf(w, "  [%s] %s: %s\n", mark, f.Rule, f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(w, "         fix: %s\n", f.Fix)
		}
	}
}
