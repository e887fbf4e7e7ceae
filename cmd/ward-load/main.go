// Command ward-load is a load generator for Ward's token endpoint.
//
// It runs -concurrency workers over HTTP keep-alive connections for
// -duration (after a -warmup that is not counted) and reports tokens per
// second, latency percentiles and failures by error code. With DPoP (the
// default) every worker has its own P-256 key and signs a fresh proof for
// every request (new jti, current iat), following the server's DPoP-Nonce:
// replaying one proof would measure the replay cache, not the server.
//
// Grants:
//
//	client_credentials  each request is a client_credentials grant of the
//	                    confidential client -client/-secret (client_secret_basic).
//	refresh             each worker first signs -username in through the login
//	                    form (authorization code + PKCE, its own browser
//	                    session) and redeems the code, then refreshes its own
//	                    chain in a loop, always with the newest refresh token
//	                    (rotation). The user should have no TOTP: a TOTP code is
//	                    accepted once, so parallel sign-ins would fail.
//	gateway             each worker gets one DPoP-bound access token (client
//	                    credentials, as above) and then sends GET -target (a URL
//	                    behind ward gateway) in a loop, each with a fresh proof
//	                    bound to the token (ath). "tokens" then counts requests
//	                    the gateway let through (2xx).
//
// The generator's own CPU use is reported; when it is close to one core
// (the generator pinned to a core of its own), the generator, not the
// server, limits the numbers. -proofs-ahead then moves proof signing
// before the measured window: each worker signs that many proofs (each
// used once, iat at most a few seconds old) during setup.
//
// Example:
//
//	GOMAXPROCS=1 taskset -c 0 ward serve --config /tmp/ward-bench.yaml &
//	taskset -c 1 ward-load -issuer http://127.0.0.1:8701 -grant client_credentials \
//	    -client bench-service -secret "$SECRET" -duration 20s -concurrency 16
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/loadgen"
)

type options struct {
	issuer      string
	grant       string
	client      string
	secret      string
	scope       string
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	dpop        bool
	username    string
	password    string
	redirectURI string
	proofsAhead int
	jsonOut     bool
	resignIn    bool
	timeout     time.Duration
	target      string
}

func main() {
	var o options
	flag.StringVar(&o.issuer, "issuer", "http://127.0.0.1:8700", "Ward issuer URL (discovery is read from it)")
	flag.StringVar(&o.grant, "grant", "client_credentials", "client_credentials or refresh")
	flag.StringVar(&o.client, "client", "", "client id (client_secret_basic)")
	flag.StringVar(&o.secret, "secret", "", "client secret (or $WARD_LOAD_SECRET)")
	flag.StringVar(&o.scope, "scope", "", "scope to request (default: none for client_credentials, \"offline_access\" for refresh)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "measured duration")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up before -duration")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent workers (each with its own connection and DPoP key)")
	flag.BoolVar(&o.dpop, "dpop", true, "send a fresh DPoP proof with every request")
	flag.StringVar(&o.username, "username", "", "refresh: user to sign in as (password only, no TOTP)")
	flag.StringVar(&o.password, "password", "", "refresh: the user's password (or $WARD_LOAD_PASSWORD)")
	flag.StringVar(&o.redirectURI, "redirect-uri", "https://app.example/callback", "refresh: a registered redirect URI of -client")
	flag.IntVar(&o.proofsAhead, "proofs-ahead", 0, "sign this many proofs per worker before the run instead of per request (0: per request)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the report as JSON")
	flag.BoolVar(&o.resignIn, "resign-in", false, "refresh: after a failed refresh, sign in again and start a new chain (default: the worker stops)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	flag.StringVar(&o.target, "target", "", "gateway: the URL to GET through ward gateway")
	flag.Parse()
	if o.secret == "" {
		o.secret = os.Getenv("WARD_LOAD_SECRET")
	}
	if o.password == "" {
		o.password = os.Getenv("WARD_LOAD_PASSWORD")
	}
	if o.scope == "" && o.grant == "refresh" {
		o.scope = "offline_access"
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "ward-load:", err)
		os.Exit(1)
	}
}

