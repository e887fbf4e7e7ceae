package ssfrx_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// fakeTransmitter is an SSF transmitter built by hand: its configuration,
// a JWKS with an EC and an RSA key, and just enough stream management to
// let Ward create its push stream; tests sign SETs with its keys (or
// others) and push them themselves.
type fakeTransmitter struct {
	srv    *httptest.Server
	ec     *ecdsa.PrivateKey
	rsa    *rsa.PrivateKey
	mu     sync.Mutex
	auth   string // the authorization_header Ward gave for pushes
	pushTo string
	mgmt   string // the bearer token Ward must present
}

func newFakeTransmitter(t *testing.T) *fakeTransmitter {
	t.Helper()
	f := &fakeTransmitter{mgmt: "mgmt-token-0123456789"}
	f.ec, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.rsa, _ = rsa.GenerateKey(rand.Reader, 2048)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/ssf-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": f.srv.URL, "jwks_uri": f.srv.URL + "/jwks",
			"delivery_methods_supported": []string{model.DeliveryPush, model.DeliveryPoll},
			"configuration_endpoint":     f.srv.URL + "/stream", "status_endpoint": f.srv.URL + "/status"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		b64 := base64.RawURLEncoding.EncodeToString
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{
			{"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "x": b64(f.ec.X.FillBytes(make([]byte, 32))), "y": b64(f.ec.Y.FillBytes(make([]byte, 32)))},
			{"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(f.rsa.N.Bytes()), "e": b64(big.NewInt(int64(f.rsa.E)).Bytes())},
		}})
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.mgmt {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.Method {
		case http.MethodPost, http.MethodPatch:
			var body struct {
				Delivery struct {
					EndpointURL         string `json:"endpoint_url"`
					AuthorizationHeader string `json:"authorization_header"`
				} `json:"delivery"`
			}
			json.NewDecoder(r.Body).Decode(&body)
			f.auth, f.pushTo = body.Delivery.AuthorizationHeader, body.Delivery.EndpointURL
		case http.MethodGet:
			if r.URL.Query().Get("stream_id") == "" && f.pushTo == "" {
				io.WriteString(w, "[]")
				return
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"stream_id": "st-1", "iss": f.srv.URL, "aud": "ward-at-fake",
			"delivery": map[string]string{"method": model.DeliveryPush, "endpoint_url": f.pushTo}})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"stream_id":"st-1","status":"enabled"}`)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func seg(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign makes a compact JWS of claims with header h, signed as alg says
// with key (an *ecdsa.PrivateKey, *rsa.PrivateKey or an HMAC []byte).
func sign(t *testing.T, h map[string]any, claims map[string]any, key any) string {
	t.Helper()
	in := seg(h) + "." + seg(claims)
	sum := sha256.Sum256([]byte(in))
	var sig []byte
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	case *rsa.PrivateKey:
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
			t.Fatal(err)
		}
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(in))
		sig = m.Sum(nil)
	case nil:
		return in + "."
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestHostileSETs pushes SETs an attacker could send, each refused with
// RFC 8935's 400 {err, description} (401 for the wrong push credential),
// counted, and never recorded; the receiver keeps working, and a replay
// is refused after a restart too.
func TestHostileSETs(t *testing.T) {
	f := newFakeTransmitter(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(f.mgmt), 0o600); err != nil {
		t.Fatal(err)
	}
	o := wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.SSFReceivers = []config.SSFReceiver{{Name: "fake", Issuer: f.srv.URL, Delivery: "push",
			Auth: config.SSFReceiverAuth{TokenFile: tokenFile}, AllowedNetworks: []string{"127.0.0.0/8"}}}
	}}
	a := wardtest.Start(t, o)
	eventually(t, 10*time.Second, "push stream created", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.auth != "" && streamOfNamed(a, "fake") != nil
	})
	f.mu.Lock()
	auth, pushTo := f.auth, f.pushTo
	f.mu.Unlock()
	if pushTo != a.URL+"/ssf/receive/fake" || !strings.HasPrefix(auth, "Bearer ") {
		t.Fatalf("push endpoint %q, header %q", pushTo, auth[:7])
	}
	bob := user(t, a, "bob")
	now := time.Now().Unix()
	claims := func(jti string, mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": f.srv.URL, "aud": a.URL, "jti": jti, "iat": now,
			"sub_id": map[string]any{"format": "email", "email": "BOB@example.com"},
			"events": map[string]any{rs.EventCredentialCompromise: map[string]any{"credential_type": "password",
				"reason_admin": map[string]string{"en": "password found in a breach corpus\u0007"}}}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	es := map[string]any{"alg": "ES256", "typ": "secevent+jwt", "kid": "ec-1"}
	rsh := map[string]any{"alg": "RS256", "typ": "secevent+jwt", "kid": "rsa-1"}
	push := func(set, authz string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, a.URL+"/ssf/receive/fake", strings.NewReader(set))
		req.Header.Set("Content-Type", "application/secevent+jwt")
		req.Header.Set("Authorization", authz)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Err string }
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Err
	}

	// Accepted: ES256 and RS256, by the configured audience and by the
	// stream's.
	good := sign(t, es, claims("good-1", nil), f.ec)
	if st, e := push(good, auth); st != http.StatusAccepted {
		t.Fatalf("valid ES256 SET: %d %s", st, e)
	}
	if st, e := push(sign(t, rsh, claims("good-2", func(c map[string]any) { c["aud"] = "ward-at-fake" }), f.rsa), auth); st != http.StatusAccepted {
		t.Fatalf("valid RS256 SET for the stream's aud: %d %s", st, e)
	}
	evs := signals(t, a, bob.ID)
	if len(evs) != 2 {
		t.Fatalf("%d signals recorded, want 2", len(evs))
	}
	if d := evs[0].Data; d[model.DataSSFReasonAdmin] != "password found in a breach corpus" || d[model.DataSSFSubjectFormat] != "email" ||
		d[model.DataSSFDetail] != "credential_type=password" || evs[0].Reason != "credential-compromise" || evs[0].IP != "" {
		t.Fatalf("signal data: %+v", evs[0])
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	big := claims("big", func(c map[string]any) { c["pad"] = strings.Repeat("x", 70<<10) })
	deep := map[string]any{"x": 1}
	for range 40 {
		deep = map[string]any{"x": deep}
	}
	for _, c := range []struct {
		name, set, authz string
		status           int
		err              string
	}{
		{"wrong push credential", sign(t, es, claims("c1", nil), f.ec), "Bearer not-the-token", 401, rs.SETErrAuthenticationFailed},
		{"no push credential", sign(t, es, claims("c2", nil), f.ec), "", 401, rs.SETErrAuthenticationFailed},
		{"signed by another key", sign(t, es, claims("c3", nil), other), auth, 400, rs.SETErrAuthenticationFailed},
		{"unknown kid", sign(t, map[string]any{"alg": "ES256", "typ": "secevent+jwt", "kid": "nope"}, claims("c4", nil), other), auth, 400, rs.SETErrInvalidKey},
		{"RS256 header on the EC key", sign(t, map[string]any{"alg": "RS256", "typ": "secevent+jwt", "kid": "ec-1"}, claims("c5", nil), f.rsa), auth, 400, rs.SETErrInvalidKey},
		{"wrong aud", sign(t, es, claims("c6", func(c map[string]any) { c["aud"] = "https://someone-else.example" }), f.ec), auth, 400, rs.SETErrInvalidAudience},
		{"wrong iss", sign(t, es, claims("c7", func(c map[string]any) { c["iss"] = "https://evil.example" }), f.ec), auth, 400, rs.SETErrInvalidIssuer},
		{"alg none", sign(t, map[string]any{"alg": "none", "typ": "secevent+jwt"}, claims("c8", nil), nil), auth, 400, rs.SETErrInvalidRequest},
		{"HS256 with the public key as secret", sign(t, map[string]any{"alg": "HS256", "typ": "secevent+jwt", "kid": "ec-1"}, claims("c9", nil),
			elliptic.Marshal(elliptic.P256(), f.ec.X, f.ec.Y)), auth, 400, rs.SETErrInvalidKey},
		{"nested JWT", sign(t, map[string]any{"alg": "ES256", "typ": "secevent+jwt", "kid": "ec-1", "cty": "JWT"}, claims("c10", nil), f.ec), auth, 400, rs.SETErrInvalidRequest},
		{"deeply nested claims", sign(t, es, claims("c11", func(c map[string]any) { c["deep"] = deep }), f.ec), auth, 400, rs.SETErrInvalidRequest},
		{"oversized", sign(t, es, big, f.ec), auth, 400, rs.SETErrInvalidRequest},
		{"iat too old", sign(t, es, claims("c12", func(c map[string]any) { c["iat"] = now - 25*3600 }), f.ec), auth, 400, rs.SETErrInvalidRequest},
		{"iat in the future", sign(t, es, claims("c13", func(c map[string]any) { c["iat"] = now + 3600 }), f.ec), auth, 400, rs.SETErrInvalidRequest},
		{"unknown subject", sign(t, es, claims("c14", func(c map[string]any) {
			c["sub_id"] = map[string]any{"format": "email", "email": "nobody@example.com"}
		}), f.ec), auth, 400, rs.SETErrInvalidRequest},
		{"wrong typ", sign(t, map[string]any{"alg": "ES256", "typ": "JWT", "kid": "ec-1"}, claims("c15", nil), f.ec), auth, 400, rs.SETErrInvalidRequest},
		// A jti recorded before is acknowledged and changes nothing (the
		// count of signals below stays 2).
		{"replayed jti", good, auth, 202, ""},
	} {
		st, e := push(c.set, c.authz)
		if st != c.status || e != c.err {
			t.Errorf("%s: %d %q, want %d %q", c.name, st, e, c.status, c.err)
		}
	}
	if n := len(signals(t, a, bob.ID)); n != 2 {
		t.Fatalf("%d signals after the attacks, want still 2", n)
	}
	stats := a.App.SSFReceivers.Stats()
	if stats.Refused.Load() != 14 || stats.Duplicates.Load() != 1 {
		t.Errorf("refused %d (duplicates %d), want 14 (1): the 401s are not SETs", stats.Refused.Load(), stats.Duplicates.Load())
	}
	// Still working after all that.
	if st, e := push(sign(t, es, claims("good-3", nil), f.ec), auth); st != http.StatusAccepted {
		t.Fatalf("valid SET after the attacks: %d %s", st, e)
	}
	logs := a.LogText()
	for _, secret := range []string{strings.TrimPrefix(auth, "Bearer "), f.mgmt, good} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a credential or a SET is in the log")
		}
	}

	// The record of accepted SETs is in the database: after a restart the
	// replay is still recognised and records nothing (and the push
	// credential still works).
	a = a.Restart(t)
	if st, e := push(good, auth); st != http.StatusAccepted {
		t.Fatalf("replay after a restart: %d %q", st, e)
	}
	if d := a.App.SSFReceivers.Stats().Duplicates.Load(); d != 1 {
		t.Fatalf("replay after a restart: %d duplicates counted, want 1", d)
	}
	if n := len(signals(t, a, bob.ID)); n != 3 {
		t.Fatalf("%d signals after the restart, want 3", n)
	}
}

func streamOfNamed(in *wardtest.Instance, name string) *model.SSFReceiverStream {
	st, err := in.App.Store.GetSSFReceiverStream(context.Background(), name)
	if err != nil {
		return nil
	}
	return st
}
