package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKEK(t *testing.T) *KEK {
	t.Helper()
	k, err := NewKEK(bytes.Repeat([]byte{7}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := testKEK(t)
	ct, err := k.Seal([]byte("private key"), []byte("signing-key:a"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("private key")) {
		t.Fatal("ciphertext contains plaintext")
	}
	pt, err := k.Open(ct, []byte("signing-key:a"))
	if err != nil || string(pt) != "private key" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	// Attacker side: wrong aad, tampered byte, truncated, other key.
	if _, err := k.Open(ct, []byte("signing-key:b")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong aad: got %v, want ErrDecrypt", err)
	}
	bad := append([]byte(nil), ct...)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open(bad, []byte("signing-key:a")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("tampered: got %v, want ErrDecrypt", err)
	}
	if _, err := k.Open(ct[:5], nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("truncated: got %v, want ErrDecrypt", err)
	}
	other, _ := NewKEK(bytes.Repeat([]byte{8}, KEKSize))
	if _, err := other.Open(ct, []byte("signing-key:a")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("other key: got %v, want ErrDecrypt", err)
	}
}

func TestNewKEKRejectsWrongSize(t *testing.T) {
	if _, err := NewKEK(make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
	if _, err := ParseKEK("not base64!!"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestLoadKEK(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "kek")
	if _, err := LoadKEK(path, false); err == nil {
		t.Fatal("missing file without create: want error")
	}
	k1, err := LoadKEK(path, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Fatalf("key file mode = %v, want 0600", got)
	}
	k2, err := LoadKEK(path, true)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := k1.Seal([]byte("x"), nil)
	if _, err := k2.Open(ct, nil); err != nil {
		t.Fatalf("reloaded key differs: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKEK(path, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file: got %v, want refusal", err)
	}
}

func TestDeriveIndependent(t *testing.T) {
	k := testKEK(t)
	a, b := k.Derive("token-hash"), k.Derive("dpop-nonce")
	if bytes.Equal(a, b) || len(a) != 32 {
		t.Fatalf("derived keys not independent: %x %x", a, b)
	}
	if !bytes.Equal(a, k.Derive("token-hash")) {
		t.Fatal("derivation not deterministic")
	}
}

func TestHasher(t *testing.T) {
	h := NewHasher([]byte("k1"))
	tok := RandomToken()
	if len(tok) != 43 {
		t.Fatalf("RandomToken length = %d, want 43 (256 bits)", len(tok))
	}
	sum := h.Sum(tok)
	if !h.Equal(tok, sum) {
		t.Fatal("Equal false for the right token")
	}
	if h.Equal(tok+"x", sum) || NewHasher([]byte("k2")).Equal(tok, sum) {
		t.Fatal("Equal true for a wrong token or key")
	}
}

func TestStringRedacts(t *testing.T) {
	s := String("hunter2-secret")
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "secret", s, "kek", testKEK(t))
	j, _ := json.Marshal(struct{ S String }{s})
	out := buf.String() + fmt.Sprintf("%v %s %+v %#v", s, s, s, s) + string(j)
	if strings.Contains(out, "hunter2") {
		t.Fatalf("secret leaked: %s", out)
	}
	if s.Reveal() != "hunter2-secret" {
		t.Fatal("Reveal broken")
	}
}

func TestKEKEqual(t *testing.T) {
	a, _ := NewKEK(bytes.Repeat([]byte{1}, KEKSize))
	b, _ := NewKEK(bytes.Repeat([]byte{1}, KEKSize))
	c, _ := NewKEK(bytes.Repeat([]byte{2}, KEKSize))
	if !a.Equal(b) || a.Equal(c) || a.Equal(nil) {
		t.Error("Equal compares the wrong thing")
	}
}
