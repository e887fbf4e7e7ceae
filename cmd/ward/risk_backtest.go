package main

// `ward risk backtest | generate | score`: the token-theft detectors
// (internal/risk/detect) over recorded activity, Ward's own labelled
// traffic generator, and the detectors' scores on it (docs/risk.md).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/risk/backtest"
	"github.com/ward-idp/ward/internal/risk/detect"
)

// maxLineErrors: the bad lines named one by one on stderr; the rest are
// counted.
const maxLineErrors = 20

// detectFlags are the options backtest and score share.
type detectFlags struct {
	events, historyUntil            string
	countryDB, asnDB                string
	anonymous, malicious, corporate string
	maxTokenLifetime                time.Duration
	stats                           bool
	cpuProfile                      string
}

func (f *detectFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.events, "events", "", "activity lines (ward logs export --format jsonl; - for stdin)")
	fl.StringVar(&f.historyUntil, "history-until", "", "RFC 3339 time: activity before it only builds the detectors' history")
	fl.StringVar(&f.countryDB, "country-database", "", "country or city MMDB for lines without a location (default: conditional_access.geoip_database)")
	fl.StringVar(&f.asnDB, "asn-database", "", "ASN MMDB for lines without an ASN (default: conditional_access.asn_database)")
	fl.StringVar(&f.anonymous, "anonymous-ips", "", "anonymous IP list file (default: risk_detection.anonymous_ips_file)")
	fl.StringVar(&f.malicious, "malicious-ips", "", "malicious IP list file (default: risk_detection.malicious_ips_file)")
	fl.StringVar(&f.corporate, "corporate-ips", "", "corporate networks list file (default: risk_detection.corporate_ips_file)")
	fl.DurationVar(&f.maxTokenLifetime, "max-token-lifetime", 0, "longest access-token lifetime issued (default: the configured tokens.*_ttl)")
	fl.BoolVar(&f.stats, "stats", false, "print lines/s, CPU time and peak memory on stderr")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
}

// profile starts the CPU profile --cpuprofile asks for; the returned
// function stops it.
func (f *detectFlags) profile() (func() error, error) {
	if f.cpuProfile == "" {
		return func() error { return nil }, nil
	}
	out, err := os.Create(f.cpuProfile)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return out.Close()
	}, nil
}

// setup reads the configuration (a file is optional: the defaults
// apply) and the flags into the detectors' configuration and the places
// lookup.
func (f *detectFlags) setup(e *cliEnv) (detect.Config, *geo.DB, time.Time, error) {
	// A batch run: collect garbage less often (the heap stays bounded by
	// the detectors' state, not by the file), unless GOGC says otherwise.
	if _, set := e.lookupEnv("GOGC"); !set {
		debug.SetGCPercent(400)
	}
	var until time.Time
	usage := func(err error) (detect.Config, *geo.DB, time.Time, error) {
		return detect.Config{}, nil, until, &exitError{code: exitUsage, err: err}
	}
	if f.events == "" {
		return usage(errors.New("--events is required"))
	}
	if f.historyUntil != "" {
		t, err := time.Parse(time.RFC3339Nano, f.historyUntil)
		if err != nil {
			return usage(fmt.Errorf("--history-until %q: not an RFC 3339 time", f.historyUntil))
		}
		until = t
	}
	cfg, err := e.loadConfig()
	if err != nil {
		return detect.Config{}, nil, until, err
	}
	for _, o := range []struct{ flag, into *string }{{&f.anonymous, &cfg.RiskDetection.AnonymousIPsFile},
		{&f.malicious, &cfg.RiskDetection.MaliciousIPsFile}, {&f.corporate, &cfg.RiskDetection.CorporateIPsFile}} {
		if *o.flag != "" {
			*o.into = *o.flag
		}
	}
	dc, err := cfg.DetectConfig()
	if err != nil {
		return usage(err)
	}
	if f.maxTokenLifetime > 0 {
		dc.MaxTokenLifetime = f.maxTokenLifetime
	}
	city, asn := cfg.ConditionalAccess.GeoIPDatabase, cfg.ConditionalAccess.ASNDatabase
	if f.countryDB != "" {
		city = f.countryDB
	}
	if f.asnDB != "" {
		asn = f.asnDB
	}
	places, err := geo.Open(city, asn)
	if err != nil {
		return usage(err)
	}
	return dc, places, until, nil
}

