package main

// The device agent's commands: `ward device enroll | posture | curl |
// status`. They run on the device (no server configuration, no store):
// they talk to a Ward server over HTTP as the agent client, with the
// device key.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/posture"
)

// agentHooks let tests replace what the agent commands take from the
// machine: the posture collector and the HTTP client. nil means the real
// ones.
var agentHooks struct {
	collector  posture.Collector
	httpClient *http.Client
	sleep      func(ctx context.Context, d time.Duration) error
	now        func() time.Time
}

// agentOptions are the agent options the hooks set (the real ones
// outside tests).
func agentOptions() agent.Options {
	return agent.Options{Collector: agentHooks.collector, HTTPClient: agentHooks.httpClient, Now: agentHooks.now, Sleep: agentHooks.sleep}
}

// newDeviceAgentCmd is a stand-alone `device` parent holding only the
// agent commands, for use while no admin `device` command exists.
func newDeviceAgentCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("device", "Enrol this device and act as its agent")
	addAgentCommands(cmd, e)
	return cmd
}

// addAgentCommands adds the agent's subcommands to the `device` command.
func addAgentCommands(device *cobra.Command, e *cliEnv) {
	var cfgPath string
	configFlag := func(c *cobra.Command) {
		def, _ := e.lookupEnv("WARD_AGENT_CONFIG")
		c.Flags().StringVar(&cfgPath, "agent-config", def, "agent configuration file (default $WARD_AGENT_CONFIG or <user config dir>/ward/agent.json)")
	}
	openWith := func(ctx context.Context, o agent.Options) (*agent.Client, error) {
		base := agentOptions()
		o.Collector, o.HTTPClient, o.Now, o.Sleep = base.Collector, base.HTTPClient, base.Now, base.Sleep
		return agent.Load(ctx, cfgPath, o)
	}
	openClient := func(ctx context.Context) (*agent.Client, error) { return openWith(ctx, agent.Options{}) }

	device.AddCommand(
		newEnrollCmd(e, &cfgPath, configFlag),
		newPostureCmd(e, configFlag, openClient),
		newCurlCmd(e, configFlag, openWith),
		newAgentStatusCmd(e, &cfgPath, configFlag, openClient),
		newAgentRunCmd(e, configFlag, openClient),
	)
}

// newAgentRunCmd is the agent's resident mode: it reports posture on a
// schedule until interrupted (run it from a systemd user unit or a
// LaunchAgent).
func newAgentRunCmd(e *cliEnv, configFlag func(*cobra.Command), openClient func(context.Context) (*agent.Client, error)) *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "run [--interval 1h]",
		Short: "Report this device's posture now and then on a schedule, until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			c, err := openClient(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			err = c.RunReports(ctx, interval, func(d *agent.Device, err error) {
				if err != nil {
					fmt.Fprintf(e.stderr, "%s posture report failed: %v\n", time.Now().Format(time.RFC3339), err)
					return
				}
				fmt.Fprintf(e.stdout, "%s reported; compliance: %s\n", time.Now().Format(time.RFC3339), d.Compliance)
			})
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Hour, "time between reports")
	configFlag(cmd)
	return cmd
}

