package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
)

// passkeysShown lists a user's passkeys by name for ward user show ("":
// none).
func passkeysShown(l []*model.WebAuthnCredential) string {
	var names []string
	for _, c := range l {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("%d (%s; ward user passkeys list)", len(names), strings.Join(names, ", "))
}

// newUserPasskeysCmd is `ward user passkeys list|rename|remove|reset`.
func newUserPasskeysCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("passkeys", "Manage a user's passkeys and security keys (WebAuthn)")

	list := &cobra.Command{
		Use:   "list USER",
		Short: "List a user's passkeys and security keys",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				l, err := a.Identity.ListPasskeys(ctx, u.ID)
				if err != nil {
					return err
				}
				if len(l) == 0 {
					fmt.Fprintf(e.stdout, "%s has no passkeys\n", u.Username)
					return nil
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tKIND\tSYNCED\tAAGUID\tCOUNTER\tCREATED\tLAST USED")
				for _, c := range l {
					kind := identity.MethodSecurityKey
					if c.Discoverable {
						kind = identity.MethodPasskey
					}
					last := "never"
					if !c.LastUsedAt.IsZero() {
						last = c.LastUsedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%s\t%s\n", c.ID, c.Name, kind, c.BackupState, hex.EncodeToString(c.AAGUID),
						c.SignCount, c.CreatedAt.UTC().Format(time.RFC3339), last)
				}
				return tw.Flush()
			})
		},
	}

	remove := &cobra.Command{
		Use:   "remove USER ID",
		Short: "Remove one of a user's passkeys (mfa.removed; receivers get a CAEP credential-change)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				if err := a.Identity.RemovePasskey(ctx, actorCLI, u.ID, args[1]); err != nil {
					return fmt.Errorf("remove passkey %s of %s: %w", args[1], u.Username, err)
				}
				fmt.Fprintf(e.stdout, "removed passkey %s of %s\n", args[1], u.Username)
				return nil
			})
		},
	}

	rename := &cobra.Command{
		Use:   "rename USER ID NAME",
		Short: "Rename one of a user's passkeys (passkey.renamed)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				c, err := a.Identity.RenamePasskey(ctx, actorCLI, u.ID, args[1], args[2])
				if err != nil {
					return fmt.Errorf("rename passkey %s of %s: %w", args[1], u.Username, err)
				}
				fmt.Fprintf(e.stdout, "renamed passkey %s of %s to %q\n", c.ID, u.Username, c.Name)
				return nil
			})
		},
	}

	var reason string
	reset := &cobra.Command{
		Use:   "reset USER",
		Short: "Recovery: remove every passkey of a user who lost them all (audited, raises the user's risk)",
		Long: `Remove every passkey and security key of a user who lost them all, so that the
user can sign in with the password (and TOTP or a recovery code, if enrolled) and add new
ones in My account. Check the user's identity first: this is what an attacker who talked a
help desk into it would ask for too. It records passkey.recovery and mfa.removed, and a
risk detection (source admin, medium) that raises the user's risk until it is dismissed or
remediated.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				n, err := a.Identity.ResetPasskeys(ctx, actorCLI, u.ID, reason)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "removed %d passkey(s) of %s; the user's risk was raised (ward risk explain %s)\n", n, u.Username, u.Username)
				return nil
			})
		},
	}
	reset.Flags().StringVar(&reason, "reason", "", "how the user's identity was checked (kept in the audit log)")
	cmd.AddCommand(list, rename, remove, reset)
	return cmd
}
