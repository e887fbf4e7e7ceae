package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// The end-to-end continuous access evaluation chain of issue 5: Ward's
// SSF transmitter pushes to ward gateway (ssf.mode push) — or the gateway
// follows Ward's CAE stream in NATS (ssf.mode nats) — and the gateway
// protects a document service. A client holding a valid DPoP-bound token
// reads a document; an administrator changes something; the next request
// is refused with a claims challenge; the client follows it (a refresh
// with the claims) and is refused — or, after a password change, signs in
// again and is let in.

const (
	caeReceiver   = "gateway-receiver"
	caeReceiverPW = "gateway-receiver-secret-0123456789-abcdef"
	caeApp        = "docsapp"
	caePushBearer = "push-bearer-0123456789-abcdefghijklmnopqrstu"
)

const caeGatewayConfig = `issuer: {{.Issuer}}
external_url: {{.URL}}
log: {level: debug}
routes:
  - name: docs
    path_prefix: /docs
    upstream: {{.Docs}}
    audience: https://docs.example
    scopes: []
ssf:
  mode: push
  audience: ` + caeReceiver + `
  push_bearer_env: GW_PUSH_BEARER
`

// caeNATSGatewayConfig follows the embedded NATS of Ward with a
// subscriber nkey; {{.Extra}} adds ssf keys.
const caeNATSGatewayConfig = `issuer: {{.Issuer}}
external_url: {{.URL}}
log: {level: debug}
routes:
  - name: docs
    path_prefix: /docs
    upstream: {{.Docs}}
    audience: https://docs.example
    scopes: []
ssf:
  mode: nats
  nats_url: {{.NATS}}
  nats_nkey_seed_file: {{.Seed}}
{{.Extra}}`

type caeFixture struct {
	in   *wardtest.Instance
	mode string
	docs *upstream
	gw   *gw
	// ssf.mode nats: Ward's NATS listener and the subscriber key (its
	// seed in seedFile).
	natsURL, seedFile string
	nkey              nkeys.KeyPair
}

// startCAEChain starts Ward, the document service and the gateway in
// mode (push or nats), and connects them.
func startCAEChain(t testing.TB, mode string) *caeFixture {
	t.Helper()
	f := startCAEWard(t, mode)
	f.gw = f.startGateway(t, "", gwOptions{})
	if mode == SSFPush {
		f.registerPush(t)
	}
	return f
}

// startCAEWard starts Ward and the document service. With mode nats the
// embedded NATS listens on a loopback port and knows one subscriber key.
func startCAEWard(t testing.TB, mode string) *caeFixture {
	t.Helper()
	return startCAEWardWith(t, mode, nil)
}

// startCAEWardWith is startCAEWard with more configuration.
func startCAEWardWith(t testing.TB, mode string, more func(*config.Config)) *caeFixture {
	t.Helper()
	f := &caeFixture{mode: mode}
	if mode == SSFNATS {
		f.seedFile, f.nkey = writeSeed(t)
	}
	f.in = wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients,
			config.StaticClient{ID: caeReceiver, Name: "gateway", AuthMethod: "client_secret_basic", Secret: secret.String(caeReceiverPW),
				GrantTypes: []string{"client_credentials"}, Scopes: []string{"ssf.manage", "ssf.poll"}},
			config.StaticClient{ID: caeApp, Name: "Documents", AuthMethod: "none", RedirectURIs: []string{wardtest.RedirectURI},
				GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: []string{"openid", "offline_access"},
				Audience: []string{audDocs}, DPoPBoundAccessTokens: true, CAECapable: true})
		c.SSF.PushMinBackoff = 20 * time.Millisecond
		c.SSF.PushMaxBackoff = 200 * time.Millisecond
		c.SSF.RescanInterval = 100 * time.Millisecond
		if mode == SSFNATS {
			pub, _ := f.nkey.PublicKey()
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:0"
			c.SSF.NATS.SubscriberNKeys = []string{pub}
		}
		if more != nil {
			more(c)
		}
	}})
	if mode == SSFNATS {
		nb, ok := f.in.App.Bus.(*bus.NATS)
		if !ok {
			t.Fatalf("bus is %T", f.in.App.Bus)
		}
		if f.natsURL = nb.ClientURL(); f.natsURL == "" {
			t.Fatal("the embedded NATS does not listen")
		}
	}
	f.docs = newUpstream(t, "docs")
	return f
}

// writeSeed writes a new user nkey's seed to a 0600 file.
func writeSeed(t testing.TB) (string, nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	path := filepath.Join(t.TempDir(), "gateway.nk")
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, kp
}

