package tokens

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// memStore is an in-memory KeyStore.
type memStore struct {
	mu   sync.Mutex
	keys map[string]*model.SigningKey
}

func newMemStore() *memStore { return &memStore{keys: map[string]*model.SigningKey{}} }

func clone(k *model.SigningKey) *model.SigningKey {
	c := *k
	c.PrivateEnc = slices.Clone(k.PrivateEnc)
	c.PublicJWK = slices.Clone(k.PublicJWK)
	return &c
}

func (s *memStore) CreateSigningKey(_ context.Context, k *model.SigningKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.KID]; ok {
		return store.ErrAlreadyExists
	}
	s.keys[k.KID] = clone(k)
	return nil
}

func (s *memStore) ListSigningKeys(context.Context) ([]*model.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*model.SigningKey
	for _, k := range s.keys {
		out = append(out, clone(k))
	}
	return out, nil
}

func (s *memStore) UpdateSigningKey(_ context.Context, kid string, fn func(*model.SigningKey) error) (*model.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[kid]
	if !ok {
		return nil, store.ErrNotFound
	}
	c := clone(k)
	if err := fn(c); err != nil {
		return nil, err
	}
	s.keys[kid] = clone(c)
	return c, nil
}

// RotateSigningKey does what the SQL stores do, under the store's lock.
func (s *memStore) RotateSigningKey(_ context.Context, k *model.SigningKey, previous string, retireAt time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.KID]; ok {
		return nil, store.ErrAlreadyExists
	}
	var retired []string
	for kid, old := range s.keys {
		if old.RetireAt.IsZero() && !old.ActiveAt.After(k.ActiveAt) {
			retired = append(retired, kid)
		}
	}
	if !slices.Contains(retired, previous) {
		return nil, store.ErrAlreadyUsed
	}
	for _, kid := range retired {
		s.keys[kid].RetireAt = retireAt
	}
	s.keys[k.KID] = clone(k)
	slices.Sort(retired)
	return retired, nil
}

func (s *memStore) DeleteSigningKey(_ context.Context, kid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[kid]; !ok {
		return store.ErrNotFound
	}
	delete(s.keys, kid)
	return nil
}

// CreateFirstSigningKey and RetireSigningKey follow store.Store.
func (s *memStore) CreateFirstSigningKey(_ context.Context, k *model.SigningKey) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.keys {
		if old.RetireAt.IsZero() && old.Alg == k.Alg && len(old.PrivateEnc) > 0 {
			return false, nil
		}
	}
	if _, ok := s.keys[k.KID]; ok {
		return false, store.ErrAlreadyExists
	}
	s.keys[k.KID] = clone(k)
	return true, nil
}

func (s *memStore) RetireSigningKey(_ context.Context, kid, signer string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[kid]
	if !ok {
		return store.ErrNotFound
	}
	sk, ok := s.keys[signer]
	if kid == signer || !ok || !sk.RetireAt.IsZero() ||
		(k.RetireAt.IsZero() && (!k.ActiveAt.Before(sk.ActiveAt) && !(k.ActiveAt.Equal(sk.ActiveAt) && k.CreatedAt.Before(sk.CreatedAt)))) {
		return store.ErrAlreadyUsed
	}
	delete(s.keys, kid)
	return nil
}

func (s *memStore) get(kid string) *model.SigningKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[kid]; ok {
		return clone(k)
	}
	return nil
}

func (s *memStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}

