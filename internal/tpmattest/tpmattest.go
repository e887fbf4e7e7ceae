// Package tpmattest verifies TPM 2.0 key attestation on the server: the
// evidence a device sends that its key was generated inside a TPM and can
// never leave it, and the credential-activation challenge that proves the
// attestation key (AK) lives in the same TPM as the endorsement key (EK).
//
// The evidence (Params) is in the TPM's own encodings: the public areas
// (TPMT_PUBLIC) of the EK, the AK and the device key, the TPMS_ATTEST that
// TPM2_Certify produced for the device key, signed by the AK (TPMT_SIGNATURE),
// and optionally the EK certificate (DER). Verify checks:
//
//   - every structure decodes exactly (canonical encoding, no trailing
//     bytes, bounded sizes), so that the attributes checked are those of
//     the object the TPM names: an object's name is a digest of its public
//     area;
//   - the device key is a P-256 signing key that was generated in the TPM
//     and cannot be duplicated (fixedTPM, fixedParent, sensitiveDataOrigin)
//     and is the key being registered;
//   - the AK is a restricted signing key fixed to its TPM: it signs only
//     structures the TPM produced (TPM_GENERATED), so its signature over a
//     certification of the device key proves that the key was loaded in
//     the AK's TPM;
//   - the certification names the device key and carries the server's
//     qualifying data (freshness);
//   - the EK is a restricted decryption key of the TPM; when vendor CAs are
//     configured, its certificate must chain to one of them and certify
//     this very key.
//
// What Verify cannot see is whether the AK is in the EK's TPM: the server
// proves it with MakeCredential (TPM2_MakeCredential in software: a secret
// encrypted to the EK and bound to the AK's name). Only the TPM holding the
// EK, with that AK loaded, recovers the secret (TPM2_ActivateCredential).
//
// Without configured CAs the EK is whatever key the device presented: the
// chain EK - AK - device key holds, but a software TPM (or an emulation of
// one) passes too. Result.EKCertified says which case applies.
package tpmattest

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Size limits of the evidence. A TPMT_PUBLIC of an RSA-2048 key is about
// 280 bytes; EK certificates are 1 to 2 KiB.
const (
	MaxPublicArea    = 1024
	MaxCertifyInfo   = 1024
	MaxSignature     = 512
	MaxEKCertificate = 8192
	// SecretSize is the size of the credential the server makes.
	SecretSize = 32
)

// Params is the attestation evidence a device sends.
type Params struct {
	EKPublic      []byte // TPMT_PUBLIC of the endorsement key
	EKCertificate []byte // DER; may be empty
	AKPublic      []byte // TPMT_PUBLIC of the attestation key
	KeyPublic     []byte // TPMT_PUBLIC of the device key
	CertifyInfo   []byte // TPMS_ATTEST from TPM2_Certify of the device key
	Signature     []byte // TPMT_SIGNATURE by the AK over CertifyInfo
}

// Reasons an attestation is refused (Error.Reason). Never rename one.
const (
	ReasonMalformed   = "malformed"    // a structure does not decode, is oversized or not canonical
	ReasonEKUntrusted = "ek_untrusted" // no EK certificate, or one that does not chain to a configured CA or certify this EK
	ReasonEKInvalid   = "ek_invalid"   // the EK is not a TPM's restricted decryption key
	ReasonAKInvalid   = "ak_invalid"   // the AK is not a restricted signing key fixed to its TPM
	ReasonKeyMismatch = "key_mismatch" // the certified key is not the device key, or not a non-exportable TPM key
	ReasonForged      = "forged"       // the certification is not signed by the AK, or not produced by a TPM
	ReasonStale       = "stale"        // the certification does not carry the server's qualifying data
)

// Error is a refused attestation. Message is safe to show to the device.
type Error struct {
	Reason  string
	Message string
	Err     error // cause, for logs
}

