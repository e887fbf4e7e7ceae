package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
)

// BenchmarkPasskeySignIn is one whole usernameless sign-in on SQLite:
// the ceremony begun (a challenge row), the software authenticator's
// signature, and the verification (challenge taken, credential read,
// signature verified, counter updated under the row lock).
// BenchmarkP256SignVerify is the raw cost of the signature and its
// verification in the same run: the baseline.
func BenchmarkPasskeySignIn(b *testing.B) {
	e := newPKEnv(b, nil)
	au := webauthntest.New(rpOrigin)
	c, err := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodPasskey)
	if err != nil {
		b.Fatal(err)
	}
	resp, _, err := au.Create(c.Options)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, c.ID, "bench", resp); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff) // one ceremony per network
		c, err := e.a.BeginPasskeyLogin(e.ctx, ip)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := au.Get(c.Options, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, ip); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkP256SignVerify(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	msg := make([]byte, 37+32)
	for b.Loop() {
		h := sha256.Sum256(msg)
		sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
		if err != nil || !ecdsa.VerifyASN1(&key.PublicKey, h[:], sig) {
			b.Fatal("sign/verify")
		}
	}
}
