package cluster

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/loadgen"
)

// maxGatewayUsers static users (gwUser(i)) exist for the gateway
// clients; a plan uses up to that many.
const maxGatewayUsers = 8

func gwUser(i int) string { return fmt.Sprintf("gwuser-%d", i) }

// gateway is one `ward gateway` process: a route /docs to the test's
// upstream for audience gwAudience, CAE from Ward's CAE stream in the
// NATS cluster (ssf.mode nats: replayed at start, so a restarted
// gateway knows every earlier revocation).
type gateway struct {
	t        *testing.T
	bin, cfg string
	url      string // external_url
	addr     string
	log      string
	mu       sync.Mutex
	cmd      *exec.Cmd
}

func startGateways(t *testing.T, bin, dir, issuer, natsURLs string) []*gateway {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The gateway must have removed the token and proof and added
		// the verified identity.
		if r.Header.Get("Authorization") != "" || r.Header.Get("DPoP") != "" || r.Header.Get("Ward-Identity") == "" {
			http.Error(w, "credentials reached the upstream, or no identity", http.StatusTeapot)
			return
		}
		fmt.Fprintf(w, "doc for %s\n", r.Header.Get("Ward-Subject"))
	}))
	t.Cleanup(up.Close)
	// One identity key for both, as docs/gateway.md recommends.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(key)
	keyFile := filepath.Join(dir, "gateway-identity.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	var gws []*gateway
	for i := range 2 {
		port := freePort(t)
		g := &gateway{t: t, bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port), url: fmt.Sprintf("http://127.0.0.1:%d", port),
			cfg: filepath.Join(dir, fmt.Sprintf("gateway-%d.yaml", i)), log: filepath.Join(dir, fmt.Sprintf("gateway-%d.log", i))}
		cfg := fmt.Sprintf(`listen: %s
issuer: %s
external_url: %s
identity_key_file: %s
log: {level: warn, format: json}
routes:
  - name: docs
    path_prefix: /docs
    upstream: %s
    audience: %s
    scopes: []
ssf:
  mode: nats
  nats_url: %q
  nats_token_env: WARD_GW_NATS_TOKEN
`, g.addr, issuer, g.url, keyFile, up.URL, gwAudience, natsURLs)
		if err := os.WriteFile(g.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		g.start()
		gws = append(gws, g)
	}
	t.Cleanup(func() {
		for _, g := range gws {
			g.kill()
		}
	})
	for _, g := range gws {
		g.waitReady(60 * time.Second)
	}
	return gws
}

func (g *gateway) start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, err := os.OpenFile(g.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		g.t.Fatal(err)
	}
	g.cmd = exec.Command(g.bin, "gateway", "--config", g.cfg)
	// The test's NATS has no authentication; the gateway needs some
	// credential for ssf.mode nats and sends this token, which the
	// servers ignore.
	g.cmd.Env = append(childEnv(), "WARD_GW_NATS_TOKEN=unused-by-the-test-nats")
	g.cmd.Stdout, g.cmd.Stderr = f, f
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	go func(cmd *exec.Cmd, f *os.File) { cmd.Wait(); f.Close() }(g.cmd, f)
}

