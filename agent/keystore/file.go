package keystore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
)

// FileStore keeps software P-256 keys as PKCS#8 PEM files, one per key
// (Dir/NAME.pem), mode 0600 inside a 0700 directory. It refuses to load a
// key file that group or others can access. Use it only where no TPM is
// available: the key can be copied by anyone who can read the file.
//
// The zero value uses DefaultDir(KindFile). A FileStore is safe for
// concurrent use; Create is atomic and never overwrites.
type FileStore struct {
	// Dir is the key directory; "" means DefaultDir(KindFile).
	Dir string
}

var _ Store = (*FileStore)(nil)

// Kind returns KindFile.
func (s *FileStore) Kind() string { return KindFile }

// Close does nothing; it exists to satisfy Store.
func (s *FileStore) Close() error { return nil }

func (s *FileStore) path(name string) (string, error) { return keyFile(s.Dir, KindFile, name, ".pem") }

// Create generates a P-256 key and stores it as Dir/NAME.pem.
func (s *FileStore) Create(ctx context.Context, name string) (Key, error) {
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	path, err := s.path(name)
	if err != nil {
		return nil, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("keystore: encode key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	if err := writeNew(path, data); err != nil {
		return nil, err
	}
	return &fileKey{keyLabel: keyLabel{kind: KindFile, name: name}, priv: priv}, nil
}

// Load reads Dir/NAME.pem. It fails with a *PermissionError if group or
// others can access the file.
func (s *FileStore) Load(ctx context.Context, name string) (Key, error) {
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
	defer clear(data)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("keystore: %s does not hold a PKCS#8 PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		// The parser's message never contains key bytes, but keep it out
		// anyway: a short fixed description is enough.
		return nil, fmt.Errorf("keystore: %s: malformed PKCS#8 key", path)
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("keystore: %s: not an ECDSA P-256 key", path)
	}
	return &fileKey{keyLabel: keyLabel{kind: KindFile, name: name}, priv: priv}, nil
}

// Delete removes Dir/NAME.pem.
func (s *FileStore) Delete(ctx context.Context, name string) error {
	if err := checkCtx(ctx); err != nil {
		return err
	}
	path, err := s.path(name)
	if err != nil {
		return err
	}
	return remove(path)
}

// fileKey is a software key. Its fields are unexported and its String,
// GoString and LogValue never show the private scalar.
type fileKey struct {
	keyLabel
	priv *ecdsa.PrivateKey
}

func (k *fileKey) Public() crypto.PublicKey { return &k.priv.PublicKey }

func (k *fileKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := checkDigest(digest, opts); err != nil {
		return nil, err
	}
	if r == nil {
		r = rand.Reader
	}
	return ecdsa.SignASN1(r, k.priv, digest)
}
