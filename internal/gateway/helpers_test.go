package gateway

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/metrics/metricstest"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// Audiences the test IdP puts into access tokens.
const (
	audDocs  = "https://docs.example"
	audAdmin = "https://admin.example" // never in a token: the wrong-audience route
)

// startWard runs a real Ward whose "service" and "spa" clients issue
// tokens for audDocs.
func startWard(t testing.TB) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		for i := range c.StaticClients {
			switch c.StaticClients[i].ID {
			case "service", "spa":
				c.StaticClients[i].Audience = []string{audDocs}
			}
		}
	}})
}

// newSigner returns a DPoP signer with a fresh P-256 key.
func newSigner(t testing.TB) *dpop.Signer {
	t.Helper()
	return wardtest.NewSigner(t)
}

// tokenRequest posts form to Ward's /token with a DPoP proof of s (and
// basic auth when clientSecret is set), following one use_dpop_nonce.
func tokenRequest(t testing.TB, in *wardtest.Instance, s *dpop.Signer, form url.Values, clientID, clientSecret string) map[string]any {
	t.Helper()
	nonce := ""
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if clientSecret != "" {
			req.SetBasicAuth(clientID, clientSecret)
		}
		proof, err := s.Proof(http.MethodPost, in.URL+"/token", "", nonce)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("DPoP", proof)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		if resp.StatusCode == http.StatusBadRequest && m["error"] == "use_dpop_nonce" && nonce == "" {
			nonce = resp.Header.Get("DPoP-Nonce")
			continue
		}
		if resp.StatusCode != http.StatusOK || m["token_type"] != "DPoP" {
			t.Fatalf("token: %d %s", resp.StatusCode, body)
		}
		return m
	}
	t.Fatal("token: nonce loop")
	return nil
}

