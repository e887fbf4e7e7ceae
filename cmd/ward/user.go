package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/store"
)

func newUserCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("user", "Manage local user accounts")

	var email, display string
	var roles []string
	var pwStdin bool
	add := &cobra.Command{
		Use:   "add USERNAME",
		Short: "Create a user (password from a prompt or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				pw, err := e.readPassword(pwStdin, "Password for "+args[0])
				if err != nil {
					return err
				}
				u, err := a.Identity.CreateUser(ctx, actorCLI, identity.NewUser{
					Username: args[0], Email: email, DisplayName: display, Password: pw, Roles: roles,
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "created user %s (id %s)\n", u.Username, u.ID)
				return nil
			})
		},
	}
	add.Flags().StringVar(&email, "email", "", "email address")
	add.Flags().StringVar(&display, "display-name", "", "display name")
	add.Flags().StringSliceVar(&roles, "role", nil, "role (repeatable or comma-separated), e.g. admin")
	add.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of stdin")

	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				us, err := a.Store.ListUsers(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USERNAME\tID\tEMAIL\tROLES\tSTATUS\tMFA\tRISK")
				now := a.Now()
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Username, u.ID, dash(u.Email),
						dash(strings.Join(u.Roles, ",")), userStatus(u, now), mfa(a, u), riskLevel(u))
				}
				return tw.Flush()
			})
		},
	}

	show := &cobra.Command{
		Use:   "show USER",
		Short: "Show a user (by username or id)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				gs, err := a.Identity.GroupsOf(ctx, u.ID)
				if err != nil {
					return err
				}
				var names []string
				for _, g := range gs {
					names = append(names, g.Name)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
				row("ID", u.ID)
				row("Username", u.Username)
				row("Email", dash(u.Email))
				row("Display name", dash(u.DisplayName))
				row("Roles", dash(strings.Join(u.Roles, ", ")))
				row("Groups", dash(strings.Join(names, ", ")))
				row("Status", userStatus(u, a.Now()))
				row("MFA", mfa(a, u))
				codes, err := recoveryCodesShown(ctx, a, u)
				if err != nil {
					return err
				}
				row("Recovery codes", codes)
				pks, err := a.Identity.ListPasskeys(ctx, u.ID)
				if err != nil {
					return err
				}
				row("Passkeys", dash(passkeysShown(pks)))
				risk := riskLevel(u)
				if !u.RiskUpdatedAt.IsZero() {
					risk += " (set " + u.RiskUpdatedAt.UTC().Format(time.RFC3339) + ")"
				}
				row("Risk", risk)
				row("Failed logins", fmt.Sprint(u.FailedLogins))
				if !u.LockedUntil.IsZero() {
					row("Locked until", u.LockedUntil.UTC().Format(time.RFC3339))
				}
				row("Created", u.CreatedAt.UTC().Format(time.RFC3339))
				row("Updated", u.UpdatedAt.UTC().Format(time.RFC3339))
				return tw.Flush()
			})
		},
	}

	var passwdStdin bool
	passwd := &cobra.Command{
		Use:   "passwd USER",
		Short: "Set a user's password (prompt or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				pw, err := e.readPassword(passwdStdin, "New password for "+u.Username)
				if err != nil {
					return err
				}
				if err := a.Identity.SetPassword(ctx, actorCLI, u.ID, pw); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "password of %s changed\n", u.Username)
				return nil
			})
		},
	}
	passwd.Flags().BoolVar(&passwdStdin, "password-stdin", false, "read the password from the first line of stdin")

	simple := func(use, short, done string, fn func(ctx context.Context, a *app.App, u *model.User) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " USER",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
					u, err := findUser(ctx, a, args[0])
					if err != nil {
						return err
					}
					if err := fn(ctx, a, u); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "%s %s\n", done, u.Username)
					return nil
				})
			},
		}
	}
	disable := simple("disable", "Disable a user (sign-in refused)", "disabled", func(ctx context.Context, a *app.App, u *model.User) error {
		return a.Identity.SetDisabled(ctx, actorCLI, u.ID, true)
	})
	enable := simple("enable", "Enable a disabled user", "enabled", func(ctx context.Context, a *app.App, u *model.User) error {
		return a.Identity.SetDisabled(ctx, actorCLI, u.ID, false)
	})
	del := simple("delete", "Delete a user", "deleted", func(ctx context.Context, a *app.App, u *model.User) error {
		return a.Identity.DeleteUser(ctx, actorCLI, u.ID)
	})
	unlock := simple("unlock", "Clear a user's failed sign-ins and lock", "unlocked", func(ctx context.Context, a *app.App, u *model.User) error {
		return a.Identity.Unlock(ctx, actorCLI, u.ID)
	})

	var clearRoles bool
	rolesCmd := &cobra.Command{
		Use:   "roles USER [ROLE...]",
		Short: "Show a user's roles, or replace them with the given ones (--clear removes all)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				if len(args) == 1 && !clearRoles {
					fmt.Fprintln(e.stdout, strings.Join(u.Roles, "\n"))
					return nil
				}
				if clearRoles && len(args) > 1 {
					return &exitError{code: exitUsage, err: errors.New("--clear takes no roles")}
				}
				if err := a.Identity.SetRoles(ctx, actorCLI, u.ID, args[1:]); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "roles of %s: %s\n", u.Username, dash(strings.Join(args[1:], ", ")))
				return nil
			})
		},
	}
	rolesCmd.Flags().BoolVar(&clearRoles, "clear", false, "remove every role")

	var issuer string
	totpEnroll := &cobra.Command{
		Use:   "totp-enroll USER",
		Short: "Enrol a TOTP authenticator: prints the secret, then reads a code from stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				sec, url, err := a.Identity.NewTOTPKey(u, issuer)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "Add this key to the authenticator app of %s:\n  secret: %s\n  url:    %s\n", u.Username, sec, url)
				fmt.Fprint(e.stderr, "Code shown by the app: ")
				code, err := e.readLine()
				if err != nil {
					return fmt.Errorf("read code: %w", err)
				}
				if err := a.Identity.EnrollTOTP(ctx, actorCLI, u.ID, sec, strings.TrimSpace(code)); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "TOTP enrolled for %s\n", u.Username)
				return nil
			})
		},
	}
	totpEnroll.Flags().StringVar(&issuer, "issuer", "Ward", "issuer label shown in the authenticator app")

	totpRemove := simple("totp-remove", "Remove a user's TOTP second factor (a lost authenticator) and its recovery codes; the user may enrol again",
		"removed the TOTP second factor of", func(ctx context.Context, a *app.App, u *model.User) error {
			if err := a.Identity.RemoveTOTP(ctx, actorCLI, u.ID); errors.Is(err, identity.ErrNoTOTP) {
				return fmt.Errorf("%s has no TOTP second factor", u.Username)
			} else if err != nil {
				return err
			}
			return nil
		})

	recoveryCodes := &cobra.Command{
		Use:   "recovery-codes USER",
		Short: "Give a user with TOTP new one-time recovery codes (shown once; earlier codes stop working)",
		Long: `Give a user with TOTP 10 new one-time recovery codes, for signing in when the
authenticator is lost. They are printed once and stored only as keyed hashes: give them
to the user over a safe channel and keep no copy. Any earlier codes of the user stop
working at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				before, err := a.Identity.RecoveryCodesLeft(ctx, u.ID)
				if err != nil {
					return err
				}
				codes, err := a.Identity.NewRecoveryCodes(ctx, actorCLI, u.ID)
				if errors.Is(err, identity.ErrNoTOTP) {
					return fmt.Errorf("%s has no TOTP second factor: recovery codes stand in for a lost authenticator, so enrol one first (ward user totp-enroll %s)", u.Username, u.Username)
				} else if err != nil {
					return err
				}
				if before > 0 {
					fmt.Fprintf(e.stderr, "warning: the %d unused recovery code(s) %s had no longer work\n", before, u.Username)
				} else {
					fmt.Fprintf(e.stderr, "warning: any earlier recovery codes of %s no longer work\n", u.Username)
				}
				fmt.Fprintf(e.stdout, "Recovery codes for %s (each works once; shown only now, give them to %s over a safe channel):\n", u.Username, u.Username)
				for _, c := range codes {
					fmt.Fprintf(e.stdout, "  %s\n", c.Reveal())
				}
				return nil
			})
		},
	}

	var riskReason string
	riskCmd := &cobra.Command{
		Use:   "risk USER LEVEL",
		Short: "Set a user's risk level (none, low, medium, high) as an administrator (ward risk explain shows it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				// The administrator's level, recorded as a detection of
				// theirs; high revokes like any high level.
				if err := a.Risk.SetUserLevel(ctx, actorCLI, u.ID, args[1], riskReason); errors.Is(err, risk.ErrInvalidLevel) {
					return &exitError{code: exitUsage, err: err}
				} else if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "user %s risk set to %s\n", u.Username, args[1])
				return nil
			})
		},
	}
	riskCmd.Flags().StringVar(&riskReason, "reason", "", "why (kept in the audit log)")

	cmd.AddCommand(add, list, show, passwd, disable, enable, del, unlock, rolesCmd, totpEnroll, totpRemove, recoveryCodes, riskCmd, newRevokeSessionsCmd(e), newUserPasskeysCmd(e))
	return cmd
}

// findUser resolves a username (case-insensitive) or a user id.
func findUser(ctx context.Context, a *app.App, ref string) (*model.User, error) {
	u, err := a.Store.GetUserByUsername(ctx, identity.NormalizeUsername(ref))
	if errors.Is(err, store.ErrNotFound) {
		u, err = a.Store.GetUser(ctx, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no user %q", ref)
	}
	return u, err
}

func userStatus(u *model.User, now time.Time) string {
	switch {
	case u.Disabled:
		return "disabled"
	case now.Before(u.LockedUntil):
		return "locked"
	}
	return "active"
}

func mfa(a *app.App, u *model.User) string {
	if a.Identity.HasTOTP(u) {
		return "totp"
	}
	return "-"
}

// recoveryCodesShown says how many recovery codes a user has left ("-"
// without TOTP, which they stand in for); never the codes.
func recoveryCodesShown(ctx context.Context, a *app.App, u *model.User) (string, error) {
	if !a.Identity.HasTOTP(u) {
		return "-", nil
	}
	n, err := a.Identity.RecoveryCodesLeft(ctx, u.ID)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d left", n), nil
}

// riskLevel is the user risk Conditional Access sees ("" reads as none).
func riskLevel(u *model.User) string {
	if u.RiskLevel == "" {
		return identity.RiskNone
	}
	return u.RiskLevel
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