func newFakeClock() *clock.Fake {
	return clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

func newKEK(t testing.TB, b byte) *secret.KEK {
	t.Helper()
	kek, err := secret.NewKEK(bytes.Repeat([]byte{b}, secret.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

type fixture struct {
	st    *memStore
	clock *clock.Fake
	kek   *secret.KEK
	rec   *bus.Recorder
	bus   *bus.Local
	m     *KeyManager
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{st: newMemStore(), clock: newFakeClock(), kek: newKEK(t, 1), rec: &bus.Recorder{}, bus: bus.NewLocal()}
	f.bus.Subscribe("recorder", f.rec.Handle)
	f.m = f.manager(t, f.kek)
	return f
}

func (f *fixture) manager(t testing.TB, kek *secret.KEK) *KeyManager {
	t.Helper()
	m, err := NewKeyManager(context.Background(), f.opts(kek))
	if err != nil {
		t.Fatalf("NewKeyManager: %v", err)
	}
	return m
}

func (f *fixture) opts(kek *secret.KEK) KeyOptions {
	return KeyOptions{Store: f.st, KEK: kek, Now: f.clock.Now, Bus: f.bus, RetireAfter: time.Hour}
}

func kidOf(t testing.TB, token string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.SplitN(token, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr map[string]any
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	kid, _ := hdr["kid"].(string)
	return kid
}

func eventsOf(rec *bus.Recorder, typ model.EventType) []model.Event {
	var out []model.Event
	for _, e := range rec.Events() {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func TestFirstStartCreatesEncryptedKey(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	if got := f.st.len(); got != 1 {
		t.Fatalf("stored keys = %d, want 1", got)
	}
	keys := f.m.Keys()
	if len(keys) != 1 {
		t.Fatalf("Keys() = %d keys, want 1", len(keys))
	}
	kid := keys[0].KID
	if keys[0].PrivateEnc != nil {
		t.Error("Keys() exposes PrivateEnc")
	}
	if keys[0].Alg != "ES256" {
		t.Errorf("Alg = %q, want ES256", keys[0].Alg)
	}
	if got := f.m.ActiveKID(); got != kid {
		t.Errorf("ActiveKID = %q, want %q", got, kid)
	}
	created := eventsOf(f.rec, model.EventKeyCreated)
	if len(created) != 1 || created[0].Actor != "system" || created[0].Data["kid"] != kid {
		t.Errorf("key.created events = %+v, want one by system for %s", created, kid)
	}

	// Encrypted at rest: neither the PKCS#8 encoding nor the raw scalar
	// appears in the stored bytes.
	stored := f.st.get(kid)
	priv := f.m.state.Load().signer.priv
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := priv.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if len(stored.PrivateEnc) == 0 {
		t.Fatal("PrivateEnc is empty")
	}
	if bytes.Contains(stored.PrivateEnc, der) || bytes.Contains(stored.PrivateEnc, d) {
		t.Error("PrivateEnc contains the private key in plaintext")
	}
	if bytes.Contains(stored.PublicJWK, []byte(base64.RawURLEncoding.EncodeToString(d))) {
		t.Error("PublicJWK contains the private scalar")
	}
	if pt, err := f.kek.Open(stored.PrivateEnc, []byte("ward/signing-key:"+kid)); err != nil || !bytes.Equal(pt, der) {
		t.Errorf("PrivateEnc does not open to the PKCS#8 key under aad ward/signing-key:<kid> (err %v)", err)
	}
	// The aad binds the ciphertext to its kid.
	if _, err := f.kek.Open(stored.PrivateEnc, []byte("ward/signing-key:other")); err == nil {
		t.Error("PrivateEnc opens under another kid's aad")
	}

	// A second manager over the same store loads the same key.
	m2 := f.manager(t, f.kek)
	if got := m2.ActiveKID(); got != kid {
		t.Errorf("second manager kid = %q, want %q", got, kid)
	}
	if f.st.len() != 1 {
		t.Errorf("second manager created a key: %d stored", f.st.len())
	}
	tok, err := f.m.Sign(TypeIDToken, map[string]string{"sub": "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Verify(tok, TypeIDToken, nil); err != nil {
		t.Errorf("second manager rejects first manager's token: %v", err)
	}

	// Another KEK: a clear error, and no replacement key is created.
	_, err = NewKeyManager(ctx, f.opts(newKEK(t, 2)))
	if err == nil {
		t.Fatal("NewKeyManager with the wrong KEK succeeded")
	}
	if !errors.Is(err, secret.ErrDecrypt) || !strings.Contains(err.Error(), "cannot decrypt signing key "+kid) {
		t.Errorf("wrong-KEK error = %q, want it to wrap secret.ErrDecrypt and name the kid", err)
	}
	if f.st.len() != 1 {
		t.Errorf("wrong KEK created a key: %d stored", f.st.len())
	}
}

func TestNewKeyManagerRequiresStoreAndKEK(t *testing.T) {
	ctx := context.Background()
	if _, err := NewKeyManager(ctx, KeyOptions{KEK: newKEK(t, 1)}); err == nil {
		t.Error("no store: want error")
	}
	if _, err := NewKeyManager(ctx, KeyOptions{Store: newMemStore()}); err == nil {
		t.Error("no KEK: want error")
	}
}

func TestKIDIsRFC7638Thumbprint(t *testing.T) {
	f := newFixture(t)
	set := f.m.JWKS()
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawURLEncoding.EncodeToString(tp); k.KeyID != want {
		t.Errorf("kid = %q, go-jose thumbprint = %q", k.KeyID, want)
	}
	if k.Algorithm != "ES256" || k.Use != "sig" || !k.IsPublic() {
		t.Errorf("JWK alg=%q use=%q public=%v, want ES256 sig true", k.Algorithm, k.Use, k.IsPublic())
	}
	// The published JSON carries no private member.
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"d"`)) {
		t.Errorf("JWKS JSON contains a private member: %s", b)
	}
}

func TestRotateAndPurge(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	oldKID := f.m.ActiveKID()
	claims := func() *AccessClaims { return validClaims(f.clock.Now()) }

	oldTok, err := f.m.MintAccessToken(claims())
	if err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(time.Minute)
	k, err := f.m.Rotate(ctx, "admin-1")
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if k.KID == oldKID {
		t.Fatal("Rotate returned the old kid")
	}
	if k.PrivateEnc != nil {
		t.Error("Rotate returned PrivateEnc")
	}
	if got := f.m.ActiveKID(); got != k.KID {
		t.Errorf("active kid = %q, want new %q", got, k.KID)
	}
	newTok, err := f.m.MintAccessToken(claims())
	if err != nil {
		t.Fatal(err)
	}
	if got := kidOf(t, newTok); got != k.KID {
		t.Errorf("new token kid = %q, want %q", got, k.KID)
	}
	if got := jwksKIDs(f.m.JWKS()); !slices.Equal(got, sorted(oldKID, k.KID)) {
		t.Errorf("JWKS kids = %v, want both %v", got, sorted(oldKID, k.KID))
	}
	old := f.st.get(oldKID)
	if want := f.clock.Now().Add(time.Hour); !old.RetireAt.Equal(want) {
		t.Errorf("old RetireAt = %v, want %v", old.RetireAt, want)
	}
	for _, tok := range []string{oldTok, newTok} {
		if _, err := f.m.ParseAccessToken(tok, testIssuer, f.clock.Now()); err != nil {
			t.Errorf("during overlap: %v", err)
		}
	}

	// Another instance picks the rotation up on Reload.
	other := f.manager(t, f.kek)
	if other.ActiveKID() != k.KID {
		t.Errorf("other instance active = %q, want %q", other.ActiveKID(), k.KID)
	}

	// Purging before RetireAt deletes nothing.
	if err := f.m.PurgeRetired(ctx); err != nil {
		t.Fatal(err)
	}
	if f.st.len() != 2 {
		t.Fatalf("purge before RetireAt: %d keys stored, want 2", f.st.len())
	}

	f.clock.Advance(time.Hour)
	// Past RetireAt the old key is unpublished even before the purge.
	if got := jwksKIDs(f.m.JWKS()); !slices.Equal(got, []string{k.KID}) {
		t.Errorf("JWKS past RetireAt = %v, want [%s]", got, k.KID)
	}
	if err := f.m.Verify(oldTok, TypeAccessToken, nil); !errors.Is(err, errUnknownKID) {
		t.Errorf("Verify with a key past RetireAt (not yet purged): err = %v, want unknown kid", err)
	}
	if err := f.m.PurgeRetired(ctx); err != nil {
		t.Fatal(err)
	}
	if f.st.len() != 1 || f.st.get(oldKID) != nil {
		t.Fatalf("after purge: %d keys stored, old present=%v", f.st.len(), f.st.get(oldKID) != nil)
	}
	if len(f.m.Keys()) != 1 {
		t.Errorf("Keys() after purge = %d, want 1", len(f.m.Keys()))
	}
	if got := jwksKIDs(f.m.JWKS()); !slices.Equal(got, []string{k.KID}) {
		t.Errorf("JWKS after purge = %v, want [%s]", got, k.KID)
	}
	// oldTok has not expired (validClaims gives 4h), so only the key decides.
	if _, err := f.m.ParseAccessToken(oldTok, testIssuer, f.clock.Now()); !errors.Is(err, errUnknownKID) {
		t.Errorf("old token after purge: err = %v, want unknown kid (ErrInvalidToken)", err)
	}
	if err := f.m.Verify(oldTok, TypeAccessToken, nil); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify old token after purge: err = %v, want ErrInvalidToken", err)
	}
	if err := f.m.Verify(newTok, TypeAccessToken, nil); err != nil {
		t.Errorf("Verify new token after purge: %v", err)
	}
	// The other instance, reloading, forgets the purged key too.
	if err := other.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Verify(oldTok, TypeAccessToken, nil); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("other instance after reload accepts purged key: %v", err)
	}

	rotated := eventsOf(f.rec, model.EventKeyRotated)
	if len(rotated) != 1 {
		t.Fatalf("key.rotated events = %d, want 1", len(rotated))
	}
	if e := rotated[0]; e.Actor != "admin-1" || e.Data["kid"] != k.KID || e.Data["previous_kid"] != oldKID || e.Code() != "W6001I" {
		t.Errorf("key.rotated = %+v", e)
	}
	if len(eventsOf(f.rec, model.EventKeyCreated)) != 2 {
		t.Errorf("key.created events = %d, want 2 (bootstrap + rotation)", len(eventsOf(f.rec, model.EventKeyCreated)))
	}
	retired := eventsOf(f.rec, model.EventKeyRetired)
	if len(retired) != 1 || retired[0].Data["kid"] != oldKID || retired[0].Actor != "system" {
		t.Errorf("key.retired = %+v, want one for %s by system", retired, oldKID)
	}
	for _, e := range f.rec.Events() {
		for _, v := range e.Data {
			if strings.Contains(v, ".") && strings.Count(v, ".") == 2 {
				t.Errorf("event %s data looks like a token: %q", e.Type, v)
			}
		}
	}
}

func TestRotateTwiceRetiresBoth(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	first := f.m.ActiveKID()
	k2, err := f.m.Rotate(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	k3, err := f.m.Rotate(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if f.m.ActiveKID() != k3.KID {
		t.Fatalf("active = %s, want %s", f.m.ActiveKID(), k3.KID)
	}
	if got := jwksKIDs(f.m.JWKS()); !slices.Equal(got, sorted(first, k2.KID, k3.KID)) {
		t.Errorf("JWKS = %v, want all three", got)
	}
	if f.st.get(first).RetireAt.IsZero() || f.st.get(k2.KID).RetireAt.IsZero() || !f.st.get(k3.KID).RetireAt.IsZero() {
		t.Error("retirement not scheduled for exactly the two old keys")
	}
	if e := eventsOf(f.rec, model.EventKeyRotated); len(e) != 2 || e[1].Actor != "system" {
		t.Errorf("key.rotated events = %+v", e)
	}
}

func TestNewKeyManagerReplacesRetiredKey(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kid := f.m.ActiveKID()
	if _, err := f.st.UpdateSigningKey(ctx, kid, func(k *model.SigningKey) error {
		k.RetireAt = f.clock.Now().Add(time.Minute)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := f.manager(t, f.kek)
	if m.ActiveKID() == kid {
		t.Error("a key scheduled for retirement is still the signer")
	}
	if f.st.len() != 2 {
		t.Errorf("stored = %d, want 2", f.st.len())
	}
}

func TestReloadSkipsCorruptKey(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A stored key whose kid does not match its public key is ignored.
	bad := clone(f.st.get(f.m.ActiveKID()))
	bad.KID = "not-a-thumbprint"
	bad.RetireAt = f.clock.Now().Add(time.Hour)
	if err := f.st.CreateSigningKey(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := jwksKIDs(f.m.JWKS()); slices.Contains(got, "not-a-thumbprint") {
		t.Errorf("JWKS publishes a key whose kid is not its thumbprint: %v", got)
	}
}

func TestLogRedaction(t *testing.T) {
	f := newFixture(t)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	s := f.m.state.Load().signer
	log.Info("x", "manager", f.m, "signer", s)
	fmt.Fprintf(&buf, "%v %+v %#v %s", s, s, s, s)
	d, _ := s.priv.Bytes()
	for _, enc := range []string{base64.RawURLEncoding.EncodeToString(d), base64.StdEncoding.EncodeToString(d), fmt.Sprintf("%x", d), s.priv.D.String()} {
		if strings.Contains(buf.String(), enc) {
			t.Fatalf("private key reached the log: %s", buf.String())
		}
	}
	if !strings.Contains(buf.String(), f.m.ActiveKID()) || !strings.Contains(buf.String(), "REDACTED") {
		t.Errorf("log output lacks kid or redaction marker: %s", buf.String())
	}
}

func TestConcurrentSignVerifyRotate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				tok, err := f.m.MintAccessToken(validClaims(f.clock.Now()))
				if err == nil {
					_, err = f.m.ParseAccessToken(tok, testIssuer, f.clock.Now())
				}
				if err != nil {
					errc <- err
					return
				}
				_ = f.m.JWKS()
				_ = f.m.Keys()
			}
		}()
	}
	for i := 0; i < 5; i++ {
		if _, err := f.m.Rotate(ctx, ""); err != nil {
			t.Fatal(err)
		}
		if err := f.m.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func jwksKIDs(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// unrelatedKey returns a fresh P-256 key (the attacker's).
func unrelatedKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Retire removes a key that no longer signs at once: out of JWKS and
// Verify, deleted from the store (so other instances drop it at their
// next reload), key.retired published; the active key and unknown kids
// are refused.
func TestRetire(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	leaked := f.m.ActiveKID()
	oldTok, err := f.m.MintAccessToken(validClaims(f.clock.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.m.Retire(ctx, "admin-1", leaked); !errors.Is(err, ErrActiveKey) {
		t.Fatalf("retire the active key: %v", err)
	}
	k, err := f.m.Rotate(ctx, "admin-1")
	if err != nil {
		t.Fatal(err)
	}
	other := f.manager(t, f.kek) // another instance, loaded during the overlap
	if err := other.Verify(oldTok, TypeAccessToken, nil); err != nil {
		t.Fatalf("overlap: %v", err)
	}
	n := len(f.rec.Events())
	if err := f.m.Retire(ctx, "cli", leaked); err != nil {
		t.Fatal(err)
	}
	if got := jwksKIDs(f.m.JWKS()); !slices.Equal(got, []string{k.KID}) {
		t.Errorf("JWKS = %v, want [%s]", got, k.KID)
	}
	if err := f.m.Verify(oldTok, TypeAccessToken, nil); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify a token of the retired key: %v", err)
	}
	if f.st.get(leaked) != nil || f.st.len() != 1 {
		t.Error("the retired key is still stored")
	}
	if evs := f.rec.Events()[n:]; len(evs) != 1 || evs[0].Type != model.EventKeyRetired || evs[0].Actor != "cli" ||
		evs[0].Data["kid"] != leaked || evs[0].Data["immediate"] != "true" {
		t.Errorf("events: %+v", evs)
	}
	if err := other.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Verify(oldTok, TypeAccessToken, nil); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("other instance after reload: %v", err)
	}
	if err := f.m.Retire(ctx, "cli", leaked); !errors.Is(err, ErrNoKey) {
		t.Errorf("retire again: %v", err)
	}
	if f.m.ActiveKID() != k.KID {
		t.Error("the active key changed")
	}
}
