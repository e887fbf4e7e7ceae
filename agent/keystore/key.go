package keystore

import (
	"crypto"
	"errors"
	"log/slog"
	"path/filepath"
)

// keyLabel is all a Key shows of itself wherever it is printed, logged
// or marshalled: its kind and id, never its private part. Every Key
// implementation embeds it, so that none can miss one of those ways out.
type keyLabel struct {
	kind string // KindFile or KindTPM
	name string
}

func (l keyLabel) ID() string { return l.name }

func (l keyLabel) String() string {
	return "keystore.Key{kind: " + l.kind + ", id: " + l.name + ", private: REDACTED}"
}

func (l keyLabel) GoString() string { return l.String() }

// LogValue implements slog.LogValuer: the key logs as its id and kind.
func (l keyLabel) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", l.kind), slog.String("id", l.name), slog.String("private", "REDACTED"))
}

// MarshalJSON keeps the key out of JSON output (structured logs, dumps).
func (l keyLabel) MarshalJSON() ([]byte, error) {
	return []byte(`{"kind":"` + l.kind + `","id":"` + l.name + `","private":"REDACTED"}`), nil
}

// checkDigest is what every Key signs: a SHA-256 digest (ES256).
func checkDigest(digest []byte, opts crypto.SignerOpts) error {
	if opts == nil || opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		return errors.New("keystore: sign needs a SHA-256 digest")
	}
	return nil
}

// keyFile is the file of key name in dir ("": DefaultDir(kind)), with
// the store's extension. The name is validated first: it never leaves
// the directory.
func keyFile(dir, kind, name, ext string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	if dir == "" {
		var err error
		if dir, err = DefaultDir(kind); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, name+ext), nil
}
