package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/demo"
)

func newDemoCmd(e *cliEnv) *cobra.Command {
	var jsonFile, server, targetFile string
	var step, open bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Play the token-theft attack chain against Ward, with its defences off and on",
		Long: `Play the token-theft attack chain of Microsoft's "How to break the token
theft cyber-attack chain" against a live Ward, in about twenty seconds:

  run 1, defences off: a user signs in with MFA, malware copies her tokens
         and SSO cookie, an attacker on another network replays them and
         downloads every document;
  run 2, defences on:  the same tokens are bound to her laptop's key, the
         Conditional Access policies, the detectors and Continuous Access
         Evaluation refuse every replay, say by what, raise her risk,
         revoke her sessions at the gateway (the time is measured), and she
         signs in again;
  then a proxy on the path, the servers' logs, a stolen laptop, a cookie.

With no flags it starts its own Ward (SQLite and NATS in a temporary
directory), ward gateway and a small document app on loopback ports, and
removes everything when it ends or is interrupted. The victim connects from
127.0.0.1, the attacker from 127.0.0.66.

--server URL plays run 2 against a running Ward; --target FILE (JSON) names
the accounts and clients it needs there (docs/demo.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			_, noColor := e.lookupEnv("NO_COLOR")
			p := &demo.Printer{W: e.stdout, Color: !noColor && isTerminal(e.stdout)}
			in := bufio.NewReader(e.stdin)
			if step {
				p.Pause = func(title string) {
					fmt.Fprintf(e.stderr, "\n[next: %s — press Enter]", title)
					_, _ = in.ReadString('\n')
				}
			}
			o := demo.Options{Printer: p, Console: open}
			if open {
				o.Hold = func(ctx context.Context, msg string) {
					fmt.Fprintf(e.stdout, "\n%s\nPress Enter (or Ctrl-C) to stop it and clean up.\n", msg)
					done := make(chan struct{})
					go func() { _, _ = in.ReadString('\n'); close(done) }()
					select {
					case <-done:
					case <-ctx.Done():
					}
				}
			}
			if server != "" || targetFile != "" {
				if server == "" || targetFile == "" {
					return &exitError{code: exitUsage, err: errors.New("--server and --target go together (docs/demo.md)")}
				}
				t, err := readTarget(targetFile)
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				t.Issuer = server
				o.Target = t
			}
			fmt.Fprintf(e.stdout, "ward demo: the token-theft attack chain, before and after Ward's defences (%s)\n", time.Now().UTC().Format(time.RFC3339))
			rep, err := demo.Run(ctx, o)
			if rep != nil {
				p.Summary(rep)
				if jsonFile != "" {
					if werr := rep.WriteJSON(jsonFile); werr != nil && err == nil {
						err = werr
					}
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return &exitError{code: exitFailure, err: errors.New("interrupted; everything the demo started was stopped and removed")}
				}
				return err
			}
			if f := rep.Failed(); len(f) > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("%d step(s) did not go as expected", len(f))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&jsonFile, "json", "", "write the report as JSON to FILE")
	cmd.Flags().BoolVar(&step, "step", false, "pause before each part of the story (Enter continues)")
	cmd.Flags().StringVar(&server, "server", "", "play run 2 against the Ward at URL (with --target)")
	cmd.Flags().StringVar(&targetFile, "target", "", "JSON file naming the accounts and clients --server uses (docs/demo.md)")
	cmd.Flags().BoolVar(&open, "open", false, "print the console's URLs of what the demo shows and keep the embedded Ward running for it until Enter")
	return cmd
}

func readTarget(path string) (*demo.Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t demo.Target
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &t, nil
}