func (e *Error) Error() string { return "tpm attestation refused (" + e.Reason + "): " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

func refuse(reason, msg string, err error) *Error {
	return &Error{Reason: reason, Message: msg, Err: err}
}

// CAs are the certificate authorities trusted to issue EK certificates
// (the TPM vendors').
type CAs struct {
	roots, intermediates *x509.CertPool
	count                int
}

// ParseCAs reads PEM certificates: the self-signed ones are roots, the
// others intermediates that count only when they chain to a root of the
// same bundle. It needs at least one root.
func ParseCAs(pemBytes []byte) (*CAs, error) {
	c := &CAs{roots: x509.NewCertPool(), intermediates: x509.NewCertPool()}
	roots := 0
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, errors.New("tpmattest: CA bundle: data that is not a PEM block")
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("tpmattest: CA bundle: a %q PEM block; only CERTIFICATE blocks are allowed", b.Type)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tpmattest: CA bundle: certificate %d: %w", c.count+1, err)
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("tpmattest: CA bundle: certificate %d (%s) is not a CA certificate", c.count+1, cert.Subject)
		}
		c.count++
		if bytes.Equal(cert.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(cert) == nil {
			c.roots.AddCert(cert)
			roots++
		} else {
			c.intermediates.AddCert(cert)
		}
	}
	if roots == 0 {
		return nil, errors.New("tpmattest: CA bundle: no self-signed root certificate")
	}
	return c, nil
}

// Verifier verifies attestation evidence.
type Verifier struct {
	// CAs, when set, are the only vendors whose TPMs are trusted: the EK
	// certificate is required and must chain to one of them. Nil accepts
	// any EK (Result.EKCertified false).
	CAs *CAs
	// Now is the clock for certificate validity (default time.Now).
	Now func() time.Time
}

// Result is a verified attestation, ready for the credential challenge.
type Result struct {
	// EKFingerprint is the hex SHA-256 of the EK's SubjectPublicKeyInfo:
	// it identifies the TPM.
	EKFingerprint string
	// EKCertified: the EK certificate chains to a configured CA.
	EKCertified bool
	// EKIssuer is the issuer of a chained EK certificate.
	EKIssuer string

	ek     tpm2.LabeledEncapsulationKey
	akName []byte
}