func (f *detectFlags) open(e *cliEnv) (io.ReadCloser, error) {
	if f.events == "-" {
		return io.NopCloser(e.stdin), nil
	}
	r, err := os.Open(f.events)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	return r, nil
}

// badLines reports refused lines on stderr: the first ones by number and
// reason, then only counted.
func badLines(e *cliEnv) func(*activity.LineError) {
	n := 0
	return func(le *activity.LineError) {
		n++
		if n <= maxLineErrors {
			fmt.Fprintf(e.stderr, "ward: --events line %d refused: %v\n", le.Line, le.Err)
		} else if n == maxLineErrors+1 {
			fmt.Fprintln(e.stderr, "ward: more refused lines: counted, not shown")
		}
	}
}

// findingLine is one detection as backtest prints it.
type findingLine struct {
	T          string   `json:"t"`
	Type       string   `json:"type"`
	Severity   string   `json:"severity"`
	Confidence float64  `json:"confidence"`
	Technique  string   `json:"technique,omitempty"`
	User       string   `json:"user,omitempty"`
	SessionID  string   `json:"session_id,omitempty"`
	ClientID   string   `json:"client_id,omitempty"`
	DeviceID   string   `json:"device_id,omitempty"`
	IP         string   `json:"ip,omitempty"`
	Evidence   []string `json:"evidence"`
	Detail     string   `json:"detail,omitempty"`
	ID         string   `json:"id"`
}

