package main

// `ward keys rotate-kek`: re-seal everything the key-encryption key
// protects under a new one (app.RotateKEK), then end what was keyed under
// keys derived from the old one.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

func newRotateKEKCmd(e *cliEnv) *cobra.Command {
	var newFile string
	cmd := &cobra.Command{
		Use:   "rotate-kek [--new-kek-file FILE]",
		Short: "Re-encrypt everything sealed under the key-encryption key under a new one",
		Long: `Replace the key-encryption key (KEK). Stop every ward serve of this
deployment first (with the embedded NATS server the command refuses to run
beside one, and no server starts while it runs).

The new key is written before anything changes: to FILE (created with mode
0600) with --new-kek-file, otherwise on stdout, like ward keys kek:

    umask 077; ward keys rotate-kek > /etc/ward/kek.new

Then, in one transaction, every value sealed under the current key (signing
keys, TOTP seeds, SSF push authorization headers) is sealed again under the
new one: a crash leaves everything under the one key or the other. With an
existing FILE the command uses the key in it and finishes an interrupted
rotation: what is under the new key already is left as it is.

What is keyed under keys derived from the KEK cannot be re-keyed and ends:
every session is revoked (refresh tokens, authorization and device codes and
browser cookies no longer match), client secrets stored by Ward stop
authenticating (the command lists those clients: rotate their secrets;
clients of the configuration file and of dev mode get theirs keyed again at
the next start), DPoP and posture nonces in flight are refused once.

Afterwards put the new key in place of the old one on every instance
(kek.file or $WARD_KEK) and start them; the old key opens nothing any more.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log, e.stderr, cliLogLevel)
			old, err := app.LoadKEK(cfg, e.lookupEnv)
			if err != nil {
				return err
			}
			if cfg.Bus.Driver == config.BusNATS && cfg.Bus.NATS.URL == "" {
				release, err := lockServerStore(cfg.Bus.NATS.Embedded.StoreDir)
				if err != nil {
					return err
				}
				defer release()
			}
			report := e.stdout
			next, err := newKEK(e, newFile)
			if err != nil {
				return err
			}
			if newFile == "" {
				report = e.stderr // stdout holds the key alone
			}
			rot, err := app.RotateKEK(ctx, cfg, log, old, next, actorCLI)
			if errors.Is(err, app.ErrSameKEK) {
				return &exitError{code: exitUsage, err: errors.New("the new key-encryption key is the one in use")}
			}
			if err != nil {
				return fmt.Errorf("%w\nthe data is as it was: the current key-encryption key opens everything", err)
			}
			fmt.Fprintf(report, "re-sealed under the new key-encryption key: %d signing key(s), %d TOTP seed(s), %d SSF push authorization header(s)\n",
				rot.Resealed[store.SealedSigningKey], rot.Resealed[store.SealedTOTP], rot.Resealed[store.SealedSSFAuthHeader])
			return e.afterKEKRotation(ctx, cfg, next, report)
		},
	}
	cmd.Flags().StringVar(&newFile, "new-kek-file", "", "file for the new key (created, mode 0600); an existing one is used to finish an interrupted rotation")
	return cmd
}

// newKEK returns the new key: the one in path when it exists, else a fresh
// one, written to path (0600, synced) or to stdout before it is used.
func newKEK(e *cliEnv, path string) (*secret.KEK, error) {
	if path != "" {
		if _, err := os.Stat(path); err == nil {
			k, err := secret.LoadKEK(path, false)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(e.stderr, "using the key-encryption key in %s (finishing a rotation)\n", path)
			return k, nil
		}
	}
	raw := make([]byte, secret.KEKSize)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	defer clear(raw)
	text := base64.StdEncoding.EncodeToString(raw) + "\n"
	if path == "" {
		if _, err := io.WriteString(e.stdout, text); err != nil {
			return nil, err
		}
		// Redirected to a file: on disk before anything is sealed under it.
		if f, ok := e.stdout.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
				if err := f.Sync(); err != nil {
					return nil, err
				}
			}
		}
	} else if err := writeKeyFile(path, text); err != nil {
		return nil, err
	}
	return secret.NewKEK(raw)
}

// writeKeyFile creates path (mode 0600; never overwritten) with text and
// syncs it and its directory.
func writeKeyFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("new key file: %w", err)
	}
	_, werr := f.WriteString(text)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("new key file: %w", werr)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// afterKEKRotation opens Ward with the new key (which proves it opens the
// signing keys) and ends what was keyed under keys derived from the old
// one: every session (refresh tokens and cookies no longer match), the
// users' recovery codes (deleted; it lists their users) and the stored
// client secrets, which it lists.
func (e *cliEnv) afterKEKRotation(ctx context.Context, cfg *config.Config, next *secret.KEK, report io.Writer) error {
	log := newLogger(cfg.Log, e.stderr, cliLogLevel)
	a, err := app.OpenWith(ctx, cfg, log, app.Options{LookupEnv: e.lookupEnv, Tool: true, KEK: next})
	if err != nil {
		return fmt.Errorf("the values are sealed under the new key, but Ward does not open with it: %w", err)
	}
	defer a.Close()
	users, err := a.Store.ListUsers(ctx)
	if err != nil {
		return err
	}
	ended := 0
	var errs []error
	for _, u := range users {
		ids, err := a.Sessions.RevokeUser(ctx, actorCLI, u.ID, model.CauseKEKRotated)
		ended += len(ids)
		if err != nil {
			errs = append(errs, err)
		}
	}
	fmt.Fprintf(report, "ended %d session(s): their refresh tokens and browser cookies were keyed under the old key; their users sign in again\n", ended)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ending sessions: %w (they cannot be used any more; run ward keys rotate-kek --new-kek-file FILE with the new key's file again, before the configuration names the new key, to end them)", err)
	}
	// Recovery codes were keyed under a key derived from the old KEK: none
	// can match any more. They are deleted, so that no one counts on codes
	// that no longer work, and their users named.
	var lost []string
	for _, u := range users {
		n, err := a.Identity.DeleteRecoveryCodes(ctx, actorCLI, u.ID)
		if err != nil {
			return fmt.Errorf("deleting recovery codes: %w (they no longer work; run ward keys rotate-kek --new-kek-file FILE with the new key's file again to finish)", err)
		}
		if n > 0 {
			lost = append(lost, u.Username)
		}
	}
	if len(lost) > 0 {
		fmt.Fprintln(report, "these users' recovery codes were keyed under the old key and were deleted; give them new ones once the new key is in place:")
		for _, name := range lost {
			fmt.Fprintf(report, "    ward user recovery-codes %s\n", name)
		}
	}
	clients, err := a.Store.ListClients(ctx)
	if err != nil {
		return err
	}
	var stale []string
	for _, c := range clients {
		if len(c.SecretHash) > 0 && c.ManagedBy == "" {
			stale = append(stale, c.ID)
		}
	}
	if len(stale) > 0 {
		fmt.Fprintln(report, "these clients' secrets were keyed under the old key and no longer authenticate; give them new ones once the new key is in place:")
		for _, id := range stale {
			fmt.Fprintf(report, "    ward client rotate-secret %s\n", id)
		}
	}
	fmt.Fprintln(report, "Next: put the new key in place of the old one on every instance (kek.file or $WARD_KEK) and start them.\n"+
		"The old key opens nothing any more: destroy it. If it leaked, the signing keys it sealed leaked with it:\n"+
		"run ward keys rotate --retire-previous as well.")
	return nil
}