// endpoints are read from discovery.
type endpoints struct {
	Token     string `json:"token_endpoint"`
	Authorize string `json:"authorization_endpoint"`
}

// worker is one client: its key, token client, connection pool and
// statistics.
type worker struct {
	o       *options
	ep      endpoints
	hc      *http.Client
	signer  *dpop.Signer
	tc      *loadgen.TokenClient
	rt      string // refresh: the current refresh token
	counted *atomic.Bool
	at      string // gateway: the access token

	lat         []time.Duration // successful requests (measured window)
	ok          int
	errs        map[string]int // by "status error_code"
	chainBroken bool
	broken      int // chains broken (counted once each with -resign-in)
}

func run(o options) error {
	if o.client == "" || o.secret == "" {
		return errors.New("-client and -secret are required")
	}
	if o.grant != "client_credentials" && o.grant != "refresh" && o.grant != "gateway" {
		return fmt.Errorf("unknown -grant %q", o.grant)
	}
	if o.grant == "gateway" && o.target == "" {
		return errors.New("-grant gateway needs -target URL")
	}
	if o.grant == "refresh" && (o.username == "" || o.password == "") {
		return errors.New("-grant refresh needs -username and -password (a user without TOTP)")
	}
	if o.concurrency < 1 {
		return errors.New("-concurrency must be at least 1")
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        o.concurrency * 2,
		MaxIdleConnsPerHost: o.concurrency * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	base := &http.Client{Transport: tr, Timeout: o.timeout}
	ep, err := discover(base, o.issuer)
	if err != nil {
		return err
	}

	counted := &atomic.Bool{}
	workers := make([]*worker, o.concurrency)
	setupStart := time.Now()
	var setupErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range workers {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		s, err := dpop.NewSigner(key)
		if err != nil {
			return err
		}
		w := &worker{o: &o, ep: ep, hc: base, signer: s, counted: counted, errs: map[string]int{}}
		w.tc = &loadgen.TokenClient{HTTP: base, Endpoint: ep.Token, ClientID: o.client, Secret: o.secret}
		if o.dpop {
			w.tc.Signer = s
		}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.setup(); err != nil {
				mu.Lock()
				setupErr = errors.Join(setupErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if setupErr != nil {
		return fmt.Errorf("setup: %w", setupErr)
	}
	setup := time.Since(setupStart)

	ctx, cancel := context.WithCancel(context.Background())
	var ru0 syscall.Rusage
	var t0 time.Time
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx)
		}()
	}
	time.Sleep(o.warmup)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 = time.Now()
	counted.Store(true)
	time.Sleep(o.duration)
	counted.Store(false)
	elapsed := time.Since(t0)
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cancel()
	wg.Wait()

	rep := report(o, workers, elapsed, cpu(ru1)-cpu(ru0), setup)
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.print(os.Stdout)
	return nil
}

func cpu(ru syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func discover(c *http.Client, issuer string) (endpoints, error) {
	var ep endpoints
	resp, err := c.Get(strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration")
	if err != nil {
		return ep, fmt.Errorf("discovery: %w", err)
	}
	defer func() {
		// Read to the end (the encoder's newline after the object), so
		// that the connection is kept, not closed under the server.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return ep, fmt.Errorf("discovery: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ep); err != nil || ep.Token == "" {
		return ep, fmt.Errorf("discovery: no token_endpoint (%v)", err)
	}
	return ep, nil
}

// setup gets the worker's nonce (one request) and, for refresh, a
// refresh token of its own sign-in session.
func (w *worker) setup() error {
	ctx := context.Background()
	if w.o.grant == "refresh" {
		// The workers sign in as one user at the same moment; Ward lets at
		// most lockout.max_failures password checks of an account run at
		// once and answers the others like a wrong password (401, see
		// docs/security.md): retry a few times, spread out.
		var rt string
		var err error
		for attempt := range 20 {
			if rt, err = w.signIn(ctx); err == nil {
				break
			}
			time.Sleep(time.Duration(50+mathrand.IntN(200)*(1+attempt/5)) * time.Millisecond)
		}
		if err != nil {
			return err
		}
		w.rt = rt
	} else if w.o.dpop || w.o.grant == "gateway" {
		// Learn the nonce with one real request (gateway: the token used
		// for the whole run).
		r := w.tc.Post(ctx, w.form())
		if r.Status != http.StatusOK {
			return fmt.Errorf("first token request: %s %v", r.Code(), r.Body["error_description"])
		}
		w.at, _ = r.Body["access_token"].(string)
		if w.o.grant == "gateway" {
			return nil
		}
	}
	w.tc.SignAhead(w.o.proofsAhead) // without -dpop: nothing to sign
	return nil
}

// signIn drives the sign-in pages like a browser (own cookie jar, no
// redirects followed) and redeems the code.
func (w *worker) signIn(ctx context.Context) (string, error) {
	l := loadgen.Login{AuthorizeURL: w.ep.Authorize, LoginURL: strings.TrimSuffix(w.o.issuer, "/") + "/login",
		ClientID: w.o.client, RedirectURI: w.o.redirectURI, Scope: w.o.scope, Username: w.o.username, Password: w.o.password}
	resp, body, verifier, err := l.Start(ctx, loadgen.Browser(w.hc.Transport, 30*time.Second))
	if err != nil {
		return "", err
	}
	if resp.StatusCode == http.StatusOK && strings.Contains(body, `name="otp"`) {
		return "", errors.New("sign-in asks for a TOTP code: use a user without TOTP for -grant refresh")
	}
	code := loadgen.CodeOf(resp)
	if code == "" {
		return "", fmt.Errorf("sign-in: status %d, no code: %.200s", resp.StatusCode, body)
	}
	r := w.tc.Post(ctx, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {w.o.redirectURI}})
	rt, _ := r.Body["refresh_token"].(string)
	if r.Status != http.StatusOK || rt == "" {
		return "", fmt.Errorf("code exchange: %s %v (refresh token present: %v)", r.Code(), r.Body["error_description"], rt != "")
	}
	return rt, nil
}

func (w *worker) form() url.Values {
	if w.o.grant == "refresh" {
		return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {w.rt}}
	}
	f := url.Values{"grant_type": {"client_credentials"}}
	if w.o.scope != "" {
		f.Set("scope", w.o.scope)
	}
	return f
}

// resource sends one GET -target with the worker's token and (with
// -dpop) a fresh proof bound to it.
func (w *worker) resource(ctx context.Context) loadgen.Result {
	var s *dpop.Signer
	if w.o.dpop {
		s = w.signer
	}
	r := loadgen.GetResource(ctx, w.hc, w.o.target, w.at, s)
	if r.Err == nil && r.Status/100 == 2 {
		r.Status = http.StatusOK // "tokens" counts the requests let through
	}
	return r
}

func (w *worker) loop(ctx context.Context) {
	for ctx.Err() == nil {
		start := time.Now()
		var r loadgen.Result
		if w.o.grant == "gateway" {
			r = w.resource(ctx)
		} else {
			r = w.tc.Post(ctx, w.form())
		}
		d := time.Since(start)
		if ctx.Err() != nil {
			return // the run ended during this request
		}
		counted := w.counted.Load()
		if r.Status == http.StatusOK {
			if w.o.grant == "refresh" {
				rt, _ := r.Body["refresh_token"].(string)
				if rt == "" {
					w.errs["200 no_refresh_token"]++
					w.chainBroken = true
					return
				}
				w.rt = rt
			}
			if counted {
				w.ok++
				w.lat = append(w.lat, d)
			}
			continue
		}
		if counted {
			w.errs[r.Code()]++
		}
		if w.o.grant == "refresh" {
			// The chain may have rotated without us seeing the new token;
			// presenting the old one again would revoke the session.
			w.chainBroken = true
			w.broken++
			if !w.o.resignIn {
				return
			}
			// Start a new chain with a new sign-in, as a client would.
			for ctx.Err() == nil {
				rt, err := w.signIn(ctx)
				if err == nil {
					w.rt = rt
					break
				}
				if w.counted.Load() {
					w.errs["sign-in failed"]++
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}

type summary struct {
	Grant         string         `json:"grant"`
	DPoP          bool           `json:"dpop"`
	ProofsAhead   int            `json:"proofs_ahead"`
	Concurrency   int            `json:"concurrency"`
	Seconds       float64        `json:"seconds"`
	OK            int            `json:"ok"`
	TokensPerSec  float64        `json:"tokens_per_second"`
	P50ms         float64        `json:"p50_ms"`
	P90ms         float64        `json:"p90_ms"`
	P99ms         float64        `json:"p99_ms"`
	Maxms         float64        `json:"max_ms"`
	Errors        map[string]int `json:"errors"`
	NonceRetries  int            `json:"nonce_retries"`
	BrokenChains  int            `json:"broken_chains"`
	LoadCPUCores  float64        `json:"load_cpu_cores"` // generator CPU time / wall time
	SetupSeconds  float64        `json:"setup_seconds"`
	GeneratorNote string         `json:"generator_note,omitempty"`
}

func report(o options, ws []*worker, elapsed, cpuUsed, setup time.Duration) summary {
	s := summary{Grant: o.grant, DPoP: o.dpop, ProofsAhead: o.proofsAhead, Concurrency: o.concurrency,
		Seconds: elapsed.Seconds(), Errors: map[string]int{}, SetupSeconds: setup.Seconds()}
	var lat []time.Duration
	for _, w := range ws {
		s.OK += w.ok
		lat = append(lat, w.lat...)
		for k, v := range w.errs {
			s.Errors[k] += v
		}
		s.NonceRetries += w.tc.NonceRetries
		if w.chainBroken {
			s.BrokenChains += max(w.broken, 1)
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	s.TokensPerSec = float64(s.OK) / elapsed.Seconds()
	s.P50ms, s.P90ms, s.P99ms, s.Maxms = pct(0.50), pct(0.90), pct(0.99), pct(1)
	s.LoadCPUCores = cpuUsed.Seconds() / elapsed.Seconds()
	if s.LoadCPUCores > 0.85 {
		s.GeneratorNote = "the generator used most of a core: it may be the bottleneck (pin it to its own core, or use -proofs-ahead)"
	}
	return s
}

func (s summary) print(out io.Writer) {
	fmt.Fprintf(out, "grant=%s dpop=%v proofs_ahead=%d concurrency=%d duration=%.1fs (setup %.1fs)\n",
		s.Grant, s.DPoP, s.ProofsAhead, s.Concurrency, s.Seconds, s.SetupSeconds)
	fmt.Fprintf(out, "tokens: %d ok, %.0f/s\n", s.OK, s.TokensPerSec)
	fmt.Fprintf(out, "latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", s.P50ms, s.P90ms, s.P99ms, s.Maxms)
	keys := make([]string, 0, len(s.Errors))
	for k := range s.Errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		fmt.Fprintln(out, "errors: none")
	}
	for _, k := range keys {
		fmt.Fprintf(out, "errors: %-40s %d\n", k, s.Errors[k])
	}
	fmt.Fprintf(out, "nonce retries: %d, broken refresh chains: %d\n", s.NonceRetries, s.BrokenChains)
	fmt.Fprintf(out, "generator CPU: %.2f cores\n", s.LoadCPUCores)
	if s.GeneratorNote != "" {
		fmt.Fprintln(out, "note:", s.GeneratorNote)
	}
}
