package main

// Conditional Access as code: `ward policy apply | export | test | whatif
// | versions`. apply, export, whatif and versions work on the server's
// store (a running server puts a new version in force within about a
// second); test runs offline against a file, or
// against the stored policies.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/policy"
)

func newPolicyCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("policy", "Manage Conditional Access policies (policy as code)")

	var applyFile, comment string
	var expect int64
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate and store a policy document (YAML or JSON); unchanged documents store nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := readPolicyDoc(e, applyFile)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				res, err := a.Access.Apply(ctx, doc, access.ApplyOptions{Actor: actorCLI, Comment: comment, ExpectVersion: expect})
				if errors.Is(err, access.ErrInvalid) {
					return &exitError{code: exitUsage, err: err}
				} else if err != nil {
					return err
				}
				if !res.Changed {
					fmt.Fprintf(e.stdout, "unchanged: version %d is already in force\n", res.Version)
					return nil
				}
				fmt.Fprintf(e.stdout, "applied version %d", res.Version)
				for _, part := range []struct {
					name string
					ids  []string
				}{{"added", res.Added}, {"updated", res.Updated}, {"removed", res.Removed}} {
					if len(part.ids) > 0 {
						fmt.Fprintf(e.stdout, "; %s %s", part.name, strings.Join(part.ids, ", "))
					}
				}
				if res.LocationsChanged {
					fmt.Fprint(e.stdout, "; named locations changed")
				}
				fmt.Fprintln(e.stdout)
				return nil
			})
		},
	}
	apply.Flags().StringVarP(&applyFile, "file", "f", "", "policy document (YAML or JSON; - for stdin)")
	apply.Flags().StringVar(&comment, "comment", "", "note kept with the new version")
	apply.Flags().Int64Var(&expect, "expect-version", access.AnyVersion, "fail unless this version is in force (optimistic concurrency)")
	_ = apply.MarkFlagRequired("file")

	var format string
	var exportVersion int64
	export := &cobra.Command{
		Use:   "export",
		Short: "Print the policy document in force (or --version N)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "yaml" && format != "json" {
				return &exitError{code: exitUsage, err: errors.New("--format must be yaml or json")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				var doc *policy.Document
				var v int64
				var err error
				if exportVersion > 0 {
					_, doc, err = a.Access.Version(ctx, exportVersion)
					v = exportVersion
				} else {
					doc, v, err = a.Access.Current(ctx)
				}
				if err != nil {
					return err
				}
				return writeDoc(e.stdout, doc, v, format)
			})
		},
	}
	export.Flags().StringVar(&format, "format", "yaml", "yaml or json")
	export.Flags().Int64Var(&exportVersion, "version", 0, "a stored version instead of the one in force")

	var casesFile, policiesFile string
	var verbose bool
	test := &cobra.Command{
		Use:   "test -f CASES [--policies FILE]",
		Short: "Check expected decisions; exits 1 on any mismatch",
		Long: `Evaluates every case of CASES (YAML: a list of {name, input, expect}) against
the policies of --policies, or against the stored policies in force, and
reports each mismatch. The exit code is 1 when any case fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readInput(e, casesFile)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			cases, err := policy.DecodeCases(data)
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", casesFile, err)}
			}
			run := func(set *policy.Set) error {
				if set == nil {
					set, _ = policy.Compile(nil, nil)
				}
				failed := 0
				for _, r := range set.RunCases(cases) {
					if r.Pass {
						if verbose {
							fmt.Fprintf(e.stdout, "PASS %s (%s)\n", r.Name, r.Decision.Outcome)
						}
						continue
					}
					failed++
					fmt.Fprintf(e.stdout, "FAIL %s\n", r.Name)
					for _, m := range r.Mismatches {
						fmt.Fprintf(e.stdout, "    %s\n", m)
					}
				}
				fmt.Fprintf(e.stdout, "%d cases, %d passed, %d failed\n", len(cases), len(cases)-failed, failed)
				if failed > 0 {
					return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d policy cases failed", failed, len(cases))}
				}
				return nil
			}
			if policiesFile != "" {
				doc, err := readPolicyDoc(e, policiesFile)
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				set, err := policy.Compile(doc.Policies, doc.Locations)
				if err != nil {
					return &exitError{code: exitUsage, err: fmt.Errorf("%s:\n%w", policiesFile, err)}
				}
				return run(set)
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				set, _, err := a.Access.Set(ctx)
				if err != nil {
					return err
				}
				return run(set)
			})
		},
	}
	test.Flags().StringVarP(&casesFile, "file", "f", "", "test cases (YAML)")
	test.Flags().StringVar(&policiesFile, "policies", "", "policy document to test instead of the stored policies")
	test.Flags().BoolVarP(&verbose, "verbose", "v", false, "also list passing cases")
	_ = test.MarkFlagRequired("file")

	var wi access.WhatIf
	var asJSON bool
	whatif := &cobra.Command{
		Use:   "whatif --app CLIENT [--user U] [--ip IP] [--device D] [--risk LEVEL] ...",
		Short: "Explain what the policies in force decide for a hypothetical sign-in",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				res, err := a.Access.Explain(ctx, wi)
				if errors.Is(err, access.ErrWhatIf) {
					return &exitError{code: exitUsage, err: err}
				} else if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(res)
				}
				printDecision(e.stdout, res)
				return nil
			})
		},
	}
	f := whatif.Flags()
	f.StringVar(&wi.User, "user", "", "username or user id (omit for a client's own token)")
	f.StringVar(&wi.App, "app", "", "client id")
	f.StringVar(&wi.IP, "ip", "", "client IP address")
	f.StringVar(&wi.Device, "device", "", "registered device id")
	f.StringVar(&wi.SignInRisk, "risk", "", "sign-in risk: none, low, medium, high")
	f.StringVar(&wi.UserRisk, "user-risk", "", "user risk (default: the user's stored level)")
	f.StringVar(&wi.Flow, "flow", "", "interactive, refresh, device_code or client_credentials")
	f.BoolVar(&wi.MFA, "mfa", false, "the session has done multi-factor authentication")
	f.BoolVar(&wi.Passkey, "passkey", false, "the session signed in with a passkey or security key (phishing-resistant)")
	f.BoolVar(&asJSON, "json", false, "print the full result as JSON")
	_ = whatif.MarkFlagRequired("app")

	versions := &cobra.Command{
		Use:   "versions",
		Short: "List stored policy versions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				vs, err := a.Access.Versions(ctx, 100)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tCREATED\tBY\tCOMMENT")
				for _, v := range vs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", v.Version, v.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"), v.CreatedBy, v.Comment)
				}
				return tw.Flush()
			})
		},
	}

	cmd.AddCommand(apply, export, test, whatif, versions)
	return cmd
}

// readInput reads a file, or stdin for "-".
func readInput(e *cliEnv, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(e.stdin, 8<<20))
	}
	return os.ReadFile(path)
}

func readPolicyDoc(e *cliEnv, path string) (*policy.Document, error) {
	data, err := readInput(e, path)
	if err != nil {
		return nil, err
	}
	doc, err := policy.DecodeYAML(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

func writeDoc(w io.Writer, doc *policy.Document, version int64, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	fmt.Fprintf(w, "# Ward Conditional Access policies, version %d\n", version)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// printDecision writes a What-If result for people.
func printDecision(w io.Writer, res *access.Result) {
	fmt.Fprintf(w, "outcome: %s (policy version %d)\n", res.Outcome, res.Version)
	if len(res.BlockedBy) > 0 {
		fmt.Fprintf(w, "blocked by: %s\n", strings.Join(res.BlockedBy, ", "))
	}
	for _, rq := range res.Requirements {
		fmt.Fprintf(w, "requires (%s of) %s: %s\n", rq.Operator, rq.Policy, strings.Join(rq.Controls, ", "))
	}
	s := res.Session
	if s.SignInEveryTime || s.SignInFrequency > 0 || s.AccessTokenLifetime > 0 || s.StrictLocation {
		fmt.Fprintf(w, "session: sign-in every time=%t, frequency=%s, access-token lifetime=%s, strict location=%t\n",
			s.SignInEveryTime, s.SignInFrequency, s.AccessTokenLifetime, s.StrictLocation)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tSTATE\tRESULT\tDETAIL")
	for _, p := range res.Policies {
		detail := p.Reason
		if p.Result != policy.ResultNotApplied {
			detail = string(p.Outcome)
			if len(p.Unmet) > 0 {
				detail += ": unmet " + strings.Join(p.Unmet, ", ")
			}
		}
		if p.Error != "" {
			detail += " (filter error: " + p.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, p.State, p.Result, detail)
	}
	_ = tw.Flush()
}
