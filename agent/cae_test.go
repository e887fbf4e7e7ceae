package agent_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// The agent follows a continuous access evaluation claims challenge: the
// resource revokes the session's tokens issued so far, the agent refreshes
// with the challenge's claims and retries, and the new token is accepted.
// It also declares the CAE capability, so its tokens are long-lived. When
// the session itself is revoked, following the challenge fails.
func TestAgentFollowsClaimsChallenge(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()
	dir := t.TempDir()
	b := in.Browser()
	o := enrollOptions(in, dir, func(_, complete, code string) { approve(t, in, b, complete, code, "approve") })
	cfg, err := agent.Enroll(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.TokenExpiry.Sub(in.Clock.Now()); d < 23*time.Hour {
		t.Fatalf("a CAE-capable agent's token lives %v, want ~24h", d)
	}
	state := rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: 48 * time.Hour, Now: in.Clock.Now})
	var res *httptest.Server
	res = httptest.NewServer(nil)
	v, err := rs.New(rs.Config{Issuer: in.URL, Audience: in.URL, Now: in.Clock.Now, State: state, ExternalURL: res.URL})
	if err != nil {
		t.Fatal(err)
	}
	res.Config.Handler = v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := rs.FromContext(r.Context())
		io.WriteString(w, "hello "+tok.Subject)
	}))
	defer res.Close()

	c, err := agent.Open(ctx, cfg, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hc := &http.Client{Transport: c.Transport()}
	get := func() (int, string) {
		resp, err := hc.Get(res.URL + "/doc")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if st, body := get(); st != 200 || !strings.HasPrefix(body, "hello ") {
		t.Fatalf("first request: %d %s", st, body)
	}
	refreshes := func() int {
		evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenRefreshed}})
		return len(evs)
	}
	before := refreshes()
	// The resource hears that the session's tokens are revoked (e.g. a
	// location policy change): the agent follows the challenge.
	tok, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sid := jwtClaim(t, tok, "sid")
	state.RevokeSession(sid, in.Clock.Now())
	if st, body := get(); st != 200 {
		t.Fatalf("after the challenge: %d %s", st, body)
	}
	if refreshes() != before+1 {
		t.Fatalf("refreshes: %d, want %d", refreshes(), before+1)
	}
	// When Ward has ended the session too, following fails: the request
	// is refused and the agent reports the session ended.
	in.Clock.Advance(2 * time.Second)
	if _, err := in.App.Sessions.Revoke(ctx, "admin-1", sid, model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}
	state.RevokeSession(sid, in.Clock.Now())
	if _, err := hc.Get(res.URL + "/doc"); err == nil || !strings.Contains(err.Error(), "session") {
		t.Fatalf("after the session ended: err %v", err)
	}
}

// jwtClaim reads a string claim of a JWT without verifying it.
func jwtClaim(t *testing.T, jwt, name string) string {
	t.Helper()
	return wardtest.JWTClaim(t, jwt, name)
}
