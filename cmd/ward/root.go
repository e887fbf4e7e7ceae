package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2 // bad flags or invalid configuration
	actorCLI    = "cli"
	cliLogLevel = slog.LevelWarn
)

// cliEnv is the process environment a command runs in; tests replace it.
type cliEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// environ is KEY=VALUE pairs; nil means os.Environ().
	environ []string

	// set by flags
	configFile string
	dev        bool
	listen     string // serve --listen

	stdinReader *bufio.Reader
}

func (e *cliEnv) env() []string {
	if e.environ == nil {
		return os.Environ()
	}
	return e.environ
}

func (e *cliEnv) lookupEnv(k string) (string, bool) {
	if e.environ == nil {
		return os.LookupEnv(k)
	}
	for _, kv := range e.environ {
		if name, v, ok := strings.Cut(kv, "="); ok && name == k {
			return v, true
		}
	}
	return "", false
}

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, e *cliEnv) int {
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(e.stderr, "ward:", err)
	if strings.HasPrefix(err.Error(), "unknown shorthand flag") {
		// Thumbprints and other base64url ids can start with "-".
		fmt.Fprintln(e.stderr, "ward: an argument that starts with '-' goes after '--', for example: ward device show -- -UXRS…")
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isUsageError(err) {
		return exitUsage
	}
	return exitFailure
}

func isUsageError(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func newRootCmd(e *cliEnv) *cobra.Command {
	root := &cobra.Command{
		Use:   "ward",
		Short: "Ward identity provider",
		Long: `Ward is an OAuth 2 / OpenID Connect identity provider with sender-constrained
(DPoP) tokens, Conditional Access and Continuous Access Evaluation.

Configuration comes from --config (or $WARD_CONFIG) plus WARD_* environment
overrides, for example WARD_ISSUER or WARD_STORAGE__POSTGRES__DSN
(a double underscore separates nesting levels). See docs/configuration.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       readVersion().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	defCfg, _ := e.lookupEnv("WARD_CONFIG")
	root.PersistentFlags().StringVarP(&e.configFile, "config", "c", defCfg, "configuration file (YAML); default $WARD_CONFIG")
	root.PersistentFlags().BoolVar(&e.dev, "dev", false, "development mode: demo data, generated key-encryption key")
	root.AddCommand(
		newServeCmd(e),
		newUserCmd(e),
		newGroupCmd(e),
		newClientCmd(e),
		newKeysCmd(e),
		newLogsCmd(e),
		newDeviceCmd(e),
		newSessionCmd(e),
		newComplianceCmd(e),
		newPolicyCmd(e),
		newGatewayCmd(e),
		newSSFCmd(e),
		newSSFReceiverCmd(e),
		newRiskCmd(e),
		newGraphCmd(e),
		newIncidentsCmd(e),
		newDemoCmd(e),
		newBackupCmd(e),
		newRestoreCmd(e),
	)
	return root
}

// loadConfig loads and validates the configuration. An invalid
// configuration prints every problem and exits with code 2.
func (e *cliEnv) loadConfig() (*config.Config, error) {
	o := config.LoadOptions{File: e.configFile, Environ: e.env()}
	o.Overrides = map[string]any{}
	if e.dev {
		o.Overrides["dev"] = true
	}
	if e.listen != "" {
		o.Overrides["listen"] = e.listen
	}
	cfg, err := config.LoadWith(o)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	if err := cfg.Validate(); err != nil {
		var list []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			list = j.Unwrap()
		} else {
			list = []error{err}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "invalid configuration (%d problem", len(list))
		if len(list) != 1 {
			b.WriteString("s")
		}
		b.WriteString("):")
		for _, x := range list {
			b.WriteString("\n  - " + x.Error())
		}
		return nil, &exitError{code: exitUsage, err: errors.New(b.String())}
	}
	return cfg, nil
}

// newLogger builds the slog logger the configuration asks for, writing to
// w. minLevel raises the configured level (commands other than serve log
// only warnings and errors).
func newLogger(c config.Log, w io.Writer, minLevel slog.Level) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Level)); err != nil {
		lvl = slog.LevelInfo
	}
	lvl = max(lvl, minLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// openApp loads the configuration and opens the app for an admin command.
func (e *cliEnv) openApp(ctx context.Context) (*app.App, error) {
	cfg, err := e.loadConfig()
	if err != nil {
		return nil, err
	}
	log := newLogger(cfg.Log, e.stderr, cliLogLevel)
	// Tool: events go to the database; the running server relays them
	// (the embedded NATS store belongs to the server process).
	return app.OpenWith(ctx, cfg, log, app.Options{LookupEnv: e.lookupEnv, Tool: true})
}

// withApp runs fn with an opened app and closes it afterwards.
func (e *cliEnv) withApp(cmd *cobra.Command, fn func(ctx context.Context, a *app.App) error) error {
	ctx := cmd.Context()
	a, err := e.openApp(ctx)
	if err != nil {
		return err
	}
	defer a.Close()
	return fn(ctx, a)
}

func (e *cliEnv) reader() *bufio.Reader {
	if e.stdinReader == nil {
		e.stdinReader = bufio.NewReader(e.stdin)
	}
	return e.stdinReader
}

// readLine reads one line from stdin without its line ending.
func (e *cliEnv) readLine() (string, error) {
	s, err := e.reader().ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && s != "") {
		if errors.Is(err, io.EOF) {
			return "", errors.New("no input on stdin")
		}
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// readPassword reads a new password: the first line of stdin with
// --password-stdin, otherwise an interactive prompt (twice, without echo).
// Passwords are never taken from flag values, which leak into shell
// history and process listings.
func (e *cliEnv) readPassword(fromStdin bool, prompt string) (string, error) {
	if fromStdin {
		pw, err := e.readLine()
		if err != nil {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		if pw == "" {
			return "", errors.New("empty password on stdin")
		}
		return pw, nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("stdin is not a terminal; pipe the password and use --password-stdin")
	}
	fmt.Fprint(e.stderr, prompt+": ")
	a, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(e.stderr, "Repeat: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords do not match")
	}
	if len(a) == 0 {
		return "", errors.New("empty password")
	}
	return string(a), nil
}

// groupCmd is a command that only holds subcommands: without one it prints
// help, and an unknown one is a usage error (cobra would exit 0).
func groupCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &exitError{code: exitUsage, err: fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return cmd.Help()
		},
	}
}
