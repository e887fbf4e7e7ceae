package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func newLogsCmd(e *cliEnv) *cobra.Command {
	var f store.EventFilter
	var user, since string
	var types []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show the audit and sign-in log",
		Long: `Show recorded events, oldest first (the most recent --limit events that
match). --user takes a username or user id; --since a duration (1h, 30m)
or an RFC 3339 time; --type an event type such as signin.failed (repeatable).
--json prints one JSON object per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, t := range types {
				if _, ok := model.EventCodes[model.EventType(t)]; !ok {
					return &exitError{code: exitUsage, err: fmt.Errorf("unknown event type %q (known: %s)", t, knownTypes())}
				}
				f.Types = append(f.Types, model.EventType(t))
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				f.Since = t
			}
			if f.Limit < 0 || f.Limit > 1000 {
				return &exitError{code: exitUsage, err: errors.New("--limit must be between 1 and 1000")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				if user != "" {
					if u, err := findUser(ctx, a, user); err == nil {
						f.UserID = u.ID
					} else {
						f.UserID = user // a deleted user's id still filters
					}
				}
				evs, err := a.Store.ListEvents(ctx, f)
				if err != nil {
					return err
				}
				slices.SortFunc(evs, func(x, y *store.StoredEvent) int { return int(x.Seq - y.Seq) })
				if asJSON {
					return writeEventsJSON(e, evs)
				}
				names := map[string]string{}
				if us, err := a.Store.ListUsers(ctx); err == nil {
					for _, u := range us {
						names[u.ID] = u.Username
					}
				}
				return writeEventsTable(e, evs, names)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&user, "user", "", "only events about this user (username or id)")
	fl.StringVar(&f.SessionID, "session", "", "only events of this session id")
	fl.StringVar(&f.ClientID, "client", "", "only events of this client id")
	fl.StringSliceVar(&types, "type", nil, "only events of this type (repeatable)")
	fl.StringVar(&since, "since", "", "only events since a duration ago (1h) or an RFC 3339 time")
	fl.IntVar(&f.Limit, "limit", 100, "at most this many events (max 1000)")
	fl.BoolVar(&asJSON, "json", false, "print JSON lines")
	cmd.AddCommand(newLogsExportCmd(e))
	cmd.AddCommand(newLogsVerifyCmd(e))
	return cmd
}

func newLogsVerifyCmd(e *cliEnv) *cobra.Command {
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove that no audit record was changed, removed or inserted",
		Long: `Recompute the audit log's hash chain from its signed anchor and compare it
with every record and every signed checkpoint (docs/secops.md, "Tamper-evident
audit log"). It names the first bad record and what is wrong with it: changed
(the record does not match its hash), removed (a sequence number holds no
record), inserted (a record not in the chain, or not written by Ward),
rewritten (records changed and re-hashed: the chain does not match a signed
checkpoint), a checkpoint whose signature does not verify, a tail truncated
past the last checkpoint. The exit code is 1 on any problem.

--from and --to take a sequence number or a time (RFC 3339, a date, or a
duration ago such as 24h) and bound what is verified; verification starts at
the signed checkpoint before --from and goes on to the first one after --to.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				o := chain.VerifyOptions{KEK: a.KEK, Retention: a.Config.Audit.Retention, Now: a.Now}
				var err error
				if o.From, err = seqBound(ctx, a, "--from", from, true); err != nil {
					return err
				}
				if o.To, err = seqBound(ctx, a, "--to", to, false); err != nil {
					return err
				}
				if o.To > 0 && o.From > o.To {
					return &exitError{code: exitUsage, err: fmt.Errorf("--from %s is after --to %s", from, to)}
				}
				start := time.Now()
				rep, err := chain.Verify(ctx, a.Store, o)
				if err != nil {
					return err
				}
				if asJSON {
					err = writeVerifyJSON(e, rep)
				} else {
					err = writeVerifyReport(e, rep, time.Since(start))
				}
				if err != nil {
					return err
				}
				if !rep.OK() {
					return &exitError{code: exitFailure, err: fmt.Errorf("the audit log failed verification: %s", rep.Problems[0])}
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "verify from this sequence number or time")
	fl.StringVar(&to, "to", "", "verify up to this sequence number or time")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// seqBound turns a --from / --to value into a sequence number (0: none):
// a number is one; a time is the first event stamped at or after it
// (from), or the last one before it (to).
func seqBound(ctx context.Context, a *app.App, flag, v string, from bool) (int64, error) {
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 1 {
			return 0, &exitError{code: exitUsage, err: fmt.Errorf("%s %s: sequence numbers start at 1", flag, v)}
		}
		return n, nil
	}
	t, err := parseSince(v, time.Now())
	if err != nil {
		return 0, &exitError{code: exitUsage, err: fmt.Errorf("%s %q: want a sequence number, an RFC 3339 time, a date or a duration ago (24h)", flag, v)}
	}
	seq, err := a.Store.EventSeqAt(ctx, t, from)
	if errors.Is(err, store.ErrNotFound) {
		if from {
			return math.MaxInt64, nil // nothing at or after it
		}
		return 0, &exitError{code: exitUsage, err: fmt.Errorf("%s %s: no event was recorded before then", flag, v)}
	}
	return seq, err
}

func writeVerifyReport(e *cliEnv, rep *chain.Report, took time.Duration) error {
	w := e.stdout
	switch {
	case rep.Records == 0:
		fmt.Fprintln(w, "No sealed records to verify.")
	case rep.Genesis:
		fmt.Fprintf(w, "Verified seq %d to %d (%s) from the start of the chain in %s.\n", rep.From, rep.To, plural(rep.Records, "record"), took.Round(time.Microsecond))
	default:
		fmt.Fprintf(w, "Verified seq %d to %d (%s) from the signed anchor at seq %d in %s.\n", rep.From, rep.To, plural(rep.Records, "record"), rep.AnchorSeq, took.Round(time.Microsecond))
	}
	if c := rep.Latest; c != nil {
		fmt.Fprintf(w, "Compared with %s; the newest covers seq %d, signed %s with key %s.\n",
			plural(int64(rep.Checkpoints), "signed checkpoint"), c.Seq, c.Time().Format(time.RFC3339), c.KID)
	} else {
		fmt.Fprintln(w, "No signed checkpoint yet.")
	}
	if rep.Unsigned > 0 {
		fmt.Fprintf(w, "%s after the newest checkpoint: protected by the hash chain and record MACs until the next one signs them.\n", plural(rep.Unsigned, "record"))
	}
	if rep.Legacy > 0 {
		fmt.Fprintf(w, "%s written before the tamper-evident log (no record MAC).\n", plural(rep.Legacy, "record"))
	}
	if rep.Unsealed > 0 {
		fmt.Fprintf(w, "%s not sealed yet (a running server seals within audit.seal_interval).\n", plural(rep.Unsealed, "record"))
	}
	if rep.OK() {
		fmt.Fprintln(w, "OK: no record was changed, removed or inserted.")
		return nil
	}
	more := ""
	if rep.More {
		more = " (stopped there; there may be more)"
	}
	fmt.Fprintf(w, "FAILED: %s%s, the first bad record first:\n", plural(int64(len(rep.Problems)), "problem"), more)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return nil
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.FormatInt(n, 10) + " " + what + "s"
}

// verifyJSON is the report of ward logs verify --json.
type verifyJSON struct {
	OK          bool            `json:"ok"`
	From        int64           `json:"from"`
	To          int64           `json:"to"`
	Records     int64           `json:"records"`
	AnchorSeq   int64           `json:"anchor_seq,omitempty"`
	Checkpoints int             `json:"checkpoints"`
	Latest      *checkpointJSON `json:"latest_checkpoint,omitempty"`
	Unsigned    int64           `json:"unsigned"`
	Unsealed    int64           `json:"unsealed"`
	Legacy      int64           `json:"legacy"`
	Problems    []chain.Problem `json:"problems"`
	More        bool            `json:"more,omitempty"`
}

type checkpointJSON struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
	Time string `json:"time"`
	KID  string `json:"kid"`
}

