package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
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
	return cmd
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
