// Package secret holds Ward's key-encryption key (KEK) and the small
// primitives built on it: authenticated encryption of secrets at rest,
// derivation of purpose-bound subkeys, keyed hashing of high-entropy
// tokens, random token generation, and a redacting string type.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// KEKSize is the size of the key-encryption key in bytes (AES-256).
const KEKSize = 32

// ErrDecrypt is returned when ciphertext does not authenticate under the
// KEK (wrong key or tampered data). It never says more than that.
var ErrDecrypt = errors.New("secret: decryption failed (wrong key-encryption key or corrupted data)")

// KEK is the key-encryption key. It encrypts signing keys and TOTP seeds at
// rest and is the root from which other server keys are derived.
type KEK struct {
	aead cipher.AEAD
	raw  []byte
}

// NewKEK wraps 32 raw key bytes.
func NewKEK(raw []byte) (*KEK, error) {
	if len(raw) != KEKSize {
		return nil, fmt.Errorf("secret: key-encryption key must be %d bytes, got %d", KEKSize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &KEK{aead: aead, raw: append([]byte(nil), raw...)}, nil
}

// ParseKEK decodes a base64 (standard or URL, padded or not) KEK.
func ParseKEK(s string) (*KEK, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return NewKEK(b)
		}
	}
	return nil, errors.New("secret: key-encryption key is not valid base64")
}

// LoadKEK reads a base64 KEK from path. When create is true and the file
// does not exist, a new random key is written with 0600 permissions (dev
// mode). A key file readable by group or others is refused.
func LoadKEK(path string, create bool) (*KEK, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) && create {
		raw := make([]byte, KEKSize)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("secret: create key directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("secret: create key file: %w", err)
		}
		if _, err := f.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("secret: write key file: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		return NewKEK(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("secret: key-encryption key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret: key-encryption key file %s is accessible by group or others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret: read key-encryption key: %w", err)
	}
	return ParseKEK(string(b))
}

// Seal encrypts plaintext with AES-256-GCM; aad binds the ciphertext to its
// purpose (for example "signing-key:"+kid) so it cannot be moved elsewhere.
func (k *KEK) Seal(plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, plaintext, aad), nil
}

// Open decrypts what Seal produced with the same aad.
func (k *KEK) Open(ciphertext, aad []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(ciphertext) < ns+k.aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := k.aead.Open(nil, ciphertext[:ns], ciphertext[ns:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// Derive returns a 32-byte subkey for a named purpose (HKDF-SHA256), so one
// KEK yields independent keys for token hashing, nonces and cookies.
func (k *KEK) Derive(purpose string) []byte {
	out, err := hkdf.Key(sha256.New, k.raw, nil, "ward/"+purpose, 32)
	if err != nil {
		panic(err) // only for lengths HKDF cannot produce
	}
	return out
}

// Equal reports whether k and o are the same key (in constant time).
func (k *KEK) Equal(o *KEK) bool {
	return k != nil && o != nil && subtle.ConstantTimeCompare(k.raw, o.raw) == 1
}

// LogValue keeps the key out of logs.
func (k *KEK) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Hasher computes keyed hashes (HMAC-SHA256) of high-entropy secrets:
// refresh tokens, authorization codes and generated client secrets. They
// carry 256 random bits, so a fast keyed hash is as safe as a slow one and
// keeps the token endpoint fast; a database dump alone does not let anyone
// test guesses without the key.
type Hasher struct{ key []byte }

// NewHasher returns a Hasher with key.
func NewHasher(key []byte) *Hasher { return &Hasher{key: append([]byte(nil), key...)} }

// Sum returns the keyed hash of s.
func (h *Hasher) Sum(s string) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// Equal reports in constant time whether s hashes to sum.
func (h *Hasher) Equal(s string, sum []byte) bool {
	return hmac.Equal(h.Sum(s), sum)
}

// RandomToken returns 256 random bits, base64url without padding.
func RandomToken() string { return RandomString(32) }

// RandomString returns n random bytes, base64url without padding.
func RandomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// String is a secret string that prints as [REDACTED] in logs, fmt and
// JSON. Use Reveal to get the value where it is really needed.
type String string

// Reveal returns the secret value.
func (s String) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s String) String() string { return "[REDACTED]" }

// GoString implements fmt.GoStringer.
func (s String) GoString() string { return `"[REDACTED]"` }

// LogValue implements slog.LogValuer.
func (s String) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (s String) MarshalText() ([]byte, error) { return []byte("[REDACTED]"), nil }
