package keystore

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

func TestFileStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ward", "keys")
	s := &FileStore{Dir: dir}
	if s.Kind() != KindFile {
		t.Fatalf("Kind = %q, want %q", s.Kind(), KindFile)
	}
	if _, err := s.Load(ctx, "device"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of a missing key: got %v, want ErrNotFound", err)
	}
	k, err := s.Create(ctx, "device")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if k.ID() != "device" {
		t.Fatalf("ID = %q, want device", k.ID())
	}
	checkSignVerify(t, k)
	if _, err := s.Create(ctx, "device"); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: got %v, want ErrExists", err)
	}
	k2, err := s.Load(ctx, "device")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !k2.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("loaded key has another public key")
	}
	checkSignVerify(t, k2)
	checkDPoP(t, k2)
	d := k.(*fileKey).priv.D.Bytes()
	checkRedacted(t, k2, base64.RawURLEncoding.EncodeToString(d), fmt.Sprint(k.(*fileKey).priv.D))

	if err := s.Delete(ctx, "device"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Delete(ctx, "device"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: got %v, want ErrNotFound", err)
	}
	if _, err := s.Load(ctx, "device"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after Delete: got %v, want ErrNotFound", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("directory not empty after Delete: %v (temporary files left?)", ents)
	}
}

func TestFileStorePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("permission bits do not describe access on Windows")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	s := &FileStore{Dir: dir}
	if _, err := s.Create(ctx, "device"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode = %#o, want 0700", got)
	}
	path := filepath.Join(dir, "device.pem")
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", got)
	}

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := s.Load(ctx, "device")
		var pe *PermissionError
		if !errors.Is(err, ErrInsecurePermissions) || !errors.As(err, &pe) {
			t.Fatalf("Load of a %#o key file: got %v, want ErrInsecurePermissions", mode, err)
		}
		if !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("error does not say how to fix it: %v", err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "device"); err != nil {
		t.Fatalf("Load of a 0400 key file: %v", err)
	}

	// A symlink to a key file is refused.
	if err := os.Symlink(path, filepath.Join(dir, "link.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "link"); err == nil {
		t.Fatal("Load followed a symlink")
	}

	// An existing, too open directory is tightened by Create.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "second"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode after Create = %#o, want 0700", fi.Mode().Perm())
	}
}

func TestFileStoreMalformedAndNames(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &FileStore{Dir: dir}
	for _, name := range []string{"", ".hidden", "../x", "a/b", `a\b`, strings.Repeat("a", 65), "sp ace"} {
		if _, err := s.Create(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Create(%q): got %v, want ErrInvalidName", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "junk"); err == nil {
		t.Fatal("Load of junk succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Create(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create with a cancelled context: %v", err)
	}
}

func TestFileStoreConcurrentCreate(t *testing.T) {
	ctx := context.Background()
	s := &FileStore{Dir: t.TempDir()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var created int
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create(ctx, "device")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case !errors.Is(err, ErrExists):
				t.Errorf("Create: %v", err)
			}
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("%d concurrent Creates succeeded, want exactly 1", created)
	}
	if _, err := s.Load(ctx, "device"); err != nil {
		t.Fatal(err)
	}
}

func TestDetectFallsBackToFile(t *testing.T) {
	if _, err := os.Stat(DefaultTPMPath); err == nil {
		t.Skip("this machine has a TPM device")
	}
	s, err := Detect(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Kind() != KindFile {
		t.Fatalf("Detect without a TPM: Kind = %q, want file", s.Kind())
	}
}