func newRiskBacktestCmd(e *cliEnv) *cobra.Command {
	var f detectFlags
	cmd := &cobra.Command{
		Use:   "backtest --events FILE.jsonl [--history-until T]",
		Short: "Run the token-theft detectors over recorded activity",
		Long: `Run the detectors Ward runs online over activity lines (ward logs export
--format jsonl, docs/activity.md) and print one JSON line per detection:
t, type, severity, confidence, technique, user, session_id, ip, evidence,
detail, id. Lines are read in file order; a line's precomputed location is
used, else its address is looked up in the configured (or given) MMDB
files. Activity before --history-until only builds history. A malformed
line is named on stderr (by number), counted and skipped. Memory is bounded
by the sessions, users and tokens in use (risk_detection.max_*), not by
the size of the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dc, places, until, err := f.setup(e)
			if err != nil {
				return err
			}
			defer places.Close()
			in, err := f.open(e)
			if err != nil {
				return err
			}
			defer in.Close()
			w := bufio.NewWriterSize(e.stdout, 64<<10)
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			stopProfile, err := f.profile()
			if err != nil {
				return err
			}
			start, cpu0 := time.Now(), cpuTime()
			eng := detect.New(dc)
			sum, err := backtest.Replay(in, eng, backtest.Options{HistoryUntil: until, Enrich: enrich(places), OnBadLine: badLines(e),
				OnFinding: func(fd detect.Finding) error {
					return enc.Encode(findingLine{T: fd.Time.UTC().Format(time.RFC3339), Type: fd.Type, Severity: fd.Severity,
						Confidence: fd.Confidence, Technique: fd.Technique, User: fd.UserID, SessionID: fd.SessionID, ClientID: fd.ClientID,
						DeviceID: fd.DeviceID, IP: fd.IP, Evidence: fd.Evidence, Detail: fd.Detail, ID: fd.ID})
				}})
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			if perr := stopProfile(); err == nil {
				err = perr
			}
			fmt.Fprintf(e.stderr, "ward: %d lines read (%d history), %d refused, %d detections\n", sum.Lines, sum.History, sum.Bad, sum.Findings)
			if f.stats {
				printStats(e, eng, sum, time.Since(start), cpuTime()-cpu0)
			}
			return err
		},
	}
	f.register(cmd)
	return cmd
}

func enrich(places *geo.DB) func(*activity.Activity) {
	if places == nil {
		return nil
	}
	return places.Enrich
}

func printStats(e *cliEnv, eng *detect.Engine, sum backtest.Summary, wall, cpu time.Duration) {
	st := eng.Stats()
	n := sum.Lines + sum.Bad
	rate := func(d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		return float64(n) / d.Seconds()
	}
	fmt.Fprintf(e.stderr, "ward: %.0f lines/s (wall %s), %.0f lines per CPU second (CPU %s), peak RSS %d MiB; tracked: %d sessions, %d users, %d tokens, %d sources; %d evicted to stay within the bounds, %d expired\n",
		rate(wall), wall.Round(time.Millisecond), rate(cpu), cpu.Round(time.Millisecond), peakRSS()>>20, st.Sessions, st.Users, st.Tokens, st.Sources, st.Evicted, st.Expired)
}

func newRiskGenerateCmd(e *cliEnv) *cobra.Command {
	var o backtest.GenOptions
	var kinds, out, labels, lists, start string
	cmd := &cobra.Command{
		Use:   "generate --users N --days D --out FILE --labels FILE [--attacks N] [--seed S]",
		Short: "Write labelled synthetic traffic: benign roaming and attacks",
		Long: `Write activity lines of a synthetic organisation (benign roaming: mobile
CGNAT churn, IPv4/IPv6 alternation, offices, a split-tunnel corporate VPN
with its egress in another country, commercial VPNs, relays, travel with
in-flight and hotel wifi) with attacks of every kind (--attacks of each)
injected after --history-days, and the attacks' labels to a file of their
own (the detectors never see them). The same seed writes the same files.
--ip-lists DIR also writes the anonymous and malicious IP lists of the
generated world. Score the detectors with ward risk score.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || labels == "" {
				return &exitError{code: exitUsage, err: errors.New("--out and --labels are required")}
			}
			if kinds != "" {
				o.Kinds = strings.Split(kinds, ",")
			}
			if start != "" {
				t, err := time.Parse(time.RFC3339, start)
				if err != nil {
					return &exitError{code: exitUsage, err: fmt.Errorf("--start %q: not an RFC 3339 time", start)}
				}
				o.Start = t.UTC()
			}
			if o.Start.IsZero() {
				o.Start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
			}
			ev, err := os.Create(out)
			if err != nil {
				return err
			}
			defer ev.Close()
			lb, err := os.Create(labels)
			if err != nil {
				return err
			}
			defer lb.Close()
			bw := bufio.NewWriterSize(ev, 1<<20)
			if err := backtest.Generate(o, bw, lb); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if err := ev.Close(); err != nil {
				return err
			}
			if lists != "" {
				for name, body := range map[string]string{"anonymous-ips.txt": backtest.AnonymousList(), "malicious-ips.txt": backtest.MaliciousList()} {
					if err := os.WriteFile(filepath.Join(lists, name), []byte(body), 0o644); err != nil {
						return err
					}
				}
			}
			hu := o.Start.Add(time.Duration(o.HistoryDays) * 24 * time.Hour).Format(time.RFC3339)
			fmt.Fprintf(e.stderr, "ward: wrote %s and %s; score with:\n  ward risk score --events %s --labels %s --history-until %s --max-token-lifetime %s",
				out, labels, out, labels, hu, backtest.GenMaxTokenLifetime)
			if lists != "" {
				fmt.Fprintf(e.stderr, " --anonymous-ips %s --malicious-ips %s", filepath.Join(lists, "anonymous-ips.txt"), filepath.Join(lists, "malicious-ips.txt"))
			}
			fmt.Fprintln(e.stderr)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Users, "users", 1000, "people in the organisation")
	fl.IntVar(&o.Days, "days", 7, "days of traffic (from a Monday)")
	fl.Uint64Var(&o.Seed, "seed", 1, "random seed")
	fl.IntVar(&o.HistoryDays, "history-days", 2, "days without attacks at the start (the detectors' history)")
	fl.IntVar(&o.Attacks, "attacks", 10, "attacks of each kind")
	fl.StringVar(&kinds, "kinds", "", "only these attack kinds, comma-separated: "+strings.Join(backtest.AttackKinds, ", "))
	fl.StringVar(&out, "out", "", "activity lines to write")
	fl.StringVar(&labels, "labels", "", "attack labels to write (JSON lines)")
	fl.StringVar(&lists, "ip-lists", "", "directory to write the world's anonymous-ips.txt and malicious-ips.txt to")
	fl.StringVar(&start, "start", "", "RFC 3339 time of the first day's midnight (default 2026-03-02T00:00:00Z, a Monday)")
	return cmd
}