func (g *gateway) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil && g.cmd.Process != nil {
		g.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// waitReady waits for /readyz: the issuer's keys fetched and the CAE
// stream replayed.
func (g *gateway) waitReady(d time.Duration) {
	c := http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Get(g.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	b, _ := os.ReadFile(g.log)
	g.t.Fatalf("gateway %s is not ready:\n%s", g.addr, tail(b, 3000))
}

// metrics returns the gateway's CAE metric samples.
func (g *gateway) metrics() string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(g.url + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "ward_gateway_cae") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// --- the gateway clients -----------------------------------------------------

// heldToken is an access token a gateway client got, with what the
// final check needs.
type heldToken struct {
	at, sid, sub string
	user         string
	iat, exp     time.Time
	signer       *dpop.Signer
	refusedAt    time.Time // first insufficient_claims seen by its client (under gatewayLoad.mu)
}

// gatewayLoad is the gateway clients: each signs in as its own user
// (authorization code with PKCE through the proxy, a DPoP-bound token
// for gwAudience) and calls /docs on the two gateways in turn; when a
// gateway refuses the token with insufficient_claims (its session was
// revoked) it signs in again with a new key.
type gatewayLoad struct {
	ok, refused, signIns, signInFail atomic.Int64
	errs                             *errLog
	mu                               sync.Mutex
	tokens                           []*heldToken
	wg                               sync.WaitGroup
}

func startGatewayLoad(ctx context.Context, issuer string, gws []*gateway, workers int, end time.Time) *gatewayLoad {
	gl := &gatewayLoad{errs: &errLog{}}
	for i := range workers {
		gl.wg.Add(1)
		go func() {
			defer gl.wg.Done()
			gl.worker(ctx, issuer, gws, gwUser(i), i, end)
		}()
	}
	return gl
}

func (gl *gatewayLoad) wait() { gl.wg.Wait() }

func (gl *gatewayLoad) summary() string {
	return fmt.Sprintf("%d requests accepted, %d refused after a revocation (insufficient_claims), %d errors, %d sign-ins (%d failed), %d tokens",
		gl.ok.Load(), gl.refused.Load(), gl.errs.count(), gl.signIns.Load(), gl.signInFail.Load(), len(gl.tokens))
}

var gwHTTP = &http.Client{Timeout: 5 * time.Second}

func (gl *gatewayLoad) worker(ctx context.Context, issuer string, gws []*gateway, user string, n int, end time.Time) {
	var tok *heldToken
	for time.Now().Before(end) && ctx.Err() == nil {
		if tok == nil {
			var err error
			tok, err = signInForGateway(ctx, issuer, user)
			if err == nil {
				tok.user = user
			}
			if err != nil {
				gl.signInFail.Add(1)
				time.Sleep(300 * time.Millisecond)
				continue
			}
			gl.signIns.Add(1)
			gl.mu.Lock()
			gl.tokens = append(gl.tokens, tok)
			gl.mu.Unlock()
		}
		gi := n % len(gws)
		n++
		status, challenge, err := gatewayGet(ctx, gws[gi], tok)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				gl.errs.add(fmt.Sprintf("gateway %d: no answer", gi))
			}
		case status == http.StatusOK:
			gl.ok.Add(1)
		case status == http.StatusUnauthorized && strings.Contains(challenge, "insufficient_claims"):
			gl.refused.Add(1)
			gl.mu.Lock()
			tok.refusedAt = time.Now()
			gl.mu.Unlock()
			tok = nil
		default:
			gl.errs.add(fmt.Sprintf("gateway %d: %d", gi, status))
		}
		time.Sleep(40 * time.Millisecond)
	}
}

// gatewayGet calls /docs/item on g with tok and a fresh proof.
func gatewayGet(ctx context.Context, g *gateway, tok *heldToken) (int, string, error) {
	r := loadgen.GetResource(ctx, gwHTTP, g.url+"/docs/item", tok.at, tok.signer)
	return r.Status, r.Header.Get("WWW-Authenticate"), r.Err
}

// browser returns a cookie-keeping client that follows no redirects;
// with pin it connects to that address whatever the URL's host (a
// request to one replica, with the issuer's host).
func browser(pin string) *http.Client {
	tr := &http.Transport{}
	if pin != "" {
		d := &net.Dialer{Timeout: 3 * time.Second}
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, pin)
		}
	}
	return loadgen.Browser(tr, 10*time.Second)
}

// startSignIn opens the authorization request of cluster-web's or
// cluster-app's kind and posts the password; it returns the answer to
// the password and the PKCE verifier.
func startSignIn(ctx context.Context, b *http.Client, issuer, client, scope, user, password string) (*http.Response, string, string, error) {
	l := loadgen.Login{AuthorizeURL: issuer + "/authorize", LoginURL: issuer + "/login", ClientID: client,
		RedirectURI: "https://app.example/callback", Scope: scope, Username: user, Password: password}
	return l.Start(ctx, b)
}

