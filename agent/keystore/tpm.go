package keystore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPMStore keeps P-256 signing keys inside a TPM 2.0.
//
// Each key is created under the storage root key (SRK) of the owner
// hierarchy, derived from the TCG reference ECC P-256 SRK template, so
// the same TPM re-creates the same SRK after a reboot without anything
// persisted in TPM NV memory. The key's attributes are fixedTPM,
// fixedParent, sensitiveDataOrigin, userWithAuth, noDA and sign
// (not decrypt, not restricted) with the ECDSA-SHA256 scheme: the TPM
// generated the private scalar, never releases it and refuses to
// duplicate the key to another parent or TPM.
//
// What is saved (Dir/NAME.tpm, mode 0600, directory 0700) is the key's
// public area and its private blob, which the TPM encrypted and
// integrity-protected with the SRK: it can only be loaded back into the
// same TPM. The key has an empty authorization value; anyone who can
// talk to the TPM as this user and read the blob can sign with it, which
// is the same reach as a FileStore key but without the possibility of
// copying it to another machine.
//
// Commands travel unencrypted to the TPM (no parameter-encryption
// session): nothing secret is exchanged, as the private key never leaves
// the TPM and the key has no password.
//
// A TPMStore serialises its TPM commands and keeps at most two transient
// objects loaded (the SRK and the most recently used key), so it also
// works on a TPM without a resource manager, such as a simulator.
type TPMStore struct {
	// Dir holds the key blobs; "" means DefaultDir(KindTPM). Set it
	// before the first call.
	Dir string

	mu     sync.Mutex
	tpm    transport.TPMCloser
	closed bool
	srk    *tpm2.NamedHandle // nil until needed
	cur    *tpmKey           // key whose object is loaded, or nil
	curH   tpm2.NamedHandle
}

var _ Store = (*TPMStore)(nil)

// NewTPMStore returns a store that talks to the TPM through t and keeps
// its blobs in dir ("" for DefaultDir(KindTPM)). The store owns t and
// closes it in Close.
func NewTPMStore(t transport.TPMCloser, dir string) *TPMStore {
	return &TPMStore{Dir: dir, tpm: retryTPM{t}}
}

// TPM warnings that mean the command was not started and should simply
// be sent again (TPM 2.0 Part 2, TPM_RC): TPM_RC_RETRY, TPM_RC_YIELDED,
// TPM_RC_TESTING.
const (
	rcRetry   = 0x922
	rcYielded = 0x908
	rcTesting = 0x90a
)

// retryTPM sends a command again, a few times, while the TPM answers that
// it did not start it.
type retryTPM struct{ transport.TPMCloser }

func (r retryTPM) Send(cmd []byte) ([]byte, error) {
	for i := 0; ; i++ {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil || len(rsp) < 10 || i == 20 {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			time.Sleep(time.Duration(i+1) * 10 * time.Millisecond)
		default:
			return rsp, nil
		}
	}
}

// OpenTPM opens the TPM character device at path (DefaultTPMPath, the
// kernel resource manager, is the right choice on Linux), checks that it
// answers, and returns a store with the default directory.
func OpenTPM(path string) (*TPMStore, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("keystore: open TPM: %w", err)
	}
	t := transport.FromReadWriteCloser(f)
	if err := probe(t); err != nil {
		t.Close()
		return nil, err
	}
	return NewTPMStore(t, ""), nil
}

// probe checks that the TPM answers a harmless command.
func probe(t transport.TPM) error {
	if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(t); err != nil {
		return fmt.Errorf("keystore: TPM does not answer: %w", err)
	}
	return nil
}

// Kind returns KindTPM.
func (s *TPMStore) Kind() string { return KindTPM }

// Close flushes the store's transient objects and closes the TPM
// connection.
func (s *TPMStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.flushAll()
	return s.tpm.Close()
}

func (s *TPMStore) path(name string) (string, error) { return keyFile(s.Dir, KindTPM, name, ".tpm") }

// PEM block types of a TPM key file.
const (
	pemTPMPublic  = "WARD TPM2B PUBLIC"
	pemTPMPrivate = "WARD TPM2B PRIVATE"
)

// signingTemplate is the public template of device keys.
func signingTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256,
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// Create makes a non-exportable P-256 signing key in the TPM and saves
// its public area and encrypted private blob as Dir/NAME.tpm.
func (s *TPMStore) Create(ctx context.Context, name string) (Key, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	path, err := s.path(name)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var rsp *tpm2.CreateResponse
	err = s.withSRK(func(srk tpm2.NamedHandle) error {
		var err error
		rsp, err = tpm2.Create{
			ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
			InPublic:     tpm2.New2B(signingTemplate()),
		}.Execute(s.tpm)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: TPM create key: %w", err)
	}
	k, err := s.newKey(name, rsp.OutPublic, rsp.OutPrivate)
	if err != nil {
		return nil, err
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: pemTPMPublic, Bytes: tpm2.Marshal(rsp.OutPublic)}),
		pem.EncodeToMemory(&pem.Block{Type: pemTPMPrivate, Bytes: tpm2.Marshal(rsp.OutPrivate)})...)
	if err := writeNew(path, data); err != nil {
		return nil, err
	}
	return k, nil
}

