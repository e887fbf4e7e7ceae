package keystore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/ward-idp/ward/agent/keystore/swtpmtest"
)

// AttestKey returns the TPM's own structures: the device key's public
// area, a certification of it by a restricted AK over the qualifying
// data, and the EK with its certificate when the TPM has one. (The
// server's verification of them, and the credential challenge, are
// tested with internal/tpmattest.)
func TestAttestKey(t *testing.T) {
	ctx := context.Background()
	sim := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	st := openSim(t, sim, t.TempDir(), true)
	k, err := st.Create(ctx, "device")
	if err != nil {
		t.Fatal(err)
	}
	qd := bytes.Repeat([]byte{0xab}, 32)
	a, err := st.AttestKey(ctx, k, qd)
	if err != nil {
		t.Fatalf("AttestKey: %v", err)
	}
	keyPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.KeyPublic)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tpm2.Pub(*keyPub)
	if err != nil || !p.(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatalf("KeyPublic is not the key's public area: %v", err)
	}
	akPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.AKPublic)
	if err != nil || !akPub.ObjectAttributes.Restricted || !akPub.ObjectAttributes.FixedTPM || !akPub.ObjectAttributes.SignEncrypt {
		t.Fatalf("AK %+v (%v): want a restricted signing key fixed to the TPM", akPub, err)
	}
	info, err := tpm2.Unmarshal[tpm2.TPMSAttest](a.CertifyInfo)
	if err != nil || info.Type != tpm2.TPMSTAttestCertify || !bytes.Equal(info.ExtraData.Buffer, qd) {
		t.Fatalf("certify info %+v (%v)", info, err)
	}
	keyName, _ := tpm2.ObjectName(keyPub)
	if ci, err := info.Attested.Certify(); err != nil || !bytes.Equal(ci.Name.Buffer, keyName.Buffer) {
		t.Fatalf("the certification names another object (%v)", err)
	}
	ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](a.EKPublic)
	if err != nil || ekPub.Type != tpm2.TPMAlgRSA || !ekPub.ObjectAttributes.Restricted || !ekPub.ObjectAttributes.Decrypt {
		t.Fatalf("EK %+v (%v): want an RSA restricted decryption key", ekPub, err)
	}
	cert, err := x509.ParseCertificate(a.EKCertificate)
	if err != nil {
		t.Fatalf("EK certificate: %v", err)
	}
	ekKey, _ := tpm2.Pub(*ekPub)
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(ekKey) {
		t.Fatal("the EK certificate is not the EK's")
	}
	// The key still signs, and the store still loads it, afterwards.
	checkSignVerify(t, k)
	if _, err := st.Load(ctx, "device"); err != nil {
		t.Fatal(err)
	}

	// Refusals: a key of another store, too much qualifying data, a
	// malformed challenge, a closed store.
	fk, err := (&FileStore{Dir: t.TempDir()}).Create(ctx, "file")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AttestKey(ctx, fk, qd); err == nil {
		t.Error("AttestKey of a file key succeeded")
	}
	other := openSim(t, swtpmtest.Start(t, swtpmtest.Options{}), t.TempDir(), false)
	if _, err := other.AttestKey(ctx, k, qd); err == nil {
		t.Error("AttestKey of another TPM store's key succeeded")
	}
	if _, err := st.AttestKey(ctx, k, make([]byte, 33)); err == nil || !strings.Contains(err.Error(), "qualifying data") {
		t.Errorf("33 bytes of qualifying data: %v", err)
	}
	for _, c := range [][2][]byte{{nil, []byte{1}}, {[]byte{1}, nil}, {make([]byte, 2000), []byte{1}}, {[]byte("junk"), []byte("junk")}} {
		if _, err := a.ActivateCredential(ctx, c[0], c[1]); err == nil {
			t.Errorf("ActivateCredential(%d, %d bytes) succeeded", len(c[0]), len(c[1]))
		}
	}
	st.Close()
	if _, err := a.ActivateCredential(ctx, []byte{1}, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("ActivateCredential after Close: %v, want ErrClosed", err)
	}
}

// A TPM without an EK certificate: the attestation has none, and the EK
// is the standard one derived from the endorsement seed.
func TestAttestKeyWithoutEKCertificate(t *testing.T) {
	ctx := context.Background()
	st := openSim(t, swtpmtest.Start(t, swtpmtest.Options{}), t.TempDir(), true)
	k, err := st.Create(ctx, "device")
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.AttestKey(ctx, k, []byte("qd"))
	if err != nil {
		t.Fatal(err)
	}
	if a.EKCertificate != nil {
		t.Fatal("an EK certificate from a TPM that has none")
	}
	b, err := st.AttestKey(ctx, k, []byte("qd"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.EKPublic, b.EKPublic) {
		t.Fatal("the EK changed between two attestations")
	}
	if bytes.Equal(a.AKPublic, b.AKPublic) {
		t.Fatal("two attestations share an AK; each makes its own")
	}
	checkRedacted(t, k)
}
