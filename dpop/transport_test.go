package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTransportSigner(t testing.TB) *Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rotatingNonces is a NonceSource whose single valid nonce changes when
// the test says so.
type rotatingNonces struct{ gen atomic.Int64 }

func (n *rotatingNonces) Nonce() string       { return fmt.Sprintf("nonce-%d", n.gen.Load()) }
func (n *rotatingNonces) Check(s string) bool { return s == n.Nonce() }
func (n *rotatingNonces) rotate()             { n.gen.Add(1) }

// dpopServer is an authorization server + resource server stand-in that
// checks every proof with a real Verifier: POST /token answers like a token
// endpoint (400 use_dpop_nonce), GET /resource like a resource server (401
// with a DPoP challenge).
type dpopServer struct {
	*httptest.Server
	nonces       *rotatingNonces
	requireNonce atomic.Bool
	verifier     *Verifier

	mu     sync.Mutex
	proofs []*Proof // every accepted proof
	seen   int      // requests, accepted or not
}

type serverReply struct {
	Form  map[string][]string `json:"form,omitempty"`
	ATH   string              `json:"ath,omitempty"`
	Nonce string              `json:"nonce,omitempty"`
	JKT   string              `json:"jkt"`
}

func newDPoPServer(t testing.TB) *dpopServer {
	s := &dpopServer{nonces: &rotatingNonces{}}
	s.verifier = &Verifier{Replay: NewMemoryReplayCache(time.Now), Nonces: s.nonces}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		p, err := s.check(r, "")
		w.Header().Set("DPoP-Nonce", s.nonces.Nonce())
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Code, "error_description": err.Description})
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(serverReply{Form: r.PostForm, Nonce: p.Nonce, JKT: p.JKT})
	})
	mux.HandleFunc("GET /resource", func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "DPoP") || tok == "" {
			w.Header().Set("WWW-Authenticate", `DPoP algs="ES256"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		p, err := s.check(r, tok)
		if err != nil {
			w.Header().Set("DPoP-Nonce", s.nonces.Nonce())
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP algs="ES256", error=%q, error_description=%q`, err.Code, err.Description))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(serverReply{ATH: p.ATH, Nonce: p.Nonce, JKT: p.JKT})
	})
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) {
		p, err := s.check(r, "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(serverReply{ATH: p.ATH, Nonce: p.Nonce, JKT: p.JKT})
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *dpopServer) check(r *http.Request, accessToken string) (*Proof, *Error) {
	s.mu.Lock()
	s.seen++
	s.mu.Unlock()
	h, err := FromRequest(r)
	if err != nil {
		return nil, invalid(ReasonMissing, "no DPoP proof")
	}
	p, err := s.verifier.Verify(r.Context(), h, Check{Method: r.Method, URL: s.URL + r.URL.Path, AccessToken: accessToken, RequireNonce: s.requireNonce.Load()})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, invalid(ReasonMalformed, err.Error())
	}
	s.mu.Lock()
	s.proofs = append(s.proofs, p)
	s.mu.Unlock()
	return p, nil
}

func (s *dpopServer) requests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.seen }

// countingTransport records the status of every response.
type countingTransport struct {
	mu       sync.Mutex
	statuses []int
	proofs   []string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.proofs = append(c.proofs, r.Header.Get("DPoP"))
	if err == nil {
		c.statuses = append(c.statuses, resp.StatusCode)
	}
	return resp, err
}

func (c *countingTransport) got() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.statuses...)
}

func tokenRequest(t testing.TB, u string, form url.Values) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func roundTrip(t testing.TB, c *http.Client, req *http.Request) (int, serverReply, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r serverReply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("reply %q: %v", body, err)
		}
	}
	return resp.StatusCode, r, string(body)
}

func TestTransportAddsFreshProof(t *testing.T) {
	srv := newDPoPServer(t)
	s := newTransportSigner(t)
	rec := &countingTransport{}
	c := &http.Client{Transport: &Transport{Base: rec, Signer: s}}
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/plain?page=2#frag", nil)
		status, r, body := roundTrip(t, c, req)
		if status != 200 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
		if r.JKT != s.Thumbprint() || r.ATH != "" {
			t.Fatalf("request %d: proof jkt %q ath %q", i, r.JKT, r.ATH)
		}
		if req.Header.Get("DPoP") != "" {
			t.Fatal("the caller's request was modified")
		}
	}
	// Every proof is fresh (the server's replay cache would refuse reuse,
	// and the jtis differ).
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.proofs) != 3 || srv.proofs[0].JTI == srv.proofs[1].JTI || srv.proofs[1].JTI == srv.proofs[2].JTI {
		t.Fatalf("proofs %+v", srv.proofs)
	}
	if srv.proofs[0].HTU != srv.URL+"/plain" || srv.proofs[0].HTM != "GET" {
		t.Fatalf("htu %q htm %q", srv.proofs[0].HTU, srv.proofs[0].HTM)
	}
}