// startGateway starts the gateway in f's mode; extra adds lines to the
// ssf block (indented by two spaces; nats mode only).
func (f *caeFixture) startGateway(t testing.TB, extra string, o gwOptions) *gw {
	t.Helper()
	data := map[string]any{"Issuer": f.in.URL, "Docs": f.docs.URL}
	tmpl := caeGatewayConfig
	if f.mode == SSFNATS {
		tmpl = caeNATSGatewayConfig
		data["NATS"], data["Seed"], data["Extra"] = f.natsURL, f.seedFile, extra
	} else {
		o.env = map[string]string{"GW_PUSH_BEARER": caePushBearer}
	}
	return startGateway(t, tmpl, data, o)
}

// registerPush has the gateway's operator register its push stream with
// Ward, with a DPoP-bound receiver token.
func (f *caeFixture) registerPush(t testing.TB) {
	t.Helper()
	in := f.in
	rk := newSigner(t)
	tok := tokenRequest(t, in, rk, url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf.manage"}}, caeReceiver, caeReceiverPW)["access_token"].(string)
	body, _ := json.Marshal(map[string]any{"delivery": map[string]any{"method": "urn:ietf:rfc:8935",
		"endpoint_url": f.gw.URL + "/.well-known/ward/ssf/push", "authorization_header": "Bearer " + caePushBearer}})
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/ssf/stream", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "DPoP "+tok)
	proof, err := rk.Proof(http.MethodPost, in.URL+"/ssf/stream", tok, "")
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create stream: %d %s", resp.StatusCode, b)
	}
}

// session is a client of the document app: a DPoP key and its tokens.
type session struct {
	t        testing.TB
	f        *caeFixture
	s        *dpop.Signer
	at, rt   string
	user, pw string
}

func (f *caeFixture) signIn(t testing.TB, user, pw string, s *dpop.Signer) *session {
	t.Helper()
	if s == nil {
		s = newSigner(t)
	}
	verifier, challenge := wardtest.PKCE()
	extra := url.Values{"scope": {"openid offline_access"}, "dpop_jkt": {s.Thumbprint()}}
	loc := f.in.Login(t, f.in.Browser(), f.in.AuthorizeURL(caeApp, challenge, extra), user, pw, "")
	if loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: %s", loc)
	}
	m := tokenRequest(t, f.in, s, url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {caeApp},
		"claims": {`{"access_token":{"xms_cc":{"values":["cp1"]}}}`}}, caeApp, "")
	return &session{t: t, f: f, s: s, at: m["access_token"].(string), rt: m["refresh_token"].(string), user: user, pw: pw}
}

// read GETs a document through the gateway.
func (c *session) read() response {
	return c.f.gw.do(req{path: "/docs/report", token: c.at, signer: c.s})
}

// follow answers a claims challenge the way a CAE-capable client does: a
// refresh with the claims. It returns the token endpoint's status.
func (c *session) follow(claims string) (int, string) {
	c.t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.rt}, "client_id": {caeApp}, "claims": {claims}}
	nonce := ""
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, c.f.in.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		p, _ := c.s.Proof(http.MethodPost, c.f.in.URL+"/token", "", nonce)
		req.Header.Set("DPoP", p)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			c.t.Fatal(err)
		}
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if m["error"] == "use_dpop_nonce" && nonce == "" {
			nonce = resp.Header.Get("DPoP-Nonce")
			continue
		}
		if resp.StatusCode == 200 {
			c.at, c.rt = m["access_token"].(string), m["refresh_token"].(string)
			return 200, ""
		}
		e, _ := m["error"].(string)
		return resp.StatusCode, e
	}
	return 0, "nonce loop"
}

