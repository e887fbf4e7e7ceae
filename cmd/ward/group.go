package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func newGroupCmd(e *cliEnv) *cobra.Command {
	cmd := groupCmd("group", "Manage groups")

	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Create a group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				g, err := a.Identity.CreateGroup(ctx, actorCLI, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "created group %s (id %s)\n", g.Name, g.ID)
				return nil
			})
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List groups",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				gs, err := a.Store.ListGroups(ctx)
				if err != nil {
					return err
				}
				names := map[string]string{}
				if us, err := a.Store.ListUsers(ctx); err == nil {
					for _, u := range us {
						names[u.ID] = u.Username
					}
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tID\tMEMBERS")
				for _, g := range gs {
					var ms []string
					for _, m := range g.Members {
						if n, ok := names[m]; ok {
							m = n
						}
						ms = append(ms, m)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", g.Name, g.ID, dash(strings.Join(ms, ",")))
				}
				return tw.Flush()
			})
		},
	}

	member := func(use, short string, addMember bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " GROUP USER",
			Short: short,
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
					g, err := findGroup(ctx, a, args[0])
					if err != nil {
						return err
					}
					u, err := findUser(ctx, a, args[1])
					if err != nil {
						return err
					}
					if addMember {
						err = a.Identity.AddMember(ctx, actorCLI, g.ID, u.ID)
					} else {
						err = a.Identity.RemoveMember(ctx, actorCLI, g.ID, u.ID)
					}
					if err != nil {
						return err
					}
					verb := "added %s to %s\n"
					if !addMember {
						verb = "removed %s from %s\n"
					}
					fmt.Fprintf(e.stdout, verb, u.Username, g.Name)
					return nil
				})
			},
		}
	}

	del := &cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a group",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withApp(cmd, func(ctx context.Context, a *app.App) error {
				g, err := findGroup(ctx, a, args[0])
				if err != nil {
					return err
				}
				if err := a.Identity.DeleteGroup(ctx, actorCLI, g.ID); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "deleted group %s\n", g.Name)
				return nil
			})
		},
	}

	cmd.AddCommand(add, list, member("add-member", "Add a user to a group", true),
		member("remove-member", "Remove a user from a group", false), del)
	return cmd
}

// findGroup resolves a group name or id.
func findGroup(ctx context.Context, a *app.App, ref string) (*model.Group, error) {
	g, err := a.Store.GetGroupByName(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		g, err = a.Store.GetGroup(ctx, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no group %q", ref)
	}
	return g, err
}
