package keystore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/posture"
)

// checkSignVerify signs a digest with k and verifies it with k's public key.
func checkSignVerify(t *testing.T, k Key) {
	t.Helper()
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve.Params().Name != "P-256" {
		t.Fatalf("Public() = %T, want *ecdsa.PublicKey on P-256", k.Public())
	}
	digest := sha256.Sum256([]byte("ward device key"))
	sig, err := k.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Fatal("signature does not verify with the public key")
	}
	other := sha256.Sum256([]byte("something else"))
	if ecdsa.VerifyASN1(pub, other[:], sig) {
		t.Fatal("signature verifies for another digest")
	}
	if _, err := k.Sign(nil, digest[:20], crypto.SHA1); err == nil {
		t.Fatal("Sign accepted a SHA-1 digest")
	}
}

// checkDPoP makes a DPoP proof with k and verifies it with dpop.Verifier.
func checkDPoP(t *testing.T, k Key) {
	t.Helper()
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatalf("dpop.NewSigner: %v", err)
	}
	now := time.Now()
	proof, err := s.ProofAt("POST", "https://ward.example/token", "", "", now)
	if err != nil {
		t.Fatalf("Proof: %v", err)
	}
	v := &dpop.Verifier{Now: func() time.Time { return now }, Replay: dpop.NewMemoryReplayCache(func() time.Time { return now })}
	p, err := v.Verify(context.Background(), proof, dpop.Check{Method: "POST", URL: "https://ward.example/token", JKT: s.Thumbprint()})
	if err != nil {
		t.Fatalf("dpop Verify: %v", err)
	}
	if p.JKT != s.Thumbprint() {
		t.Fatalf("proof jkt = %s, want %s", p.JKT, s.Thumbprint())
	}

	// The same key signs posture reports that the server accepts.
	report, err := posture.SignReport(k, &posture.Posture{Platform: "linux", CollectedAt: now}, "dev-1", "nonce-1", now)
	if err != nil {
		t.Fatalf("SignReport: %v", err)
	}
	r, err := posture.ParseReport(report, posture.VerifyOptions{
		JKT: s.Thumbprint(), DeviceID: "dev-1", Now: func() time.Time { return now },
		CheckNonce: func(n string) bool { return n == "nonce-1" },
	})
	if err != nil || r.JKT != s.Thumbprint() {
		t.Fatalf("ParseReport: %v", err)
	}
}

// checkRedacted proves a key prints and logs without private material.
func checkRedacted(t *testing.T, k Key, secrets ...string) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("key", "key", k)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("key", "key", k)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		buf.WriteString(sprintf(f, k))
	}
	j, err := json.Marshal(k)
	if err != nil || !json.Valid(j) || !strings.Contains(string(j), `"private":"REDACTED"`) || !strings.Contains(string(j), k.ID()) {
		t.Fatalf("key as JSON: %s %v", j, err)
	}
	buf.Write(j)
	out := buf.String()
	if !strings.Contains(out, "REDACTED") || !strings.Contains(out, k.ID()) {
		t.Fatalf("log output lacks the redacted marker or id: %s", out)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Fatalf("log output contains private material")
		}
	}
}

var sha256Opts = crypto.SHA256
