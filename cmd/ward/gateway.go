package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/gateway"
)

// gatewayConfigEnv names the gateway's configuration file when --config
// is not given ($WARD_CONFIG is the IdP's).
const gatewayConfigEnv = "WARD_GATEWAY_CONFIG"

func newGatewayCmd(e *cliEnv) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the reverse proxy that protects HTTP apps with Ward tokens",
		Long: `Run ward gateway: a reverse proxy that validates DPoP-bound Ward access
tokens per route (path prefix -> upstream, audience, scopes), follows the
CAE stream (SSF push or poll, or Ward's stream in NATS), and passes the
verified identity upstream in a signed Ward-Identity header. It serves
/healthz, /readyz and /metrics.

The configuration file (--config, or $` + gatewayConfigEnv + `) is YAML; see
docs/gateway.md. SIGHUP, or a change of the file, reloads the routes
without dropping connections; an invalid file keeps the running routes.
SIGINT or SIGTERM shut the gateway down gracefully.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := e.configFile
			if !cmd.Flags().Changed("config") {
				path, _ = e.lookupEnv(gatewayConfigEnv)
			}
			if path == "" {
				return &exitError{code: exitUsage, err: fmt.Errorf("ward gateway needs --config FILE (or $%s)", gatewayConfigEnv)}
			}
			return e.gateway(cmd.Context(), path)
		},
	}
	// The gateway's own --config shadows the IdP's, whose help names
	// $WARD_CONFIG.
	cmd.Flags().StringVarP(&e.configFile, "config", "c", "", "the gateway's configuration file (YAML); default $"+gatewayConfigEnv)
	return cmd
}

func (e *cliEnv) gateway(ctx context.Context, path string) error {
	cfg, err := gateway.LoadConfig(path, e.lookupEnv)
	if err != nil {
		return &exitError{code: exitUsage, err: problemList(path, err)}
	}
	log := newLogger(config.Log{Level: cfg.Log.Level, Format: cfg.Log.Format}, e.stderr, slog.LevelDebug)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	g, err := gateway.New(gateway.Options{Config: cfg, ConfigFile: path, LookupEnv: e.lookupEnv, Logger: log})
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = g.Reload("sighup") // logs and counts its own outcome
			}
		}
	}()
	return g.ListenAndServe(ctx)
}

// problemList formats a configuration error with one problem per line,
// as loadConfig does for the IdP's configuration.
func problemList(path string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid gateway configuration %s (%d problem", path, len(list))
	if len(list) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, x := range list {
		b.WriteString("\n  - " + x.Error())
	}
	return errors.New(b.String())
}