func TestTransportATH(t *testing.T) {
	srv := newDPoPServer(t)
	s := newTransportSigner(t)
	c := &http.Client{Transport: &Transport{Signer: s}}

	const at = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
	for _, authz := range []string{"DPoP " + at, "dpop " + at} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/resource", nil)
		req.Header.Set("Authorization", authz)
		status, r, body := roundTrip(t, c, req)
		if status != 200 || r.ATH != AccessTokenHash(at) {
			t.Fatalf("%q: %d %s, ath %q want %q", authz, status, body, r.ATH, AccessTokenHash(at))
		}
	}
	// Other schemes: a proof, but no ath.
	for _, authz := range []string{"Bearer " + at, "Basic c3BhOg=="} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/plain", nil)
		req.Header.Set("Authorization", authz)
		status, r, body := roundTrip(t, c, req)
		if status != 200 || r.ATH != "" {
			t.Fatalf("%q: %d %s, ath %q", authz, status, body, r.ATH)
		}
	}
}

func TestTransportReplacesExistingProof(t *testing.T) {
	srv := newDPoPServer(t)
	c := &http.Client{Transport: &Transport{Signer: newTransportSigner(t)}}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/plain", nil)
	req.Header["dpop"] = []string{"stale.proof.value"}
	req.Header.Set("DPoP", "another.stale.proof")
	if status, _, body := roundTrip(t, c, req); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	if len(req.Header["dpop"]) != 1 {
		t.Fatal("the caller's headers were modified")
	}
}

func TestTransportNonceRetryTokenEndpoint(t *testing.T) {
	srv := newDPoPServer(t)
	srv.requireNonce.Store(true)
	rec := &countingTransport{}
	tr := &Transport{Base: rec, Signer: newTransportSigner(t)}
	c := &http.Client{Transport: tr}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"a b"}}

	status, r, body := roundTrip(t, c, tokenRequest(t, srv.URL, form))
	if status != 200 {
		t.Fatalf("token: %d %s", status, body)
	}
	if got, want := rec.got(), []int{400, 200}; !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	if r.Nonce != srv.nonces.Nonce() || !reflect.DeepEqual(map[string][]string(form), r.Form) {
		t.Fatalf("retry: nonce %q, form %v (the body must be replayed intact)", r.Nonce, r.Form)
	}
	// The nonce is remembered: the next request needs no retry.
	if status, _, body := roundTrip(t, c, tokenRequest(t, srv.URL, form)); status != 200 {
		t.Fatalf("second token request: %d %s", status, body)
	}
	if n := len(rec.got()); n != 3 {
		t.Fatalf("%d round trips, want 3", n)
	}
	// The server rotates its nonce: one retry with the new one.
	srv.nonces.rotate()
	if status, r, body := roundTrip(t, c, tokenRequest(t, srv.URL, form)); status != 200 || r.Nonce != "nonce-1" {
		t.Fatalf("after rotation: %d %s", status, body)
	}
	if got, want := rec.got(), []int{400, 200, 200, 400, 200}; !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
}

func TestTransportNonceRetryResource(t *testing.T) {
	srv := newDPoPServer(t)
	srv.requireNonce.Store(true)
	rec := &countingTransport{}
	c := &http.Client{Transport: &Transport{Base: rec, Signer: newTransportSigner(t)}}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/resource", nil)
	req.Header.Set("Authorization", "DPoP the-token")
	status, r, body := roundTrip(t, c, req)
	if status != 200 || r.ATH != AccessTokenHash("the-token") || r.Nonce == "" {
		t.Fatalf("resource: %d %s %+v", status, body, r)
	}
	if got, want := rec.got(), []int{401, 200}; !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
}

func TestTransportNoRetryWithoutGetBody(t *testing.T) {
	srv := newDPoPServer(t)
	srv.requireNonce.Store(true)
	rec := &countingTransport{}
	c := &http.Client{Transport: &Transport{Base: rec, Signer: newTransportSigner(t)}}
	form := url.Values{"grant_type": {"client_credentials"}}
	req := tokenRequest(t, srv.URL, form)
	req.Body = io.NopCloser(strings.NewReader(form.Encode())) // not replayable
	req.GetBody = nil
	status, _, body := roundTrip(t, c, req)
	if status != 400 || !strings.Contains(body, `"use_dpop_nonce"`) {
		t.Fatalf("got %d %s, want the 400 use_dpop_nonce response, body intact", status, body)
	}
	if n := len(rec.got()); n != 1 {
		t.Fatalf("%d round trips, want 1 (no retry)", n)
	}
	// The nonce was still remembered, so the caller's own retry works.
	req = tokenRequest(t, srv.URL, form)
	req.GetBody = nil
	if status, _, body := roundTrip(t, c, req); status != 200 {
		t.Fatalf("caller retry: %d %s", status, body)
	}
}