// serviceToken returns a DPoP-bound client_credentials token of "service"
// (aud audDocs, scope "docs.read docs.write" unless scope is given).
func serviceToken(t testing.TB, in *wardtest.Instance, s *dpop.Signer, scope string) string {
	t.Helper()
	if scope == "" {
		scope = "docs.read docs.write"
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	m := tokenRequest(t, in, s, form, "service", wardtest.ServiceSecret)
	return m["access_token"].(string)
}

// userToken signs bob in through the public client "spa" (authorization
// code, PKCE, dpop_jkt) and returns a DPoP-bound access token with a sid.
func userToken(t testing.TB, in *wardtest.Instance, s *dpop.Signer) string {
	t.Helper()
	verifier, challenge := wardtest.PKCE()
	extra := url.Values{"scope": {"openid docs.read"}, "dpop_jkt": {s.Thumbprint()}}
	loc := in.Login(t, in.Browser(), in.AuthorizeURL("spa", challenge, extra), "bob", wardtest.BobPassword, "")
	q := loc.Query()
	if q.Get("code") == "" {
		t.Fatalf("authorize: %s", loc)
	}
	m := tokenRequest(t, in, s, url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
		"code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}, "spa", "")
	return m["access_token"].(string)
}

// jwtClaims decodes a JWT's payload without verifying it.
func jwtClaims(t testing.TB, jwt string) map[string]any {
	t.Helper()
	return wardtest.JWTClaims(t, jwt)
}

// seen is one request an upstream received.
type seen struct {
	Method, Path, RawPath, Query, Host string
	Header                             http.Header
}

// upstream is a real HTTP server that records what it receives.
type upstream struct {
	*httptest.Server
	name string
	mu   sync.Mutex
	reqs []seen
	// hold, if set, makes requests to /slow wait until it is closed.
	hold    chan struct{}
	entered chan struct{}
	record  bool // keep what arrives (default true)
}

func newUpstream(t testing.TB, name string) *upstream {
	t.Helper()
	u := &upstream{name: name, entered: make(chan struct{}, 16), record: true}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		if u.record {
			u.reqs = append(u.reqs, seen{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone()})
		}
		hold := u.hold
		u.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/slow") && hold != nil {
			u.entered <- struct{}{}
			<-hold
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, u.name+" "+r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() int { u.mu.Lock(); defer u.mu.Unlock(); return len(u.reqs) }

func (u *upstream) last(t testing.TB) seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatalf("upstream %s received nothing", u.name)
	}
	return u.reqs[len(u.reqs)-1]
}

// syncBuffer collects log lines from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// gw is a running gateway under test.
type gw struct {
	t       testing.TB
	URL     string // external_url == listener
	Metrics string // separate metrics listener, if any
	File    string
	G       *Gateway
	Logs    *syncBuffer
	env     map[string]string
	data    map[string]any
	tmpl    string
	client  *http.Client
}

type gwOptions struct {
	metricsListen bool
	watch         time.Duration // 0: no file watch
	env           map[string]string
	noWait        bool         // do not wait until the JWKS is loaded
	tls           *http.Client // serve HTTPS; this client trusts the certificate
}

// startGateway writes the configuration (a text/template of yaml with
// {{.URL}} = the gateway's own URL and the keys of data) and serves it on
// a fresh loopback listener until the test ends.
func startGateway(t testing.TB, tmpl string, data map[string]any, o gwOptions) *gw {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{t: t, URL: "http://" + ln.Addr().String(), File: filepath.Join(t.TempDir(), "gateway.yaml"),
		Logs: &syncBuffer{}, env: o.env, data: data, tmpl: tmpl, client: http.DefaultClient}
	if o.tls != nil {
		g.URL, g.client = "https://"+ln.Addr().String(), o.tls
	}
	var mln net.Listener
	if o.metricsListen {
		if mln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		g.Metrics = "http://" + mln.Addr().String()
	}
	g.write(tmpl)
	lookup := func(k string) (string, bool) { v, ok := g.env[k]; return v, ok }
	cfg, err := LoadConfig(g.File, lookup)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if o.metricsListen {
		cfg.MetricsListen = mln.Addr().String()
	}
	log := slog.New(slog.NewJSONHandler(g.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	watch := o.watch
	if watch == 0 {
		watch = -1
	}
	g.G, err = New(Options{Config: cfg, ConfigFile: g.File, LookupEnv: lookup, Logger: log, WatchInterval: watch})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.G.Serve(ctx, ln, mln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("gateway did not stop")
		}
	})
	if !o.noWait {
		waitFor(t, "gateway ready", func() bool { return g.G.Ready() })
	}
	return g
}

// write renders tmpl into the configuration file.
func (g *gw) write(tmpl string) {
	g.t.Helper()
	data := map[string]any{"URL": g.URL}
	for k, v := range g.data {
		data[k] = v
	}
	if extra, ok := data["Extra"].(string); ok { // a template itself
		tmpl = strings.Replace(tmpl, "{{.Extra}}", extra, 1)
	}
	var b bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(tmpl)).Execute(&b, data); err != nil {
		g.t.Fatal(err)
	}
	// Write and rename, as editors and config management do.
	tmp := g.File + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		g.t.Fatal(err)
	}
	if err := os.Rename(tmp, g.File); err != nil {
		g.t.Fatal(err)
	}
}

// response is a finished request.
type response struct {
	Status int
	Header http.Header
	Body   string
	JSON   map[string]any
}

// req describes a request to the gateway.
type req struct {
	method string
	path   string // with query
	token  string
	scheme string // "DPoP" (default with a token) or "Bearer"
	signer *dpop.Signer
	proof  string // a given proof instead of a fresh one
	header http.Header
	body   string
}

// do sends r to the gateway with a fresh DPoP proof for htu = URL + path.
func (g *gw) do(r req) response {
	g.t.Helper()
	resp, _ := g.doProof(r)
	return resp
}

