package keystore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Attester is a Store that can prove to a server where its keys live:
// TPM 2.0 key attestation ([TPMStore]). A FileStore cannot, and a server
// must then treat the key storage as the agent's claim.
type Attester interface {
	// AttestKey certifies k, a key of this store, with a new attestation
	// key (AK) of the same TPM over qualifyingData (at most 32 bytes, a
	// digest of the server's nonce). The result goes to the server; its
	// ActivateCredential answers the server's challenge.
	AttestKey(ctx context.Context, k Key, qualifyingData []byte) (*KeyAttestation, error)
}

var _ Attester = (*TPMStore)(nil)

// KeyAttestation is the evidence that a key lives in a TPM, in the TPM's
// own encodings:
//
//   - the key's public area says it was generated inside the TPM and can
//     never leave it (fixedTPM, fixedParent, sensitiveDataOrigin);
//   - TPM2_Certify, signed by an attestation key (AK), says that this
//     key was loaded in the AK's TPM. The AK is a restricted signing key,
//     which signs only structures the TPM itself produced;
//   - the server then proves that the AK lives in the same TPM as the
//     endorsement key (EK), whose certificate names the TPM's vendor:
//     it encrypts a secret to the EK, bound to the AK's name
//     (TPM2_MakeCredential), and only that TPM can recover it, with the AK
//     loaded (ActivateCredential).
//
// The AK exists only in memory (its blobs, encrypted by the TPM) for this
// one attestation. A KeyAttestation holds no private key material.
type KeyAttestation struct {
	EKPublic      []byte // TPMT_PUBLIC of the endorsement key
	EKCertificate []byte // DER; nil when the TPM holds none
	AKPublic      []byte // TPMT_PUBLIC of the attestation key
	KeyPublic     []byte // TPMT_PUBLIC of the attested key
	CertifyInfo   []byte // TPMS_ATTEST produced by TPM2_Certify
	Signature     []byte // TPMT_SIGNATURE by the AK over CertifyInfo

	store     *TPMStore
	akPublic  tpm2.TPM2BPublic
	akPrivate tpm2.TPM2BPrivate
	ek        ekSource
	mu        sync.Mutex
	activated bool
}

// Well-known locations of the RSA-2048 endorsement key (TCG EK Credential
// Profile): its certificate in NV and the handle where platforms persist
// the key.
const (
	ekCertNVIndexRSA  = tpm2.TPMHandle(0x01c00002)
	ekPersistentRSA   = tpm2.TPMHandle(0x81010001)
	maxEKCertificate  = 4096
	nvReadChunk       = 512
	maxQualifyingData = 32
)

// ekSource says how to get the EK loaded: a persistent handle, or the
// standard template (the TPM derives the same key from its endorsement
// seed every time).
type ekSource struct {
	persistent tpm2.TPMHandle // 0: create from the template
	name       tpm2.TPM2BName
}

// akTemplate is the attestation key: ECDSA P-256, restricted to signing
// what the TPM produces, fixed to this TPM.
func akTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCNistP256,
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// AttestKey implements Attester: it creates an AK under the storage root
// key, certifies k with it (TPM2_Certify over qualifyingData) and reads
// the EK's public area and certificate.
func (s *TPMStore) AttestKey(ctx context.Context, k Key, qualifyingData []byte) (*KeyAttestation, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	tk, ok := k.(*tpmKey)
	if !ok || tk.store != s {
		return nil, errors.New("keystore: attest: the key is not a key of this TPM store")
	}
	if len(qualifyingData) > maxQualifyingData {
		return nil, fmt.Errorf("keystore: attest: qualifying data of %d bytes (at most %d)", len(qualifyingData), maxQualifyingData)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	a := &KeyAttestation{store: s, KeyPublic: tpm2.Marshal(mustContents(tk.public))}
	err := s.withRetry(func() error {
		srk, err := s.ensureSRK()
		if err != nil {
			return err
		}
		ak, err := tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
			InPublic:     tpm2.New2B(akTemplate()),
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("create attestation key: %w", err)
		}
		a.akPublic, a.akPrivate = ak.OutPublic, ak.OutPrivate
		key, err := s.loadKey(tk)
		if err != nil {
			return fmt.Errorf("load the key: %w", err)
		}
		akh, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
			InPrivate:    a.akPrivate,
			InPublic:     a.akPublic,
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("load attestation key: %w", err)
		}
		defer s.flush(akh.ObjectHandle)
		cert, err := tpm2.Certify{
			ObjectHandle:   tpm2.AuthHandle{Handle: key.Handle, Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
			SignHandle:     tpm2.AuthHandle{Handle: akh.ObjectHandle, Name: akh.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("certify: %w", err)
		}
		a.CertifyInfo = cert.CertifyInfo.Bytes()
		a.Signature = tpm2.Marshal(cert.Signature)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: attest: %w", err)
	}
	a.AKPublic = tpm2.Marshal(mustContents(a.akPublic))
	if err := s.readEK(a); err != nil {
		return nil, fmt.Errorf("keystore: attest: %w", err)
	}
	return a, nil
}

func mustContents(p tpm2.TPM2BPublic) *tpm2.TPMTPublic {
	c, err := p.Contents()
	if err != nil {
		panic("keystore: a public area this store checked does not decode: " + err.Error())
	}
	return c
}

// readEK finds the RSA endorsement key (persisted, or from the standard
// template) and its certificate, if the TPM holds one. The caller holds
// s.mu.
func (s *TPMStore) readEK(a *KeyAttestation) error {
	if rp, err := (tpm2.ReadPublic{ObjectHandle: ekPersistentRSA}).Execute(s.tpm); err == nil {
		if pub, err := rp.OutPublic.Contents(); err == nil && pub.Type == tpm2.TPMAlgRSA &&
			pub.ObjectAttributes.Restricted && pub.ObjectAttributes.Decrypt && pub.ObjectAttributes.FixedTPM {
			a.ek = ekSource{persistent: ekPersistentRSA, name: rp.Name}
			a.EKPublic = tpm2.Marshal(pub)
		}
	}
	if a.EKPublic == nil {
		ek, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("create endorsement key: %w", err)
		}
		s.flush(ek.ObjectHandle)
		a.ek = ekSource{name: ek.Name}
		a.EKPublic = tpm2.Marshal(mustContents(ek.OutPublic))
	}
	cert, err := s.readNV(ekCertNVIndexRSA, maxEKCertificate)
	switch {
	case err == nil:
		a.EKCertificate = trimDER(cert)
	case errors.Is(err, tpm2.TPMRCHandle), errors.Is(err, errNoNV):
		// No certificate: a server that requires one says so.
	default:
		return fmt.Errorf("read the EK certificate: %w", err)
	}
	return nil
}

var errNoNV = errors.New("no such NV index")

// readNV reads a whole NV index (authorised by the index itself, empty
// password, as EK certificates are).
func (s *TPMStore) readNV(index tpm2.TPMHandle, limit int) ([]byte, error) {
	rp, err := (tpm2.NVReadPublic{NVIndex: index}).Execute(s.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, errNoNV
		}
		return nil, err
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	size := int(pub.DataSize)
	if size > limit {
		return nil, fmt.Errorf("NV index %#x holds %d bytes (at most %d)", uint32(index), size, limit)
	}
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(nvReadChunk, size-len(out))
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: rp.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(out)),
		}.Execute(s.tpm)
		if err != nil {
			return nil, err
		}
		if len(r.Data.Buffer) == 0 {
			return nil, errors.New("empty NV read")
		}
		out = append(out, r.Data.Buffer...)
	}
	return out[:size], nil
}

