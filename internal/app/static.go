package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// applyStaticClients upserts every configured client. Unchanged clients
// cause no writes and no events, so restarts are quiet. Clients the
// configuration no longer defines are handed over to the CLI and admin API
// (clients.Service.ReleaseUnlisted).
func (a *App) applyStaticClients(ctx context.Context, lookup func(string) (string, bool)) error {
	var errs []error
	listed := make([]string, 0, len(a.Config.StaticClients))
	for _, sc := range a.Config.StaticClients {
		listed = append(listed, sc.ID)
	}
	if a.Config.Dev {
		listed = append(listed, DevSPAClientID, DevServiceClient, DevAgentClientID)
	}
	if !a.Config.Console.Disabled {
		listed = append(listed, ConsoleClientID)
		if err := a.applyConsoleClient(ctx); err != nil {
			errs = append(errs, fmt.Errorf("console client: %w", err))
		}
	}
	for i, sc := range a.Config.StaticClients {
		sec := sc.Secret
		if sc.SecretEnv != "" {
			v, ok := lookup(sc.SecretEnv)
			if !ok || v == "" {
				errs = append(errs, fmt.Errorf("static_clients[%d] (%s): environment variable %s is not set", i, sc.ID, sc.SecretEnv))
				continue
			}
			sec = secret.String(v)
		}
		_, changed, err := a.Clients.Upsert(ctx, ActorSystem, model.ClientManagedByConfig, sc.Spec(), sec)
		if err != nil {
			errs = append(errs, fmt.Errorf("static_clients[%d] (%s): %w", i, sc.ID, err))
			continue
		}
		if changed {
			a.Log.InfoContext(ctx, "static client applied", "client_id", sc.ID)
		}
	}
	released, err := a.Clients.ReleaseUnlisted(ctx, ActorSystem, listed, a.Config.Dev)
	for _, id := range released {
		a.Log.WarnContext(ctx, "client no longer in the configuration: kept, now managed with the CLI or admin API", "client_id", id)
	}
	return errors.Join(append(errs, err)...)
}

// applyStaticUsers creates missing configured users and applies their
// roles, groups and TOTP seed. An existing user's password is left alone
// (it may have been changed since), and a TOTP seed is only enrolled for a
// user who has none.
func (a *App) applyStaticUsers(ctx context.Context, lookup func(string) (string, bool)) error {
	var errs []error
	for i, su := range a.Config.StaticUsers {
		if err := a.applyStaticUser(ctx, su, lookup); err != nil {
			errs = append(errs, fmt.Errorf("static_users[%d] (%s): %w", i, su.Username, err))
		}
	}
	return errors.Join(errs...)
}

func (a *App) applyStaticUser(ctx context.Context, su config.StaticUser, lookup func(string) (string, bool)) error {
	name := identity.NormalizeUsername(su.Username)
	u, err := a.Store.GetUserByUsername(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		pw := su.Password
		if su.PasswordEnv != "" {
			v, ok := lookup(su.PasswordEnv)
			if !ok || v == "" {
				return fmt.Errorf("environment variable %s is not set", su.PasswordEnv)
			}
			pw = secret.String(v)
		}
		u, err = a.Identity.CreateUser(ctx, ActorSystem, identity.NewUser{
			Username:    name,
			Email:       su.Email,
			DisplayName: su.DisplayName,
			Password:    pw.Reveal(),
			Roles:       su.Roles,
			TOTPSecret:  normalizeBase32(su.TOTPSecret.Reveal()),
		})
		if err != nil {
			return err
		}
		a.Log.InfoContext(ctx, "static user created", "user_id", u.ID, "username", u.Username)
	case err != nil:
		return err
	default:
		if !sameRoles(u.Roles, su.Roles) {
			if err := a.Identity.SetRoles(ctx, ActorSystem, u.ID, su.Roles); err != nil {
				return err
			}
		}
		if su.TOTPSecret != "" && !a.Identity.HasTOTP(u) {
			seed := normalizeBase32(su.TOTPSecret.Reveal())
			code, err := totp.GenerateCode(seed, a.Now())
			if err != nil {
				return fmt.Errorf("totp_secret: %w", err)
			}
			if err := a.Identity.EnrollTOTP(ctx, ActorSystem, u.ID, seed, code); err != nil {
				return err
			}
		}
	}
	for _, g := range su.Groups {
		if err := a.ensureMember(ctx, strings.TrimSpace(g), u.ID); err != nil {
			return fmt.Errorf("group %q: %w", g, err)
		}
	}
	return nil
}

// ensureMember creates the group if needed and adds the user (a no-op when
// already a member).
func (a *App) ensureMember(ctx context.Context, groupName, userID string) error {
	g, err := a.Store.GetGroupByName(ctx, groupName)
	if errors.Is(err, store.ErrNotFound) {
		g, err = a.Identity.CreateGroup(ctx, ActorSystem, groupName)
		if errors.Is(err, identity.ErrExists) {
			g, err = a.Store.GetGroupByName(ctx, groupName)
		}
	}
	if err != nil {
		return err
	}
	if slices.Contains(g.Members, userID) {
		return nil
	}
	return a.Identity.AddMember(ctx, ActorSystem, g.ID, userID)
}

func sameRoles(have []string, want []string) bool {
	norm := func(in []string) []string {
		var out []string
		for _, r := range in {
			if r = strings.TrimSpace(r); r != "" && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(have), norm(want))
}

func normalizeBase32(s string) string {
	return strings.ToUpper(strings.TrimRight(strings.ReplaceAll(s, " ", ""), "="))
}
