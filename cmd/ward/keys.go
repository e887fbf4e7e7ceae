package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

func newKeysCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("keys", "Manage signing keys and the key-encryption key")

	list := &cobra.Command{
		Use:   "list",
		Short: "List token-signing keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				active := a.Keys.ActiveKID()
				now := a.Now()
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KID\tALG\tSTATE\tCREATED\tRETIRES")
				for _, k := range a.Keys.Keys() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KID, k.Alg, keyState(k, active, now),
						k.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(k.RetireAt))
				}
				return tw.Flush()
			})
		},
	}

	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Create a new signing key that signs from now on",
		Long: `Create a new signing key and make it the active signer. Previous keys stay
published in JWKS for tokens.key_retire_after. Running servers publish the new
key and sign with it within about a second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				prev := a.Keys.ActiveKID()
				k, err := a.Keys.Rotate(ctx, actorCLI)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "rotated signing key: %s -> %s\n", prev, k.KID)
				return nil
			})
		},
	}

	kek := &cobra.Command{
		Use:   "kek",
		Short: "Print a fresh random key-encryption key (base64)",
		Long: `Print a fresh 256-bit key-encryption key in base64. Nothing is opened or
stored. Put it in the file named by kek.file (mode 0600) or in the
environment variable named by kek.env (default WARD_KEK):

    umask 077; ward keys kek > /etc/ward/kek.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw := make([]byte, secret.KEKSize)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, base64.StdEncoding.EncodeToString(raw))
			return nil
		},
	}

	var seedFile string
	natsUser := &cobra.Command{
		Use:   "nats-user --seed-file FILE",
		Short: "Create a NATS user nkey for a resource server that follows the CAE stream",
		Long: `Create a NATS user key pair for a resource server (or ward gateway) that
follows Ward's CAE stream directly (docs/ssf.md, "Direct NATS"). The seed
is written to --seed-file (mode 0600, never overwritten) for the resource;
the public key is printed, to be listed in ssf.nats.subscriber_nkeys.
Nothing is opened or stored on Ward's side.

    ward keys nats-user --seed-file /etc/docs-api/nats.seed`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kp, err := nkeys.CreateUser()
			if err != nil {
				return err
			}
			seed, err := kp.Seed()
			if err != nil {
				return err
			}
			pub, err := kp.PublicKey()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(seedFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("seed file: %w", err)
			}
			_, werr := f.Write(append(seed, '\n'))
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				os.Remove(seedFile)
				return fmt.Errorf("seed file: %w", werr)
			}
			fmt.Fprintln(e.stdout, pub)
			return nil
		},
	}
	natsUser.Flags().StringVar(&seedFile, "seed-file", "", "file to create with the seed (0600)")
	_ = natsUser.MarkFlagRequired("seed-file")

	cmd.AddCommand(list, rotate, kek, natsUser)
	return cmd
}

func keyState(k *model.SigningKey, active string, now time.Time) string {
	switch {
	case k.KID == active:
		return "active"
	case k.ActiveAt.After(now):
		return "pending"
	case !k.RetireAt.IsZero() && !now.Before(k.RetireAt):
		return "retired"
	case !k.RetireAt.IsZero():
		return "retiring"
	}
	return "published"
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
