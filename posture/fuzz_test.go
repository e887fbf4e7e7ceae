package posture

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"
)

// FuzzParseReport feeds ParseReport arbitrary tokens. It must never panic,
// and whatever it accepts must be signed by the expected key, carry a
// valid posture and be within its time window.
func FuzzParseReport(f *testing.F) {
	k, evil := testKeys(f)
	f.Add(sign(f, k, samplePosture(), "n", fixedNow))
	f.Add(sign(f, evil, samplePosture(), "n", fixedNow))
	f.Add(sign(f, k, &Posture{Platform: "windows", CollectedAt: fixedNow}, "n", fixedNow))
	f.Add(forge(f, k, headerFor(k), `{"iss":"ward-agent","sub":"d","iat":1,"exp":2,"jti":"j","nonce":"n","posture":{"platform":"x","collected_at":"2026-01-01T00:00:00Z"}}`))
	f.Add(forge(f, k, headerFor(k), `{"posture":{"disk_encrypted":"maybe"}}`))
	f.Add(forge(f, k, headerFor(k), `[]`))
	f.Add("..")
	f.Add("e30.e30.")
	jktK := jkt(f, k)
	f.Fuzz(func(t *testing.T, token string) {
		o := VerifyOptions{JKT: jktK, Now: func() time.Time { return fixedNow }, CheckNonce: func(string) bool { return true }}
		r, err := ParseReport(token, o)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if r.JKT != jktK || r.Posture.Validate() != nil {
			t.Fatalf("accepted an invalid report: %+v", r)
		}
		for _, st := range r.Posture.states() {
			if !st.s.Valid() {
				t.Fatalf("accepted state %q", *st.s)
			}
		}
		if r.IssuedAt.After(fixedNow.Add(MaxClockSkew)) || fixedNow.Sub(r.IssuedAt) > ReportLifetime {
			t.Fatalf("accepted iat %v", r.IssuedAt)
		}
		// The signature really is by k over the first two parts.
		i := strings.LastIndexByte(token, '.')
		sig, _ := base64.RawURLEncoding.DecodeString(token[i+1:])
		d := sha256.Sum256([]byte(token[:i]))
		if len(sig) != 64 || !ecdsa.Verify(&k.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			t.Fatal("accepted a report not signed by the device key")
		}
	})
}
