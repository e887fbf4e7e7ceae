package crash

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/dpop"
)

// The security-operations chain over the real binary, as a SIEM sees it.
//
// A victim signs in on a registered device with a DPoP-bound token; an
// attacker on another network replays the victim's refresh token with a
// key of his own; Ward refuses it, its online detectors report it, the
// detection opens an incident with its MITRE ATT&CK technique, whose
// investigation graph names the victim's device and the attacker's
// address as the root cause; an administrator takes the incident's
// response action revoke_sessions and the victim's token is refused at a
// resource from then on. Every step is an event of the audit log, and
// each of the three SIEM sinks (an OCSF JSON-lines file, an HTTPS webhook
// signed with HMAC-SHA256, syslog over TLS) must hold every event of the
// log exactly once and in the log's order.
//
// Then the server is killed with SIGKILL while a burst of events is
// being exported, started again on the same data, and the chain is played
// a second time. A sink's cursor moves only after the sink has a batch,
// so after the kill each sink may repeat what it had been given after its
// last committed cursor and nothing else: the check is that every sink's
// stream is the log in order up to some point p, followed by the log in
// order from the cursor c the restarted server resumed after (read from
// its log), with c <= p and p - c at most one batch, and that every chain
// step appears exactly once, or twice if it was in that batch (round 1's
// steps are exported before the burst, so in practice they never are).

const (
	victimIP      = "192.0.2.10"    // the victim's office (TEST-NET-1)
	attackerIP    = "198.51.100.66" // the attacker's hosting network (TEST-NET-2)
	chainApp      = "chain-app"
	chainAdmin    = "chain-admin"
	chainDocs     = "chain-docs"
	chainRedirect = "http://127.0.0.1/callback"
	webhookEnv    = "WARD_CHAIN_WEBHOOK_SECRET"
	sinkBatch     = 25 // max_events of every sink
	burstEvents   = 600
	sinkNames     = "siem-file siem-webhook siem-syslog"
)

func TestSecOpsChainToSIEM(t *testing.T) {
	bin := buildWard(t)
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		runChain(t, bin, "")
	})
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Log("WARD_TEST_POSTGRES_DSN is not set: PostgreSQL is not tested")
		return
	}
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		runChain(t, bin, freshPostgres(t, dsn))
	})
}

// freshPostgres creates a database of its own and returns its DSN.
func freshPostgres(t *testing.T, admin string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("WARD_TEST_POSTGRES_DSN is set but unreachable: %v", err)
	}
	name := "ward_chain_" + randomHex(6)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the server was killed (registered before it)
		conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
		conn.Close(ctx)
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// chainWard is a deployment with the three sinks and the SIEM's two
// receivers.
type chainWard struct {
	*ward
	hook   *webhookReceiver
	syslog *syslogReceiver
	admin  string // the administrator's access token
	docs   *docsResource
	// revokedAt: when the last response action answered.
	revokedAt time.Time
}

