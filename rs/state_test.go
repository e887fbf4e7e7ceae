package rs

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

func tokenAt(iat time.Time) *TokenInfo {
	return &TokenInfo{
		Issuer: "https://idp", Subject: "alice", SessionID: "s1", DeviceID: "d1", JTI: "j1",
		IssuedAt: iat, AuthTime: iat.Add(-time.Minute), ACR: "urn:ward:acr:password",
	}
}

func TestRevocationKinds(t *testing.T) {
	at := t0.Add(-time.Minute)
	cases := []struct {
		name   string
		revoke func(s *RevocationState)
		by     string
	}{
		{"session", func(s *RevocationState) { s.RevokeSession("s1", at) }, "session"},
		{"user", func(s *RevocationState) { s.RevokeUser("https://idp", "alice", at) }, "user"},
		{"device", func(s *RevocationState) { s.RevokeDevice("d1", at) }, "device"},
		{"user on device", func(s *RevocationState) { s.RevokeUserDevice("https://idp", "alice", "d1", at) }, "user_device"},
		{"token", func(s *RevocationState) { s.RevokeToken("https://idp", "j1", at) }, "token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock(t0)
			s := NewRevocationState(StateConfig{Now: clk.Now})
			tc.revoke(s)
			for _, c := range []struct {
				iat     time.Time
				revoked bool
			}{
				{at.Add(-time.Hour), true},
				{at, true}, // at the revocation time: rejected
				{at.Add(time.Second), false},
			} {
				d := s.Check(tokenAt(c.iat))
				if (d != nil) != c.revoked {
					t.Fatalf("iat %v: decision %+v, want revoked=%v", c.iat, d, c.revoked)
				}
				if d != nil && (d.Kind != Revoked || d.By != tc.by || !d.RevokedAt.Equal(at)) {
					t.Errorf("decision = %+v", d)
				}
			}
			// A later nbf (an IdP answering the claims challenge) passes.
			tok := tokenAt(at)
			tok.NotBefore = at.Add(time.Second)
			if d := s.Check(tok); d != nil {
				t.Errorf("nbf after revocation: %+v", d)
			}
		})
	}
}

func TestRevocationDoesNotLeak(t *testing.T) {
	clk := newClock(t0)
	s := NewRevocationState(StateConfig{Now: clk.Now})
	s.RevokeSession("s1", t0)
	s.RevokeUser("https://other-idp", "alice", t0) // same sub at another issuer
	s.RevokeUserDevice("https://idp", "alice", "d2", t0)
	s.RevokeDevice("s2", t0) // an id of another kind
	tok := tokenAt(t0)
	tok.SessionID = "s2"
	if d := s.Check(tok); d != nil {
		t.Fatalf("unrelated revocations matched: %+v", d)
	}
	// Ids that differ only in where the separator falls do not collide.
	s.RevokeUserDevice("https://idp", "alic", "ed1", t0)
	if d := s.Check(tok); d != nil {
		t.Fatalf("(alic, ed1) matched (alice, d1): %+v", d)
	}
}

func TestRevocationTimes(t *testing.T) {
	clk := newClock(t0)
	s := NewRevocationState(StateConfig{Now: clk.Now, MaxTokenLifetime: time.Hour})
	s.RevokeSession("s1", t0.Add(-time.Minute))
	s.RevokeSession("s1", t0.Add(-time.Hour/2)) // older: ignored
	if d := s.Check(tokenAt(t0.Add(-30 * time.Second))); d != nil {
		t.Fatalf("a token issued after the revocation was rejected: %+v", d)
	}
	if d := s.Check(tokenAt(t0.Add(-time.Minute))); d == nil || !d.RevokedAt.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("decision = %+v", d)
	}
	// A revocation "in the future" is clamped to now.
	s.RevokeUser("https://idp", "bob", t0.Add(time.Hour))
	tok := tokenAt(t0.Add(time.Second))
	tok.Subject = "bob"
	if d := s.Check(tok); d != nil {
		t.Fatalf("future revocation blocked a later token: %+v", d)
	}
	// A revocation older than any live token is not stored.
	s.RevokeUser("https://idp", "carol", t0.Add(-2*time.Hour))
	if n := s.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	// Entries expire after MaxTokenLifetime + skew.
	clk.Advance(time.Hour + DefaultClockSkew + 2*time.Second)
	s.Sweep()
	if n := s.Len(); n != 0 {
		t.Fatalf("Len after expiry = %d", n)
	}
	// The sweep also runs as the state is written (per shard: enough
	// writes reach x's shard with overwhelming probability).
	s.RevokeSession("x", clk.Now())
	clk.Advance(2 * time.Hour)
	for i := range 1000 {
		s.RevokeSession("y"+strconv.Itoa(i), clk.Now())
	}
	if n := s.Len(); n != 1000 {
		t.Fatalf("Len after write-time sweep = %d, want 1000", n)
	}
}

