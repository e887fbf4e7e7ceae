package tpmattest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/keystore/swtpmtest"
	"github.com/ward-idp/ward/internal/tpmattest"
)

// device is a TPM with a device key in it.
type device struct {
	sim   *swtpmtest.Sim
	store *keystore.TPMStore
	key   keystore.Key
}

func newDevice(t *testing.T, o swtpmtest.Options) *device {
	t.Helper()
	sim := swtpmtest.Start(t, o)
	st, err := keystore.OpenTPMSimulator(sim.Addr, sim.CtrlAddr)
	if err != nil {
		t.Fatal(err)
	}
	st.Dir = t.TempDir()
	t.Cleanup(func() { st.Close() })
	k, err := st.Create(context.Background(), "device")
	if err != nil {
		t.Fatal(err)
	}
	return &device{sim: sim, store: st, key: k}
}

func (d *device) pub() *ecdsa.PublicKey { return d.key.Public().(*ecdsa.PublicKey) }

func qd(nonce string) []byte { h := sha256.Sum256([]byte(nonce)); return h[:] }

func (d *device) attest(t *testing.T, nonce string) *keystore.KeyAttestation {
	t.Helper()
	a, err := d.store.AttestKey(context.Background(), d.key, qd(nonce))
	if err != nil {
		t.Fatalf("AttestKey: %v", err)
	}
	return a
}

func params(a *keystore.KeyAttestation) *tpmattest.Params {
	return &tpmattest.Params{EKPublic: a.EKPublic, EKCertificate: a.EKCertificate, AKPublic: a.AKPublic,
		KeyPublic: a.KeyPublic, CertifyInfo: a.CertifyInfo, Signature: a.Signature}
}

func wantReason(t *testing.T, what string, err error, reason string) {
	t.Helper()
	var e *tpmattest.Error
	if !errors.As(err, &e) || e.Reason != reason {
		t.Fatalf("%s: got %v, want refusal %q", what, err, reason)
	}
	if e.Message == "" {
		t.Fatalf("%s: refusal without a message", what)
	}
}

func cas(t *testing.T, ca *swtpmtest.CA) *tpmattest.CAs {
	t.Helper()
	c, err := tpmattest.ParseCAs(ca.PEM(t))
	if err != nil {
		t.Fatalf("ParseCAs: %v", err)
	}
	return c
}

// The whole exchange against a TPM with a vendor-certified EK: the
// evidence verifies, the EK certificate chains to the vendor CA, and only
// this TPM recovers the credential.
func TestAttestationWithVendorCertificate(t *testing.T) {
	d := newDevice(t, swtpmtest.Options{EKCertificate: true})
	a := d.attest(t, "nonce-1")
	if len(a.EKCertificate) == 0 {
		t.Fatal("the manufactured TPM has no EK certificate")
	}
	v := &tpmattest.Verifier{CAs: cas(t, d.sim.CA)}
	res, err := v.Verify(params(a), d.pub(), qd("nonce-1"))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.EKCertified || !strings.Contains(res.EKIssuer, "swtpm-localca") || len(res.EKFingerprint) != 64 {
		t.Fatalf("result %+v: want a certified EK issued by the local CA", res)
	}
	secret := make([]byte, tpmattest.SecretSize)
	rand.Read(secret)
	blob, enc, err := res.MakeCredential(secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.ActivateCredential(context.Background(), blob, enc)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("the TPM recovered another secret")
	}
	// One attestation answers one challenge.
	if _, err := a.ActivateCredential(context.Background(), blob, enc); err == nil {
		t.Fatal("a second activation of the same attestation succeeded")
	}
	// The key still signs after the attestation.
	if _, err := d.key.Sign(nil, make([]byte, 32), crypto.SHA256); err != nil {
		t.Fatalf("sign after attestation: %v", err)
	}

	// Without configured CAs the same evidence verifies, uncertified; the
	// certificate must still be the EK's.
	res, err = (&tpmattest.Verifier{}).Verify(params(a), d.pub(), qd("nonce-1"))
	if err != nil || res.EKCertified || res.EKIssuer != "" {
		t.Fatalf("without CAs: %+v %v, want verified and not certified", res, err)
	}
}

