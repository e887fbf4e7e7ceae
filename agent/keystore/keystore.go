// Package keystore keeps the device agent's private keys: the P-256 key a
// device registers with Ward, proves possession of in DPoP proofs
// (RFC 9449) and signs posture reports with.
//
// Two implementations share one interface, [Store]:
//
//   - [TPMStore] creates the key inside the machine's TPM 2.0 under the
//     storage hierarchy. The key is non-exportable (fixedTPM,
//     fixedParent, sensitiveDataOrigin, sign-only): only its public area
//     and its private blob, encrypted by the TPM's storage key, are
//     saved to disk, and the blob is useless on any other TPM.
//   - [FileStore] keeps a software key as PKCS#8 PEM in a 0600 file in a
//     0700 directory, for machines without a usable TPM.
//
// A TPMStore is also an [Attester]: it proves to a server that a key
// lives in the TPM (TPM 2.0 key attestation: a certification by a one-time
// attestation key, and the answer to the server's credential challenge
// with the endorsement key), so that the server need not take the agent's
// word for it.
//
// [Detect] picks the TPM when /dev/tpmrm0 is usable and falls back to a
// file otherwise. Every [Key] is a [crypto.Signer] returning ASN.1 DER
// ECDSA signatures over SHA-256 digests, so it can be passed to
// dpop.NewSigner and posture.SignReport unchanged.
//
// Keys never print their private material: they implement
// [log/slog.LogValuer], [fmt.Stringer] and [fmt.GoStringer] with
// redacted values, and no error of this package contains key bytes.
package keystore

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Key is a private signing key held by a [Store]. Sign accepts a SHA-256
// digest (opts.HashFunc() == crypto.SHA256) and returns an ASN.1 DER
// ECDSA signature; Public returns an *ecdsa.PublicKey on P-256. Keys are
// safe for concurrent use.
type Key interface {
	crypto.Signer
	// ID returns the key's stable name: the name it was created with.
	ID() string
}

// Store creates, loads and deletes named device keys. Implementations
// are safe for concurrent use.
type Store interface {
	// Create makes a new ES256 (ECDSA P-256) key named name, non-exportable
	// where the store can enforce it. It returns an error wrapping
	// ErrExists if a key of that name is already present.
	Create(ctx context.Context, name string) (Key, error)
	// Load returns the key named name, or an error wrapping ErrNotFound.
	Load(ctx context.Context, name string) (Key, error)
	// Delete removes the key named name, or returns an error wrapping
	// ErrNotFound. Keys already loaded may stop working.
	Delete(ctx context.Context, name string) error
	// Kind names the implementation: KindFile or KindTPM.
	Kind() string
	// Close releases the store's resources (the TPM connection). Keys
	// obtained from the store must not be used afterwards. Closing a
	// FileStore does nothing.
	io.Closer
}

// Store kinds returned by Store.Kind.
const (
	KindFile = "file"
	KindTPM  = "tpm"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound: no key of that name.
	ErrNotFound = errors.New("keystore: key not found")
	// ErrExists: Create found a key of that name already.
	ErrExists = errors.New("keystore: key already exists")
	// ErrInvalidName: key names are 1 to 64 characters from [A-Za-z0-9._-],
	// not starting with a dot.
	ErrInvalidName = errors.New("keystore: invalid key name")
	// ErrInsecurePermissions: a key file or directory is accessible to
	// group or others; see *PermissionError.
	ErrInsecurePermissions = errors.New("keystore: insecure permissions")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("keystore: store closed")
)

// PermissionError reports a key file that group or others can access.
// It matches ErrInsecurePermissions with errors.Is.
type PermissionError struct {
	Path string      // the offending file
	Mode os.FileMode // its permission bits
}

// Error tells the user how to fix the problem.
func (e *PermissionError) Error() string {
	return fmt.Sprintf("keystore: key file %s has permissions %#o and is accessible to group or others; "+
		"refusing to use it: run `chmod 600 %s` (and check nobody else copied it)", e.Path, uint32(e.Mode.Perm()), e.Path)
}

// Is makes errors.Is(err, ErrInsecurePermissions) true.
func (e *PermissionError) Is(target error) bool { return target == ErrInsecurePermissions }

// ValidateName checks a key name: 1 to 64 characters from [A-Za-z0-9._-],
// not starting with a dot. Names become file names, so anything that
// could escape the store directory is rejected.
func ValidateName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	return nil
}

// DefaultDir returns the directory for key files of the given store kind:
// os.UserConfigDir()/ward/keys for KindFile and
// os.UserConfigDir()/ward/tpm-keys for KindTPM.
func DefaultDir(kind string) (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("keystore: no user configuration directory: %w", err)
	}
	sub := "keys"
	if kind == KindTPM {
		sub = "tpm-keys"
	}
	return filepath.Join(base, "ward", sub), nil
}

// DefaultTPMPath is the Linux TPM resource manager device, which lets
// several processes share the TPM safely.
const DefaultTPMPath = "/dev/tpmrm0"

// Detect returns the best store on this machine: a TPMStore on
// DefaultTPMPath when that device opens and answers, else a FileStore.
// dir is the store's directory ("" for DefaultDir of the chosen kind).
// The returned store must be closed.
func Detect(dir string) (Store, error) {
	if s, err := OpenTPM(DefaultTPMPath); err == nil {
		if dir != "" {
			s.Dir = dir
		}
		return s, nil
	}
	return &FileStore{Dir: dir}, nil
}

// checkCtx returns ctx's error, if any, before a store operation starts.
func checkCtx(ctx context.Context) error {
	if ctx == nil {
		return nil
	}
	return ctx.Err()
}