func TestRequirements(t *testing.T) {
	clk := newClock(t0)
	s := NewRevocationState(StateConfig{Now: clk.Now})
	s.Require("https://idp", "alice", Requirement{ACR: "urn:ward:acr:mfa"})
	pwd := tokenAt(t0)
	if d := s.Check(pwd); d == nil || d.Kind != StepUp || d.Requirement.ACR != "urn:ward:acr:mfa" {
		t.Fatalf("password token: %+v", d)
	}
	mfa := tokenAt(t0)
	mfa.ACR = "urn:ward:acr:mfa"
	if d := s.Check(mfa); d != nil {
		t.Fatalf("mfa token: %+v", d)
	}
	custom := tokenAt(t0)
	custom.ACR = "urn:other:strong"
	if d := s.Check(custom); d == nil {
		t.Fatal("an unknown acr satisfied the requirement")
	}
	// Re-authentication requirement.
	s.Require("https://idp", "alice", Requirement{AuthTimeAfter: t0})
	mfa.AuthTime = t0
	if d := s.Check(mfa); d == nil {
		t.Fatal("auth_time at the requirement time passed")
	}
	mfa.AuthTime = t0.Add(time.Second)
	if d := s.Check(mfa); d != nil {
		t.Fatalf("fresh auth: %+v", d)
	}
	s.ClearRequirement("https://idp", "alice")
	if d := s.Check(pwd); d != nil {
		t.Fatalf("after clear: %+v", d)
	}
	// Requirements expire like revocations.
	s.Require("https://idp", "alice", Requirement{ACR: "urn:ward:acr:mfa"})
	clk.Advance(DefaultMaxTokenLifetime + time.Minute)
	if d := s.Check(pwd); d != nil {
		t.Fatalf("expired requirement applied: %+v", d)
	}
}

func TestStateConcurrency(t *testing.T) {
	s := NewRevocationState(StateConfig{})
	now := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				s.RevokeSession(strconv.Itoa(g*10000+i), now)
				s.Require("https://idp", strconv.Itoa(i), Requirement{ACR: "urn:ward:acr:mfa"})
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 2000 {
				tok := tokenAt(now)
				tok.SessionID = strconv.Itoa(g*10000 + i)
				s.Check(tok)
			}
		}()
	}
	wg.Wait()
	if s.Len() != 8000 {
		t.Fatalf("Len = %d", s.Len())
	}
}

// TestStateMemory measures the heap held by 1,000,000 revoked sessions;
// the goal is under 200 MB.
func TestStateMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million entries")
	}
	const n = 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := NewRevocationState(StateConfig{})
	now := time.Now()
	for i := range n {
		// Session ids like Ward's: 43 characters of base64url.
		s.RevokeSession("sess-"+strconv.Itoa(i)+"-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := after.HeapAlloc - before.HeapAlloc
	t.Logf("1,000,000 revoked sessions: %.1f MB heap (%.1f bytes/entry)", float64(held)/1e6, float64(held)/n)
	if held > 200e6 {
		t.Fatalf("revocation state holds %d bytes for %d sessions, want < 200 MB", held, n)
	}
	if s.Len() != n {
		t.Fatalf("Len = %d", s.Len())
	}
	runtime.KeepAlive(s)
}

func TestClaimsChallengeThroughMiddleware(t *testing.T) {
	var st *RevocationState
	f := newFixture(t, func(c *Config) {
		st = NewRevocationState(StateConfig{Now: c.Now})
		c.State = st
	})
	tok := f.token()
	st.RevokeSession("sess-1", t0)
	w := f.serve(f.dpopRequest(tok))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("status = %d", w.Code)
	}
	c, ok := ParseClaimsChallenge(w.Header())
	if !ok || c.Scheme != "DPoP" || c.Error != CodeInsufficientClaims {
		t.Fatalf("challenge %q", w.Header().Values("WWW-Authenticate"))
	}
	var claims map[string]map[string]map[string]any
	if err := json.Unmarshal(c.Claims, &claims); err != nil {
		t.Fatalf("claims %s: %v", c.Claims, err)
	}
	nbf := claims["access_token"]["nbf"]
	if nbf["essential"] != true || nbf["value"] != strconv.FormatInt(t0.Unix(), 10) {
		t.Errorf("claims = %s", c.Claims)
	}
	if at, ok := c.RequiredNotBefore(); !ok || !at.Equal(t0) {
		t.Errorf("RequiredNotBefore = %v %v", at, ok)
	}
	// The client follows the challenge: a token issued after the
	// revocation is accepted.
	f.clk.Advance(time.Second)
	if w := f.serve(f.dpopRequest(f.token())); w.Code != http.StatusOK {
		t.Fatalf("new token: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}

	// Step-up: RFC 9470 parameters and the claims form.
	st.Require(f.idp.issuer, "user-1", Requirement{ACR: "urn:ward:acr:mfa", AuthTimeAfter: f.clk.Now().Add(-10 * time.Second)})
	w = f.serve(f.dpopRequest(f.token()))
	c, ok = ParseClaimsChallenge(w.Header())
	if !ok || w.Code != http.StatusUnauthorized || c.Error != CodeInsufficientUserAuthentication {
		t.Fatalf("step-up: %d %q", w.Code, w.Header().Values("WWW-Authenticate"))
	}
	if got := c.RequiredACR(); len(got) != 1 || got[0] != "urn:ward:acr:mfa" || c.MaxAge != 10 {
		t.Errorf("acr %v max_age %d", got, c.MaxAge)
	}
	var req struct {
		AccessToken struct {
			ACR struct {
				Essential bool
				Values    []string
			}
		} `json:"access_token"`
	}
	if err := json.Unmarshal(c.Claims, &req); err != nil || !req.AccessToken.ACR.Essential || req.AccessToken.ACR.Values[0] != "urn:ward:acr:mfa" {
		t.Errorf("step-up claims %s", c.Claims)
	}
	stepped := f.token(func(m map[string]any) { m["acr"] = "urn:ward:acr:mfa"; m["auth_time"] = f.clk.Now().Unix() })
	if w := f.serve(f.dpopRequest(stepped)); w.Code != http.StatusOK {
		t.Fatalf("stepped-up token: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}