// waitChallenge reads until the gateway answers with a CAE claims
// challenge (the SET is on its way) and returns the challenge's claims.
func (c *session) waitChallenge() string {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := c.read()
		if r.Status == http.StatusUnauthorized {
			ch, ok := rs.ParseClaimsChallenge(r.Header)
			if !ok || ch.Error != rs.CodeInsufficientClaims || len(ch.Claims) == 0 {
				c.t.Fatalf("401 without a claims challenge: %q", r.Header.Values("WWW-Authenticate"))
			}
			return string(ch.Claims)
		}
		if r.Status != http.StatusOK {
			c.t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		if time.Now().After(deadline) {
			c.t.Fatal("the change never reached the gateway")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nextSecond lets a token's iat fall before the change: resources compare
// whole seconds.
func nextSecond() { time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) }

func (f *caeFixture) newUser(t testing.TB, name string) (id, pw string) {
	t.Helper()
	pw = "correct-horse-staple-4711-" + strings.Repeat("x", len(name))
	u, err := f.in.App.Identity.CreateUser(context.Background(), "test", identity.NewUser{Username: name, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	return u.ID, pw
}

func TestCAEEndToEnd(t *testing.T) {
	for _, mode := range []string{SSFPush, SSFNATS} {
		t.Run(mode, func(t *testing.T) { testCAEEndToEnd(t, startCAEChain(t, mode)) })
	}
}

func testCAEEndToEnd(t *testing.T, f *caeFixture) {
	ctx := context.Background()

	t.Run("user disabled", func(t *testing.T) {
		id, pw := f.newUser(t, "carol")
		c := f.signIn(t, "carol", pw, nil)
		if r := c.read(); r.Status != 200 {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		nextSecond()
		if err := f.in.App.Identity.SetDisabled(ctx, "admin", id, true); err != nil {
			t.Fatal(err)
		}
		claims := c.waitChallenge()
		if st, code := c.follow(claims); st != 400 || code != "invalid_grant" {
			t.Fatalf("following the challenge: %d %s, want refused", st, code)
		}
		if r := c.read(); r.Status != http.StatusUnauthorized {
			t.Fatalf("read after refusal: %d", r.Status)
		}
	})

	t.Run("password changed, then signs in again", func(t *testing.T) {
		id, pw := f.newUser(t, "dave")
		c := f.signIn(t, "dave", pw, nil)
		if r := c.read(); r.Status != 200 {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		nextSecond()
		newPW := "another-long-passphrase-8842"
		if err := f.in.App.Identity.SetPassword(ctx, "admin", id, newPW); err != nil {
			t.Fatal(err)
		}
		claims := c.waitChallenge()
		if st, code := c.follow(claims); st != 400 || code != "invalid_grant" {
			t.Fatalf("following the challenge: %d %s, want refused (the password change ended the session)", st, code)
		}
		nextSecond()
		c2 := f.signIn(t, "dave", newPW, c.s)
		if r := c2.read(); r.Status != 200 {
			t.Fatalf("after signing in again: %d %s", r.Status, r.Body)
		}
	})

	t.Run("sessions revoked", func(t *testing.T) {
		id, pw := f.newUser(t, "erin")
		c := f.signIn(t, "erin", pw, nil)
		if r := c.read(); r.Status != 200 {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		nextSecond()
		ss, err := f.in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: id, ActiveOnly: true, Now: time.Now()})
		if err != nil || len(ss) != 1 {
			t.Fatalf("sessions: %v %v", ss, err)
		}
		for _, se := range ss {
			if ok, err := f.in.App.Sessions.Revoke(ctx, "admin", se.ID, model.CauseAdminRevoked); err != nil || !ok {
				t.Fatalf("revoke: %v %v", ok, err)
			}
		}
		claims := c.waitChallenge()
		if st, code := c.follow(claims); st != 400 || code != "invalid_grant" {
			t.Fatalf("following the challenge: %d %s, want refused", st, code)
		}
	})

	t.Run("device disabled", func(t *testing.T) {
		id, pw := f.newUser(t, "frank")
		s := newSigner(t)
		jwk, _ := json.Marshal(s.PublicJWK())
		dev, err := f.in.App.Devices.Register(ctx, id, device.Registration{PublicJWK: jwk, KeyStorage: "file", Platform: "linux",
			OSName: "Debian", OSVersion: "12", Hostname: "laptop", AgentVersion: "test"})
		if err != nil {
			t.Fatal(err)
		}
		c := f.signIn(t, "frank", pw, s)
		if jwtClaims(t, c.at)["did"] != dev.ID {
			t.Fatalf("token without the device id")
		}
		if r := c.read(); r.Status != 200 {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
		nextSecond()
		if _, err := f.in.App.Devices.Disable(ctx, "admin", dev.ID); err != nil {
			t.Fatal(err)
		}
		claims := c.waitChallenge()
		if st, code := c.follow(claims); st != 400 || code != "invalid_grant" {
			t.Fatalf("following the challenge: %d %s, want refused", st, code)
		}
	})

	// Another user's session was never touched.
	_, pw := f.newUser(t, "grace")
	c := f.signIn(t, "grace", pw, nil)
	if r := c.read(); r.Status != 200 {
		t.Fatalf("an untouched user: %d %s", r.Status, r.Body)
	}
	// The events came the way the mode says.
	page := get(t, f.gw.URL+PathMetrics).Body
	switch f.mode {
	case SSFPush:
		if v := metric(t, page, MetricSSFPush+`{code="202"}`); v < 4 {
			t.Errorf("%d SETs pushed, want at least 4", int(v))
		}
	case SSFNATS:
		if v := metric(t, page, MetricNATSSETs+`{result="applied"}`); v < 4 {
			t.Errorf("%d SETs applied from NATS, want at least 4", int(v))
		}
		if v := metric(t, page, MetricNATSSETs+`{result="refused"}`); v != 0 {
			t.Errorf("%d SETs from NATS refused", int(v))
		}
		if metric(t, page, MetricNATSConnected) != 1 || metric(t, page, MetricNATSReplayed) != 1 {
			t.Errorf("connected/replayed gauges:\n%s", page)
		}
	}
}