// Verify checks p for the device key key and the qualifying data the
// server expects in the certification. A refusal is an *Error.
func (v *Verifier) Verify(p *Params, key *ecdsa.PublicKey, qualifyingData []byte) (_ *Result, err error) {
	// go-tpm's decoder is generic reflection over untrusted bytes: a
	// panic in it is a malformed structure, not a server failure.
	defer func() {
		if r := recover(); r != nil {
			err = refuse(ReasonMalformed, "a TPM structure could not be decoded", fmt.Errorf("tpmattest: decoder panic: %v", r))
		}
	}()
	if p == nil || key == nil {
		return nil, refuse(ReasonMalformed, "attestation parameters are missing", nil)
	}
	for _, f := range []struct {
		name string
		b    []byte
		max  int
	}{
		{"ek_public", p.EKPublic, MaxPublicArea}, {"ak_public", p.AKPublic, MaxPublicArea},
		{"key_public", p.KeyPublic, MaxPublicArea}, {"certify_info", p.CertifyInfo, MaxCertifyInfo},
		{"certify_signature", p.Signature, MaxSignature},
	} {
		if len(f.b) == 0 {
			return nil, refuse(ReasonMalformed, f.name+" is required", nil)
		}
		if len(f.b) > f.max {
			return nil, refuse(ReasonMalformed, fmt.Sprintf("%s is larger than %d bytes", f.name, f.max), nil)
		}
	}
	if len(p.EKCertificate) > MaxEKCertificate {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("ek_certificate is larger than %d bytes", MaxEKCertificate), nil)
	}
	ekPub, err := strict[tpm2.TPMTPublic]("ek_public", p.EKPublic)
	if err != nil {
		return nil, err
	}
	akPub, err := strict[tpm2.TPMTPublic]("ak_public", p.AKPublic)
	if err != nil {
		return nil, err
	}
	keyPub, err := strict[tpm2.TPMTPublic]("key_public", p.KeyPublic)
	if err != nil {
		return nil, err
	}
	attest, err := strict[tpm2.TPMSAttest]("certify_info", p.CertifyInfo)
	if err != nil {
		return nil, err
	}
	sig, err := strict[tpm2.TPMTSignature]("certify_signature", p.Signature)
	if err != nil {
		return nil, err
	}

	// The device key: a P-256 signing key born in the TPM, never to leave
	// it, and the one being registered.
	if err := checkDeviceKey(keyPub, key); err != nil {
		return nil, err
	}
	keyName, err := name(keyPub.NameAlg, p.KeyPublic)
	if err != nil {
		return nil, refuse(ReasonKeyMismatch, "the device key's name algorithm must be SHA-256", err)
	}

	// The AK: a restricted signing key of its TPM, ECDSA P-256 / SHA-256.
	akKey, err := checkAK(akPub)
	if err != nil {
		return nil, err
	}
	akName, err := name(akPub.NameAlg, p.AKPublic)
	if err != nil {
		return nil, refuse(ReasonAKInvalid, "the attestation key's name algorithm must be SHA-256", err)
	}

	// The certification: signed by the AK, produced by the TPM, about the
	// device key, over the server's qualifying data.
	if err := checkSignature(akKey, sig, p.CertifyInfo); err != nil {
		return nil, err
	}
	if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TPMSTAttestCertify {
		return nil, refuse(ReasonForged, "certify_info is not a certification produced by a TPM", nil)
	}
	ci, err := attest.Attested.Certify()
	if err != nil {
		return nil, refuse(ReasonForged, "certify_info is not a certification produced by a TPM", err)
	}
	if !bytes.Equal(ci.Name.Buffer, keyName) {
		return nil, refuse(ReasonKeyMismatch, "the certification is about another key than key_public", nil)
	}
	if len(qualifyingData) == 0 || !bytes.Equal(attest.ExtraData.Buffer, qualifyingData) {
		return nil, refuse(ReasonStale, "the certification does not carry the qualifying data of this server's nonce", nil)
	}

	// The EK: a storage key the server can encrypt the credential to, and
	// when vendors are configured, one they certified.
	ek, fp, err := checkEK(ekPub)
	if err != nil {
		return nil, err
	}
	res := &Result{EKFingerprint: fp, ek: ek, akName: akName}
	if v.CAs != nil {
		issuer, err := v.checkEKCertificate(p.EKCertificate, ekPub)
		if err != nil {
			return nil, err
		}
		res.EKCertified, res.EKIssuer = true, issuer
	} else if len(p.EKCertificate) > 0 {
		// Not trusted, but it must at least be this EK's certificate.
		if _, err := parseEKCertificate(p.EKCertificate, ekPub); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// strict decodes a TPM structure and requires its canonical encoding: the
// bytes are exactly what encoding the decoded value gives back (no
// trailing data, no alternative encodings), so that a name computed over
// the bytes is the name of what was checked.
func strict[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](field string, raw []byte) (*T, error) {
	v, err := tpm2.Unmarshal[T, P](raw)
	if err != nil {
		return nil, refuse(ReasonMalformed, field+" is not a valid TPM structure", err)
	}
	if !bytes.Equal(tpm2.Marshal(*v), raw) {
		return nil, refuse(ReasonMalformed, field+" is not in canonical form (or has trailing bytes)", nil)
	}
	return v, nil
}

// name is the TPM name of an object: nameAlg || H(public area). Only
// SHA-256 names are accepted.
func name(alg tpm2.TPMIAlgHash, public []byte) ([]byte, error) {
	if alg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("name algorithm %#x", uint16(alg))
	}
	h := sha256.Sum256(public)
	return append([]byte{byte(alg >> 8), byte(alg)}, h[:]...), nil
}

// eccP256 returns the P-256 public key of an ECC public area; the point
// must be on the curve.
func eccP256(pub *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, err
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, errors.New("not P-256")
	}
	pt, err := pub.Unique.ECC()
	if err != nil {
		return nil, err
	}
	x, y := pt.X.Buffer, pt.Y.Buffer
	if len(x) == 0 || len(x) > 32 || len(y) == 0 || len(y) > 32 {
		return nil, errors.New("coordinates of the wrong size")
	}
	raw := make([]byte, 65)
	raw[0] = 4
	copy(raw[1+32-len(x):33], x)
	copy(raw[33+32-len(y):], y)
	if _, err := ecdh.P256().NewPublicKey(raw); err != nil {
		return nil, errors.New("point not on the curve")
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
}

