package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/dpop"
)

// fakeIdP is a token endpoint and a resource that check DPoP proofs and
// rotate refresh tokens the way Ward does: a spent refresh token presented
// again is reuse (counted, refused).
type fakeIdP struct {
	t   *testing.T
	srv *httptest.Server
	v   *dpop.Verifier

	mu        sync.Mutex
	live      map[string]string // refresh token -> jkt
	spent     map[string]bool
	ats       map[string]string // valid access token -> jkt
	n         int
	refreshes int
	reuse     int
	// resource behaviour
	revokeNextAT bool   // the next resource call finds its token revoked
	refuseAll    bool   // every access token is refused
	nonce        string // required nonce at the resource ("" none)
	bodies       []string
	calls        int
}

func newFakeIdP(t *testing.T) *fakeIdP {
	f := &fakeIdP{t: t, live: map[string]string{}, spent: map[string]bool{}, ats: map[string]string{}}
	f.v = &dpop.Verifier{Replay: dpop.NewMemoryReplayCache(time.Now)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"issuer": f.srv.URL, "token_endpoint": f.srv.URL + "/token"})
	})
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("/api", f.api)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func oauthErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":"fake says %s"}`, code, code)
}

func (f *fakeIdP) token(w http.ResponseWriter, r *http.Request) {
	proof, err := f.v.Verify(r.Context(), r.Header.Get("DPoP"), dpop.Check{Method: r.Method, URL: f.srv.URL + "/token"})
	if err != nil {
		oauthErr(w, 400, "invalid_dpop_proof")
		return
	}
	r.ParseForm()
	if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("client_id") != agent.DefaultClientID {
		oauthErr(w, 400, "invalid_request")
		return
	}
	rt := r.PostForm.Get("refresh_token")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch jkt, ok := f.live[rt]; {
	case f.spent[rt]:
		f.reuse++
		oauthErr(w, 400, "invalid_grant")
		return
	case !ok || jkt != proof.JKT:
		oauthErr(w, 400, "invalid_grant")
		return
	}
	delete(f.live, rt)
	f.spent[rt] = true
	f.refreshes++
	f.n++
	nrt, nat := fmt.Sprintf("rt-%d", f.n), fmt.Sprintf("at-%d", f.n)
	f.live[nrt] = proof.JKT
	f.ats[nat] = proof.JKT
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"access_token": nat, "token_type": "DPoP", "expires_in": 300, "refresh_token": nrt})
}