// Load reads Dir/NAME.tpm. The TPM object itself is loaded on first use.
func (s *TPMStore) Load(ctx context.Context, name string) (Key, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	path, err := s.path(name)
	if err != nil {
		return nil, err
	}
	data, err := readPrivate(path)
	if err != nil {
		return nil, err
	}
	pub, priv, err := parseTPMKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	k, err := s.newKey(name, *pub, *priv)
	if err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", path, err)
	}
	// Load it now, so that a blob from another TPM fails here and not at
	// the first signature.
	if err := s.withRetry(func() error { _, err := s.loadKey(k); return err }); err != nil {
		return nil, fmt.Errorf("keystore: TPM load key %s: %w", name, err)
	}
	return k, nil
}

// parseTPMKeyFile decodes the two PEM blocks of a key file.
func parseTPMKeyFile(data []byte) (*tpm2.TPM2BPublic, *tpm2.TPM2BPrivate, error) {
	var pubB, privB []byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case pemTPMPublic:
			pubB = b.Bytes
		case pemTPMPrivate:
			privB = b.Bytes
		}
	}
	if pubB == nil || privB == nil {
		return nil, nil, errors.New("not a TPM key file")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pubB)
	if err != nil {
		return nil, nil, errors.New("malformed TPM public area")
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](privB)
	if err != nil {
		return nil, nil, errors.New("malformed TPM private blob")
	}
	return pub, priv, nil
}

// newKey checks that pub is a device signing key and wraps it.
func (s *TPMStore) newKey(name string, pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) (*tpmKey, error) {
	area, err := pub.Contents()
	if err != nil {
		return nil, errors.New("malformed TPM public area")
	}
	a := area.ObjectAttributes
	if area.Type != tpm2.TPMAlgECC || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Decrypt || a.Restricted {
		return nil, errors.New("TPM object is not a non-exportable signing key")
	}
	p, err := tpm2.Pub(*area)
	if err != nil {
		return nil, fmt.Errorf("TPM public key: %w", err)
	}
	ec, ok := p.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("TPM key is not ECDSA P-256")
	}
	return &tpmKey{keyLabel: keyLabel{kind: KindTPM, name: name}, store: s, pub: ec, public: pub, private: priv}, nil
}

// Delete removes Dir/NAME.tpm (and unloads the key if it is loaded).
func (s *TPMStore) Delete(ctx context.Context, name string) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.cur != nil && s.cur.name == name {
		s.flush(s.curH.Handle)
		s.cur = nil
	}
	s.mu.Unlock()
	return remove(path)
}

// withSRK runs f with the SRK loaded, creating it if needed; on failure
// it drops the cached handles and tries once more (the TPM may have been
// reset, or our handles evicted).
func (s *TPMStore) withSRK(f func(tpm2.NamedHandle) error) error {
	return s.withRetry(func() error {
		srk, err := s.ensureSRK()
		if err != nil {
			return err
		}
		return f(srk)
	})
}

func (s *TPMStore) withRetry(f func() error) error {
	err := f()
	if err == nil || errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCAttributes) {
		return err // not a stale-handle problem
	}
	s.flushAll()
	return f()
}

func (s *TPMStore) ensureSRK() (tpm2.NamedHandle, error) {
	if s.srk != nil {
		return *s.srk, nil
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(s.tpm)
	if err != nil {
		return tpm2.NamedHandle{}, fmt.Errorf("create storage root key: %w", err)
	}
	s.srk = &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
	return *s.srk, nil
}

// loadKey makes k the loaded key and returns its handle.
func (s *TPMStore) loadKey(k *tpmKey) (tpm2.NamedHandle, error) {
	if s.cur == k {
		return s.curH, nil
	}
	if s.cur != nil {
		s.flush(s.curH.Handle)
		s.cur = nil
	}
	srk, err := s.ensureSRK()
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	rsp, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    k.private,
		InPublic:     k.public,
	}.Execute(s.tpm)
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	s.cur, s.curH = k, tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
	return s.curH, nil
}

func (s *TPMStore) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(s.tpm)
}

// flushAll forgets (and flushes, best effort) every cached handle.
func (s *TPMStore) flushAll() {
	if s.cur != nil {
		s.flush(s.curH.Handle)
		s.cur = nil
	}
	if s.srk != nil {
		s.flush(s.srk.Handle)
		s.srk = nil
	}
}

// sign signs a SHA-256 digest with k and returns ASN.1 DER.
func (s *TPMStore) sign(k *tpmKey, digest []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var rsp *tpm2.SignResponse
	err := s.withRetry(func() error {
		h, err := s.loadKey(k)
		if err != nil {
			return err
		}
		rsp, err = tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(s.tpm)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: TPM sign: %w", err)
	}
	sig, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("keystore: TPM returned no ECDSA signature: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(sig.SignatureR.Buffer))
		b.AddASN1BigInt(new(big.Int).SetBytes(sig.SignatureS.Buffer))
	})
	return b.Bytes()
}

// tpmKey is a handle to a key in the TPM: its public key and the blobs
// to load it, never the private scalar (which the TPM does not release).
type tpmKey struct {
	keyLabel
	store   *TPMStore
	pub     *ecdsa.PublicKey
	public  tpm2.TPM2BPublic
	private tpm2.TPM2BPrivate
}

func (k *tpmKey) Public() crypto.PublicKey { return k.pub }

// Sign signs a SHA-256 digest inside the TPM; rand is not used (the TPM
// has its own).
func (k *tpmKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := checkDigest(digest, opts); err != nil {
		return nil, err
	}
	return k.store.sign(k, digest)
}
