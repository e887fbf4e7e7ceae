package tpmattest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/ward-idp/ward/internal/tpmattest"
)

// FuzzVerify: whatever the bytes, Verify answers with a refusal (an
// *Error) and never panics; with a random key nothing verifies.
func FuzzVerify(f *testing.F) {
	ak := tpm2.Marshal(&akTemplate)
	dev := tpm2.Marshal(&deviceTemplate)
	ek := tpm2.Marshal(&tpm2.RSAEKTemplate)
	attest := tpm2.Marshal(&tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestCertify,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{Name: tpm2.TPM2BName{Buffer: []byte{0, 11, 1}}})})
	sig := tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
		&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: []byte{1}},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: []byte{2}}})})
	f.Add(ek, ak, dev, attest, sig)
	f.Add(ek[:10], ak[:3], dev, attest[:5], sig[:1])
	f.Add([]byte{}, []byte{0}, []byte{0, 0}, []byte{0xff, 0x54, 0x43, 0x47}, []byte{0, 0x18})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	v := &tpmattest.Verifier{}
	f.Fuzz(func(t *testing.T, ekPub, akPub, keyPub, certify, signature []byte) {
		res, err := v.Verify(&tpmattest.Params{EKPublic: ekPub, AKPublic: akPub, KeyPublic: keyPub, CertifyInfo: certify, Signature: signature},
			&k.PublicKey, []byte("qualifying data"))
		var e *tpmattest.Error
		if err == nil || res != nil || !errors.As(err, &e) || e.Reason == "" || e.Message == "" {
			t.Fatalf("Verify = %v, %v; want a refusal", res, err)
		}
	})
}
