package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// The token-theft chain end to end: a thief replays the victim's refresh
// token, or access token, with a key of his own. Ward refuses it (token
// protection) and its detectors see it; the user's risk becomes high, every
// session of the user is revoked, the gateway is told over CAE and refuses
// the victim's other tokens, and the audit log says why.

const (
	usageClient   = "usage-reporter"
	usageClientPW = "usage-reporter-secret-0123456789-abcdef"
)

// refreshWith presents rt at the token endpoint with a proof by s and
// returns the status and error code.
func (f *caeFixture) refreshWith(t testing.TB, s *dpop.Signer, rt string) (int, string) {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {caeApp}}
	nonce := ""
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, f.in.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("User-Agent", "python-requests/2.31")
		p, _ := s.Proof(http.MethodPost, f.in.URL+"/token", "", nonce)
		req.Header.Set("DPoP", p)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if m["error"] == "use_dpop_nonce" && nonce == "" {
			nonce = resp.Header.Get("DPoP-Nonce")
			continue
		}
		e, _ := m["error"].(string)
		return resp.StatusCode, e
	}
	return 0, "nonce loop"
}

// waitRefused reads with c until the gateway refuses its token and
// returns how long that took from since.
func (c *session) waitRefused(since time.Time) time.Duration {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.read()
		if r.Status == http.StatusUnauthorized {
			return time.Since(since)
		}
		if r.Status != http.StatusOK {
			c.t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		if time.Now().After(deadline) {
			c.t.Fatal("the gateway still accepts the victim's token 10 s after the replay")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// why returns the audit events of the user, oldest first.
func (f *caeFixture) why(t testing.TB, userID string) []*store.StoredEvent {
	t.Helper()
	evs, err := f.in.App.Store.ListEvents(context.Background(), store.EventFilter{UserID: userID, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*store.StoredEvent, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- {
		out = append(out, evs[i])
	}
	return out
}

// checkWhy asserts that the user's audit log holds the detection of kind
// typ, the risk change to high and the revocations it caused, in that
// order.
func (f *caeFixture) checkWhy(t testing.TB, userID, typ string) {
	t.Helper()
	var sawDetection, sawHigh, sawRevoked bool
	// The gateway may refuse on the risk change's SET before the
	// revocations are committed: wait for them.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := f.in.App.Store.ListEvents(context.Background(), store.EventFilter{UserID: userID, Types: []model.EventType{model.EventUserSessionsRevoked}, Limit: 1})
		if err == nil && len(evs) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, e := range f.why(t, userID) {
		switch {
		case e.Type == model.EventRiskDetected && e.Reason == typ:
			sawDetection = true
			if e.Data[model.DataDetectionSeverity] != "high" || e.Data[model.DataDetectionEvidence] == "" ||
				e.Data[model.DataDetectionTechnique] == "" || e.Data[model.DataDetectionSource] != model.DetectionSourceOnline {
				t.Errorf("the detection: %+v", e.Event)
			}
		case e.Type == model.EventUserRiskChanged && e.Data["level"] == "high":
			if !sawDetection {
				t.Error("the risk changed before the detection was recorded")
			}
			sawHigh = true
		case e.Type == model.EventUserSessionsRevoked && sawHigh:
			sawRevoked = true
		}
	}
	if !sawDetection || !sawHigh || !sawRevoked {
		t.Errorf("the audit log does not say why: detection %v, risk high %v, sessions revoked %v", sawDetection, sawHigh, sawRevoked)
		for _, e := range f.why(t, userID) {
			t.Logf("%s %s reason=%s %v", e.Time.Format(time.RFC3339Nano), e.Type, e.Reason, e.Data)
		}
	}
}

// theftGatewayConfig is the CAE chain's gateway (push mode) reporting
// token uses to Ward.
const theftGatewayConfig = caeGatewayConfig + `usage:
  url: {{.Issuer}}/usage
  token_env: GW_USAGE_TOKEN
  interval: 50ms
`

// bearerToken is a client_credentials token without a proof (a Bearer
// token: what the gateway's usage reporter sends).
func bearerToken(t testing.TB, issuer, id, pw, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	tok, _ := m["access_token"].(string)
	if resp.StatusCode != http.StatusOK || m["token_type"] != "Bearer" || tok == "" {
		t.Fatalf("usage token: %d %s", resp.StatusCode, b)
	}
	return tok
}

func TestTokenTheftEndToEnd(t *testing.T) {
	f := startCAEWardWith(t, SSFPush, func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: usageClient, Name: "gateway usage reports",
			AuthMethod: "client_secret_basic", Secret: secret.String(usageClientPW), GrantTypes: []string{"client_credentials"},
			Scopes: []string{"ward:usage"}})
	})
	usage := bearerToken(t, f.in.URL, usageClient, usageClientPW, "ward:usage")
	f.gw = startGateway(t, theftGatewayConfig, map[string]any{"Issuer": f.in.URL, "Docs": f.docs.URL},
		gwOptions{env: map[string]string{"GW_PUSH_BEARER": caePushBearer, "GW_USAGE_TOKEN": usage}})
	f.registerPush(t)

	// Each case: the victim has two sessions (a laptop and a phone, each
	// with its own key); the thief replays a credential of the first. The
	// second session's token is refused at the gateway within a second.
	cases := []struct {
		name, user string
		steal      func(t *testing.T, victim *session, thief *dpop.Signer)
	}{
		{"refresh token replayed with another key", "victor", func(t *testing.T, victim *session, thief *dpop.Signer) {
			if st, code := f.refreshWith(t, thief, victim.rt); st != http.StatusBadRequest || code != "invalid_grant" {
				t.Fatalf("the replayed refresh token: %d %s, want 400 invalid_grant", st, code)
			}
		}},
		{"access token replayed with another key at the gateway", "wendy", func(t *testing.T, victim *session, thief *dpop.Signer) {
			r := f.gw.do(req{path: "/docs/report", token: victim.at, signer: thief})
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("the replayed access token: %d %s, want 401", r.Status, r.Body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, pw := f.newUser(t, tc.user)
			laptop := f.signIn(t, tc.user, pw, nil)
			phone := f.signIn(t, tc.user, pw, nil)
			for _, c := range []*session{laptop, phone} {
				if r := c.read(); r.Status != http.StatusOK {
					t.Fatalf("read: %d %s", r.Status, r.Body)
				}
			}
			nextSecond() // the tokens' iat falls before the revocation
			replayed := time.Now()
			tc.steal(t, laptop, newSigner(t))
			took := phone.waitRefused(replayed)
			t.Logf("the victim's other token was refused %v after the replay", took.Round(time.Millisecond))
			u, err := f.in.App.Store.GetUser(context.Background(), id)
			if err != nil || u.RiskLevel != "high" {
				t.Fatalf("user risk: %+v %v", u, err)
			}
			f.checkWhy(t, id, "token_replay_wrong_key")
			// The victim signs in again (a new session after the
			// response) and is let in; the risk stays until it is
			// remediated or dismissed, which the policies decide.
		})
	}
}
