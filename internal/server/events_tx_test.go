package server_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// committedWith records, for every published event, whether it was
// committed in the transaction of its change (store.EventStored when the
// subscribers run, after the audit persister).
type committedWith struct {
	mu sync.Mutex
	m  map[string]bool
}

func watchCommitted(b bus.Bus) *committedWith {
	c := &committedWith{m: map[string]bool{}}
	b.Subscribe("test-committed-with-change", func(ctx context.Context, e *model.Event) error {
		c.mu.Lock()
		c.m[e.ID] = store.EventStored(ctx, e)
		c.mu.Unlock()
		return nil
	})
	return c
}

// wantOnce checks the events of one request (by correlation id): exactly
// one of type typ, with the request's origin, committed with its change
// (withChange) or by the audit persister.
func (c *committedWith) wantOnce(t *testing.T, in *wardtest.Instance, corr string, typ model.EventType, withChange bool) *store.StoredEvent {
	t.Helper()
	if corr == "" {
		t.Fatal("no X-Correlation-ID")
	}
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{CorrelationID: corr, Types: []model.EventType{typ}})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("%d %s events for request %s, want 1", len(evs), typ, corr)
	}
	e := evs[0]
	if e.IP != "127.0.0.1" || e.UserAgent == "" || e.ID == "" || e.Time.IsZero() {
		t.Errorf("%s stored as %+v", typ, e.Event)
	}
	c.mu.Lock()
	stored, published := c.m[e.ID]
	c.mu.Unlock()
	if !published || stored != withChange {
		t.Errorf("%s: published %v, committed with its change %v; want %v", typ, published, stored, withChange)
	}
	return e
}

// The OAuth paths behind CAE signals commit their event with the session
// revocation: a refresh token replayed, an access token revoked by its
// client, a logout; and the token endpoint commits token.issued and
// token.refreshed with the refresh token they record.
func TestCriticalEventsCommitWithChange(t *testing.T) {
	criticalEvents(t, wardtest.Start(t, wardtest.Options{}))
}

func TestCriticalEventsCommitWithChangePostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	criticalEvents(t, wardtest.Start(t, wardtest.Options{PostgresDSN: dsn}))
}

func criticalEvents(t *testing.T, in *wardtest.Instance) {
	seen := watchCommitted(in.App.Bus)

	// Refresh token reuse.
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	r := exchange(t, in, "spa", code, verifier, s)
	rt := r.str("refresh_token")
	sid, _ := claims(t, r.str("access_token"))["sid"].(string)
	// The code exchange's token.issued commits with its refresh token,
	// the rotation's token.refreshed with the rotation.
	seen.wantOnce(t, in, r.Header.Get("X-Correlation-ID"), model.EventTokenIssued, true)
	r2 := refresh(t, in, "spa", rt, s)
	if r2.Status != 200 {
		t.Fatalf("refresh: %d %s", r2.Status, r2.Body)
	}
	seen.wantOnce(t, in, r2.Header.Get("X-Correlation-ID"), model.EventTokenRefreshed, true)
	reuse := refresh(t, in, "spa", rt, s)
	wantError(t, reuse, 400, "invalid_grant")
	corr := reuse.Header.Get("X-Correlation-ID")
	e := seen.wantOnce(t, in, corr, model.EventRefreshReuseDetected, true)
	if e.SessionID != sid || e.Reason != "refresh_reuse" || e.Outcome != model.OutcomeFailure || e.Data["jkt"] != s.Thumbprint() {
		t.Errorf("refresh_reuse_detected %+v", e.Event)
	}
	seen.wantOnce(t, in, corr, model.EventSessionRevoked, true) // commits with the revocation too
	if se, err := in.App.Store.GetSession(context.Background(), sid); err != nil || se.RevokeCause != "refresh_reuse" {
		t.Errorf("session after reuse: %+v, %v", se, err)
	}

	// An access token revoked by its client.
	webAuth := [2]string{"web", wardtest.WebSecret}
	v2, ch2 := wardtest.PKCE()
	loc := in.Login(t, in.Browser(), in.AuthorizeURL("web", ch2, nil), "bob", wardtest.BobPassword, "")
	r = do(t, in, call{path: "/token", basic: webAuth, form: url.Values{"grant_type": {"authorization_code"},
		"code": {loc.Query().Get("code")}, "code_verifier": {v2}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 {
		t.Fatalf("web token: %d %s", r.Status, r.Body)
	}
	at := r.str("access_token")
	rr := do(t, in, call{path: "/revoke", basic: webAuth, form: url.Values{"token": {at}}})
	if rr.Status != 200 {
		t.Fatalf("revoke: %d %s", rr.Status, rr.Body)
	}
	e = seen.wantOnce(t, in, rr.Header.Get("X-Correlation-ID"), model.EventTokenRevoked, true)
	if e.Reason != "client_revoked_access_token" || e.SessionID != claims(t, at)["sid"] || e.TokenID != claims(t, at)["jti"] {
		t.Errorf("token.revoked %+v", e.Event)
	}

	// Logout with an id_token_hint.
	b := in.Browser()
	v3, ch3 := wardtest.PKCE()
	s3 := newSigner(t)
	in.Clock.Advance(31 * time.Second) // a fresh TOTP step: each code is accepted once
	loc = in.Login(t, b, in.AuthorizeURL("spa", ch3, url.Values{"dpop_jkt": {s3.Thumbprint()}}), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	r = exchange(t, in, "spa", loc.Query().Get("code"), v3, s3)
	if r.Status != 200 {
		t.Fatalf("spa token: %d %s", r.Status, r.Body)
	}
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/logout?"+url.Values{"id_token_hint": {r.str("id_token")}}.Encode(), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	e = seen.wantOnce(t, in, resp.Header.Get("X-Correlation-ID"), model.EventSessionLoggedOut, true)
	if e.SessionID != claims(t, r.str("access_token"))["sid"] || e.Reason != "user_logout" {
		t.Errorf("session.logged_out %+v", e.Event)
	}
}
