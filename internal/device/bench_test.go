package device

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/posture"
)

// BenchmarkSubmitPostureVerifyEvaluate measures the CPU part of a posture
// submission: parsing and verifying the signed report (key, signature,
// claims, nonce) and evaluating the strict rule set, without the store.
// "ecdsa-verify" is the raw P-256 verification alone, for reference: the
// target is < 200 µs per report and a small multiple of the reference.
func BenchmarkSubmitPostureVerifyEvaluate(b *testing.B) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	k := newKey(b)
	nonces := dpop.NewHMACNonces(bytes.Repeat([]byte{7}, 32), DefaultReportMaxAge, clock)
	p := fixture(b)
	p.CollectedAt = now
	report, err := posture.SignReport(k.priv, p, "device-1", nonces.Nonce(), now)
	if err != nil {
		b.Fatal(err)
	}
	rules := strictRules(b)
	opts := posture.VerifyOptions{JKT: k.jkt, Now: clock, MaxAge: DefaultReportMaxAge, CheckNonce: nonces.Check}

	b.Run("parse-verify-evaluate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rep, err := posture.ParseReport(report, opts)
			if err != nil {
				b.Fatal(err)
			}
			if st, _ := Evaluate(rules, &rep.Posture, rep.Posture.CollectedAt, now); st != "compliant" {
				b.Fatal(st)
			}
		}
	})
	b.Run("ecdsa-verify", func(b *testing.B) {
		digest := sha256.Sum256([]byte(report))
		sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if !ecdsa.VerifyASN1(&k.priv.PublicKey, digest[:], sig) {
				b.Fatal("verify")
			}
		}
	})
	b.Run("evaluate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Evaluate(rules, p, now, now)
		}
	})
}
