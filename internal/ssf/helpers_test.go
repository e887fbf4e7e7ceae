package ssf_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// Test receivers (OAuth clients of the SSF management API).
const (
	receiverID     = "receiver"
	receiverSecret = "receiver-secret-0123456789-abcdefghijklmnop"
	otherID        = "receiver2"
	otherSecret    = "receiver2-secret-0123456789-abcdefghijklmno"
	weakID         = "weak"
	weakSecret     = "weak-secret-0123456789-abcdefghijklmnopqrst"
)

// ssfClients adds the receivers to a configuration, and fast SSF timings.
func ssfClients(c *config.Config) {
	for _, r := range []struct{ id, secret string }{{receiverID, receiverSecret}, {otherID, otherSecret}} {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: r.id, Name: r.id, AuthMethod: "client_secret_basic",
			Secret: secret.String(r.secret), GrantTypes: []string{"client_credentials"}, Scopes: []string{"ssf.manage", "ssf.poll", "ssf.read"}})
	}
	c.StaticClients = append(c.StaticClients, config.StaticClient{ID: weakID, Name: weakID, AuthMethod: "client_secret_basic",
		Secret: secret.String(weakSecret), GrantTypes: []string{"client_credentials"}, Scopes: []string{"ssf.read", "docs.read"}})
	c.SSF.PushMinBackoff = 20 * time.Millisecond
	c.SSF.PushMaxBackoff = 200 * time.Millisecond
	c.SSF.LongPollTimeout = 3 * time.Second
	c.SSF.PollHold = time.Second
	c.SSF.RescanInterval = 100 * time.Millisecond
	c.SSF.MinVerificationInterval = time.Millisecond
	c.SSF.PushAllowedNetworks = []string{"127.0.0.0/8", "::1/128"} // the test receivers
}

// start runs Ward (real clock: SETs are checked by receivers against the
// real time) with the test receivers.
func start(t testing.TB, configure ...func(*config.Config)) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		ssfClients(c)
		for _, f := range configure {
			f(c)
		}
	}})
}

// token gets a client credentials access token.
func token(t testing.TB, in *wardtest.Instance, id, secret, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 || out.AccessToken == "" {
		t.Fatalf("token for %s (%s): status %d %s", id, scope, resp.StatusCode, out.Error)
	}
	return out.AccessToken
}

func receiverToken(t testing.TB, in *wardtest.Instance) string {
	return token(t, in, receiverID, receiverSecret, "ssf.manage ssf.poll")
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not a JSON object (status %d): %s", r.status, r.body)
	}
	return m
}

// call sends a request with a bearer token (none if tok is "") and a JSON
// body (raw bytes are sent as they are).
func call(t testing.TB, in *wardtest.Instance, method, path, tok string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, in.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func wantStatus(t testing.TB, what string, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body: %s", what, r.status, status, r.body)
	}
}

// wantError checks an error response's status and error code.
func wantError(t testing.TB, what string, r response, status int, code string) {
	t.Helper()
	wantStatus(t, what, r, status)
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error != code {
		t.Fatalf("%s: error %q (body %s), want %q", what, e.Error, r.body, code)
	}
	if status >= 400 && status < 500 && e.Description == "" && code != "invalid_token" {
		t.Errorf("%s: no error_description", what)
	}
}

// createStream creates a stream and returns its configuration.
func createStream(t testing.TB, in *wardtest.Instance, tok string, body any) map[string]any {
	t.Helper()
	r := call(t, in, http.MethodPost, "/ssf/stream", tok, body)
	wantStatus(t, "create stream", r, http.StatusCreated)
	return r.json(t)
}

// claimsOf decodes a JWT's payload without checking it.
func claimsOf(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return wardtest.JWTClaims(t, jwt)
}

func headerOf(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return wardtest.JWTHeader(t, jwt)
}

// pushReceiver is an RFC 8935 endpoint backed by the real rs.Receiver
// (keys discovered from Ward's /.well-known/ssf-configuration). It records
// every SET it accepted in arrival order, and can be told to fail.
type pushReceiver struct {
	srv    *httptest.Server
	recv   *rs.Receiver
	state  *rs.RevocationState
	bearer string

	mu       sync.Mutex
	sets     []*rs.SET
	arrivals []time.Time
	requests atomic.Int64
	// fail503 makes that many next requests fail with 503; down makes
	// every request fail (connection-level: the handler hijacks and
	// closes).
	fail503 atomic.Int32
	down    atomic.Bool
	// delay, when set, is how long each push takes to be answered.
	delay  atomic.Int64
	notify chan struct{}
}

func newPushReceiver(t testing.TB, in *wardtest.Instance, audience string) *pushReceiver {
	t.Helper()
	p := &pushReceiver{state: rs.NewRevocationState(rs.StateConfig{}), bearer: "push-secret-" + base64.RawURLEncoding.EncodeToString([]byte(t.Name())),
		notify: make(chan struct{}, 1)}
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: in.URL, Audience: audience, State: p.state,
		OnEvent: func(_ context.Context, set *rs.SET, _ []rs.Action) error {
			p.mu.Lock()
			p.sets = append(p.sets, set)
			p.arrivals = append(p.arrivals, time.Now())
			p.mu.Unlock()
			select {
			case p.notify <- struct{}{}:
			default:
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	p.recv = recv
	push := recv.PushHandler(rs.RequireBearer(p.bearer))
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if p.down.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				c, _, _ := hj.Hijack()
				c.Close()
				return
			}
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if d := p.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if n := p.fail503.Load(); n > 0 && p.fail503.CompareAndSwap(n, n-1) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		push.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *pushReceiver) url() string { return p.srv.URL + "/events" }

func (p *pushReceiver) received() []*rs.SET {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*rs.SET(nil), p.sets...)
}

// waitFor waits until cond holds on the SETs received (or fails after d).
func (p *pushReceiver) waitFor(t testing.TB, d time.Duration, what string, cond func([]*rs.SET) bool) []*rs.SET {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := p.received()
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; received %d SETs: %v", what, len(got), types(got))
		}
		select {
		case <-p.notify:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func types(sets []*rs.SET) []string {
	out := make([]string, len(sets))
	for i, s := range sets {
		out[i] = s.Event.Type[strings.LastIndex(s.Event.Type, "/")+1:]
	}
	return out
}

func countType(sets []*rs.SET, typ string) int {
	n := 0
	for _, s := range sets {
		if s.Event.Type == typ {
			n++
		}
	}
	return n
}

// userID returns the id of a fixture user.
func userID(t testing.TB, in *wardtest.Instance, name string) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// userToken signs a user in through the "web" client (code flow) and
// returns the access token (bearer, with a sid).
func userToken(t testing.TB, in *wardtest.Instance, user, password string) string {
	t.Helper()
	verifier, challenge := wardtest.PKCE()
	loc := in.Login(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), user, password, "")
	return exchangeCode(t, in, loc.Query().Get("code"), verifier)
}

// exchangeCode redeems a code of the "web" client.
func exchangeCode(t testing.TB, in *wardtest.Instance, code, verifier string) string {
	t.Helper()
	if code == "" {
		t.Fatal("no authorization code")
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}}
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("web", wardtest.WebSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if out.AccessToken == "" {
		t.Fatalf("code exchange: status %d", resp.StatusCode)
	}
	return out.AccessToken
}

func storeSessions(user string) store.SessionFilter { return store.SessionFilter{UserID: user} }