// A TPM whose EK has no certificate: accepted (uncertified) without CAs,
// refused when CAs are configured; a TPM of another vendor is refused.
func TestAttestationEKTrust(t *testing.T) {
	plain := newDevice(t, swtpmtest.Options{})
	a := plain.attest(t, "n")
	if len(a.EKCertificate) != 0 {
		t.Fatal("an unmanufactured swtpm has an EK certificate")
	}
	res, err := (&tpmattest.Verifier{}).Verify(params(a), plain.pub(), qd("n"))
	if err != nil || res.EKCertified {
		t.Fatalf("no CAs, no certificate: %+v %v", res, err)
	}
	vendor := newDevice(t, swtpmtest.Options{EKCertificate: true})
	_, err = (&tpmattest.Verifier{CAs: cas(t, vendor.sim.CA)}).Verify(params(a), plain.pub(), qd("n"))
	wantReason(t, "no EK certificate with CAs configured", err, tpmattest.ReasonEKUntrusted)

	other := newDevice(t, swtpmtest.Options{EKCertificate: true}) // another vendor (CA)
	b := other.attest(t, "n")
	_, err = (&tpmattest.Verifier{CAs: cas(t, vendor.sim.CA)}).Verify(params(b), other.pub(), qd("n"))
	wantReason(t, "EK certified by another vendor", err, tpmattest.ReasonEKUntrusted)

	// A genuine certificate presented with another EK (the attacker's).
	p := params(a)
	vb := vendor.attest(t, "n")
	p.EKCertificate = vb.EKCertificate
	_, err = (&tpmattest.Verifier{CAs: cas(t, vendor.sim.CA)}).Verify(p, plain.pub(), qd("n"))
	wantReason(t, "certificate of another EK", err, tpmattest.ReasonEKUntrusted)
	_, err = (&tpmattest.Verifier{}).Verify(p, plain.pub(), qd("n"))
	wantReason(t, "certificate of another EK, no CAs", err, tpmattest.ReasonEKUntrusted)
}