func newRiskScoreCmd(e *cliEnv) *cobra.Command {
	var f detectFlags
	var labelsFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "score --events FILE --labels FILE [--history-until T]",
		Short: "Score the detectors on labelled traffic: recall, benign sessions flagged, time to detect",
		Long: `Run the detectors as ward risk backtest does and compare their findings
with the labels of ward risk generate: an attack is detected when a
finding cites one of its events; time to detect runs from its first event
to that finding. Benign sessions are the sessions no attack touched with
activity after --history-until; flagged ones are named by a finding that
cites no attack event.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if labelsFile == "" {
				return &exitError{code: exitUsage, err: errors.New("--labels is required")}
			}
			dc, places, until, err := f.setup(e)
			if err != nil {
				return err
			}
			defer places.Close()
			lf, err := os.Open(labelsFile)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			labels, err := backtest.ReadLabels(lf)
			lf.Close()
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			in, err := f.open(e)
			if err != nil {
				return err
			}
			defer in.Close()
			stopProfile, err := f.profile()
			if err != nil {
				return err
			}
			start, cpu0 := time.Now(), cpuTime()
			eng := detect.New(dc)
			rep, sum, err := backtest.Score(in, labels, eng, backtest.Options{HistoryUntil: until, Enrich: enrich(places), OnBadLine: badLines(e)})
			if perr := stopProfile(); err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			if f.stats {
				printStats(e, eng, sum, time.Since(start), cpuTime()-cpu0)
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(rep)
			}
			return printScore(e.stdout, rep, sum)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&labelsFile, "labels", "", "labels written by ward risk generate")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// printScore writes the report as Markdown tables (docs/risk.md shows one).
func printScore(w io.Writer, r backtest.Report, sum backtest.Summary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| attack kind\t attacks\t detected\t recall\t time to detect (median / p95)\t caught by")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---")
	for _, k := range r.Kinds {
		name := k.Kind
		if k.Evasive {
			name += " (evasive)"
		}
		fmt.Fprintf(tw, "| %s\t %d\t %d\t %.1f%%\t %s / %s\t %s\n", name, k.Attacks, k.Detected, 100*k.Recall, k.TTDMedian, k.TTDP95, byText(k.By))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nattacks (not evasive): %d, detected %d, recall %.2f%%; time to detect median %s, p95 %s\n",
		r.Attacks, r.Detected, 100*r.Recall, r.TTDMedian, r.TTDP95)
	fmt.Fprintf(w, "evasive attacks: %d, detected %d\n", r.EvasiveAttacks, r.EvasiveDetected)
	fmt.Fprintf(w, "benign sessions: %d, flagged %d (%.3f%%); benign users: %d, flagged %d\n",
		r.BenignSessions, r.BenignSessionsFlagged, 100*r.BenignShare, r.BenignUsers, r.BenignUsersFlagged)
	if len(r.FalseFindings) > 0 {
		fmt.Fprintf(w, "findings citing no attack event, by type: %v\n", r.FalseFindings)
	}
	fmt.Fprintf(w, "activity lines: %d (%d after the history), %d refused, %d findings\n", sum.Lines, r.Events, sum.Bad, r.Findings)
	return nil
}

func byText(m map[string]int) string {
	var parts []string
	for _, k := range sortedMapKeys(m) {
		parts = append(parts, fmt.Sprintf("%s (%d)", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedMapKeys(m map[string]int) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}
