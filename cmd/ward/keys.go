package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/tokens"
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

	var retirePrevious bool
	rotate := &cobra.Command{
		Use:   "rotate [--retire-previous]",
		Short: "Create a new signing key that signs from now on",
		Long: `Create a new signing key and make it the active signer. Previous keys stay
published in JWKS for tokens.key_retire_after, so that tokens they signed keep
verifying until they expire. Running servers publish the new key and sign
with it within about a second.

--retire-previous removes every previous key at once instead (a leaked key):
tokens they signed stop verifying (see ward keys retire).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				prev := a.Keys.ActiveKID()
				k, err := a.Keys.Rotate(ctx, actorCLI)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "rotated signing key: %s -> %s\n", prev, k.KID)
				if !retirePrevious {
					return nil
				}
				for _, old := range a.Keys.Keys() {
					if old.KID == k.KID {
						continue
					}
					if err := retireKey(ctx, e, a, old.KID); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	rotate.Flags().BoolVar(&retirePrevious, "retire-previous", false, "remove every previous key from JWKS at once (tokens they signed stop verifying)")

	retire := &cobra.Command{
		Use:   "retire KID",
		Short: "Remove a signing key that no longer signs from JWKS at once (a leaked key)",
		Long: `Remove a key that no longer signs at once, without waiting for
tokens.key_retire_after: for a key that leaked. It is deleted (private key
included) and leaves JWKS; every token it signed stops verifying. The active
key cannot be retired: rotate first (ward keys rotate --retire-previous does
both).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				err := retireKey(ctx, e, a, args[0])
				if errors.Is(err, tokens.ErrActiveKey) {
					return fmt.Errorf("%s is the active signing key: rotate first (ward keys rotate --retire-previous)", args[0])
				}
				if errors.Is(err, tokens.ErrNoKey) {
					return fmt.Errorf("no signing key %q (ward keys list)", args[0])
				}
				if errors.Is(err, tokens.ErrConcurrentRotation) {
					return fmt.Errorf("the signing key was rotated meanwhile; %s was not retired: look again (ward keys list) and retry", args[0])
				}
				return err
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

	cmd.AddCommand(list, rotate, retire, kek, newRotateKEKCmd(e), natsUser)
	return cmd
}

// retireKey retires kid and says on stderr what that breaks.
func retireKey(ctx context.Context, e *cliEnv, a *app.App, kid string) error {
	if err := a.Keys.Retire(ctx, actorCLI, kid); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "retired signing key %s: removed from JWKS\n", kid)
	fmt.Fprintf(e.stderr, "warning: tokens signed by %s no longer verify: access and ID tokens (and SETs not yet delivered) are\n"+
		"refused by Ward at once, by other Ward instances at their next key reload (within %s), and by resource\n"+
		"servers and relying parties when they fetch /jwks again. Clients get new tokens with their refresh tokens.\n",
		kid, app.MaintenanceInterval)
	return nil
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
