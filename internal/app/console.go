package app

import (
	"context"
	"encoding/base64"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

// ConsoleClientID is the OAuth client of Ward's web console: the console
// signs its operators in through Ward like any application.
const ConsoleClientID = "ward-console"

// ConsoleCallbackPath is where the console receives its authorization
// codes.
const ConsoleCallbackPath = "/console/callback"

// ConsoleClientSpec is the console's client: confidential (its secret is
// derived from the key-encryption key, so every instance of a deployment
// knows it and none stores it), authorization code with PKCE, its own
// callback as the only redirect URI, access tokens that live
// console.session_lifetime (the longest a console session lasts before
// the console signs the operator in again, with Conditional Access).
func ConsoleClientSpec(issuer string, lifetime time.Duration) clientspec.Spec {
	return clientspec.Spec{
		ID:              ConsoleClientID,
		Name:            "Ward console",
		AuthMethod:      model.AuthClientSecretPost,
		RedirectURIs:    []string{strings.TrimSuffix(issuer, "/") + ConsoleCallbackPath},
		GrantTypes:      []string{model.GrantAuthorizationCode},
		Scopes:          []string{"openid", "profile"},
		AccessTokenTTL:  lifetime,
		ApplicationType: clientspec.ApplicationWeb,
	}
}

// ConsoleClientSecret is the console client's secret: 256 bits derived
// from the key-encryption key (a KEK rotation changes it; the next start
// stores its new hash).
func (a *App) ConsoleClientSecret() secret.String {
	return secret.String(base64.RawURLEncoding.EncodeToString(a.KEK.Derive("console-client-secret")))
}

// ConsoleCookieKey is the key that seals the console's cookies.
func (a *App) ConsoleCookieKey() []byte { return a.KEK.Derive("console-cookie") }

// applyConsoleClient puts the console's client back as this version and
// configuration define it (nothing is written when it is unchanged).
func (a *App) applyConsoleClient(ctx context.Context) error {
	if a.Config.Console.Disabled {
		return nil
	}
	_, changed, err := a.Clients.Upsert(ctx, ActorSystem, model.ClientManagedByConfig,
		ConsoleClientSpec(a.Config.Issuer, a.Config.Console.SessionLifetime), a.ConsoleClientSecret())
	if err == nil && changed {
		a.Log.InfoContext(ctx, "console client applied", "client_id", ConsoleClientID)
	}
	return err
}
