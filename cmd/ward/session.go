package main

// Sign-in sessions: `ward session list | show | revoke` and
// `ward user revoke-sessions`. Revocations go through the session service
// (the one owner of session revocation), like the admin API's, so they
// record the same events and cause the same CAE signals, with actor "cli".

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func newSessionCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("session", "List, show and revoke sign-in sessions")

	var userRef string
	var active bool
	var limit int
	list := &cobra.Command{
		Use:   "list [--user USER] [--active] [--limit N]",
		Short: "List sign-in sessions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return &exitError{code: exitUsage, err: errors.New("--limit must be from 1 to 1000")}
			}
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				f := store.SessionFilter{ActiveOnly: active, Now: a.Now(), Limit: limit}
				if userRef != "" {
					u, err := findUser(ctx, a, userRef)
					if err != nil {
						return err
					}
					f.UserID = u.ID
				}
				ss, err := a.Store.ListSessions(ctx, f)
				if err != nil {
					return err
				}
				names := userNames(ctx, a)
				now := a.Now()
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tUSER\tSTATUS\tAMR\tIP\tCREATED\tLAST SEEN")
				for _, s := range ss {
					st := sessionStatus(s, now)
					if active && st != "active" {
						continue // idle beyond its timeout: the store's filter does not know
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, nameOr(names, s.UserID), st, dash(strings.Join(s.AMR, ",")),
						dash(s.IP), s.CreatedAt.UTC().Format(time.RFC3339), s.LastSeen.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&userRef, "user", "", "only this user's sessions (name or id)")
	list.Flags().BoolVar(&active, "active", false, "only sessions that can still be used")
	list.Flags().IntVar(&limit, "limit", 100, "at most this many sessions (1 to 1000)")

	show := &cobra.Command{
		Use:   "show SESSION",
		Short: "Show a sign-in session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				s, err := findSession(ctx, a, args[0])
				if err != nil {
					return err
				}
				printSession(e.stdout, s, nameOr(userNames(ctx, a), s.UserID), a.Now())
				return nil
			})
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke SESSION",
		Short: "Revoke a sign-in session and its refresh tokens (resources are told by CAE)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				s, err := findSession(ctx, a, args[0])
				if err != nil {
					return err
				}
				revoked, err := a.Sessions.Revoke(ctx, actorCLI, s.ID, model.CauseAdminRevoked)
				if err != nil {
					return err
				}
				if !revoked {
					fmt.Fprintf(e.stdout, "session %s was revoked already (%s); nothing changed\n", s.ID, dash(s.RevokeCause))
					return nil
				}
				fmt.Fprintf(e.stdout, "revoked session %s of %s\n", s.ID, nameOr(userNames(ctx, a), s.UserID))
				return nil
			})
		},
	}

	cmd.AddCommand(list, show, revoke)
	return cmd
}

// newRevokeSessionsCmd is `ward user revoke-sessions USER`.
func newRevokeSessionsCmd(e *cliEnv) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-sessions USER",
		Short: "Revoke every session of a user (resources are told by CAE)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				u, err := findUser(ctx, a, args[0])
				if err != nil {
					return err
				}
				ids, err := a.Sessions.RevokeUser(ctx, actorCLI, u.ID, model.CauseAdminRevoked)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "revoked %d session(s) of %s\n", len(ids), u.Username)
				return nil
			})
		},
	}
}

// findSession returns a session by id.
func findSession(ctx context.Context, a *app.App, id string) (*model.Session, error) {
	s, err := a.Store.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no session %q", id)
	}
	return s, err
}

// sessionStatus says whether a session can still be used, and if not why.
func sessionStatus(s *model.Session, now time.Time) string {
	switch {
	case !s.RevokedAt.IsZero():
		return "revoked"
	case !now.Before(s.ExpiresAt):
		return "expired"
	case !s.Active(now):
		return "idle" // past its idle timeout
	}
	return "active"
}

func printSession(w io.Writer, s *model.Session, user string, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", s.ID)
	row("User", user)
	row("Status", sessionStatus(s, now))
	if !s.RevokedAt.IsZero() {
		row("Revoked", s.RevokedAt.UTC().Format(time.RFC3339))
		row("Revoke cause", dash(s.RevokeCause))
	}
	row("Signed in", s.AuthTime.UTC().Format(time.RFC3339))
	row("Methods (amr)", dash(strings.Join(s.AMR, ", ")))
	if s.ACR != "" {
		row("ACR", s.ACR)
	}
	row("IP", dash(s.IP))
	row("User agent", dash(printable(s.UserAgent)))
	row("Created", s.CreatedAt.UTC().Format(time.RFC3339))
	row("Last seen", s.LastSeen.UTC().Format(time.RFC3339))
	row("Expires", s.ExpiresAt.UTC().Format(time.RFC3339))
	if s.IdleTimeout > 0 {
		row("Idle timeout", s.IdleTimeout.String())
	}
	binding := "SSO cookie"
	if s.DBSCKeyJKT != "" {
		binding = "browser key (DBSC) " + s.DBSCKeyJKT
	}
	row("Bound to", binding)
	tw.Flush()
}
