package grant

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/oauth/origin"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
)

// The grants are tested against the real SQLite store, the real token,
// session, device and Conditional Access services, real DPoP proofs and
// the tests' fake clock: a grant is a function of a parsed request and
// the store, and its answer and the store afterwards are what a test
// checks.

const (
	issuer      = "https://ward.test"
	redirectURI = "https://app.test/cb"
	refreshTTL  = time.Hour
)

type fixture struct {
	t        *testing.T
	ctx      context.Context
	clk      *clock.Fake
	st       *sqlite.Store
	db       *sql.DB // a second, read-only connection: what the store holds
	keys     *tokens.KeyManager
	hasher   *secret.Hasher
	access   *access.Service
	verifier *dpop.Verifier
	grants   map[string]Handler
	// evaluations counts Conditional Access evaluations.
	evaluations atomic.Int32

	mu     sync.Mutex
	events []*model.Event

	alice *model.User
	// Clients: web (confidential: code, refresh), spa (public: code,
	// refresh), svc (confidential: client_credentials), tv (public:
	// device code, refresh).
	clients map[string]*model.Client
}

// countingAccess is the access service, counting its evaluations.
type countingAccess struct {
	*access.Service
	n *atomic.Int32
}

func (c countingAccess) Evaluate(ctx context.Context, req access.Request) (*access.Result, error) {
	c.n.Add(1)
	return c.Service.Evaluate(ctx, req)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, ctx: ctx, clk: clock.NewFake(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)), clients: map[string]*model.Client{}}
	path := filepath.Join(t.TempDir(), "ward.db")
	st, err := sqlite.Open(ctx, path, sqlite.WithClock(f.clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	if f.db, err = sql.Open("sqlite", "file:"+path+"?mode=ro"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.db.Close() })

	b := bus.NewLocal()
	b.Subscribe("test", func(_ context.Context, e *model.Event) error {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
		return nil
	})
	kek, err := secret.NewKEK(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if f.keys, err = tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: kek, Now: f.clk.Now}); err != nil {
		t.Fatal(err)
	}
	f.hasher = secret.NewHasher(kek.Derive("token-hash"))
	sessions := session.New(session.Options{Store: st, Bus: b, Now: f.clk.Now})
	f.access = access.New(access.Options{Store: st, Bus: b, Now: f.clk.Now})
	if err := f.access.Load(ctx); err != nil {
		t.Fatal(err)
	}
	devices := device.New(device.Options{Store: st, Bus: b, Sessions: sessions, Now: f.clk.Now, NonceKey: kek.Derive("device-posture-nonce")})
	f.verifier = &dpop.Verifier{Now: f.clk.Now, Replay: dpop.NewMemoryReplayCache(f.clk.Now)}
	f.grants = New(Config{
		Issuer: issuer, Store: st, Keys: f.keys, TokenHasher: f.hasher, Devices: devices,
		Access: countingAccess{f.access, &f.evaluations}, Sessions: sessions, Events: bus.NewEmitter(b, f.clk.Now),
		Lifetimes: Lifetimes{AccessToken: 10 * time.Minute, IDToken: 10 * time.Minute, RefreshToken: refreshTTL, CAEAccessToken: 24 * time.Hour},
		Now:       f.clk.Now,
	})

	f.alice = &model.User{ID: "u-alice", Username: "alice", Email: "alice@example.test", DisplayName: "Alice", CreatedAt: f.clk.Now(), UpdatedAt: f.clk.Now()}
	if err := st.CreateUser(ctx, f.alice); err != nil {
		t.Fatal(err)
	}
	user := []string{model.GrantAuthorizationCode, model.GrantRefreshToken}
	for _, c := range []*model.Client{
		{ID: "web", Name: "Web", TokenEndpointAuthMethod: model.AuthClientSecretBasic, GrantTypes: user, Scopes: []string{"openid", "profile", "offline_access", "api"}, RedirectURIs: []string{redirectURI}},
		{ID: "web2", Name: "Another web app", TokenEndpointAuthMethod: model.AuthClientSecretBasic, GrantTypes: user, Scopes: []string{"openid", "api"}, RedirectURIs: []string{redirectURI}},
		{ID: "spa", Name: "SPA", TokenEndpointAuthMethod: model.AuthNone, GrantTypes: user, Scopes: []string{"openid", "api"}, RedirectURIs: []string{redirectURI},
			Audience: []string{"https://api.test"}},
		{ID: "svc", Name: "Service", TokenEndpointAuthMethod: model.AuthClientSecretBasic, GrantTypes: []string{model.GrantClientCredentials}, Scopes: []string{"api", "openid"}},
		{ID: "tv", Name: "TV", TokenEndpointAuthMethod: model.AuthNone, GrantTypes: []string{model.GrantDeviceCode, model.GrantRefreshToken}, Scopes: []string{"openid", "offline_access"}},
		{ID: "tv2", Name: "Other TV", TokenEndpointAuthMethod: model.AuthNone, GrantTypes: []string{model.GrantDeviceCode}, Scopes: []string{"openid"}},
	} {
		c.CreatedAt, c.UpdatedAt = f.clk.Now(), f.clk.Now()
		if err := st.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
		f.clients[c.ID] = c
	}
	return f
}