func (f *fakeIdP) api(w http.ResponseWriter, r *http.Request) {
	scheme, at, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.bodies = append(f.bodies, string(body))
	jkt, ok := f.ats[at]
	if scheme != "DPoP" || !ok || f.refuseAll {
		w.Header().Set("WWW-Authenticate", `DPoP algs="ES256", error="invalid_token", error_description="unknown token"`)
		w.WriteHeader(401)
		return
	}
	proof, err := f.v.Verify(r.Context(), r.Header.Get("DPoP"), dpop.Check{Method: r.Method, URL: f.srv.URL + "/api", AccessToken: at, JKT: jkt})
	if err != nil {
		w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
		w.WriteHeader(401)
		return
	}
	if f.nonce != "" && proof.Nonce != f.nonce {
		w.Header().Set("DPoP-Nonce", f.nonce)
		w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="nonce required"`)
		w.WriteHeader(401)
		return
	}
	if f.revokeNextAT {
		f.revokeNextAT = false
		delete(f.ats, at)
		w.Header().Set("WWW-Authenticate", `DPoP error="invalid_token", error_description="token revoked"`)
		w.WriteHeader(401)
		return
	}
	fmt.Fprintf(w, "hello %s %s %s", r.Method, at, body)
}

// fakeClock is a settable clock. agent is a public package meant to stand
// alone, so these tests keep their own clock rather than import an internal
// one (only the end-to-end tests against a real Ward use wardtest's).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// enrolled makes a device key and a saved configuration whose refresh
// token rt-0 the fake IdP knows.
func (f *fakeIdP) enrolled(t *testing.T) (*agent.Config, *keystore.FileStore) {
	t.Helper()
	dir := t.TempDir()
	ks := &keystore.FileStore{Dir: filepath.Join(dir, "keys")}
	key, err := ks.Create(context.Background(), "device-test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.live["rt-0"] = s.Thumbprint()
	f.mu.Unlock()
	cfg := &agent.Config{Server: f.srv.URL, ClientID: agent.DefaultClientID, DeviceID: "dev-1", JKT: s.Thumbprint(),
		KeyName: "device-test", KeyStorage: keystore.KindFile, KeyDir: ks.Dir, RefreshToken: "rt-0"}
	cfg.SetPath(filepath.Join(dir, "cfg", "agent.json"))
	if err := cfg.Save(); err != nil {
		t.Fatal(err)
	}
	return cfg, ks
}

func open(t *testing.T, cfg *agent.Config, now func() time.Time) *agent.Client {
	t.Helper()
	c, err := agent.Open(context.Background(), cfg, agent.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func diskRT(t *testing.T, path string) string {
	t.Helper()
	c, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.RefreshToken.Reveal()
}

// Every refresh saves the rotated refresh token before the new access
// token is handed out; the access token is reused until it expires.
func TestRefreshRotationPersisted(t *testing.T) {
	f := newFakeIdP(t)
	cfg, _ := f.enrolled(t)
	clock := &fakeClock{t: time.Now()}
	c := open(t, cfg, clock.Now)
	ctx := context.Background()

	at, err := c.Token(ctx)
	if err != nil || at != "at-1" {
		t.Fatalf("Token = %q, %v", at, err)
	}
	if got := diskRT(t, cfg.Path()); got != "rt-1" {
		t.Fatalf("refresh token on disk %q, want the rotated rt-1", got)
	}
	if at, _ := c.Token(ctx); at != "at-1" || f.refreshes != 1 {
		t.Errorf("valid token not reused: %q after %d refreshes", at, f.refreshes)
	}
	clock.Advance(5 * time.Minute)
	if at, err := c.Token(ctx); err != nil || at != "at-2" || diskRT(t, cfg.Path()) != "rt-2" {
		t.Fatalf("after expiry: %q, %v, disk %q", at, err, diskRT(t, cfg.Path()))
	}
	// A new process reading the file starts from the latest tokens.
	cfg2, _ := agent.LoadConfig(cfg.Path())
	c2 := open(t, cfg2, clock.Now)
	if at, _ := c2.Token(ctx); at != "at-2" {
		t.Errorf("second process: %q, want the saved at-2", at)
	}
	if f.reuse != 0 {
		t.Errorf("%d reuses", f.reuse)
	}
}

// When the rotated refresh token cannot be saved the new access token is
// not used; once saving works again it is, without another refresh.
func TestRefreshNotUsedUntilSaved(t *testing.T) {
	f := newFakeIdP(t)
	cfg, _ := f.enrolled(t)
	c := open(t, cfg, nil)
	ctx := context.Background()
	// Make the rename onto the config path fail (works as root too): the
	// path becomes a non-empty directory.
	path := cfg.Path()
	os.Remove(path)
	os.MkdirAll(filepath.Join(path, "blocker"), 0o700)
	if at, err := c.Token(ctx); err == nil || at != "" {
		t.Fatalf("Token = %q, %v; want an error and no token while the refresh token is unsaved", at, err)
	}
	if f.refreshes != 1 {
		t.Fatalf("refreshes %d", f.refreshes)
	}
	if _, err := c.Token(ctx); err == nil {
		t.Fatal("still unsaved, but a token was returned")
	}
	os.RemoveAll(path)
	at, err := c.Token(ctx)
	if err != nil || at != "at-1" || f.refreshes != 1 {
		t.Fatalf("after the disk recovered: %q, %v, %d refreshes", at, err, f.refreshes)
	}
	if diskRT(t, path) != "rt-1" {
		t.Errorf("disk holds %q", diskRT(t, path))
	}
}

// Concurrent requests needing a token refresh once; two processes sharing
// the file never present a spent refresh token.
func TestRefreshSerialised(t *testing.T) {
	f := newFakeIdP(t)
	cfg, _ := f.enrolled(t)
	clock := &fakeClock{t: time.Now()}
	a := open(t, cfg, clock.Now)
	b := open(t, cfg, clock.Now) // another "process" with the same file
	ctx := context.Background()

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := a.Token(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f.refreshes != 1 {
		t.Fatalf("%d refreshes for 8 concurrent callers, want 1", f.refreshes)
	}
	// b still holds rt-0 (spent) in memory: it must pick up rt-1 and at-1
	// from the file instead of presenting rt-0.
	if at, err := b.Token(ctx); err != nil || at != "at-1" {
		t.Fatalf("second process: %q, %v", at, err)
	}
	clock.Advance(10 * time.Minute)
	if _, err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Refresh(ctx); err != nil { // a holds rt-1, spent by b
		t.Fatal(err)
	}
	if f.reuse != 0 {
		t.Errorf("%d spent refresh tokens presented", f.reuse)
	}
	if diskRT(t, cfg.Path()) != "rt-3" {
		t.Errorf("disk %q, want rt-3", diskRT(t, cfg.Path()))
	}
}

func TestRefreshRefused(t *testing.T) {
	f := newFakeIdP(t)
	cfg, _ := f.enrolled(t)
	f.mu.Lock()
	delete(f.live, "rt-0") // revoked
	f.mu.Unlock()
	c := open(t, cfg, nil)
	_, err := c.Token(context.Background())
	if !errors.Is(err, agent.ErrSessionEnded) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("err = %v, want ErrSessionEnded naming invalid_grant", err)
	}
}

// The transport adds token and proof, follows use_dpop_nonce, and on
// invalid_token refreshes once and replays the body.
func TestTransport(t *testing.T) {
	f := newFakeIdP(t)
	cfg, _ := f.enrolled(t)
	c := open(t, cfg, nil)
	hc := &http.Client{Transport: c.Transport()}
	do := func(method string, body io.Reader) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, f.srv.URL+"/api", body)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	if resp, body := do("GET", nil); resp.StatusCode != 200 || body != "hello GET at-1 " {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}

	t.Run("nonce", func(t *testing.T) {
		f.mu.Lock()
		f.nonce = "n-1"
		f.mu.Unlock()
		if resp, body := do("POST", strings.NewReader("a=1")); resp.StatusCode != 200 || body != "hello POST at-1 a=1" {
			t.Fatalf("with nonce: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("invalid_token refreshes once and replays the body", func(t *testing.T) {
		f.mu.Lock()
		f.revokeNextAT = true
		f.calls = 0
		f.mu.Unlock()
		resp, body := do("PUT", strings.NewReader("payload=42"))
		if resp.StatusCode != 200 || body != "hello PUT at-2 payload=42" {
			t.Fatalf("after refresh: %d %q", resp.StatusCode, body)
		}
		if f.calls != 2 || f.refreshes != 2 {
			t.Errorf("%d resource calls, %d refreshes; want 2 and 2", f.calls, f.refreshes)
		}
		if diskRT(t, cfg.Path()) != "rt-2" {
			t.Errorf("rotated token not saved")
		}
	})

	t.Run("non-replayable body is not retried", func(t *testing.T) {
		f.mu.Lock()
		f.revokeNextAT = true
		f.calls = 0
		f.mu.Unlock()
		resp, _ := do("POST", io.MultiReader(strings.NewReader("once"))) // no GetBody
		if resp.StatusCode != 401 || f.calls != 1 || f.refreshes != 2 {
			t.Fatalf("got %d after %d calls, %d refreshes; want the 401 as is", resp.StatusCode, f.calls, f.refreshes)
		}
		// The next request finds the token refused and refreshes then.
		if resp, body := do("GET", nil); resp.StatusCode != 200 || body != "hello GET at-3 " {
			t.Fatalf("next: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("a second invalid_token is returned, not looped", func(t *testing.T) {
		f.mu.Lock()
		f.refuseAll = true
		f.calls = 0
		before := f.refreshes
		f.mu.Unlock()
		resp, _ := do("GET", nil)
		if resp.StatusCode != 401 || f.calls != 2 || f.refreshes != before+1 {
			t.Fatalf("got %d after %d calls, %d refreshes", resp.StatusCode, f.calls, f.refreshes-before)
		}
	})

	t.Run("no token over plain http to another host", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://example.com/api", nil)
		if _, err := hc.Do(req); err == nil || !strings.Contains(err.Error(), "plain http") {
			t.Fatalf("err = %v", err)
		}
	})
	if f.reuse != 0 {
		t.Errorf("%d reuses", f.reuse)
	}
}

func TestOpenChecksKey(t *testing.T) {
	f := newFakeIdP(t)
	cfg, ks := f.enrolled(t)
	ctx := context.Background()
	other := *cfg
	other.JKT = "not-this-key"
	if _, err := agent.Open(ctx, &other, agent.Options{}); err == nil || !strings.Contains(err.Error(), "not the key") {
		t.Errorf("wrong key: %v", err)
	}
	if err := ks.Delete(ctx, cfg.KeyName); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Open(ctx, cfg, agent.Options{}); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("missing key: %v", err)
	}
	if _, err := agent.Open(ctx, &agent.Config{}, agent.Options{}); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Errorf("empty config: %v", err)
	}
}