// Evidence assembled from two TPMs, or about another key, is refused or
// cannot answer the challenge.
func TestAttestationAttacks(t *testing.T) {
	ca := swtpmtest.NewCA(t)
	victim := newDevice(t, swtpmtest.Options{EKCertificate: true, CA: ca})   // a genuine TPM of the vendor
	attacker := newDevice(t, swtpmtest.Options{EKCertificate: true, CA: ca}) // another genuine TPM
	v := &tpmattest.Verifier{CAs: cas(t, ca)}
	good := victim.attest(t, "n")
	evil := attacker.attest(t, "n")

	t.Run("certify of another key", func(t *testing.T) {
		other, err := victim.store.Create(context.Background(), "other")
		if err != nil {
			t.Fatal(err)
		}
		b, err := victim.store.AttestKey(context.Background(), other, qd("n"))
		if err != nil {
			t.Fatal(err)
		}
		p := params(good)
		p.CertifyInfo, p.Signature, p.AKPublic = b.CertifyInfo, b.Signature, b.AKPublic
		_, err = v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "certification of another key", err, tpmattest.ReasonKeyMismatch)
		// The other key's own evidence, for the device key.
		_, err = v.Verify(params(b), victim.pub(), qd("n"))
		wantReason(t, "another key's evidence", err, tpmattest.ReasonKeyMismatch)
	})
	t.Run("AK from another TPM", func(t *testing.T) {
		// The attacker's AK and certification of the attacker's key,
		// with the victim's key and EK.
		p := params(good)
		p.AKPublic, p.CertifyInfo, p.Signature = evil.AKPublic, evil.CertifyInfo, evil.Signature
		_, err := v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "certification by another TPM's AK", err, tpmattest.ReasonKeyMismatch)

		// The attacker's key, AK and certification (all genuine) with
		// the victim's certified EK: the evidence is consistent, but the
		// credential goes to the victim's EK, which the attacker's TPM
		// does not hold; and the victim's TPM does not hold the AK.
		p = params(evil)
		p.EKPublic, p.EKCertificate = good.EKPublic, good.EKCertificate
		res, err := v.Verify(p, attacker.pub(), qd("n"))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		secret := bytes.Repeat([]byte{7}, tpmattest.SecretSize)
		blob, enc, err := res.MakeCredential(secret)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := evil.ActivateCredential(context.Background(), blob, enc); err == nil || bytes.Equal(got, secret) {
			t.Fatalf("the attacker's TPM activated a credential for another TPM's EK: %v", err)
		}
		if got, err := good.ActivateCredential(context.Background(), blob, enc); err == nil || bytes.Equal(got, secret) {
			t.Fatalf("the victim's TPM activated a credential for another TPM's AK: %v", err)
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		p := params(good)
		p.Signature = bytes.Clone(p.Signature)
		p.Signature[len(p.Signature)-1] ^= 1
		_, err := v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "flipped signature bit", err, tpmattest.ReasonForged)
		// A certification signed by a software key claiming to be the AK.
		p = params(good)
		p.Signature = softwareSignature(t, p.CertifyInfo)
		_, err = v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "signature by another key", err, tpmattest.ReasonForged)
	})
	t.Run("tampered certification", func(t *testing.T) {
		p := params(good)
		p.CertifyInfo = bytes.Clone(p.CertifyInfo)
		p.CertifyInfo[len(p.CertifyInfo)-1] ^= 1 // inside the name
		_, err := v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "tampered certify_info", err, tpmattest.ReasonForged)
	})
	t.Run("stale", func(t *testing.T) {
		_, err := v.Verify(params(good), victim.pub(), qd("another nonce"))
		wantReason(t, "other qualifying data", err, tpmattest.ReasonStale)
	})
	t.Run("wrong device key", func(t *testing.T) {
		_, err := v.Verify(params(good), attacker.pub(), qd("n"))
		wantReason(t, "evidence for another key", err, tpmattest.ReasonKeyMismatch)
	})
	t.Run("exportable key claimed", func(t *testing.T) {
		// The public area rewritten without fixedTPM: its name changes,
		// and the attributes are refused before that.
		p := params(good)
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](p.KeyPublic)
		if err != nil {
			t.Fatal(err)
		}
		pub.ObjectAttributes.FixedTPM = false
		p.KeyPublic = tpm2.Marshal(pub)
		_, err = v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "key without fixedTPM", err, tpmattest.ReasonKeyMismatch)
	})
	t.Run("unrestricted AK", func(t *testing.T) {
		p := params(good)
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](p.AKPublic)
		if err != nil {
			t.Fatal(err)
		}
		pub.ObjectAttributes.Restricted = false
		p.AKPublic = tpm2.Marshal(pub)
		_, err = v.Verify(p, victim.pub(), qd("n"))
		wantReason(t, "unrestricted AK", err, tpmattest.ReasonAKInvalid)
	})
	t.Run("EK that signs", func(t *testing.T) {
		p := params(good)
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](p.EKPublic)
		if err != nil {
			t.Fatal(err)
		}
		pub.ObjectAttributes.Restricted = false
		p.EKPublic = tpm2.Marshal(pub)
		_, err = (&tpmattest.Verifier{}).Verify(p, victim.pub(), qd("n"))
		wantReason(t, "unrestricted EK", err, tpmattest.ReasonEKInvalid)
	})
}

// softwareSignature signs data with a new software P-256 key, in the
// TPMT_SIGNATURE encoding.
func softwareSignature(t *testing.T, data []byte) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256(data)
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		t.Fatal(err)
	}
	pad := func(b []byte) []byte { return append(make([]byte, 32-len(b)), b...) }
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
		&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: pad(r.Bytes())},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: pad(s.Bytes())}})})
}