func checkDeviceKey(pub *tpm2.TPMTPublic, want *ecdsa.PublicKey) error {
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgECC || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Decrypt || a.Restricted {
		return refuse(ReasonKeyMismatch, "key_public is not a signing key generated in the TPM that cannot leave it (fixedTPM, fixedParent, sensitiveDataOrigin)", nil)
	}
	k, err := eccP256(pub)
	if err != nil {
		return refuse(ReasonKeyMismatch, "key_public is not a valid P-256 key", err)
	}
	if !k.Equal(want) {
		return refuse(ReasonKeyMismatch, "key_public is not the key being registered", nil)
	}
	return nil
}

func checkAK(pub *tpm2.TPMTPublic) (*ecdsa.PublicKey, error) {
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgECC || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.SignEncrypt || a.Decrypt {
		return nil, refuse(ReasonAKInvalid, "ak_public is not a restricted signing key fixed to its TPM", nil)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, refuse(ReasonAKInvalid, "ak_public is not an ECC key", err)
	}
	if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, refuse(ReasonAKInvalid, "the attestation key must use ECDSA with SHA-256", nil)
	}
	if d, err := parms.Scheme.Details.ECDSA(); err != nil || d.HashAlg != tpm2.TPMAlgSHA256 {
		return nil, refuse(ReasonAKInvalid, "the attestation key must use ECDSA with SHA-256", err)
	}
	k, err := eccP256(pub)
	if err != nil {
		return nil, refuse(ReasonAKInvalid, "ak_public is not a valid P-256 key", err)
	}
	return k, nil
}

func checkSignature(ak *ecdsa.PublicKey, sig *tpm2.TPMTSignature, signed []byte) error {
	if sig.SigAlg != tpm2.TPMAlgECDSA {
		return refuse(ReasonForged, "the certification is not signed with ECDSA", nil)
	}
	s, err := sig.Signature.ECDSA()
	if err != nil || s.Hash != tpm2.TPMAlgSHA256 {
		return refuse(ReasonForged, "the certification is not signed with ECDSA over SHA-256", err)
	}
	r, ss := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
	der, err := asn1.Marshal(struct{ R, S *big.Int }{r, ss})
	if err != nil {
		return refuse(ReasonForged, "the certification's signature is malformed", err)
	}
	digest := sha256.Sum256(signed)
	if !ecdsa.VerifyASN1(ak, digest[:], der) {
		return refuse(ReasonForged, "the certification's signature does not verify with the attestation key", nil)
	}
	return nil
}

