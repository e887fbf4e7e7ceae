package server_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// A key retired before its time (a leaked key) leaves /jwks at once and
// the tokens it signed stop verifying; the new key's tokens keep working.
func TestRetiredKeyLeavesJWKS(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	token := func() string {
		t.Helper()
		r := do(t, in, call{path: "/token", basic: serviceAuth, form: url.Values{"grant_type": {"client_credentials"}}})
		if r.Status != 200 {
			t.Fatalf("token: %d %s", r.Status, r.Body)
		}
		return r.str("access_token")
	}
	jwks := func() []string {
		t.Helper()
		r := do(t, in, call{path: "/jwks", method: http.MethodGet})
		var kids []string
		for _, k := range r.JSON["keys"].([]any) {
			kids = append(kids, k.(map[string]any)["kid"].(string))
		}
		slices.Sort(kids)
		return kids
	}
	active := func(tok string) bool {
		t.Helper()
		return do(t, in, call{path: "/introspect", basic: serviceAuth, form: url.Values{"token": {tok}}}).JSON["active"] == true
	}

	leaked := in.App.Keys.ActiveKID()
	oldTok := token()
	k, err := in.App.Keys.Rotate(ctx, "admin-1")
	if err != nil {
		t.Fatal(err)
	}
	newTok := token()
	if got := jwks(); !slices.Equal(got, sortedKIDs(leaked, k.KID)) || !active(oldTok) {
		t.Fatalf("during the overlap: jwks %v, old token active %v", got, active(oldTok))
	}
	if err := in.App.Keys.Retire(ctx, "admin-1", leaked); err != nil {
		t.Fatal(err)
	}
	if got := jwks(); !slices.Equal(got, []string{k.KID}) {
		t.Errorf("jwks after retiring %s: %v", leaked, got)
	}
	if active(oldTok) {
		t.Error("a token signed by the retired key is still active")
	}
	if !active(newTok) {
		t.Error("a token of the new key is no longer active")
	}
	evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventKeyRetired}})
	if len(evs) != 1 || evs[0].Data["kid"] != leaked || evs[0].Data["immediate"] != "true" || evs[0].Actor != "admin-1" {
		t.Errorf("key.retired events: %+v", evs)
	}
}

func sortedKIDs(kids ...string) []string {
	slices.Sort(kids)
	return kids
}
