package server

import (
	"context"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/console"
	"github.com/ward-idp/ward/internal/oauth"
	"github.com/ward-idp/ward/internal/signin"
)

// newConsole builds the web console over the application's services; it
// signs operators in through prov as the client app.ConsoleClientID.
func newConsole(a *app.App, prov *oauth.Provider, signIn *signin.Handler) (*console.Console, error) {
	d := console.Deps{
		Issuer:   a.Config.Issuer,
		Identity: a.Identity,
		Sessions: a.Sessions,
		Devices:  a.Devices,
		Audit:    a.Store,
		Verify: func(ctx context.Context) (*chain.Report, error) {
			return chain.Verify(ctx, a.Store, chain.VerifyOptions{KEK: a.KEK, Retention: a.Config.Audit.Retention, Now: a.Now})
		},
		Auth:         prov,
		Browser:      signIn,
		Token:        prov.TokenHandler(),
		ClientID:     app.ConsoleClientID,
		ClientSecret: a.ConsoleClientSecret().Reveal(),
		CookieKey:    a.ConsoleCookieKey(),
		Bus:          a.Bus,
		Now:          a.Now,
		Log:          a.Log,
	}
	if a.Risk != nil {
		d.Risk = a.Risk
	}
	if a.Clients != nil && a.Keys != nil {
		d.Clients, d.Keys = a.Clients, a.Keys
	}
	if a.Access != nil {
		d.Access = a.Access
	}
	if a.Incidents != nil {
		d.Incidents = a.Incidents
	}
	if a.Graph != nil {
		d.Graph = a.Graph
	}
	return console.New(d)
}