// An AK or a device key made in software (a key the attacker holds, with
// the attributes of a TPM key written into its public area) can be loaded
// into a genuine TPM only as a public area, and the TPM authorises no use
// of such an object: it can neither activate the credential (so a
// software AK never passes the challenge) nor be certified by a genuine AK
// (so a software device key never gets a genuine certification). The
// server's checks rely on this.
func TestSoftwareKeysCannotPassForTPMKeys(t *testing.T) {
	sim := swtpmtest.Start(t, swtpmtest.Options{})
	tpm := dialTPM(t, sim.Addr)
	ek, err := retry(func() (*tpm2.CreatePrimaryResponse, error) {
		return tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(tpm)
	})
	if err != nil {
		t.Fatal(err)
	}
	ekPub, err := ek.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	srk, err := retry(func() (*tpm2.CreatePrimaryResponse, error) {
		return tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(tpm)
	})
	if err != nil {
		t.Fatal(err)
	}
	ak, err := retry(func() (*tpm2.CreateLoadedResponse, error) {
		return tpm2.CreateLoaded{ParentHandle: tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
			InPublic: tpm2.New2BTemplate(&akTemplate)}.Execute(tpm)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Three object slots: the EK, the AK and the object under test.
	tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(tpm)
	endorsement := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tpm transport.TPM, h tpm2.TPMISHPolicy, n tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: n}.Execute(tpm)
		return err
	})
	// An empty policy: satisfied by any policy session, if the TPM allowed
	// one for the object.
	anyPolicy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(transport.TPM, tpm2.TPMISHPolicy, tpm2.TPM2BNonce) error { return nil })
	for _, withPolicy := range []bool{false, true} {
		pub := softwarePublic(t, akTemplate, withPolicy)
		auth := tpm2.Session(tpm2.PasswordAuth(nil))
		if withPolicy {
			auth = anyPolicy
		}
		for _, hierarchy := range []tpm2.TPMHandle{tpm2.TPMRHOwner, tpm2.TPMRHEndorsement, tpm2.TPMRHNull} {
			loaded, err := retry(func() (*tpm2.LoadExternalResponse, error) {
				return tpm2.LoadExternal{InPublic: tpm2.New2B(pub), Hierarchy: hierarchy}.Execute(tpm)
			})
			if err != nil {
				if !errors.Is(err, tpm2.TPMRCAttributes) && !errors.Is(err, tpm2.TPMRCHierarchy) {
					t.Fatalf("software AK (policy %v) in hierarchy %#x: LoadExternal: %v", withPolicy, uint32(hierarchy), err)
				}
				t.Logf("software AK (policy %v) in hierarchy %#x: refused: %v", withPolicy, uint32(hierarchy), err)
				continue
			}
			name, _ := tpm2.ObjectName(&pub)
			secret := bytes.Repeat([]byte{9}, 32)
			blob, enc, err := tpm2.CreateCredential(rand.Reader, encKey, name.Buffer, secret)
			if err != nil {
				t.Fatal(err)
			}
			_, err = retry(func() (*tpm2.ActivateCredentialResponse, error) {
				return tpm2.ActivateCredential{
					ActivateHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: auth},
					KeyHandle:      tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: endorsement},
					CredentialBlob: tpm2.TPM2BIDObject{Buffer: blob},
					Secret:         tpm2.TPM2BEncryptedSecret{Buffer: enc},
				}.Execute(tpm)
			})
			if !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
				t.Fatalf("software AK (policy %v) in hierarchy %#x: activation %v, want TPM_RC_AUTH_UNAVAILABLE", withPolicy, uint32(hierarchy), err)
			}
			tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(tpm)
			// A software device key certified by the genuine AK.
			dev := softwarePublic(t, deviceTemplate, withPolicy)
			dl, err := retry(func() (*tpm2.LoadExternalResponse, error) {
				return tpm2.LoadExternal{InPublic: tpm2.New2B(dev), Hierarchy: hierarchy}.Execute(tpm)
			})
			if err != nil && !errors.Is(err, tpm2.TPMRCAttributes) && !errors.Is(err, tpm2.TPMRCHierarchy) {
				t.Fatalf("software device key (policy %v) in hierarchy %#x: LoadExternal: %v", withPolicy, uint32(hierarchy), err)
			}
			if err == nil {
				_, err = retry(func() (*tpm2.CertifyResponse, error) {
					return tpm2.Certify{
						ObjectHandle: tpm2.AuthHandle{Handle: dl.ObjectHandle, Name: dl.Name, Auth: auth},
						SignHandle:   tpm2.AuthHandle{Handle: ak.ObjectHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
						InScheme:     tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
					}.Execute(tpm)
				})
				if !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
					t.Fatalf("software device key (policy %v) in hierarchy %#x: certify %v, want TPM_RC_AUTH_UNAVAILABLE", withPolicy, uint32(hierarchy), err)
				}
				tpm2.FlushContext{FlushHandle: dl.ObjectHandle}.Execute(tpm)
			}
		}
	}
}

