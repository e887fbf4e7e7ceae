package dpop

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

const (
	rfcProofJKT     = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
	rfcAccessToken  = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	rfcAccessTokenH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
)

func TestRFC7638Thumbprints(t *testing.T) {
	dir := filepath.Join(vectorsDir, "rfc7638")
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatalf("read expected.json: %v", err)
	}
	var expected struct {
		RSA struct {
			Canonical string `json:"canonical_input"`
			Thumb     string `json:"sha256_b64url"`
		} `json:"rsa-example-jwk.json"`
		EC struct {
			JWK   json.RawMessage `json:"jwk"`
			Thumb string          `json:"sha256_b64url"`
		} `json:"rfc9449-ec-p256-proof-key"`
	}
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatalf("parse expected.json: %v", err)
	}
	rsaJWK, err := os.ReadFile(filepath.Join(dir, "rsa-example-jwk.json"))
	if err != nil {
		t.Fatalf("read rsa-example-jwk.json: %v", err)
	}
	if expected.RSA.Thumb != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" || expected.EC.Thumb != rfcProofJKT {
		t.Fatalf("vector file changed: %+v", expected)
	}

	tests := []struct {
		name string
		jwk  []byte
		alg  string
		want string
	}{
		{"RFC 7638 §3.1 RSA", rsaJWK, "RS256", expected.RSA.Thumb},
		{"RFC 9449 P-256 proof key", expected.EC.JWK, "ES256", expected.EC.Thumb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k jose.JSONWebKey
			if err := k.UnmarshalJSON(tt.jwk); err != nil {
				t.Fatalf("go-jose parse: %v", err)
			}
			got, err := Thumbprint(&k)
			if err != nil || got != tt.want {
				t.Errorf("Thumbprint = %q, %v; want %q", got, err, tt.want)
			}
			// The verifier's own JWK parser must agree.
			pk, e := parseJWK(tt.jwk, jws.Algorithm(tt.alg))
			if e != nil || pk.Thumbprint != tt.want {
				t.Errorf("parseJWK jkt = %q, %v; want %q", pk.Thumbprint, e, tt.want)
			}
		})
	}
	// The canonical input for the RSA key is byte-for-byte RFC 7638's.
	var m map[string]string
	if err := json.Unmarshal(rsaJWK, &m); err != nil {
		t.Fatal(err)
	}
	rk, e := parseJWK(rsaJWK, jws.RS256)
	if e != nil {
		t.Fatal(e)
	}
	canon, err := jws.CanonicalJWK(rk.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(canon); got != expected.RSA.Canonical || m["e"] == "" {
		t.Errorf("canonical input\n got %s\nwant %s", got, expected.RSA.Canonical)
	}
}

func TestRFC9449AccessTokenHash(t *testing.T) {
	if got := AccessTokenHash(rfcAccessToken); got != rfcAccessTokenH {
		t.Errorf("AccessTokenHash = %q, want %q (RFC 9449 §7 example)", got, rfcAccessTokenH)
	}
}

// rfcProofs are the example proofs of RFC 9449 with the request each was
// made for.
type rfcProof struct {
	name, method, url, token string
	iat                      int64
	jti                      string
}

var rfcProofs = []rfcProof{
	{"dpop-proof-jwt", "POST", "https://server.example.com/token", "", 1562262616, "-BwC3ESc6acc2lTc"},
	{"token-request-rt", "POST", "https://server.example.com/token", "", 1562265296, ""},
	{"protected-resource-request", "GET", "https://resource.example.org/protectedresource", rfcAccessToken, 1562262618, "e1j3V_bKic8-LAEB"},
}

