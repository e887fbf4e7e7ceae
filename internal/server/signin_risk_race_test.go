package server_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/signin"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// riskDuring raises a user's level to high (with the automatic
// response) while the next sign-in is being judged: after the sign-in
// read the user, before its session is created.
type riskDuring struct {
	mu    sync.Mutex
	armed bool
	in    *wardtest.Instance
	user  string
	err   error
}

func (r *riskDuring) AssessSignIn(ctx context.Context, a activity.Activity) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.armed && a.UserID == r.user {
		r.armed = false
		r.err = r.in.App.Risk.SetUserLevel(ctx, "admin", r.user, model.RiskHigh, "compromised while signing in")
	}
	return model.RiskNone, nil
}

// A sign-in judged on the user's level before the risk response
// committed gets no session: the page asks to sign in again (409), no
// cookie, no code, no signin.succeeded, a signin.failed risk_changed;
// the user's earlier session is revoked by the response and nothing
// admitted on the old level is live. Signing in again is judged on the
// high level, which a policy blocks. Both backends.
func TestSignInRacingRiskResponse(t *testing.T) {
	for name, dsn := range raceBackends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			hook := &riskDuring{}
			in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, SignInRisk: hook})
			bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
			if err != nil {
				t.Fatal(err)
			}
			hook.mu.Lock()
			hook.in, hook.user = in, bob.ID
			hook.mu.Unlock()
			applyPolicies(t, in, `
policies:
  - id: block-high-user-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {user_risk: [high]}
    grant: {block: true}
`)
			// A sign-in with the risk unchanged works as before.
			_, ch := wardtest.PKCE()
			if loc := in.Login(t, in.Browser(), in.AuthorizeURL("web", ch, nil), "bob", wardtest.BobPassword, ""); loc.Query().Get("code") == "" {
				t.Fatalf("sign-in at level none: no code in %s", loc)
			}
			before, err := in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: bob.ID})
			if err != nil || len(before) != 1 {
				t.Fatalf("sessions after the first sign-in: %d %v", len(before), err)
			}

			hook.mu.Lock()
			hook.armed = true
			hook.mu.Unlock()
			resp, body := in.TryLogin(t, in.Browser(), in.AuthorizeURL("web", ch, nil), "bob", wardtest.BobPassword, "")
			hook.mu.Lock()
			herr := hook.err
			hook.mu.Unlock()
			if herr != nil {
				t.Fatal(herr)
			}
			if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "security status changed while you were signing in") {
				t.Fatalf("sign-in racing the response: %d, want 409 and the sign-in-again page; %.300s", resp.StatusCode, body)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("refused sign-in redirects to %s", loc)
			}
			for _, c := range resp.Cookies() {
				if c.MaxAge >= 0 && c.Value != "" && strings.Contains(strings.ToLower(c.Name), "session") {
					t.Errorf("refused sign-in sets cookie %s", c.Name)
				}
			}
			ss, err := in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: bob.ID})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range ss {
				if s.RevokedAt.IsZero() {
					t.Errorf("session %s live after the response", s.ID)
				}
			}
			if len(ss) != 1 || ss[0].RevokeCause != string(model.CauseUserRisk) {
				t.Errorf("sessions after the race: %d (want only the first, revoked by the response)", len(ss))
			}
			ok, err := in.App.Store.ListEvents(ctx, store.EventFilter{UserID: bob.ID, Types: []model.EventType{model.EventSignInSucceeded}})
			if err != nil || len(ok) != 1 {
				t.Errorf("signin.succeeded: %d (want the first sign-in's only) %v", len(ok), err)
			}
			failed, err := in.App.Store.ListEvents(ctx, store.EventFilter{UserID: bob.ID, Types: []model.EventType{model.EventSignInFailed}})
			if err != nil {
				t.Fatal(err)
			}
			if n := countReason(failed, signin.ReasonRiskChanged); n != 1 {
				t.Errorf("signin.failed %s: %d, want 1", signin.ReasonRiskChanged, n)
			}

			// Again: judged on the high level, which the policy blocks.
			resp, _ = in.TryLogin(t, in.Browser(), in.AuthorizeURL("web", ch, nil), "bob", wardtest.BobPassword, "")
			loc, _ := resp.Location()
			if loc == nil || loc.Query().Get("error") != "access_denied" || loc.Query().Get("code") != "" {
				t.Fatalf("sign-in again at high: %d %v, want access_denied", resp.StatusCode, loc)
			}
			if ss, _ := in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: bob.ID}); len(ss) != 1 {
				t.Errorf("%d sessions after the blocked sign-in, want 1", len(ss))
			}
		})
	}
}

func countReason(evs []*store.StoredEvent, reason string) int {
	n := 0
	for _, e := range evs {
		if e.Reason == reason {
			n++
		}
	}
	return n
}
