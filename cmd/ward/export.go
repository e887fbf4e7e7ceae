package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/ward-idp/ward/internal/geo"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/store"
)

// exportPage is how many stored events one read returns: the export holds
// one page at a time whatever the size of the log.
const exportPage = 1000

func newLogsExportCmd(e *cliEnv) *cobra.Command {
	var format, since, until, user, session string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export the activity record as JSON lines",
		Long: `Write one activity line (docs/activity.md) per recorded use of a session
or token — sign-ins, SSO sign-ins, refreshes, token grants, token uses
reported by resources, device registrations — oldest first, to stdout.
The output is the input of ward risk backtest. --since and --until take a
duration ago (1h) or an RFC 3339 time; --user a username or user id.
The log is read page by page: memory stays bounded however long it is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "jsonl" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--format %q: only jsonl is supported", format)}
			}
			var from, to time.Time
			var err error
			now := time.Now()
			if since != "" {
				if from, err = parseSince(since, now); err != nil {
					return &exitError{code: exitUsage, err: err}
				}
			}
			if until != "" {
				if to, err = parseSince(until, now); err != nil {
					return &exitError{code: exitUsage, err: fmt.Errorf("--until: %w", err)}
				}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				if user != "" {
					if u, err := findUser(ctx, a, user); err == nil {
						user = u.ID
					}
				}
				n, skipped, err := exportActivity(ctx, a.Store, a.Geo, e, exportFilter{since: from, until: to, user: user, session: session})
				if skipped > 0 {
					fmt.Fprintf(e.stderr, "ward: %d events could not be written as activity lines and were skipped\n", skipped)
				}
				if err == nil && n == 0 {
					fmt.Fprintln(e.stderr, "ward: no activity matched")
				}
				return err
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&format, "format", "jsonl", "output format (jsonl)")
	fl.StringVar(&since, "since", "", "only activity since a duration ago (1h) or an RFC 3339 time")
	fl.StringVar(&until, "until", "", "only activity before a duration ago or an RFC 3339 time")
	fl.StringVar(&user, "user", "", "only activity of this user (username or id)")
	fl.StringVar(&session, "session", "", "only activity of this session id")
	return cmd
}

type exportFilter struct {
	since, until  time.Time
	user, session string
}

func (f exportFilter) match(a *activity.Activity) bool {
	switch {
	case !f.since.IsZero() && a.Time.Before(f.since):
	case !f.until.IsZero() && !a.Time.Before(f.until):
	case f.user != "" && a.UserID != f.user:
	case f.session != "" && a.SessionID != f.session:
	default:
		return true
	}
	return false
}

// exportActivity writes the activity lines of the events that match f in
// store order, one page of events at a time. It returns the lines written
// and the events skipped because they would not make a valid line. With
// MMDB files configured, each line carries its location precomputed, so a
// backtest elsewhere needs no database.
func exportActivity(ctx context.Context, st store.Store, places *geo.DB, e *cliEnv, f exportFilter) (written, skipped int, err error) {
	w := bufio.NewWriterSize(e.stdout, 64<<10)
	var seq int64
	for {
		evs, err := st.EventsAfter(ctx, seq, exportPage)
		if err != nil {
			return written, skipped, err
		}
		for _, se := range evs {
			seq = se.Seq
			a, ok := activity.FromEvent(&se.Event)
			if !ok || !f.match(&a) {
				continue
			}
			places.Enrich(&a) // location fields left empty by the event
			line, err := activity.Marshal(&a)
			if err != nil {
				skipped++
				continue
			}
			line = append(line, '\n')
			if _, err := w.Write(line); err != nil {
				return written, skipped, err
			}
			written++
		}
		if len(evs) < exportPage {
			break
		}
		if err := ctx.Err(); err != nil {
			return written, skipped, err
		}
	}
	if err := w.Flush(); err != nil {
		return written, skipped, errors.Join(errors.New("write"), err)
	}
	return written, skipped, nil
}