// trimDER cuts the padding some TPMs leave after the certificate in its NV
// index; data that is not one DER SEQUENCE is returned as it is (the
// server refuses it).
func trimDER(b []byte) []byte {
	in := cryptobyte.String(b)
	var seq cryptobyte.String
	start := len(in)
	if !in.ReadASN1Element(&seq, asn1.SEQUENCE) {
		return b
	}
	if _, err := x509.ParseCertificate(seq); err != nil {
		return b
	}
	return b[:start-len(in)]
}

// ActivateCredential answers the server's challenge: it loads the AK and
// the EK and has the TPM decrypt the credential (TPM2_ActivateCredential),
// which it does only when the AK the credential names is loaded in the
// TPM holding the EK. It returns the secret, to send back to the server.
// A KeyAttestation answers one challenge.
func (a *KeyAttestation) ActivateCredential(ctx context.Context, credentialBlob, encryptedSecret []byte) ([]byte, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	if len(credentialBlob) == 0 || len(credentialBlob) > 1024 || len(encryptedSecret) == 0 || len(encryptedSecret) > 1024 {
		return nil, errors.New("keystore: activate credential: malformed challenge")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.activated {
		return nil, errors.New("keystore: activate credential: this attestation answered its challenge already")
	}
	s := a.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var secret []byte
	err := s.withRetry(func() error {
		// Room for the SRK, the AK and the EK on a TPM with three object
		// slots.
		if s.cur != nil {
			s.flush(s.curH.Handle)
			s.cur = nil
		}
		srk, err := s.ensureSRK()
		if err != nil {
			return err
		}
		akh, err := tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
			InPrivate:    a.akPrivate,
			InPublic:     a.akPublic,
		}.Execute(s.tpm)
		if err != nil {
			return fmt.Errorf("load attestation key: %w", err)
		}
		defer s.flush(akh.ObjectHandle)
		ek := tpm2.NamedHandle{Handle: a.ek.persistent, Name: a.ek.name}
		if a.ek.persistent == 0 {
			rsp, err := tpm2.CreatePrimary{
				PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
				InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
			}.Execute(s.tpm)
			if err != nil {
				return fmt.Errorf("create endorsement key: %w", err)
			}
			defer s.flush(rsp.ObjectHandle)
			ek = tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
		}
		// The EK is usable only through its policy: a secret of the
		// endorsement hierarchy (empty on a TPM nobody took ownership of).
		rsp, err := tpm2.ActivateCredential{
			ActivateHandle: tpm2.AuthHandle{Handle: akh.ObjectHandle, Name: akh.Name, Auth: tpm2.PasswordAuth(nil)},
			KeyHandle: tpm2.AuthHandle{Handle: ek.Handle, Name: ek.Name,
				Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, endorsementPolicy)},
			CredentialBlob: tpm2.TPM2BIDObject{Buffer: credentialBlob},
			Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encryptedSecret},
		}.Execute(s.tpm)
		if err != nil {
			return err
		}
		secret = rsp.CertInfo.Buffer
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: activate credential: %w", err)
	}
	a.activated = true
	return secret, nil
}

// endorsementPolicy satisfies the standard EK policy:
// PolicySecret(TPM_RH_ENDORSEMENT).
func endorsementPolicy(t transport.TPM, handle tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: handle,
		NonceTPM:      nonceTPM,
	}.Execute(t)
	return err
}
