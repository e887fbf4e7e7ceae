package posture

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkParseReport measures the server's whole check of a typical
// report (parse, thumbprint, signature, strict claims, posture), to be
// read against BenchmarkECDSAP256Verify, the raw signature cost.
func BenchmarkParseReport(b *testing.B) {
	k, _ := testKeys(b)
	tok := sign(b, k, samplePosture(), "n", fixedNow)
	o := VerifyOptions{JKT: jkt(b, k), DeviceID: "dev-1", Now: func() time.Time { return fixedNow }, CheckNonce: func(string) bool { return true }}
	b.SetBytes(int64(len(tok)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseReport(tok, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDSAP256Verify is the raw cost of one ES256 verification.
func BenchmarkECDSAP256Verify(b *testing.B) {
	k, _ := testKeys(b)
	d := sha256.Sum256([]byte("ward posture report"))
	sig, err := ecdsa.SignASN1(nil, k, d[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkSignReport is the agent's cost with a software key.
func BenchmarkSignReport(b *testing.B) {
	k, _ := testKeys(b)
	p := samplePosture()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SignReport(k, p, "dev-1", "n", fixedNow); err != nil {
			b.Fatal(err)
		}
	}
}