// doProof is do that also returns the proof it sent.
func (g *gw) doProof(r req) (response, string) {
	g.t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, g.URL+r.path, body)
	if err != nil {
		g.t.Fatal(err)
	}
	for k, v := range r.header {
		hr.Header[k] = v
	}
	proof := r.proof
	if r.token != "" {
		scheme := r.scheme
		if scheme == "" {
			scheme = "DPoP"
		}
		hr.Header.Set("Authorization", scheme+" "+r.token)
	}
	if proof == "" && r.signer != nil {
		htu := g.URL + r.path
		if i := strings.IndexByte(htu, '?'); i >= 0 {
			htu = htu[:i]
		}
		if proof, err = r.signer.Proof(r.method, htu, r.token, ""); err != nil {
			g.t.Fatal(err)
		}
	}
	if proof != "" {
		hr.Header.Set("DPoP", proof)
	}
	return doWith(g.t, g.client, hr), proof
}

func doHTTP(t testing.TB, hr *http.Request) response {
	t.Helper()
	return doWith(t, http.DefaultClient, hr)
}

func doWith(t testing.TB, c *http.Client, hr *http.Request) response {
	t.Helper()
	resp, err := c.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &out.JSON)
	return out
}

func get(t testing.TB, u string) response {
	t.Helper()
	hr, _ := http.NewRequest(http.MethodGet, u, nil)
	return doHTTP(t, hr)
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// metric returns the value of the sample with exactly this name and
// labels in a Prometheus text page (-1 if absent).
func metric(t testing.TB, page, sample string) float64 {
	t.Helper()
	if _, err := metricstest.Parse(page); err != nil {
		t.Fatalf("invalid exposition: %v\n%s", err, page)
	}
	for _, line := range strings.Split(page, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatalf("sample %s: %v", sample, err)
			}
			return v
		}
	}
	return -1
}

// testKeyFile makes a transmitter key: the private JWK (with kid) and a
// JWKS file holding its public half.
func testKeyFile(t testing.TB) (*jose.JSONWebKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv := &jose.JSONWebKey{Key: k, Algorithm: string(jose.ES256), Use: "sig"}
	kid, err := dpop.Thumbprint(&jose.JSONWebKey{Key: &k.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	priv.KeyID = kid
	pub := priv.Public()
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	path := filepath.Join(t.TempDir(), "transmitter-jwks.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, path
}

// pollTransmitter is an RFC 8936 poll endpoint: it hands out queued SETs,
// holds empty polls (long polling) and records acknowledgements.
type pollTransmitter struct {
	*httptest.Server
	token   string
	mu      sync.Mutex
	queue   map[string]string
	acks    map[string]bool
	wake    chan struct{}
	badAuth atomic.Int32
}

func newPollTransmitter(t testing.TB, token string) *pollTransmitter {
	t.Helper()
	p := &pollTransmitter{token: token, queue: map[string]string{}, acks: map[string]bool{}, wake: make(chan struct{}, 1)}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+p.token {
			p.badAuth.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var in struct {
			Ack               []string `json:"ack"`
			ReturnImmediately bool     `json:"returnImmediately"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		for _, j := range in.Ack {
			p.acks[j] = true
			delete(p.queue, j)
		}
		n := len(p.queue)
		p.mu.Unlock()
		if n == 0 && !in.ReturnImmediately {
			select { // hold the poll until there is something, as a transmitter does
			case <-p.wake:
			case <-r.Context().Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
		p.mu.Lock()
		sets := map[string]string{}
		for j, s := range p.queue {
			sets[j] = s
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"sets": sets, "moreAvailable": false})
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *pollTransmitter) enqueue(jti, set string) {
	p.mu.Lock()
	p.queue[jti] = set
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pollTransmitter) acked(jti string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acks[jti]
}

// usageSink is the IdP's usage endpoint.
type usageSink struct {
	*httptest.Server
	mu      sync.Mutex
	recs    []rs.UsageRecord
	badAuth atomic.Int32
}

func newUsageSink(t testing.TB, token string) *usageSink {
	t.Helper()
	u := &usageSink{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			u.badAuth.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var body struct {
			Records []rs.UsageRecord `json:"records"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.recs = append(u.recs, body.Records...)
		u.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *usageSink) records() []rs.UsageRecord {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.recs)
}

// httpDeadURL returns a loopback URL where nothing listens.
func httpDeadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a client that trusts the certificate.
func selfSigned(t testing.TB) (certFile, keyFile string, client *http.Client) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}
