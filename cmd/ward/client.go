package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

func newClientCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("client", "Manage OAuth clients")

	var spec clients.Spec
	var jwksFile string
	add := &cobra.Command{
		Use:   "add [ID]",
		Short: "Register a client; a generated secret is shown once",
		Long: `Register an OAuth client. Without ID a random id is generated.
Clients using client_secret_basic or client_secret_post get a generated
256-bit secret, printed once: Ward stores only a keyed hash of it.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				spec.ID = args[0]
			}
			if jwksFile != "" {
				b, err := os.ReadFile(jwksFile)
				if err != nil {
					return err
				}
				spec.JWKS = b
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				c, sec, err := a.Clients.Create(ctx, actorCLI, spec)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "created client %s (%s)\n", c.ID, c.TokenEndpointAuthMethod)
				if sec != "" {
					printSecret(e, c.ID, sec)
				}
				return nil
			})
		},
	}
	f := add.Flags()
	f.StringVar(&spec.Name, "name", "", "display name")
	f.StringVar(&spec.AuthMethod, "auth-method", model.AuthClientSecretBasic, "token endpoint auth method: "+strings.Join(clients.AuthMethods, ", "))
	f.StringSliceVar(&spec.RedirectURIs, "redirect-uri", nil, "redirect URI (repeatable; exact match)")
	f.StringSliceVar(&spec.PostLogoutRedirectURIs, "post-logout-redirect-uri", nil, "post-logout redirect URI (repeatable)")
	f.StringSliceVar(&spec.GrantTypes, "grant-type", nil, "grant type (repeatable; default authorization_code): "+strings.Join(clients.GrantTypes, ", "))
	f.StringSliceVar(&spec.Scopes, "scope", nil, "scope the client may request (repeatable)")
	f.StringSliceVar(&spec.Audience, "audience", nil, "default access-token audience (repeatable)")
	f.BoolVar(&spec.DPoPBoundAccessTokens, "dpop-bound", false, "require DPoP-bound access tokens")
	f.DurationVar(&spec.AccessTokenTTL, "access-token-ttl", 0, "access-token lifetime for this client (0: server default)")
	f.StringVar(&jwksFile, "jwks-file", "", "file with the client's public JWK Set (private_key_jwt)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				cs, err := a.Clients.List(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tAUTH METHOD\tGRANT TYPES\tDPOP")
				for _, c := range cs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.ID, dash(c.Name), c.TokenEndpointAuthMethod,
						strings.Join(c.GrantTypes, ","), yesNo(c.DPoPBoundAccessTokens))
				}
				return tw.Flush()
			})
		},
	}

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a client",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				c, err := a.Clients.Get(ctx, args[0])
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
				row("ID", c.ID)
				row("Name", dash(c.Name))
				row("Auth method", c.TokenEndpointAuthMethod)
				row("Secret", map[bool]string{true: "set (hashed)", false: "-"}[len(c.SecretHash) > 0])
				row("Grant types", dash(strings.Join(c.GrantTypes, ", ")))
				row("Redirect URIs", dash(strings.Join(c.RedirectURIs, " ")))
				row("Post-logout URIs", dash(strings.Join(c.PostLogoutRedirectURIs, " ")))
				row("Scopes", dash(strings.Join(c.Scopes, " ")))
				row("Audience", dash(strings.Join(c.Audience, " ")))
				row("DPoP-bound tokens", yesNo(c.DPoPBoundAccessTokens))
				if c.AccessTokenTTL > 0 {
					row("Access-token TTL", c.AccessTokenTTL.String())
				}
				row("JWKS", map[bool]string{true: "set", false: "-"}[len(c.JWKS) > 0])
				row("Created", c.CreatedAt.UTC().Format(time.RFC3339))
				row("Updated", c.UpdatedAt.UTC().Format(time.RFC3339))
				return tw.Flush()
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a client",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				if err := a.Clients.Delete(ctx, actorCLI, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "deleted client %s\n", args[0])
				return nil
			})
		},
	}

	rotate := &cobra.Command{
		Use:   "rotate-secret ID",
		Short: "Replace a client's secret; the old one stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				sec, err := a.Clients.RotateSecret(ctx, actorCLI, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "rotated the secret of %s\n", args[0])
				printSecret(e, args[0], sec)
				return nil
			})
		},
	}

	cmd.AddCommand(add, list, show, del, rotate)
	return cmd
}

func printSecret(e *cliEnv, id string, sec secret.String) {
	fmt.Fprintf(e.stdout, "client_id:     %s\nclient_secret: %s\n", id, sec.Reveal())
	fmt.Fprintln(e.stderr, "Store the secret now: it is not shown again (Ward keeps only a hash).")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