func TestRFC9449ExampleProofs(t *testing.T) {
	jwts := loadJWTs(t)
	for _, tt := range rfcProofs {
		t.Run(tt.name, func(t *testing.T) {
			if len(jwts[tt.name]) != 1 {
				t.Fatalf("jwts.json has no single %q", tt.name)
			}
			proof := jwts[tt.name][0]
			iat := time.Unix(tt.iat, 0)
			v := newVerifier(iat)
			p, err := v.Verify(context.Background(), proof, Check{
				Method: tt.method, URL: tt.url, AccessToken: tt.token, JKT: rfcProofJKT,
			})
			if err != nil {
				t.Fatalf("Verify at iat: %v", err)
			}
			if p.JKT != rfcProofJKT || p.Alg != "ES256" || !p.IssuedAt.Equal(iat) || p.HTM != tt.method || p.HTU != tt.url {
				t.Errorf("proof = %+v", p)
			}
			if tt.jti != "" && p.JTI != tt.jti {
				t.Errorf("jti = %q, want %q", p.JTI, tt.jti)
			}
			if tt.token != "" && p.ATH != rfcAccessTokenH {
				t.Errorf("ath = %q, want %q", p.ATH, rfcAccessTokenH)
			}
			if jkt, err := Thumbprint(&p.JWK); err != nil || jkt != rfcProofJKT {
				t.Errorf("Thumbprint(proof.JWK) = %q, %v", jkt, err)
			}

			// The same proof with the real clock: years too old.
			real := &Verifier{Replay: NewMemoryReplayCache(nil)}
			_, err = real.Verify(context.Background(), proof, Check{Method: tt.method, URL: tt.url, AccessToken: tt.token})
			wantReason(t, err, CodeInvalidProof, ReasonTooOld)

			// Bound to another key, or presented with another token.
			_, err = newVerifier(iat).Verify(context.Background(), proof, Check{Method: tt.method, URL: tt.url, JKT: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"})
			wantReason(t, err, CodeInvalidProof, ReasonKeyMismatch)
			_, err = newVerifier(iat).Verify(context.Background(), proof, Check{Method: tt.method, URL: tt.url, AccessToken: "another-token"})
			if tt.token != "" {
				wantReason(t, err, CodeInvalidProof, ReasonATHMismatch)
			} else {
				wantReason(t, err, CodeInvalidProof, ReasonATHMissing)
			}
		})
	}
}

// The token request with an authorization code reuses the first example
// proof: a server that saw both must refuse the second.
func TestRFC9449ExampleReplay(t *testing.T) {
	jwts := loadJWTs(t)
	a, b := jwts["dpop-proof-jwt"][0], jwts["token-request-code"][0]
	if a != b {
		t.Fatalf("vectors changed: the two token-request proofs differ")
	}
	v := newVerifier(time.Unix(1562262616, 0))
	c := Check{Method: "POST", URL: "https://server.example.com/token"}
	if _, err := v.Verify(context.Background(), a, c); err != nil {
		t.Fatalf("first use: %v", err)
	}
	_, err := v.Verify(context.Background(), b, c)
	wantReason(t, err, CodeInvalidProof, ReasonReplay)
	if !errors.Is(err, ErrReplay) {
		t.Errorf("errors.Is(err, ErrReplay) = false for %v", err)
	}
}

// The access token of RFC 9449 §6.1 is a JWT for another purpose: it must
// not pass as a proof, and its cnf.jkt is the proof key's thumbprint.
func TestRFC9449CnfJKT(t *testing.T) {
	jwts := loadJWTs(t)
	at := jwts["cnf-claim-jwt"][0]
	parts := strings.Split(at, ".")
	if len(parts) != 3 {
		t.Fatalf("cnf-claim-jwt is not a JWS")
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Cnf struct {
			JKT string `json:"jkt"`
		} `json:"cnf"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Cnf.JKT != rfcProofJKT {
		t.Errorf("cnf.jkt = %q, want %q", claims.Cnf.JKT, rfcProofJKT)
	}
	_, err = newVerifier(time.Unix(1562262616, 0)).Verify(context.Background(), at, Check{Method: "POST", URL: "https://server.example.com/token"})
	wantReason(t, err, CodeInvalidProof, ReasonType)
}

// wantReason fails unless err is an *Error with the given code and reason.
func wantReason(t testing.TB, err error, code string, reason Reason) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("err = %v (%T), want *Error %s/%s", err, err, code, reason)
		return
	}
	if e.Code != code || e.Reason != reason {
		t.Errorf("err = %s/%s (%q), want %s/%s", e.Code, e.Reason, e.Description, code, reason)
	}
}