// signInForGateway signs user in to cluster-app through the proxy and
// redeems the code for a DPoP-bound access token.
func signInForGateway(ctx context.Context, issuer, user string) (*heldToken, error) {
	b := browser("")
	resp, _, verifier, err := startSignIn(ctx, b, issuer, "cluster-app", "openid offline_access", user, userPass)
	if err != nil {
		return nil, err
	}
	code := loadgen.CodeOf(resp)
	if code == "" {
		return nil, fmt.Errorf("sign-in: status %d, no code", resp.StatusCode)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := dpop.NewSigner(key)
	if err != nil {
		return nil, err
	}
	tc := &loadgen.TokenClient{HTTP: gwHTTP, Endpoint: issuer + "/token", ClientID: "cluster-app", Secret: appSecret, Signer: s}
	r := tc.Post(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {"https://app.example/callback"}})
	if r.Err != nil {
		return nil, r.Err
	}
	at, _ := r.Body["access_token"].(string)
	typ, _ := r.Body["token_type"].(string)
	if r.Status != http.StatusOK || at == "" || !strings.EqualFold(typ, "DPoP") {
		return nil, fmt.Errorf("code exchange: %s %s", r.Code(), typ)
	}
	var claims struct {
		Sid string `json:"sid"`
		Sub string `json:"sub"`
		Iat int64  `json:"iat"`
		Exp int64  `json:"exp"`
	}
	parts := strings.Split(at, ".")
	if len(parts) != 3 {
		return nil, errors.New("access token is not a JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(raw, &claims) != nil || claims.Sid == "" {
		return nil, fmt.Errorf("access token without sid: %v", err)
	}
	return &heldToken{at: at, sid: claims.Sid, sub: claims.Sub, iat: time.Unix(claims.Iat, 0), exp: time.Unix(claims.Exp, 0), signer: s}, nil
}

// checkGatewaysConverged: after the run, every token a gateway client
// got is refused by both gateways if its session is revoked in the
// database and accepted by both otherwise (tokens about to expire are
// left out). The gateways get 20 s to converge.
//
// A token issued in the second of a revocation of all its user's sessions
// (the client signed in again at once) is refused although its session
// is active: token times have whole seconds, and rs refuses a token
// whose iat is not after the revocation (fail closed; the challenge asks
// for a newer token). Such refusals are counted apart.
func checkGatewaysConverged(t *testing.T, db *database, gws []*gateway, gl *gatewayLoad, a *admin) string {
	t.Helper()
	ctx := context.Background()
	gl.mu.Lock()
	tokens := append([]*heldToken(nil), gl.tokens...)
	gl.mu.Unlock()
	revoked := map[string]bool{}
	for _, tok := range tokens {
		var at int64
		if err := db.conn.QueryRow(ctx, `SELECT revoked_at FROM sessions WHERE id = $1`, tok.sid).Scan(&at); err != nil {
			t.Errorf("gateway token's session %s: %v", tok.sid, err)
			continue
		}
		revoked[tok.sid] = at != 0
	}
	var bad []string
	var nRevoked, nActive, skipped, sameSec int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Second) {
		bad, nRevoked, nActive, skipped, sameSec = nil, 0, 0, 0, 0
		for _, tok := range tokens {
			if time.Until(tok.exp) < 30*time.Second {
				skipped++
				continue
			}
			rev, ok := revoked[tok.sid]
			if !ok {
				continue
			}
			if rev {
				nRevoked++
			} else {
				nActive++
			}
			for i, g := range gws {
				status, challenge, err := gatewayGet(ctx, g, tok)
				switch {
				case err != nil:
					bad = append(bad, fmt.Sprintf("gateway %d: %v", i, err))
				case rev && !(status == http.StatusUnauthorized && strings.Contains(challenge, "insufficient_claims")):
					bad = append(bad, fmt.Sprintf("gateway %d: session %s revoked, token answered %d %q", i, tok.sid, status, challenge))
				case !rev && status == http.StatusUnauthorized && strings.Contains(challenge, "insufficient_claims") && sameSecond(a, tok):
					sameSec++
				case !rev && status != http.StatusOK:
					bad = append(bad, fmt.Sprintf("gateway %d: session %s active, token answered %d %q", i, tok.sid, status, challenge))
				}
			}
		}
		if len(bad) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for i, b := range bad {
		if i == 20 {
			t.Errorf("… and %d more", len(bad)-20)
			break
		}
		t.Errorf("gateways not converged: %s", b)
	}
	if len(bad) > 0 {
		// What the gateways know of their CAE follower, for the reader
		// of a failed run (the logs are removed with the test's directory).
		for i, g := range gws {
			b, _ := os.ReadFile(g.log)
			t.Logf("gateway %d metrics: %s\ngateway %d log (last lines):\n%s", i, g.metrics(), i, tail(b, 3000))
		}
	}
	if nRevoked == 0 {
		t.Errorf("gateways: no token of a revoked session to check (the admin's revocations did not reach the gateway clients)")
	}
	// Each gateway applied a SET for every audit event that yields one (a
	// restarted gateway replayed them from the stream; repeats are
	// counted apart as duplicates).
	// The last events (the TOTP enrolment) may still be on their way: up
	// to 60 s.
	want := len(caeEvents(t, db, 0))
	var applied []string
	for i, g := range gws {
		var m string
		n := -1
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			m = g.metrics()
			for _, f := range strings.Split(m, "; ") {
				if v, ok := strings.CutPrefix(f, `ward_gateway_cae_nats_sets_total{result="applied"} `); ok {
					fmt.Sscan(v, &n)
				}
			}
			if n >= want || time.Now().After(deadline) {
				break
			}
		}
		if n < want {
			t.Errorf("gateway %d applied %d SETs from the CAE stream, the audit log has %d events that yield one; metrics: %s", i, n, want, m)
		}
		applied = append(applied, fmt.Sprint(n))
	}
	return fmt.Sprintf("%d tokens of revoked sessions refused by both gateways, %d of active sessions accepted by both (%d refusals of a token issued in the second of its user's revocation; %d near expiry not checked); SETs applied %s of %d CAE events in the audit log",
		nRevoked, nActive, sameSec, skipped, strings.Join(applied, " and "), want)
}