func TestTransportRetriesOnlyOnce(t *testing.T) {
	var n atomic.Int64
	var rec countingTransport
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Always a new nonce, always refused.
		w.Header().Set("DPoP-Nonce", fmt.Sprint("n", n.Add(1)))
		w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	c := &http.Client{Transport: &Transport{Base: &rec, Signer: newTransportSigner(t)}}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/x", nil)
	req.Header.Set("Authorization", "DPoP t")
	if status, _, _ := roundTrip(t, c, req); status != 401 {
		t.Fatalf("status %d, want 401", status)
	}
	if got := rec.got(); len(got) != 2 {
		t.Fatalf("%d round trips, want 2", len(got))
	}
}

func TestTransportNoRetryCases(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"same nonce again": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("DPoP-Nonce", "fixed")
			w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce"`)
			w.WriteHeader(http.StatusUnauthorized)
		},
		"no DPoP-Nonce": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"use_dpop_nonce"}`)
		},
		"other error": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("DPoP-Nonce", "n-"+r.Header.Get("DPoP")[:8])
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_dpop_proof"}`)
		},
		"Bearer challenge": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("DPoP-Nonce", "n-"+r.Header.Get("DPoP")[:8])
			w.Header().Set("WWW-Authenticate", `Bearer error="use_dpop_nonce"`)
			w.WriteHeader(http.StatusUnauthorized)
		},
		"not JSON": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("DPoP-Nonce", fmt.Sprint(time.Now().UnixNano()))
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"use_dpop_nonce"}`)
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			var rec countingTransport
			c := &http.Client{Transport: &Transport{Base: &rec, Signer: newTransportSigner(t)}}
			// Prime the nonce cache for "same nonce again".
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/x", nil)
			roundTrip(t, c, req)
			rec = countingTransport{}
			req, _ = http.NewRequest(http.MethodPost, srv.URL+"/x", strings.NewReader("a=b"))
			status, _, body := roundTrip(t, c, req)
			if got := rec.got(); len(got) != 1 {
				t.Fatalf("%d round trips, want 1", len(got))
			}
			if status == 400 && !strings.Contains(body, "error") {
				t.Fatalf("response body lost: %q", body)
			}
		})
	}
}

func TestTransportNoncePerOrigin(t *testing.T) {
	a, b := newDPoPServer(t), newDPoPServer(t)
	a.requireNonce.Store(true)
	b.requireNonce.Store(true)
	b.nonces.rotate() // b's nonce differs from a's
	rec := &countingTransport{}
	c := &http.Client{Transport: &Transport{Base: rec, Signer: newTransportSigner(t)}}
	form := url.Values{"x": {"1"}}
	for _, u := range []string{a.URL, b.URL, a.URL, b.URL} {
		if status, _, body := roundTrip(t, c, tokenRequest(t, u, form)); status != 200 {
			t.Fatalf("%s: %d %s", u, status, body)
		}
	}
	if got, want := rec.got(), []int{400, 200, 400, 200, 200, 200}; !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
}

// TestTransportConcurrent runs many requests through one Transport while
// the server rotates its nonce (run with -race).
func TestTransportConcurrent(t *testing.T) {
	srv := newDPoPServer(t)
	srv.requireNonce.Store(true)
	c := &http.Client{Transport: &Transport{Signer: newTransportSigner(t)}}
	const workers, each = 8, 15
	var wg, firstDone sync.WaitGroup
	firstDone.Add(workers)
	var failures atomic.Int64
	errs := make(chan string, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				var req *http.Request
				if i%2 == 0 {
					req = tokenRequest(t, srv.URL, url.Values{"w": {fmt.Sprint(w)}, "i": {fmt.Sprint(i)}})
				} else {
					req, _ = http.NewRequest(http.MethodGet, srv.URL+"/resource", nil)
					req.Header.Set("Authorization", "DPoP tok")
				}
				if i == each/2 && w == 0 {
					// Once every worker has a nonce, rotate it under
					// the requests in flight: each needs at most one
					// retry.
					firstDone.Wait()
					srv.nonces.rotate()
				}
				resp, err := c.Do(req)
				if err != nil {
					failures.Add(1)
					errs <- err.Error()
					if i == 0 {
						firstDone.Done()
					}
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if i == 0 {
					firstDone.Done()
				}
				if resp.StatusCode != 200 {
					failures.Add(1)
					errs <- fmt.Sprintf("%d %s", resp.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", f, workers*each, <-errs)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.proofs) != workers*each {
		t.Fatalf("%d accepted proofs, want %d", len(srv.proofs), workers*each)
	}
}

func TestTransportErrors(t *testing.T) {
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/token", strings.NewReader("a=b"))
	if _, err := (&Transport{}).RoundTrip(req); err == nil || !strings.Contains(err.Error(), "Signer") {
		t.Fatalf("nil Signer: %v", err)
	}
	req, _ = http.NewRequest(http.MethodGet, "ftp://example.com/x", nil)
	if _, err := (&Transport{Signer: newTransportSigner(t)}).RoundTrip(req); err == nil {
		t.Fatal("ftp URL: no error")
	}
}