func newEnrollCmd(e *cliEnv, cfgPath *string, configFlag func(*cobra.Command)) *cobra.Command {
	var server, clientID, scope, keyStore, keyDir string
	var force bool
	cmd := &cobra.Command{
		Use:   "enroll --server URL",
		Short: "Register this device with a Ward server (device-code sign-in)",
		Long: `Register this device: create a device key (in the TPM when there is one),
sign in through the device authorization grant (open the address shown, type
the code, sign in and approve), register the key and send a first signed
posture report. The session is bound to the device key and saved with mode
0600 in the agent configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			var old *agent.Config
			if c, err := agent.LoadConfig(*cfgPath); err == nil {
				switch {
				case c.Incomplete && !force:
					// A registered device whose session is not bound yet:
					// finish instead of starting over.
					return e.finishEnrollment(ctx, c)
				case !force:
					return fmt.Errorf("this device is already enrolled at %s as %s (config %s); use --force to enrol it again", c.Server, c.DeviceID, c.Path())
				}
				old = c
			} else if !errors.Is(err, agent.ErrNotEnrolled) && !force {
				return err
			}
			store, err := agent.OpenStore(keyStore, keyDir)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			defer store.Close()
			if old != nil {
				e.deregister(ctx, old, store)
			}
			cfg, err := agent.Enroll(ctx, agent.EnrollOptions{
				Server: server, ClientID: clientID, Scope: scope, Store: store, KeyDir: keyDir,
				Collector: agentHooks.collector, HTTPClient: agentHooks.httpClient, Sleep: agentHooks.sleep,
				Now:        agentHooks.now,
				ConfigPath: *cfgPath,
				Prompt: func(uri, complete, code string) {
					fmt.Fprintf(e.stdout, "To enrol this device, open\n\n    %s\n\nand enter the code\n\n    %s\n\n", printable(uri), printable(code))
					if complete != "" {
						fmt.Fprintf(e.stdout, "(or open %s)\n\n", printable(complete))
					}
					fmt.Fprintln(e.stdout, "Waiting for approval…")
				},
			})
			if cfg == nil {
				if errors.Is(err, context.Canceled) {
					return errors.New("enrolment cancelled")
				}
				return err
			}
			if old != nil && old.KeyName != "" && old.KeyName != cfg.KeyName && old.KeyStorage == store.Kind() && old.KeyDir == keyDir {
				_ = store.Delete(context.WithoutCancel(ctx), old.KeyName) // the previous device key is of no further use
			}
			if errors.Is(err, agent.ErrBindingRefused) {
				fmt.Fprintf(e.stdout, "Registered device %s, key %s (%s storage), configuration %s, but the enrolment is not finished.\n", cfg.DeviceID, cfg.JKT, cfg.KeyStorage, cfg.Path())
				return fmt.Errorf("%w\nFix what is named above (a Conditional Access policy, the device's compliance), then run `ward device enroll` again to finish", err)
			}
			fmt.Fprintf(e.stdout, "Enrolled: device %s, key %s (%s storage), configuration %s\n", cfg.DeviceID, cfg.JKT, cfg.KeyStorage, cfg.Path())
			if err != nil {
				return err // ErrPostureNotSent, ErrKeyNotAttested
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "Ward issuer URL, e.g. https://id.example.com")
	f.StringVar(&clientID, "client-id", agent.DefaultClientID, "OAuth client of the agent")
	f.StringVar(&scope, "scope", agent.DefaultScope, "scope to ask for (asked for again when the agent signs in again)")
	f.StringVar(&keyStore, "key-store", "auto", "where the device key lives: auto (TPM if present), file or tpm")
	f.StringVar(&keyDir, "key-dir", "", "key store directory (default <user config dir>/ward/keys or tpm-keys)")
	f.BoolVar(&force, "force", false, "enrol again even if this device is enrolled already")
	_ = cmd.MarkFlagRequired("server")
	configFlag(cmd)
	return cmd
}

// lastByte passes writes on and remembers the last byte written.
type lastByte struct {
	w io.Writer
	n int64
	b byte
}

func (l *lastByte) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.n += int64(n)
		l.b = p[n-1]
	}
	return n, err
}

// finishEnrollment ends an enrolment saved incomplete: the device is
// registered, its session not yet bound (see agent.Config.Incomplete).
func (e *cliEnv) finishEnrollment(ctx context.Context, cfg *agent.Config) error {
	c, err := agent.Open(ctx, cfg, agentOptions())
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(e.stdout, "Finishing the enrolment of device %s at %s…\n", cfg.DeviceID, cfg.Server)
	if err := c.FinishEnrollment(ctx); err != nil {
		if errors.Is(err, agent.ErrBindingRefused) {
			return fmt.Errorf("%w\nFix what is named above, then run `ward device enroll` again (or `ward device enroll --force` to start over)", err)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "Enrolled: device %s, key %s (%s storage), configuration %s\n", cfg.DeviceID, cfg.JKT, cfg.KeyStorage, cfg.Path())
	return nil
}

// deregister removes the previously enrolled device from its server before
// enrolling again (--force), so that it does not stay registered and
// active with nobody using it. A device that cannot be reached this way
// (its session is gone, the server is another) is named for the
// administrator instead.
func (e *cliEnv) deregister(ctx context.Context, old *agent.Config, store keystore.Store) {
	if old.DeviceID == "" {
		return
	}
	o := agentOptions()
	o.Store = store
	c, err := agent.Open(ctx, old, o)
	if err == nil {
		err = c.Deregister(ctx)
		c.Close()
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "ward: the previous device %s could not remove itself from %s (%v); an administrator can: ward device delete %s\n", old.DeviceID, old.Server, err, old.DeviceID)
		return
	}
	fmt.Fprintf(e.stdout, "Removed the previous device %s from %s.\n", old.DeviceID, old.Server)
}

func newPostureCmd(e *cliEnv, configFlag func(*cobra.Command), openClient func(context.Context) (*agent.Client, error)) *cobra.Command {
	var send bool
	cmd := &cobra.Command{
		Use:   "posture [--send]",
		Short: "Show this device's security posture; --send reports it to the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !send {
				col := agentHooks.collector
				if col == nil {
					col = posture.NewCollector()
				}
				p, err := col.Collect(ctx)
				if err != nil {
					return err
				}
				fmt.Fprint(e.stdout, p.Table())
				return nil
			}
			c, err := openClient(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			p, err := c.Collect(ctx)
			if err != nil {
				return err
			}
			fmt.Fprint(e.stdout, p.Table())
			d, err := c.SendPosture(ctx, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "\nReported. Compliance: %s\n", d.Compliance)
			printFailures(e.stdout, d.Failures)
			return nil
		},
	}
	cmd.Flags().BoolVar(&send, "send", false, "sign the posture with the device key and report it")
	configFlag(cmd)
	return cmd
}

func newCurlCmd(e *cliEnv, configFlag func(*cobra.Command), openWith func(context.Context, agent.Options) (*agent.Client, error)) *cobra.Command {
	var method, data string
	var headers []string
	var interactive bool
	cmd := &cobra.Command{
		Use:   "curl URL [-X METHOD] [-d DATA]",
		Short: "Send a request with the device's DPoP-bound access token",
		Long: `Send an HTTP request with the device's access token and a fresh DPoP proof
signed by the device key. A URL starting with / is relative to the server.
The status line goes to stderr, the body to stdout; the exit code is 1 for
HTTP status 400 and above. -d @FILE reads the body from FILE (@- from stdin).

When the server refuses to refresh the device's session until the user signs
in again (Conditional Access or a resource asks for multi-factor
authentication or a fresh sign-in, the password was changed, the session was
revoked), the agent can sign in again with a device code, as at enrolment:
the address and code are shown on stderr, and the request goes on once the
sign-in is approved. This happens when stderr is a terminal, or with
--interactive; --interactive=false turns it off.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("interactive") {
				interactive = isTerminal(e.stderr)
			}
			var o agent.Options
			if interactive {
				o.Interactive = signInPrompt(e.stderr)
			}
			c, err := openWith(ctx, o)
			if err != nil {
				return err
			}
			defer c.Close()
			u := args[0]
			if strings.HasPrefix(u, "/") {
				u = c.Config().Server + u
			}
			var body []byte
			hasBody := cmd.Flags().Changed("data")
			if hasBody {
				if body, err = readData(e, data); err != nil {
					return err
				}
			}
			if method == "" {
				method = http.MethodGet
				if hasBody {
					method = http.MethodPost
				}
			}
			var rd io.Reader
			if hasBody {
				rd = bytes.NewReader(body) // replayable: a refresh-and-retry can resend it
			}
			req, err := http.NewRequestWithContext(ctx, strings.ToUpper(method), u, rd)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if hasBody {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok || strings.TrimSpace(k) == "" {
					return &exitError{code: exitUsage, err: fmt.Errorf("header %q: want \"Name: value\"", h)}
				}
				req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			resp, err := c.HTTPClient().Do(req)
			if err != nil {
				if errors.Is(err, agent.ErrReauthRequired) && !interactive {
					return fmt.Errorf("%w\nsign in again: run the command again with --interactive (or from a terminal)", err)
				}
				return err
			}
			defer resp.Body.Close()
			fmt.Fprintf(e.stderr, "%s %s\n", resp.Proto, resp.Status)
			last := &lastByte{w: e.stdout}
			if _, err := io.Copy(last, resp.Body); err != nil {
				return err
			}
			if last.n > 0 && last.b != '\n' {
				// The body is passed on as it is; the line break that ends
				// the terminal's line goes to stderr.
				fmt.Fprintln(e.stderr)
			}
			if resp.StatusCode >= 400 {
				return &exitError{code: exitFailure, err: fmt.Errorf("HTTP status %d", resp.StatusCode)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&method, "request", "X", "", "HTTP method (default GET, or POST with -d)")
	f.StringVarP(&data, "data", "d", "", "request body (form-encoded unless -H sets Content-Type); @FILE or @- to read it")
	f.StringArrayVarP(&headers, "header", "H", nil, "extra header \"Name: value\" (repeatable)")
	f.BoolVar(&interactive, "interactive", false, "sign in again with a device code (shown on stderr) when the server asks for it (default: when stderr is a terminal)")
	configFlag(cmd)
	return cmd
}

// signInPrompt shows the device code of an interactive sign-in on w.
func signInPrompt(w io.Writer) func(context.Context, agent.DevicePrompt) error {
	return func(_ context.Context, p agent.DevicePrompt) error {
		fmt.Fprintln(w, "Ward asks you to sign in again on this device.")
		if p.Reason != "" {
			fmt.Fprintf(w, "(the server says: %s)\n", printable(p.Reason))
		}
		fmt.Fprintf(w, "\nOpen\n\n    %s\n\nand enter the code\n\n    %s\n\n", printable(p.VerificationURI), printable(p.UserCode))
		if p.VerificationURIComplete != "" {
			fmt.Fprintf(w, "(or open %s)\n\n", printable(p.VerificationURIComplete))
		}
		fmt.Fprintln(w, "Waiting for approval…")
		return nil
	}
}

// printable replaces control characters in server-supplied text shown on a
// terminal, so that it cannot move the cursor or rewrite the screen.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// readData returns the -d value, reading @FILE or @- (stdin).
func readData(e *cliEnv, data string) ([]byte, error) {
	name, ok := strings.CutPrefix(data, "@")
	if !ok {
		return []byte(data), nil
	}
	if name == "-" {
		return io.ReadAll(io.LimitReader(e.reader(), 64<<20))
	}
	return os.ReadFile(name)
}

// keyAttested says whether the server verified that the device key is in
// a TPM, and how far it trusts that TPM.
func keyAttested(d *agent.Device) string {
	a := d.KeyAttestation
	switch {
	case !d.KeyAttested || a == nil:
		return "no (the key storage is the agent's claim)"
	case a.EKCertified:
		return "yes, TPM 2.0 certified by " + printable(a.EKIssuer)
	default:
		return "yes, TPM 2.0 (the server does not check the TPM's vendor)"
	}
}

func newAgentStatusCmd(e *cliEnv, cfgPath *string, configFlag func(*cobra.Command), openClient func(context.Context) (*agent.Client, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this device's enrolment and its compliance on the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := agent.LoadConfig(*cfgPath)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
			row("Server", cfg.Server)
			row("Client", cfg.ClientID)
			row("Device", dash(cfg.DeviceID))
			row("Key", fmt.Sprintf("%s (%s storage)", cfg.KeyName, cfg.KeyStorage))
			row("Key thumbprint", dash(cfg.JKT))
			row("Configuration", cfg.Path())
			if !cfg.EnrolledAt.IsZero() {
				row("Enrolled", cfg.EnrolledAt.UTC().Format(time.RFC3339))
			}
			c, err := openClient(ctx)
			if err != nil {
				tw.Flush()
				return err
			}
			defer c.Close()
			d, err := c.Device(ctx)
			if err != nil {
				tw.Flush()
				return err
			}
			row("Status", d.Status)
			row("Key attested", keyAttested(d))
			row("Compliance", d.Compliance)
			if !d.PostureAt.IsZero() {
				row("Last posture report", d.PostureAt.UTC().Format(time.RFC3339))
			}
			if !d.LastSeen.IsZero() {
				row("Last seen", d.LastSeen.UTC().Format(time.RFC3339))
			}
			if exp := c.Config().TokenExpiry; !exp.IsZero() {
				row("Access token valid until", exp.UTC().Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			printFailures(e.stdout, d.Failures)
			return nil
		},
	}
	configFlag(cmd)
	return cmd
}

func printFailures(w io.Writer, fs []agent.ComplianceFailure) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintln(w, "Failing compliance rules:")
	for _, f := range fs {
		line := "  - " + f.Rule
		if f.Detail != "" {
			line += ": " + f.Detail
		}
		if f.Fix != "" {
			line += " (fix: " + f.Fix + ")"
		}
		fmt.Fprintln(w, line)
	}
}