func writeVerifyJSON(e *cliEnv, rep *chain.Report) error {
	out := verifyJSON{OK: rep.OK(), From: rep.From, To: rep.To, Records: rep.Records, AnchorSeq: rep.AnchorSeq,
		Checkpoints: rep.Checkpoints, Unsigned: rep.Unsigned, Unsealed: rep.Unsealed, Legacy: rep.Legacy,
		Problems: rep.Problems, More: rep.More}
	if out.Problems == nil {
		out.Problems = []chain.Problem{}
	}
	if c := rep.Latest; c != nil {
		out.Latest = &checkpointJSON{Seq: c.Seq, Hash: c.Hash, Time: c.Time().Format(time.RFC3339), KID: c.KID}
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (1h) or an RFC 3339 time", s)
}

func knownTypes() string {
	var ts []string
	for t := range model.EventCodes {
		ts = append(ts, string(t))
	}
	sort.Strings(ts)
	return strings.Join(ts, ", ")
}

func writeEventsJSON(e *cliEnv, evs []*store.StoredEvent) error {
	enc := json.NewEncoder(e.stdout)
	for _, ev := range evs { // store.StoredEvent marshals to the documented line format
		if err := enc.Encode(ev); err != nil {
			return err
		}
	}
	return nil
}

// writeEventsTable prints an aligned table; users are shown by username
// when known (names maps user id to username).
func writeEventsTable(e *cliEnv, evs []*store.StoredEvent, names map[string]string) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tOUTCOME\tACTOR\tUSER\tCLIENT\tIP\tDETAIL")
	for _, ev := range evs {
		var detail []string
		if ev.Reason != "" {
			detail = append(detail, "reason="+ev.Reason)
		}
		if ev.SessionID != "" {
			detail = append(detail, "session="+ev.SessionID)
		}
		if ev.Binding != "" {
			detail = append(detail, "binding="+ev.Binding)
		}
		keys := make([]string, 0, len(ev.Data))
		for k := range ev.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			detail = append(detail, k+"="+logValue(ev.Data[k]))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), ev.Type,
			dash(ev.Outcome), dash(userName(ev.Actor, names)), dash(userName(ev.UserID, names)), dash(ev.ClientID), dash(ev.IP), dash(strings.Join(detail, " ")))
	}
	return tw.Flush()
}

// logValue quotes a value that has spaces or quotes, so that a detection's
// detail or evidence list reads as one value.
func logValue(v string) string {
	if strings.ContainsAny(v, " \t\"=") {
		return strconv.Quote(v)
	}
	return v
}

func userName(id string, names map[string]string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id
}