func runChain(t *testing.T, bin, pgDSN string) {
	start := time.Now()
	dir := t.TempDir()
	secret := []byte(randomString(32))
	hook := newWebhookReceiver(t, secret)
	sl := newSyslogReceiver(t, hook.TLS.Certificates[0])
	ca := writeCA(t, dir, hook.Server)
	adminSecret, adminPW, victimPW, docsSecret := randomString(24), randomString(18), randomString(18), randomString(24)
	storage := ""
	if pgDSN != "" {
		storage = fmt.Sprintf("storage:\n  driver: postgres\n  postgres: {dsn: %q, max_conns: 8}\n", pgDSN)
	}
	// The test's requests come from 127.0.0.1, a trusted proxy: the
	// victim's and the attacker's addresses are their X-Forwarded-For.
	// risk.auto_revoke_level off: the sessions end by the operator's
	// response action, not by the automatic response.
	cfg := fmt.Sprintf(`trusted_proxies: [127.0.0.1/32]
risk:
  auto_revoke_level: "off"
ssf:
  push_min_backoff: 50ms
  push_max_backoff: 500ms
  rescan_interval: 100ms
  push_allowed_networks: [127.0.0.0/8]  # the resource's receiver is on loopback
%sexport:
  poll_interval: 100ms
  sinks:
    - name: siem-file
      type: file
      max_events: %[2]d
      file: {path: %[3]s, max_bytes: 65536}
    - name: siem-webhook
      type: webhook
      max_events: %[2]d
      max_wait: 5ms
      min_backoff: 50ms
      max_backoff: 200ms
      webhook: {url: %[4]s/ingest, secret_env: %[5]s, ca_file: %[6]s}
    - name: siem-syslog
      type: syslog
      max_events: %[2]d
      min_backoff: 50ms
      max_backoff: 200ms
      syslog: {address: %[7]s, ca_file: %[6]s, hostname: ward-chain}
static_clients:
  - id: %[8]s
    name: Chain test application
    auth_method: none
    redirect_uris: [%[9]s]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, offline_access, "ward:device"]
    audience: [%[14]s]
    dpop_bound_access_tokens: true
  - id: %[15]s
    name: Chain test resource
    auth_method: client_secret_basic
    secret: %[16]s
    grant_types: [client_credentials]
    scopes: [ssf.manage, "ward:usage"]
  - id: %[10]s
    name: Chain test console
    auth_method: client_secret_basic
    secret: %[11]s
    redirect_uris: [%[9]s]
    grant_types: [authorization_code]
    scopes: [openid, "ward:admin"]
static_users:
  - username: %[10]s
    password: %[12]s
    roles: [admin]
  - username: victor
    password: %[13]s
`, storage, sinkBatch, filepath.Join(dir, "export", "ocsf.jsonl"), hook.URL, webhookEnv, ca, sl.ln.Addr().String(),
		chainApp, chainRedirect, chainAdmin, adminSecret, adminPW, victimPW, docsAudience, chainDocs, docsSecret)
	w := newWardWith(t, bin, dir, cfg, []string{webhookEnv + "=" + string(secret)})
	w.serve()
	c := &chainWard{ward: w, hook: hook, syslog: sl}
	c.admin = adminLogin(t, w.url, chainAdmin, adminSecret, chainRedirect, chainAdmin, adminPW)
	c.docs = newDocsResource(t, w.url, chainDocs, docsSecret)

	// Round 1: the chain, then every sink holds the log exactly once.
	victim := newActor(t, victimIP)
	attacker := newActor(t, attackerIP)
	r1 := c.playChain(t, victim, attacker, victimPW, 1)
	log1 := c.waitSinks(t)
	for _, s := range c.sinks(t) {
		checkExactlyOnce(t, s.name, s.recs, log1)
		r1.checkSteps(t, s.name, s.recs, math.MaxInt64)
		validateRecords(t, s.name, s.recs)
	}
	t.Logf("round 1 (%d chain steps) exported to every sink exactly once, in order: %d records; %v since start",
		len(r1.steps), len(log1), time.Since(start).Round(time.Millisecond))

	// The burst and the kill while it is being exported.
	// The kill comes once the webhook has a few batches of the burst and
	// the log is ahead of it (reading the log records nothing).
	before := len(c.hook.records())
	burstDone := c.burst(t, func() bool {
		recs := c.hook.records()
		return len(recs) >= before+4*sinkBatch && c.lastSeq(t) > recs[len(recs)-1].Seq
	})
	t.Logf("SIGKILL after %d burst events had reached the webhook", len(c.hook.records())-before)
	w.kill()
	killedAt := time.Now()
	httpClient.Transport.(*http.Transport).CloseIdleConnections()
	burstDone()
	w.serve()
	c.admin = adminLogin(t, w.url, chainAdmin, adminSecret, chainRedirect, chainAdmin, adminPW)

	// Round 2 after the restart: the same victim signs in again on the
	// same device; another replay joins the open incident.
	r2 := c.playChain(t, victim, attacker, victimPW, 2)
	log2 := c.waitSinks(t)
	cursors := resumedCursors(t, w.runs[1].String())
	// Mid-stream: some sink had events of the log still to export.
	var preKill int64
	for _, e := range log2 {
		if e.Time.Before(killedAt) {
			preKill = max(preKill, e.Seq)
		}
	}
	if cursors["siem-file"] >= preKill && cursors["siem-webhook"] >= preKill && cursors["siem-syslog"] >= preKill {
		t.Errorf("every sink had exported the whole log (seq %d) when the server was killed: the kill was not mid-stream (cursors %v)", preKill, cursors)
	}
	for _, s := range c.sinks(t) {
		checkAfterCrash(t, s.name, s.recs, log2, cursors[s.name], s.name != "siem-file")
		r1.checkSteps(t, s.name, s.recs, cursors[s.name])
		r2.checkSteps(t, s.name, s.recs, math.MaxInt64)
		validateRecords(t, s.name, s.recs)
	}
	if p := append(c.hook.problems(), c.syslog.problems()...); len(p) > 0 {
		t.Errorf("the receivers refused %d requests or frames, e.g. %s", len(p), p[0])
	}
	t.Logf("after the restart: %d records in the log, %d chain steps of round 2; every sink complete and in order; total %v",
		len(log2), len(r2.steps), time.Since(start).Round(time.Millisecond))
}

// --- the actors -------------------------------------------------------------

// actor is a browser or client on one network, with a DPoP key.
type actor struct {
	t      *testing.T
	ip     string
	key    *dpop.Signer
	client *http.Client
}

// xff adds the actor's address as X-Forwarded-For (Ward trusts
// 127.0.0.1 as a proxy).
type xff struct {
	ip   string
	next http.RoundTripper
}

func (x xff) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", x.ip)
	return x.next.RoundTrip(r)
}