// checkEK accepts the EK templates of the TCG EK Credential Profile:
// RSA-2048 or ECC P-256 / P-384, restricted decryption keys of the TPM.
func checkEK(pub *tpm2.TPMTPublic) (tpm2.LabeledEncapsulationKey, string, error) {
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return nil, "", refuse(ReasonEKInvalid, "ek_public is not a restricted decryption key fixed to its TPM", nil)
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 && pub.NameAlg != tpm2.TPMAlgSHA384 {
		return nil, "", refuse(ReasonEKInvalid, "the endorsement key's name algorithm must be SHA-256 or SHA-384", nil)
	}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, "", refuse(ReasonEKInvalid, "ek_public has no RSA parameters", err)
		}
		n, err := pub.Unique.RSA()
		if err != nil || parms.KeyBits != 2048 || len(n.Buffer) != 256 || n.Buffer[0]&0x80 == 0 ||
			(parms.Exponent != 0 && parms.Exponent != 65537) {
			return nil, "", refuse(ReasonEKInvalid, "the endorsement key must be RSA-2048 with exponent 65537", err)
		}
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil || (parms.CurveID != tpm2.TPMECCNistP256 && parms.CurveID != tpm2.TPMECCNistP384) {
			return nil, "", refuse(ReasonEKInvalid, "an ECC endorsement key must be on P-256 or P-384", err)
		}
	default:
		return nil, "", refuse(ReasonEKInvalid, "the endorsement key must be RSA or ECC", nil)
	}
	sym := func() *tpm2.TPMTSymDefObject {
		if pub.Type == tpm2.TPMAlgRSA {
			p, _ := pub.Parameters.RSADetail()
			return &p.Symmetric
		}
		p, _ := pub.Parameters.ECCDetail()
		return &p.Symmetric
	}()
	if sym.Algorithm != tpm2.TPMAlgAES {
		return nil, "", refuse(ReasonEKInvalid, "the endorsement key must protect credentials with AES", nil)
	}
	ek, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return nil, "", refuse(ReasonEKInvalid, "ek_public cannot receive a credential", err)
	}
	cp, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, "", refuse(ReasonEKInvalid, "ek_public has no usable public key", err)
	}
	if e, ok := cp.(*ecdsa.PublicKey); ok {
		if _, err := e.ECDH(); err != nil {
			return nil, "", refuse(ReasonEKInvalid, "the endorsement key's point is not on its curve", err)
		}
	}
	spki, err := x509.MarshalPKIXPublicKey(cp)
	if err != nil {
		return nil, "", refuse(ReasonEKInvalid, "ek_public has no usable public key", err)
	}
	fp := sha256.Sum256(spki)
	return ek, hex.EncodeToString(fp[:]), nil
}

// oidSAN is the subject alternative name extension. EK certificates put
// the TPM's manufacturer, model and version there as a directory name,
// which crypto/x509 does not parse; the TCG profile marks it critical.
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// parseEKCertificate parses an EK certificate and checks that it
// certifies the EK.
func parseEKCertificate(der []byte, ek *tpm2.TPMTPublic) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, refuse(ReasonEKUntrusted, "ek_certificate is not a valid X.509 certificate", err)
	}
	var unhandled []asn1.ObjectIdentifier
	for _, o := range cert.UnhandledCriticalExtensions {
		if !o.Equal(oidSAN) {
			unhandled = append(unhandled, o)
		}
	}
	cert.UnhandledCriticalExtensions = unhandled
	want, err := tpm2.Pub(*ek)
	if err != nil {
		return nil, refuse(ReasonEKInvalid, "ek_public has no usable public key", err)
	}
	same := false
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		same = k.Equal(want)
	case *ecdsa.PublicKey:
		same = k.Equal(want)
	}
	if !same {
		return nil, refuse(ReasonEKUntrusted, "ek_certificate certifies another key than ek_public", nil)
	}
	return cert, nil
}

// checkEKCertificate requires an EK certificate for ek that chains to a
// configured CA and returns its issuer.
func (v *Verifier) checkEKCertificate(der []byte, ek *tpm2.TPMTPublic) (string, error) {
	if len(der) == 0 {
		return "", refuse(ReasonEKUntrusted, "this server accepts only TPMs whose endorsement key has a vendor certificate, and ek_certificate is missing", nil)
	}
	cert, err := parseEKCertificate(der, ek)
	if err != nil {
		return "", err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: v.CAs.roots, Intermediates: v.CAs.intermediates,
		CurrentTime: now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", refuse(ReasonEKUntrusted, "ek_certificate does not chain to a TPM vendor CA this server trusts", err)
	}
	return cert.Issuer.String(), nil
}

// MakeCredential is TPM2_MakeCredential: it encrypts secret to the EK,
// bound to the AK's name. It returns the credential blob (the contents of
// a TPM2B_ID_OBJECT) and the encrypted seed (of a TPM2B_ENCRYPTED_SECRET)
// for TPM2_ActivateCredential.
func (r *Result) MakeCredential(secret []byte) (credentialBlob, encryptedSecret []byte, err error) {
	if len(secret) != SecretSize {
		return nil, nil, fmt.Errorf("tpmattest: the credential must be %d bytes", SecretSize)
	}
	return tpm2.CreateCredential(rand.Reader, r.ek, r.akName, secret)
}
