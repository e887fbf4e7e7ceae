package keystore

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/ward-idp/ward/agent/keystore/swtpmtest"
)

func openSim(t *testing.T, s *swtpmtest.Sim, dir string, withCtrl bool) *TPMStore {
	t.Helper()
	ctrl := ""
	if withCtrl {
		ctrl = s.CtrlAddr
	}
	st, err := OpenTPMSimulator(s.Addr, ctrl)
	if err != nil {
		t.Fatalf("OpenTPMSimulator: %v", err)
	}
	st.Dir = dir
	t.Cleanup(func() { st.Close() })
	return st
}

func TestTPMStore(t *testing.T) {
	ctx := context.Background()
	state, keys := t.TempDir(), filepath.Join(t.TempDir(), "tpm-keys")
	sim := swtpmtest.Start(t, swtpmtest.Options{StateDir: state})

	st := openSim(t, sim, keys, true)
	if st.Kind() != KindTPM {
		t.Fatalf("Kind = %q", st.Kind())
	}
	k, err := st.Create(ctx, "device")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	checkSignVerify(t, k)
	checkDPoP(t, k)
	checkRedacted(t, k)
	if _, err := st.Create(ctx, "device"); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: got %v, want ErrExists", err)
	}
	if _, err := st.Load(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of a missing key: got %v, want ErrNotFound", err)
	}
	path := filepath.Join(keys, "device.tpm")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("blob directory: %v, want 0700", err)
	}

	// A second key alternates with the first in the TPM's object slots.
	k2, err := st.Create(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		checkSignVerify(t, k)
		checkSignVerify(t, k2)
	}

	// Reconnect (new connection, TPM re-initialised through the control
	// port: transient objects are gone) and load from the blobs.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Sign(nil, make([]byte, 32), sha256Opts); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sign after Close: got %v, want ErrClosed", err)
	}
	st2 := openSim(t, sim, keys, true)
	kr, err := st2.Load(ctx, "device")
	if err != nil {
		t.Fatalf("Load after reconnect: %v", err)
	}
	if !kr.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("reloaded key has another public key")
	}
	checkSignVerify(t, kr)
	st2.Close()

	// Restart the simulator process on the same state (a reboot) and load
	// again.
	sim.Stop()
	sim2 := swtpmtest.Start(t, swtpmtest.Options{StateDir: state})
	st3 := openSim(t, sim2, keys, false)
	kr, err = st3.Load(ctx, "device")
	if err != nil {
		t.Fatalf("Load after TPM restart: %v", err)
	}
	if !kr.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("key after restart has another public key")
	}
	checkSignVerify(t, kr)
	checkDPoP(t, kr)

	if err := st3.Delete(ctx, "device"); err != nil {
		t.Fatal(err)
	}
	if _, err := st3.Load(ctx, "device"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after Delete: %v", err)
	}
}

// TestTPMKeyNotExportable proves that the saved key is not a usable
// private key outside the TPM that created it.
func TestTPMKeyNotExportable(t *testing.T) {
	ctx := context.Background()
	keys := t.TempDir()
	st := openSim(t, swtpmtest.Start(t, swtpmtest.Options{}), keys, false)
	k, err := st.Create(ctx, "device")
	if err != nil {
		t.Fatal(err)
	}
	tk := k.(*tpmKey)

	// 1. The TPM enforces non-exportability through the key's attributes.
	area, err := tk.public.Contents()
	if err != nil {
		t.Fatal(err)
	}
	a := area.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Decrypt || a.Restricted || a.EncryptedDuplication {
		t.Fatalf("attributes %+v: want fixedTPM, fixedParent, sensitiveDataOrigin, sign only", a)
	}
	if len(area.AuthPolicy.Buffer) != 0 {
		t.Fatal("key has an auth policy (could allow duplication)")
	}

	// 2. The TPM refuses to duplicate (export) it.
	st.mu.Lock()
	h, err := st.loadKey(tk)
	if err == nil {
		_, err = tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)},
			NewParentHandle: tpm2.TPMRHNull,
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(st.tpm)
		if err == nil {
			t.Error("TPM2_Duplicate of the device key succeeded")
		}
		t.Logf("TPM2_Duplicate refused: %v", err)
	} else {
		t.Errorf("load: %v", err)
	}
	st.mu.Unlock()

	// 3. The saved private blob is not a key: no parser accepts it, and no
	// 32-byte window of it is the private scalar of the public key.
	file, err := os.ReadFile(filepath.Join(keys, "device.tpm"))
	if err != nil {
		t.Fatal(err)
	}
	blob := tk.private.Buffer
	if len(blob) < 32 {
		t.Fatalf("private blob of %d bytes", len(blob))
	}
	if _, err := x509.ParsePKCS8PrivateKey(blob); err == nil {
		t.Fatal("blob parses as PKCS#8")
	}
	if _, err := x509.ParseECPrivateKey(blob); err == nil {
		t.Fatal("blob parses as an EC private key")
	}
	if _, err := x509.ParsePKCS8PrivateKey(file); err == nil {
		t.Fatal("key file parses as PKCS#8")
	}
	pubECDH, err := k.Public().(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+32 <= len(blob); i++ {
		if priv, err := ecdh.P256().NewPrivateKey(blob[i : i+32]); err == nil && priv.PublicKey().Equal(pubECDH) {
			t.Fatalf("the private scalar is in the blob in the clear at offset %d", i)
		}
	}

	// 4. Another TPM (another storage seed) cannot load the blob.
	other := openSim(t, swtpmtest.Start(t, swtpmtest.Options{}), keys, false)
	if _, err := other.Load(ctx, "device"); err == nil {
		t.Fatal("another TPM loaded the key blob")
	} else {
		t.Logf("another TPM refuses the blob: %v", err)
	}
}

func TestTPMStoreLoadRejectsTamperedBlob(t *testing.T) {
	ctx := context.Background()
	keys := t.TempDir()
	st := openSim(t, swtpmtest.Start(t, swtpmtest.Options{}), keys, false)
	if _, err := st.Create(ctx, "device"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(keys, "device.tpm")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, "device"); !errors.Is(err, ErrInsecurePermissions) {
		t.Fatalf("Load of a 0644 blob: %v", err)
	}
	if err := os.WriteFile(filepath.Join(keys, "junk.tpm"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, "junk"); err == nil {
		t.Fatal("Load of junk succeeded")
	}
}