// signer is a DPoP key.
func (f *fixture) signer() *dpop.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// proof is a DPoP proof by s for the token endpoint, verified as the
// endpoint verifies it (nil for a nil signer).
func (f *fixture) proof(s *dpop.Signer) *dpop.Proof {
	if s == nil {
		return nil
	}
	jwt, err := s.ProofAt("POST", issuer+"/token", "", "", f.clk.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := f.verifier.Verify(f.ctx, jwt, dpop.Check{Method: "POST", URL: issuer + "/token"})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// session signs alice in (password only).
func (f *fixture) session() *model.Session {
	now := f.clk.Now()
	s := &model.Session{ID: "s-" + secret.RandomString(6), UserID: f.alice.ID, AuthTime: now, AMR: []string{"pwd"}, ACR: authz.ACRPassword,
		CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(30 * 24 * time.Hour), IdleTimeout: 72 * time.Hour}
	if err := f.st.CreateSession(f.ctx, s); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// code stores an authorization code of client for sess (bound to jkt
// when set) and returns it with its PKCE verifier.
func (f *fixture) code(client string, sess *model.Session, jkt string) (code, verifier string) {
	code, verifier = secret.RandomToken(), secret.RandomToken()
	sum := sha256.Sum256([]byte(verifier))
	now := f.clk.Now()
	ac := &model.AuthCode{Hash: f.hasher.Sum(code), ClientID: client, UserID: sess.UserID, SessionID: sess.ID, RedirectURI: redirectURI,
		Scope: "openid api", Nonce: "n-1", CodeChallenge: base64.RawURLEncoding.EncodeToString(sum[:]), CodeChallengeMethod: "S256",
		DPoPJKT: jkt, AuthTime: sess.AuthTime, AMR: sess.AMR, ACR: sess.ACR, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := f.st.CreateAuthCode(f.ctx, ac); err != nil {
		f.t.Fatal(err)
	}
	return code, verifier
}

// request is a token request of client with the given parameters.
func (f *fixture) request(client string, s *dpop.Signer, kv ...string) *Request {
	form := map[string][]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		form[kv[i]] = []string{kv[i+1]}
	}
	return &Request{GrantType: form["grant_type"][0], Client: f.clients[client], Form: form, Proof: f.proof(s),
		Origin: origin.Info{IP: "192.0.2.10", UserAgent: "grant-test", CorrID: "corr-1"}}
}

func (f *fixture) grant(req *Request) (*Response, *oautherr.Error) {
	f.t.Helper()
	return f.grants[req.GrantType].Grant(f.ctx, req)
}

// mustGrant is grant that must succeed.
func (f *fixture) mustGrant(req *Request) *Response {
	f.t.Helper()
	resp, e := f.grant(req)
	if e != nil {
		f.t.Fatalf("%s for %s: %v (reason %s)", req.GrantType, req.Client.ID, e, e.Reason)
	}
	return resp
}

// redeem exchanges a code.
func (f *fixture) redeem(client, code, verifier string, s *dpop.Signer) *Request {
	return f.request(client, s, "grant_type", model.GrantAuthorizationCode, "code", code, "code_verifier", verifier, "redirect_uri", redirectURI)
}

func (f *fixture) refresh(client, rt string, s *dpop.Signer, kv ...string) *Request {
	return f.request(client, s, append([]string{"grant_type", model.GrantRefreshToken, "refresh_token", rt}, kv...)...)
}

// wantRefused checks a refusal's code, status and audit reason.
func wantRefused(t *testing.T, resp *Response, e *oautherr.Error, code string, status int, reason string) {
	t.Helper()
	if e == nil {
		t.Fatalf("granted (%+v), want %s (%s)", resp, code, reason)
	}
	if resp != nil || e.Code != code || e.Status != status || e.Reason != reason {
		t.Fatalf("got %s %d reason %q (%q), want %s %d reason %q", e.Code, e.Status, e.Reason, e.Description, code, status, reason)
	}
}

// eventsOf returns the recorded events of type typ.
func (f *fixture) eventsOf(typ model.EventType) []*model.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*model.Event
	for _, e := range f.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// count counts the rows of a table, read through a connection of its
// own.
func (f *fixture) count(table string) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRowContext(f.ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// accessClaims parses an issued access token.
func (f *fixture) accessClaims(at string) *tokens.AccessClaims {
	f.t.Helper()
	cl, err := f.keys.ParseAccessToken(at, issuer, f.clk.Now())
	if err != nil {
		f.t.Fatalf("access token: %v", err)
	}
	return cl
}

// applyPolicies puts a policy document (YAML) in force.
func (f *fixture) applyPolicies(doc string) {
	f.t.Helper()
	d, err := policy.DecodeYAML([]byte(doc))
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.access.Apply(f.ctx, d, access.ApplyOptions{Actor: "test", ExpectVersion: access.AnyVersion}); err != nil {
		f.t.Fatal(err)
	}
}

// registerDevice records s's key as a device of alice with status.
func (f *fixture) registerDevice(s *dpop.Signer, status string) *model.Device {
	jwk := s.PublicJWK()
	raw, err := jwk.MarshalJSON()
	if err != nil {
		f.t.Fatal(err)
	}
	d := &model.Device{ID: "d-" + secret.RandomString(6), UserID: f.alice.ID, JKT: s.Thumbprint(), PublicJWK: raw, Platform: "linux",
		Status: status, Compliance: model.Compliant, CreatedAt: f.clk.Now(), UpdatedAt: f.clk.Now()}
	if err := f.st.CreateDevice(f.ctx, d); err != nil {
		f.t.Fatal(err)
	}
	return d
}

func has(list []string, v string) bool { return slices.Contains(list, v) }