// The public areas of Ward's AK and device keys (the agent's templates).
var (
	akTemplate = tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			NoDA: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, CurveID: tpm2.TPMECCNistP256,
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
	deviceTemplate = func() tpm2.TPMTPublic {
		t := akTemplate
		t.ObjectAttributes.Restricted = false
		return t
	}()
)

// softwarePublic is template with the public key of a new software key
// (and, withPolicy, an admin policy that an empty policy session meets).
func softwarePublic(t *testing.T, template tpm2.TPMTPublic, withPolicy bool) tpm2.TPMTPublic {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := template
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))}})
	if withPolicy {
		pub.ObjectAttributes.AdminWithPolicy = true
		pub.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 32)}
	}
	return pub
}

// retry repeats a command the TPM asked to retry (TPM_RC_RETRY and other
// warnings that mean "not started").
func retry[T any](f func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if i == 20 || !(errors.Is(err, tpm2.TPMRCRetry) || errors.Is(err, tpm2.TPMRCYielded) || errors.Is(err, tpm2.TPMRCTesting)) {
			return v, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Malformed, oversized and non-canonical structures are refused as
// malformed; nothing panics.
func TestAttestationMalformed(t *testing.T) {
	d := newDevice(t, swtpmtest.Options{})
	good := params(d.attest(t, "n"))
	v := &tpmattest.Verifier{}
	if _, err := v.Verify(good, d.pub(), qd("n")); err != nil {
		t.Fatal(err)
	}
	fields := map[string]func(p *tpmattest.Params) *[]byte{
		"ek_public":         func(p *tpmattest.Params) *[]byte { return &p.EKPublic },
		"ak_public":         func(p *tpmattest.Params) *[]byte { return &p.AKPublic },
		"key_public":        func(p *tpmattest.Params) *[]byte { return &p.KeyPublic },
		"certify_info":      func(p *tpmattest.Params) *[]byte { return &p.CertifyInfo },
		"certify_signature": func(p *tpmattest.Params) *[]byte { return &p.Signature },
	}
	for name, field := range fields {
		for _, c := range []struct {
			what string
			mod  func([]byte) []byte
		}{
			{"empty", func([]byte) []byte { return nil }},
			{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
			{"trailing byte", func(b []byte) []byte { return append(bytes.Clone(b), 0) }},
			{"junk", func([]byte) []byte { return []byte("not a TPM structure at all") }},
			{"oversized", func([]byte) []byte { return bytes.Repeat([]byte{0x41}, 70000) }},
		} {
			p := *good
			f := field(&p)
			*f = c.mod(*f)
			_, err := v.Verify(&p, d.pub(), qd("n"))
			wantReason(t, name+" "+c.what, err, tpmattest.ReasonMalformed)
		}
	}
	p := *good
	p.EKCertificate = []byte("not DER")
	_, err := v.Verify(&p, d.pub(), qd("n"))
	wantReason(t, "junk certificate", err, tpmattest.ReasonEKUntrusted)
	p.EKCertificate = make([]byte, tpmattest.MaxEKCertificate+1)
	_, err = v.Verify(&p, d.pub(), qd("n"))
	wantReason(t, "oversized certificate", err, tpmattest.ReasonMalformed)
	_, err = v.Verify(nil, d.pub(), qd("n"))
	wantReason(t, "nil", err, tpmattest.ReasonMalformed)
}

func TestParseCAs(t *testing.T) {
	for _, c := range []struct{ name, pem, want string }{
		{"empty", "", "no self-signed root"},
		{"junk", "hello", "not a PEM block"},
		{"key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "only CERTIFICATE"},
		{"bad certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1"},
	} {
		if _, err := tpmattest.ParseCAs([]byte(c.pem)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// dialTPM is a raw connection to swtpm's command channel.
func dialTPM(t *testing.T, addr string) transport.TPM {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return rawTPM{c}
}

type rawTPM struct{ c net.Conn }

func (r rawTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := r.c.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r.c, hdr); err != nil {
		return nil, err
	}
	rsp := make([]byte, binary.BigEndian.Uint32(hdr[2:6]))
	copy(rsp, hdr)
	_, err := io.ReadFull(r.c, rsp[10:])
	return rsp, err
}