// caeLag measures, for each revocation the administrator made of a
// gateway client's session (or of all of its user's sessions) during the
// load, how long after the command returned the client's next gateway
// request was refused with insufficient_claims: the end-to-end CAE delay
// (Ward's outbox, the relay to the CAE stream in NATS, the gateway's
// consumer). Revocations whose token was no longer in use (refused
// already for an earlier one) are not counted; those still unseen when
// the load ended are.
func caeLag(a *admin, gl *gatewayLoad, loadEnd time.Time) (lags []time.Duration, unseen int, slow []string) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	for _, r := range a.gwRevocations {
		var hit *heldToken
		for _, tok := range gl.tokens {
			covered := tok.sid == r.target || (r.target == "user:"+tok.user && !tok.iat.After(r.at))
			if covered && (tok.refusedAt.IsZero() || !tok.refusedAt.Before(r.begun)) {
				hit = tok
				break
			}
		}
		switch {
		case hit == nil:
		case hit.refusedAt.IsZero():
			if r.at.Before(loadEnd.Add(-10 * time.Second)) {
				unseen++
			}
		default:
			lag := hit.refusedAt.Sub(r.at)
			lags = append(lags, lag)
			if lag > 3*time.Second {
				slow = append(slow, fmt.Sprintf("%s at %s: %.1fs", r.target, r.at.Format("15:04:05.0"), lag.Seconds()))
			}
		}
	}
	return lags, unseen, slow
}

// sameSecond reports whether tok was issued in the second in which the
// administrator revoked every session of its user.
func sameSecond(a *admin, tok *heldToken) bool {
	for _, r := range a.gwRevocations {
		if r.target == "user:"+tok.user && tok.iat.Unix() >= r.begun.Unix() && tok.iat.Unix() <= r.at.Unix() {
			return true
		}
	}
	return false
}