func newActor(t *testing.T, ip string) *actor {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return &actor{t: t, ip: ip, key: s, client: &http.Client{Timeout: 10 * time.Second, Transport: xff{ip, &http.Transport{}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// dpopCall sends a request with a DPoP proof of the actor's key (and the
// access token when given), answering one use_dpop_nonce challenge.
func (a *actor) dpopCall(method, u, token string, form url.Values, body any) (int, map[string]any) {
	a.t.Helper()
	nonce := ""
	for range 2 {
		var rd io.Reader
		ctype := ""
		switch {
		case form != nil:
			rd, ctype = strings.NewReader(form.Encode()), "application/x-www-form-urlencoded"
		case body != nil:
			b, _ := json.Marshal(body)
			rd, ctype = strings.NewReader(string(b)), "application/json"
		}
		req, _ := http.NewRequest(method, u, rd)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		p, err := a.key.Proof(method, u, token, nonce)
		if err != nil {
			a.t.Fatal(err)
		}
		req.Header.Set("DPoP", p)
		if token != "" {
			req.Header.Set("Authorization", "DPoP "+token)
		}
		resp, err := a.client.Do(req)
		if err != nil {
			a.t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		json.Unmarshal(b, &m)
		if n := resp.Header.Get("DPoP-Nonce"); n != "" && nonce == "" &&
			(m["error"] == "use_dpop_nonce" || strings.Contains(resp.Header.Get("WWW-Authenticate"), "use_dpop_nonce")) {
			nonce = n
			continue
		}
		if m == nil {
			m = map[string]any{}
		}
		return resp.StatusCode, m
	}
	a.t.Fatalf("%s %s: use_dpop_nonce twice", method, u)
	return 0, nil
}

// signIn runs the authorization code flow with PKCE and dpop_jkt through
// the public client and returns DPoP-bound tokens.
func (a *actor) signIn(base, username, password string) (at, rt string) {
	a.t.Helper()
	jar, _ := cookiejar.New(nil)
	a.client.Jar = jar
	verifier := randomString(32)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {chainApp}, "redirect_uri": {chainRedirect},
		"scope": {"openid offline_access ward:device"}, "state": {randomString(8)}, "dpop_jkt": {a.key.Thumbprint()},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	resp, err := a.client.Get(base + "/authorize?" + q.Encode())
	if err != nil {
		a.t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("authorize: status %d, want the sign-in page", resp.StatusCode)
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	form.Set("username", username)
	form.Set("password", password)
	resp, err = a.client.PostForm(base+"/login", form)
	if err != nil {
		a.t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc == nil || resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		a.t.Fatalf("sign-in of %s: status %d, redirect %v", username, resp.StatusCode, loc)
	}
	st, m := a.dpopCall(http.MethodPost, base+"/token", "", url.Values{"grant_type": {"authorization_code"},
		"code": {loc.Query().Get("code")}, "code_verifier": {verifier}, "redirect_uri": {chainRedirect}, "client_id": {chainApp}}, nil)
	at, _ = m["access_token"].(string)
	rt, _ = m["refresh_token"].(string)
	if st != http.StatusOK || m["token_type"] != "DPoP" || at == "" || rt == "" {
		a.t.Fatalf("token (authorization_code): %d %v %v", st, m["error"], m["error_description"])
	}
	return at, rt
}

// refresh presents rt with the actor's key.
func (a *actor) refresh(base, rt string) (int, map[string]any) {
	return a.dpopCall(http.MethodPost, base+"/token", "", url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {rt}, "client_id": {chainApp}}, nil)
}

// --- the chain ---------------------------------------------------------------

// step is one event of the chain that a SIEM must see.
type step struct {
	rank int
	what string
	ev   *auditEvent
}

// round is one play of the chain: its steps in audit-log order.
type round struct {
	n     int
	steps []step
}

// playChain plays the chain once and checks what Ward's API says about
// it; it returns the steps found in the audit log.
func (c *chainWard) playChain(t *testing.T, victim, attacker *actor, victimPW string, n int) *round {
	t.Helper()
	// Resources compare a token's iat, in whole seconds, with the time
	// of a revocation: a token issued in the second of the previous
	// round's revocation would be refused as issued before it.
	if !c.revokedAt.IsZero() {
		time.Sleep(time.Until(c.revokedAt.Truncate(time.Second).Add(time.Second)))
	}
	from := c.lastSeq(t)

	// The victim signs in on the laptop (round 1 registers it as a
	// device), refreshes (the refresh names the device) and uses the
	// token at a resource (userinfo).
	at, rt := victim.signIn(c.url, "victor", victimPW)
	deviceID := c.deviceOf(t, victim, at, n == 1)
	st, m := victim.refresh(c.url, rt)
	if st != http.StatusOK {
		t.Fatalf("the victim's refresh: %d %v", st, m["error"])
	}
	at, rt = m["access_token"].(string), m["refresh_token"].(string)
	st, m = victim.dpopCall(http.MethodGet, c.docs.URL+"/docs/report", at, nil, nil)
	userID, _ := m["sub"].(string)
	if st != http.StatusOK || userID == "" || m["did"] != deviceID {
		t.Fatalf("the resource with the victim's token: %d %v (want the device %s)", st, m, deviceID)
	}
	// The resource reports the use (token.used) within its flush
	// interval: wait for it, so that the steps have one order.
	used := c.waitEvent(t, from, func(e *auditEvent) bool {
		return e.Type == "token.used" && e.UserID == userID && e.Outcome == "success"
	})

	// The attacker replays the victim's current refresh token from
	// another network with a key of his own: refused.
	if st, m := attacker.refresh(c.url, rt); st != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Fatalf("the replayed refresh token: %d %v, want 400 invalid_grant", st, m["error"])
	}

	// Detection -> incident, with its technique and tactics.
	inc := c.waitIncident(t, userID, n)
	if !slices.Contains(inc.Techniques, "T1550.001") || !slices.Contains(inc.Tactics, "TA0005") || !slices.Contains(inc.Tactics, "TA0008") {
		t.Errorf("incident %s: techniques %v tactics %v, want T1550.001 (Defense Evasion TA0005, Lateral Movement TA0008)",
			inc.Name, inc.Techniques, inc.Tactics)
	}
	if inc.Severity != "high" || (inc.Status != "new" && inc.Status != "active") {
		t.Errorf("incident %s: severity %s status %s", inc.Name, inc.Severity, inc.Status)
	}

	// The investigation graph: the root cause is the victim's device and
	// session, and the attacker's address and key.
	// The graph reads the detections from the risk service's record,
	// which another consumer of the detection writes: until it has, the
	// root cause stands on the theft signal alone (rule "signal").
	var (
		r  apiResult
		rc *rootCause
	)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r = request(context.Background(), http.MethodGet, c.url+adminAPI+"/incidents/"+inc.ID+"/graph", c.admin, nil)
		var g struct {
			Graph struct {
				RootCause *rootCause `json:"root_cause"`
			} `json:"graph"`
		}
		if !r.ok() || json.Unmarshal(r.body, &g) != nil || g.Graph.RootCause == nil {
			t.Fatalf("incident graph: %v, root cause: %.2000s", r, r.body)
		}
		rc = g.Graph.RootCause
		if rc.Rule == "detection" || time.Now().After(deadline) {
			break
		}
	}
	if rc.Origin.DeviceID != deviceID || rc.Origin.IP != victimIP || rc.Origin.UserID != userID || rc.Origin.Key != victim.key.Thumbprint() ||
		rc.Misuse.IP != attackerIP || rc.Misuse.Key != attacker.key.Thumbprint() || !rc.Misuse.OtherKey || rc.Misuse.Credential != "refresh_token" ||
		rc.Rule != "detection" || rc.Technique != "T1550.001" || !slices.Contains(rc.Nodes, "device:"+deviceID) || !slices.Contains(rc.Nodes, "ip:"+attackerIP) {
		t.Errorf("root cause of round %d: %.3000s\nwant origin: device %s, ip %s, the victim's key; misuse: ip %s with the attacker's key", n, r.body, deviceID, victimIP, attackerIP)
	} else {
		t.Logf("round %d root cause: %s", n, rc.Summary)
	}

	// The response action revokes the sessions; the victim's token is
	// refused at the resource from then on.
	r = request(context.Background(), http.MethodPost, c.url+adminAPI+"/incidents/"+inc.ID+"/actions", c.admin,
		map[string]string{"action": "revoke_sessions", "reason": "refresh token replayed from " + attackerIP})
	if r.status != http.StatusOK {
		t.Fatalf("revoke_sessions: %v %s", r, r.body)
	}
	c.revokedAt = time.Now()
	// The resource learns of it by the CAEP session-revoked SET Ward
	// pushes, and reports the refused use.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _ := victim.dpopCall(http.MethodGet, c.docs.URL+"/docs/report", at, nil, nil)
		if st == http.StatusUnauthorized {
			break
		}
		if st != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("the resource with the victim's token after revoke_sessions: %d, want 401 within 20 s", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	refused := c.waitEvent(t, used.Seq, func(e *auditEvent) bool {
		return e.Type == "token.used" && e.UserID == userID && e.Outcome == "failure"
	})

	// The steps in the audit log.
	evs := eventsAfter(t, c.url, c.admin, from)
	// rank orders the steps by cause: a step comes after every step of
	// a lower rank. Steps of one rank are not ordered: the user's risk
	// and the incident are two consumers of the detection.
	want := []struct {
		rank int
		what string
		ok   func(e *auditEvent) bool
	}{
		{0, "victim signed in", func(e *auditEvent) bool {
			return e.Type == "signin.succeeded" && e.UserID == userID && e.IP == victimIP
		}},
		{1, "device registered", func(e *auditEvent) bool { return n == 1 && e.Type == "device.registered" && e.DeviceID == deviceID }},
		{2, "victim refreshed on the device", func(e *auditEvent) bool {
			return e.Type == "token.refreshed" && e.UserID == userID && e.DeviceID == deviceID && e.IP == victimIP
		}},
		{3, "victim used the token at the resource", func(e *auditEvent) bool { return e.ID == used.ID }},
		{4, "replay refused", func(e *auditEvent) bool {
			return e.Type == "token.request_failed" && e.UserID == userID && e.IP == attackerIP
		}},
		{5, "detection", func(e *auditEvent) bool { return e.Type == "risk.detected" && e.Reason == "token_replay_wrong_key" }},
		{6, "user risk raised", func(e *auditEvent) bool { return n == 1 && e.Type == "user.risk_changed" && e.UserID == userID }},
		{6, "incident", func(e *auditEvent) bool {
			return (e.Type == "incident.created" || e.Type == "incident.updated") && e.Data["incident_id"] == inc.ID
		}},
		// The action's effects, then the action with its outcome per
		// target (one correlation id for the three).
		{7, "session revoked", func(e *auditEvent) bool { return e.Type == "session.revoked" && e.UserID == userID }},
		{8, "sessions of the user revoked", func(e *auditEvent) bool { return e.Type == "user.sessions_revoked" && e.UserID == userID }},
		{9, "response action", func(e *auditEvent) bool { return e.Type == "incident.action_taken" && e.Data["incident_id"] == inc.ID }},
		{10, "the victim's token refused at the resource", func(e *auditEvent) bool { return e.ID == refused.ID }},
	}
	rd := &round{n: n}
	for _, w := range want {
		if (w.what == "device registered" || w.what == "user risk raised") && n != 1 {
			continue
		}
		var found *auditEvent
		for _, e := range evs {
			if w.ok(e) {
				found = e
				break
			}
		}
		if found == nil {
			t.Errorf("round %d: no %q event in the audit log", n, w.what)
			continue
		}
		rd.steps = append(rd.steps, step{w.rank, w.what, found})
	}
	for _, later := range rd.steps {
		for _, earlier := range rd.steps {
			if earlier.rank < later.rank && earlier.ev.Seq > later.ev.Seq {
				t.Errorf("round %d: %q (seq %d) is before %q (seq %d) in the audit log", n, later.what, later.ev.Seq, earlier.what, earlier.ev.Seq)
			}
		}
	}
	if testing.Verbose() {
		var b strings.Builder
		for _, e := range evs {
			fmt.Fprintf(&b, "\n  %d %s %s ip=%s reason=%s", e.Seq, e.Type, e.Code, e.IP, e.Reason)
		}
		t.Logf("round %d: the audit log from the sign-in on:%s", n, b.String())
	}
	// The action and its effects carry one correlation id.
	corr := map[string]bool{}
	for _, st := range rd.steps {
		if st.rank >= 7 && st.rank <= 9 {
			corr[st.ev.CorrelationID] = true
		}
	}
	if len(corr) != 1 || corr[""] {
		t.Errorf("round %d: the response action and its revocations have correlation ids %v, want one", n, corr)
	}
	return rd
}

// waitEvent waits for an event after seq that ok accepts.
func (c *chainWard) waitEvent(t *testing.T, seq int64, ok func(e *auditEvent) bool) *auditEvent {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, e := range eventsAfter(t, c.url, c.admin, seq) {
			if ok(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the event waited for is not in the audit log after 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deviceOf registers the actor's key as a device (register) or finds it.
func (c *chainWard) deviceOf(t *testing.T, a *actor, at string, register bool) string {
	t.Helper()
	if register {
		jwk := a.key.PublicJWK()
		raw, _ := jwk.MarshalJSON()
		st, m := a.dpopCall(http.MethodPost, c.url+"/devices", at, nil, map[string]any{"jwk": json.RawMessage(raw),
			"platform": "linux", "key_storage": "file", "hostname": "victor-laptop"})
		id, _ := m["id"].(string)
		if st != http.StatusCreated || id == "" {
			t.Fatalf("device registration: %d %v", st, m)
		}
		return id
	}
	r := request(context.Background(), http.MethodGet, c.url+adminAPI+"/devices?status=active", c.admin, nil)
	var page struct {
		Devices []struct {
			ID  string `json:"id"`
			JKT string `json:"jkt"`
		} `json:"devices"`
	}
	json.Unmarshal(r.body, &page)
	for _, d := range page.Devices {
		if d.JKT == a.key.Thumbprint() {
			return d.ID
		}
	}
	t.Fatalf("the victim's device is not listed: %v %s", r, r.body)
	return ""
}

// incidentView is what the test reads of an incident.
type incidentView struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Severity   string   `json:"severity"`
	Status     string   `json:"status"`
	Techniques []string `json:"techniques"`
	Tactics    []string `json:"tactics"`
	Detections []struct {
		Type      string `json:"type"`
		Technique string `json:"technique"`
		EventID   string `json:"event_id"`
		IP        string `json:"ip"`
	} `json:"detection_list"`
}

// waitIncident waits for the user's open incident to hold n
// token_replay_wrong_key detections (the online detectors follow the
// audit log; the incident consumer follows the bus). With PostgreSQL the
// detectors' cursor is leased (15 s): after a kill -9 the restarted
// server takes it over when the dead process's lease has run out.
func (c *chainWard) waitIncident(t *testing.T, userID string, n int) *incidentView {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		r := request(context.Background(), http.MethodGet, c.url+adminAPI+"/incidents?status=open&user="+url.QueryEscape(userID), c.admin, nil)
		var page struct {
			Incidents []struct {
				ID string `json:"id"`
			} `json:"incidents"`
		}
		json.Unmarshal(r.body, &page)
		if len(page.Incidents) > 1 {
			t.Fatalf("the victim has %d open incidents, want one: %s", len(page.Incidents), r.body)
		}
		if len(page.Incidents) == 1 {
			r = request(context.Background(), http.MethodGet, c.url+adminAPI+"/incidents/"+page.Incidents[0].ID, c.admin, nil)
			var inc incidentView
			if err := json.Unmarshal(r.body, &inc); err != nil {
				t.Fatalf("incident: %v %s", r, r.body)
			}
			got := 0
			for _, d := range inc.Detections {
				if d.Type == "token_replay_wrong_key" {
					got++
					if d.Technique != "T1550.001" || d.IP != attackerIP {
						t.Errorf("detection of %s: technique %q ip %q, want T1550.001 from %s", inc.Name, d.Technique, d.IP, attackerIP)
					}
				}
			}
			if got >= n {
				return &inc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no incident with %d token_replay_wrong_key detections 45 s after the replay: %s", n, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkSteps: each step of the round is in the sink exactly once
// (twice only if its sequence number is after repeatAfter, the cursor a
// restarted sink resumed after: the batch in flight at the kill), in
// the audit log's order, as a record of the OCSF class it maps to.
func (r *round) checkSteps(t *testing.T, sink string, recs []siemRecord, repeatAfter int64) {
	t.Helper()
	at := map[string][]int{}
	for i, rec := range recs {
		at[rec.UID] = append(at[rec.UID], i)
	}
	class := map[string]int{"signin.succeeded": 3002, "device.registered": 6003, "token.refreshed": 3002, "token.request_failed": 3002,
		"risk.detected": 2004, "incident.created": 2005, "incident.updated": 2005, "incident.action_taken": 2005,
		"session.revoked": 3002, "user.sessions_revoked": 3002, "user.risk_changed": 3001, "token.used": 3002}
	lastSeq, last := int64(0), -1
	for _, s := range r.steps {
		pos := at[s.ev.ID]
		if len(pos) == 2 && s.ev.Seq > repeatAfter {
			t.Logf("%s: round %d step %q (seq %d) was in flight at the kill: delivered again after the restart", sink, r.n, s.what, s.ev.Seq)
			pos = pos[:1]
		}
		if len(pos) != 1 {
			t.Errorf("%s: round %d step %q (%s %s, seq %d) is there %d times, want once", sink, r.n, s.what, s.ev.Type, s.ev.ID, s.ev.Seq, len(pos))
			continue
		}
		rec := recs[pos[0]]
		if rec.Class != class[s.ev.Type] || rec.Seq != s.ev.Seq {
			t.Errorf("%s: round %d step %q: class %d seq %d, want class %d seq %d", sink, r.n, s.what, rec.Class, rec.Seq, class[s.ev.Type], s.ev.Seq)
		}
		if err := findingOK(s, rec.Raw); err != nil {
			t.Errorf("%s: round %d step %q: %v: %.600s", sink, r.n, s.what, err, rec.Raw)
		}
		if (s.ev.Seq > lastSeq) != (pos[0] > last) {
			t.Errorf("%s: round %d step %q (seq %d) and the step before it (seq %d) arrived in the other order", sink, r.n, s.what, s.ev.Seq, lastSeq)
		}
		lastSeq, last = s.ev.Seq, pos[0]
	}
}

// findingOK checks what a SIEM triages by in the findings: the Detection
// Finding's severity, id and ATT&CK technique, and the Incident
// Finding's techniques.
func findingOK(s step, raw []byte) error {
	type attack struct {
		SubTechnique struct {
			UID string `json:"uid"`
		} `json:"sub_technique"`
		Tactic struct {
			UID string `json:"uid"`
		} `json:"tactic"`
	}
	tactics := func(as []attack) []string {
		var out []string
		for _, a := range as {
			if a.SubTechnique.UID == "T1550.001" {
				out = append(out, a.Tactic.UID)
			}
		}
		slices.Sort(out)
		return out
	}
	want := []string{"TA0005", "TA0008"}
	switch s.ev.Type {
	case "risk.detected":
		var f struct {
			SeverityID  int `json:"severity_id"`
			FindingInfo struct {
				UID     string   `json:"uid"`
				Attacks []attack `json:"attacks"`
			} `json:"finding_info"`
		}
		json.Unmarshal(raw, &f)
		if f.SeverityID != 4 || f.FindingInfo.UID != s.ev.Data["detection_id"] || !slices.Equal(tactics(f.FindingInfo.Attacks), want) {
			return fmt.Errorf("Detection Finding: severity_id %d, finding_info.uid %q, T1550.001 tactics %v; want 4 (High), %q, %v",
				f.SeverityID, f.FindingInfo.UID, tactics(f.FindingInfo.Attacks), s.ev.Data["detection_id"], want)
		}
	case "incident.created", "incident.updated", "incident.action_taken":
		var f struct {
			SeverityID int      `json:"severity_id"`
			Attacks    []attack `json:"attacks"`
			List       []struct {
				UID string `json:"uid"`
			} `json:"finding_info_list"`
		}
		json.Unmarshal(raw, &f)
		if f.SeverityID != 4 || len(f.List) == 0 || f.List[0].UID != s.ev.Data["incident_id"] || !slices.Equal(tactics(f.Attacks), want) {
			return fmt.Errorf("Incident Finding: severity_id %d, T1550.001 tactics %v; want 4 (High), %v", f.SeverityID, tactics(f.Attacks), want)
		}
	}
	return nil
}

// --- the audit log and the sinks ------------------------------------------------

// lastSeq is the newest event's sequence number.
func (c *chainWard) lastSeq(t *testing.T) int64 {
	t.Helper()
	r := request(context.Background(), http.MethodGet, c.url+adminAPI+"/events?limit=1", c.admin, nil)
	var page struct {
		Events []*auditEvent `json:"events"`
	}
	if !r.ok() || json.Unmarshal(r.body, &page) != nil {
		t.Fatalf("GET /events: %v", r)
	}
	if len(page.Events) == 0 {
		return 0
	}
	return page.Events[0].Seq
}

// eventsAfter returns every event of the audit log after seq, oldest
// first.
func eventsAfter(t *testing.T, base, token string, seq int64) []*auditEvent {
	t.Helper()
	var all []*auditEvent
	before := int64(0)
	for {
		q := url.Values{"limit": {"1000"}}
		if before > 0 {
			q.Set("before", fmt.Sprint(before))
		}
		r := request(context.Background(), http.MethodGet, base+adminAPI+"/events?"+q.Encode(), token, nil)
		var page struct {
			Events     []*auditEvent `json:"events"`
			NextBefore int64         `json:"next_before"`
		}
		if !r.ok() || json.Unmarshal(r.body, &page) != nil {
			t.Fatalf("GET /events: %v", r)
		}
		done := page.NextBefore == 0
		for _, e := range page.Events {
			if e.Seq <= seq {
				done = true
				break
			}
			all = append(all, e)
		}
		if done {
			break
		}
		before = page.NextBefore
	}
	slices.Reverse(all)
	return all
}

type sinkRecords struct {
	name string
	recs []siemRecord
}

func (c *chainWard) sinks(t *testing.T) []sinkRecords {
	return []sinkRecords{
		{"siem-file", fileRecords(t, c.exportDir, "ocsf.jsonl")},
		{"siem-webhook", c.hook.records()},
		{"siem-syslog", c.syslog.records()},
	}
}

// waitSinks reads the whole audit log and waits until every sink holds
// every event of it (by id), then a little longer for anything extra;
// it returns the log. The administrator's reads are not audited, so the
// log stands still once the test stops acting.
func (c *chainWard) waitSinks(t *testing.T) []*auditEvent {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		log := eventsAfter(t, c.url, c.admin, 0)
		missing := map[string]int{}
		for _, s := range c.sinks(t) {
			have := map[string]bool{}
			for _, r := range s.recs {
				have[r.UID] = true
			}
			for _, e := range log {
				if !have[e.ID] {
					missing[s.name]++
				}
			}
		}
		if len(missing) == 0 {
			time.Sleep(300 * time.Millisecond)
			if again := eventsAfter(t, c.url, c.admin, 0); len(again) == len(log) {
				return log
			}
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("45 s after the last step the sinks still miss events of the audit log's %d: %v", len(log), missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkExactlyOnce: the sink's stream is the audit log, in order, each
// record once.
func checkExactlyOnce(t *testing.T, sink string, recs []siemRecord, log []*auditEvent) {
	t.Helper()
	if len(recs) != len(log) {
		t.Errorf("%s: %d records for the log's %d events", sink, len(recs), len(log))
	}
	for i := range min(len(recs), len(log)) {
		if recs[i].UID != log[i].ID || recs[i].Seq != log[i].Seq {
			t.Errorf("%s: record %d is %s (seq %d), the log's event %d is %s %s (seq %d)", sink, i, recs[i].UID, recs[i].Seq, i, log[i].Type, log[i].ID, log[i].Seq)
			return
		}
	}
}

// checkAfterCrash: the sink's stream is the log in order up to some
// record p, then the log in order from the first event after c, the
// cursor the restarted server resumed after; c <= p, and what lies
// between (the repeated records, each exactly twice) is at most one
// batch.
//
// The file sink repeats nothing (mayRepeat false): it finds what the file
// already holds after its cursor when it resumes.
func checkAfterCrash(t *testing.T, sink string, recs []siemRecord, log []*auditEvent, c int64, mayRepeat bool) {
	t.Helper()
	k := len(recs)
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			k = i
			break
		}
	}
	first, second := recs[:k], recs[k:]
	for i := 1; i < len(second); i++ {
		if second[i].Seq <= second[i-1].Seq {
			t.Errorf("%s: out of order twice: seq %d after seq %d (record %d), after the restart's resumption at record %d",
				sink, second[i].Seq, second[i-1].Seq, k+i, k)
			return
		}
	}
	p := int64(0)
	if len(first) > 0 {
		p = first[len(first)-1].Seq
	}
	// The first run's part: the log up to p, in order, no gap.
	var wantFirst, wantSecond []*auditEvent
	for _, e := range log {
		if e.Seq <= p {
			wantFirst = append(wantFirst, e)
		}
		if e.Seq > c {
			wantSecond = append(wantSecond, e)
		}
	}
	if p < c {
		t.Errorf("%s: the first run delivered up to seq %d, but the cursor was committed at %d: records were skipped", sink, p, c)
	}
	if len(second) == 0 {
		// Nothing was repeated: the restart resumed right after the last
		// record delivered.
		checkExactlyOnce(t, sink, first, log)
		t.Logf("%s: resumed after seq %d; no record repeated", sink, c)
		return
	}
	if !mayRepeat {
		t.Errorf("%s: repeated records after the restart (seq %d..%d)", sink, second[0].Seq, p)
	}
	checkExactlyOnce(t, sink+" (before the kill)", first, wantFirst)
	checkExactlyOnce(t, sink+" (after the restart)", second, wantSecond)
	repeated := 0
	for _, e := range log {
		if e.Seq > c && e.Seq <= p {
			repeated++
		}
	}
	if repeated > sinkBatch {
		t.Errorf("%s: %d records repeated after the restart (seq %d to %d): more than one batch (%d)", sink, repeated, c+1, p, sinkBatch)
	}
	t.Logf("%s: delivered up to seq %d before the kill, cursor committed at %d: %d records (seq %d..%d, one batch at most) repeated once after the restart, nothing else",
		sink, p, c, repeated, c+1, p)
}

// resumedCursors reads, from a run's log, the cursor each sink resumed
// after ("export: exporting" with after_seq).
func resumedCursors(t *testing.T, logs string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, l := range strings.Split(logs, "\n") {
		var m struct {
			Msg      string `json:"msg"`
			Sink     string `json:"sink"`
			AfterSeq *int64 `json:"after_seq"`
		}
		if json.Unmarshal([]byte(l), &m) != nil || m.Msg != "export: exporting" || m.AfterSeq == nil {
			continue
		}
		if _, dup := out[m.Sink]; dup {
			t.Fatalf("sink %s claimed its cursor twice in one run", m.Sink)
		}
		out[m.Sink] = *m.AfterSeq
	}
	for _, s := range strings.Fields(sinkNames) {
		if _, ok := out[s]; !ok {
			t.Fatalf("the restarted server's log does not say where sink %s resumed", s)
		}
	}
	return out
}

// burst creates groups from four workers until the server stops
// answering, and returns once killNow reports true (the caller kills the
// server then); the function it returns waits for the workers.
func (c *chainWard) burst(t *testing.T, killNow func() bool) (wait func()) {
	t.Helper()
	var made, failed atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	next := atomic.Int64{}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > burstEvents {
					return
				}
				r := request(ctx, http.MethodPost, c.url+adminAPI+"/groups", c.admin, map[string]any{"name": fmt.Sprintf("burst-%04d", i)})
				if !r.ok() {
					failed.Add(1)
					return // the kill
				}
				made.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for !killNow() {
		if time.Now().After(deadline) || next.Load() > burstEvents {
			cancel()
			wg.Wait()
			t.Fatalf("the burst did not reach the webhook in time (%d groups made, %d webhook batches)", made.Load(), c.hook.batches.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if next.Load() >= burstEvents {
		t.Errorf("the burst was over before the kill: the kill did not land mid-stream")
	}
	return func() {
		cancel()
		wg.Wait()
		t.Logf("burst: %d groups created before the kill", made.Load())
	}
}

// rootCause is what the test reads of a graph's root cause.
type rootCause struct {
	Rule      string `json:"rule"`
	Detection string `json:"detection_type"`
	Technique string `json:"technique"`
	Summary   string `json:"summary"`
	Origin    struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
		IP       string `json:"ip"`
		Key      string `json:"key"`
	} `json:"origin"`
	Misuse struct {
		IP         string `json:"ip"`
		Key        string `json:"key"`
		OtherKey   bool   `json:"other_key"`
		Credential string `json:"credential"`
	} `json:"misuse"`
	Nodes []string `json:"nodes"`
}
