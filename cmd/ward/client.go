package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

func newClientCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("client", "Manage OAuth clients")

	var spec clientspec.Spec
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
	f.StringVar(&spec.AuthMethod, "auth-method", model.AuthClientSecretBasic, "token endpoint auth method: "+strings.Join(clientspec.AuthMethods, ", "))
	f.StringSliceVar(&spec.RedirectURIs, "redirect-uri", nil, "redirect URI (repeatable; exact match)")
	f.StringSliceVar(&spec.PostLogoutRedirectURIs, "post-logout-redirect-uri", nil, "post-logout redirect URI (repeatable)")
	f.StringSliceVar(&spec.GrantTypes, "grant-type", nil, "grant type (repeatable; default authorization_code): "+strings.Join(clientspec.GrantTypes, ", "))
	f.StringSliceVar(&spec.Scopes, "scope", nil, "scope the client may request (repeatable)")
	f.StringSliceVar(&spec.Audience, "audience", nil, "default access-token audience (repeatable)")
	f.BoolVar(&spec.DPoPBoundAccessTokens, "dpop-bound", false, "require DPoP-bound access tokens")
	f.DurationVar(&spec.AccessTokenTTL, "access-token-ttl", 0, "access-token lifetime for this client (0: server default)")
	f.StringVar(&jwksFile, "jwks-file", "", "file with the client's public JWK Set (private_key_jwt)")
	f.StringVar(&spec.ApplicationType, "application-type", "", "web or native (default: inferred from the redirect URIs)")
	f.BoolVar(&spec.RequireProtectedSessions, "require-protected-sessions", false, "accept only sessions bound to a registered device's key (token protection)")
	f.BoolVar(&spec.CAECapable, "cae-capable", false, "allow long-lived access tokens when requests declare the CAE capability")

	update := newClientUpdateCmd(e)

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
				row("Token protection", yesNo(c.RequireProtectedSessions))
				row("CAE capable", yesNo(c.CAECapable))
				row("Application type", dash(c.ApplicationType))
				switch c.ManagedBy {
				case model.ClientManagedByConfig:
					row("Managed by", "configuration file (static_clients): change it there")
				case model.ClientManagedByDev:
					row("Managed by", "development mode (demo client)")
				}
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

	cmd.AddCommand(add, list, show, update, del, rotate)
	return cmd
}

// newClientUpdateCmd changes the flags given and nothing else. A list flag
// replaces the whole list; --clear-FIELD empties it.
func newClientUpdateCmd(e *cliEnv) *cobra.Command {
	var (
		name, authMethod, appType, jwksFile         string
		redirects, postLogout, grants, scopes       []string
		audience                                    []string
		dpopBound, protected, caeCapable            bool
		ttl                                         time.Duration
		clearPostLogout, clearScopes, clearAudience bool
	)
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a client's redirect URIs, scopes, auth method or other metadata",
		Long: `Change the given parts of a client and nothing else. A list flag
(--redirect-uri, --scope, ...) replaces the whole list; --clear-scopes and the
like empty one. Moving to client_secret_basic/post generates a secret, shown
once; moving away from them drops it. Clients defined in the configuration
file are changed there instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			var jwks []byte
			if jwksFile != "" {
				b, err := os.ReadFile(jwksFile)
				if err != nil {
					return err
				}
				jwks = b
			}
			changes := 0
			cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if f.Changed {
					changes++
				}
			})
			if changes == 0 {
				return &exitError{code: exitUsage, err: fmt.Errorf("nothing to change: give at least one flag (see ward client update --help)")}
			}
			change := func(s *clientspec.Spec) error {
				setIf := func(flag string, apply func()) {
					if fl.Changed(flag) {
						apply()
					}
				}
				setIf("name", func() { s.Name = name })
				setIf("auth-method", func() { s.AuthMethod = authMethod })
				setIf("application-type", func() { s.ApplicationType = appType })
				setIf("redirect-uri", func() { s.RedirectURIs = redirects })
				setIf("post-logout-redirect-uri", func() { s.PostLogoutRedirectURIs = postLogout })
				setIf("clear-post-logout-redirect-uris", func() { s.PostLogoutRedirectURIs = nil })
				setIf("grant-type", func() { s.GrantTypes = grants })
				setIf("scope", func() { s.Scopes = scopes })
				setIf("clear-scopes", func() { s.Scopes = nil })
				setIf("audience", func() { s.Audience = audience })
				setIf("clear-audience", func() { s.Audience = nil })
				setIf("dpop-bound", func() { s.DPoPBoundAccessTokens = dpopBound })
				setIf("require-protected-sessions", func() { s.RequireProtectedSessions = protected })
				setIf("cae-capable", func() { s.CAECapable = caeCapable })
				setIf("access-token-ttl", func() { s.AccessTokenTTL = ttl })
				setIf("jwks-file", func() { s.JWKS = jwks })
				return nil
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				c, sec, err := a.Clients.Update(ctx, actorCLI, args[0], change)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "updated client %s\n", c.ID)
				if sec != "" {
					printSecret(e, c.ID, sec)
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "display name")
	f.StringVar(&authMethod, "auth-method", "", "token endpoint auth method: "+strings.Join(clientspec.AuthMethods, ", "))
	f.StringVar(&appType, "application-type", "", "web or native (empty: inferred from the redirect URIs)")
	f.StringSliceVar(&redirects, "redirect-uri", nil, "redirect URIs (repeatable; replaces the list)")
	f.StringSliceVar(&postLogout, "post-logout-redirect-uri", nil, "post-logout redirect URIs (repeatable; replaces the list)")
	f.BoolVar(&clearPostLogout, "clear-post-logout-redirect-uris", false, "remove every post-logout redirect URI")
	f.StringSliceVar(&grants, "grant-type", nil, "grant types (repeatable; replaces the list): "+strings.Join(clientspec.GrantTypes, ", "))
	f.StringSliceVar(&scopes, "scope", nil, "scopes the client may request (repeatable; replaces the list)")
	f.BoolVar(&clearScopes, "clear-scopes", false, "remove every scope")
	f.StringSliceVar(&audience, "audience", nil, "default access-token audience (repeatable; replaces the list)")
	f.BoolVar(&clearAudience, "clear-audience", false, "remove the default audience")
	f.BoolVar(&dpopBound, "dpop-bound", false, "require DPoP-bound access tokens (--dpop-bound=false to stop)")
	f.BoolVar(&protected, "require-protected-sessions", false, "accept only sessions bound to a registered device's key")
	f.BoolVar(&caeCapable, "cae-capable", false, "allow long-lived access tokens for CAE-capable requests")
	f.DurationVar(&ttl, "access-token-ttl", 0, "access-token lifetime (0: server default)")
	f.StringVar(&jwksFile, "jwks-file", "", "file with the client's public JWK Set (private_key_jwt)")
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
