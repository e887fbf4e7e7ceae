// Package tokens holds Ward's token-signing keys and the JWTs signed with
// them: RFC 9068 access tokens and OpenID Connect ID tokens.
//
// A KeyManager loads the signing keys from the store, keeps the private key
// of the active signer decrypted in memory only (the store holds it
// AES-GCM-encrypted under the KEK), rotates keys with an overlap during
// which the previous key stays published in the JWKS, and purges keys after
// their retirement time.
//
// Signing and verification are ES256 (ECDSA P-256, SHA-256) only, with
// Ward's strict compact-JWS codec (package jws) directly over crypto/ecdsa,
// because they sit on the hot path of every token request and every
// protected API call: headers are pre-encoded per key and token type, and
// Ward's own headers are recognised byte for byte instead of parsed.
// go-jose is used for the public JWK Set type. Every verification failure
// wraps ErrInvalidToken and no error message ever contains the token.
package tokens

import (
	"context"
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
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/jws"
)

// AlgES256 is the only signature algorithm Ward issues and accepts.
const AlgES256 = "ES256"

// DefaultRetireAfter is the default overlap during which a rotated-out key
// stays published.
const DefaultRetireAfter = 24 * time.Hour

// ActorSystem is the event actor used when none is given.
const ActorSystem = "system"

// aadPrefix binds an encrypted private key to its kid.
const aadPrefix = "ward/signing-key:"

// SigningKeyAAD is the associated data that binds a signing key's sealed
// private key (SigningKey.PrivateEnc) to its kid: what a KEK rotation
// re-seals it with.
func SigningKeyAAD(kid string) []byte { return []byte(aadPrefix + kid) }

// KeyStore is the subset of store.Store the key manager needs.
// Every write commits its key.* events with it (store.WithEvent).
type KeyStore interface {
	CreateSigningKey(ctx context.Context, k *model.SigningKey) error
	ListSigningKeys(ctx context.Context) ([]*model.SigningKey, error)
	RotateSigningKey(ctx context.Context, k *model.SigningKey, previous string, retireAt time.Time) ([]string, error)
	DeleteSigningKey(ctx context.Context, kid string) error
	// CreateFirstSigningKey and RetireSigningKey make their check and
	// their write one transaction (see store.Store): other instances
	// share the store.
	CreateFirstSigningKey(ctx context.Context, k *model.SigningKey) (bool, error)
	RetireSigningKey(ctx context.Context, kid, signer string) error
}

// KeyOptions configures a KeyManager.
type KeyOptions struct {
	Store  KeyStore
	KEK    *secret.KEK
	Now    func() time.Time // default time.Now
	Logger *slog.Logger     // default: discard
	// Bus, when set, receives key.created, key.rotated and key.retired
	// events (Actor "system" unless given); each is committed with the
	// store write that makes its change. Without a bus nothing is
	// recorded.
	Bus bus.Bus
	// RetireAfter is how long a rotated-out key stays published in JWKS
	// (the overlap). Default 24h; it should be at least the longest token
	// lifetime plus the JWKS cache time of relying parties.
	RetireAfter time.Duration
}

// KeyManager owns the signing keys. All methods are safe for concurrent
// use; Sign, Verify, JWKS and Keys read an immutable snapshot and never
// block on the store.
type KeyManager struct {
	store       KeyStore
	kek         *secret.KEK
	now         func() time.Time
	log         *slog.Logger
	events      *bus.Emitter // records domain events (nothing without a bus)
	retireAfter time.Duration

	mu    sync.Mutex // serialises writers (Reload, Rotate, PurgeRetired)
	state atomic.Pointer[keyState]
}

// keyState is an immutable snapshot of the loaded keys.
type keyState struct {
	signer *signer               // active signer; never nil once loaded
	byKID  map[string]*publicKey // every loaded key, for verification
	// byHeader maps the exact encoded protected headers Ward produces
	// ({alg, kid, typ} for the token types it mints) to their key and
	// typ, so verifying Ward's own tokens skips parsing the header.
	byHeader map[string]knownHeader
	keys     []*model.SigningKey // metadata, PrivateEnc cleared, oldest first
}

// publicKey is a loaded public key.
type publicKey struct {
	kid      string
	pub      *ecdsa.PublicKey
	retireAt time.Time // zero: not scheduled
}

// knownHeader is a pre-parsed protected header.
type knownHeader struct {
	key *publicKey
	typ string
}

// signer holds the decrypted private key of the active signing key and the
// encoded protected headers for the common token types.
type signer struct {
	kid     string
	priv    *ecdsa.PrivateKey
	headers map[string]string // typ -> base64url(protected header)
}

// LogValue keeps the private key out of logs.
func (s *signer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kid", s.kid), slog.String("private_key", "[REDACTED]"))
}

// String keeps the private key out of fmt output.
func (s *signer) String() string { return "tokens.signer{kid:" + s.kid + " private_key:[REDACTED]}" }

// GoString keeps the private key out of %#v output.
func (s *signer) GoString() string { return s.String() }

// NewKeyManager loads the signing keys from the store and decrypts the
// private key of the active one. If there is no usable active key (none
// stored, or all of them retired or scheduled for retirement), it creates
// an ES256 key. A stored active key that cannot be decrypted is an error:
// Ward never silently replaces a key it cannot read.
func NewKeyManager(ctx context.Context, o KeyOptions) (*KeyManager, error) {
	if o.Store == nil {
		return nil, errors.New("tokens: KeyOptions.Store is required")
	}
	if o.KEK == nil {
		return nil, errors.New("tokens: KeyOptions.KEK is required")
	}
	m := &KeyManager{
		store:       o.Store,
		kek:         o.KEK,
		now:         o.Now,
		log:         o.Logger,
		events:      bus.NewEmitter(o.Bus, o.Now),
		retireAfter: o.RetireAfter,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.retireAfter <= 0 {
		m.retireAfter = DefaultRetireAfter
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.reloadLocked(ctx)
	if errors.Is(err, errNoActiveKey) {
		err = m.createFirstLocked(ctx)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// firstKeyWait bounds how long an instance that lost the creation of the
// first key waits for the winner's key to be active by its own clock
// (the winner's clock may be a little ahead).
const firstKeyWait = 5 * time.Second

// createFirstLocked creates a signing key when the store holds none that
// may sign. The store checks and inserts in one transaction
// (CreateFirstSigningKey): of instances starting together on an empty
// database exactly one creates a key, with its key.created, and the
// others adopt it.
func (m *KeyManager) createFirstLocked(ctx context.Context) error {
	k, err := m.newKey()
	if err != nil {
		return err
	}
	// The key and its key.created commit together.
	ev := m.event(model.EventKeyCreated, "", map[string]string{"kid": k.KID})
	ectx := m.events.Pending(ctx, ev, nil)
	created, err := m.store.CreateFirstSigningKey(ectx, k)
	if err != nil {
		return fmt.Errorf("tokens: store signing key: %w", err)
	}
	if created {
		m.log.InfoContext(ctx, "created signing key", "kid", k.KID)
		if perr := m.events.Emit(ectx, ev); perr != nil {
			// The key and its record are stored; only the bus's
			// subscribers missed it.
			m.log.ErrorContext(ctx, "publishing key.created event failed", "kid", k.KID, "err", perr)
		}
		return m.reloadLocked(ctx)
	}
	// Another instance created the first key (or one that is not
	// active yet exists): adopt it.
	deadline := time.Now().Add(firstKeyWait)
	for {
		err = m.reloadLocked(ctx)
		if !errors.Is(err, errNoActiveKey) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if errors.Is(err, errNoActiveKey) {
		return fmt.Errorf("tokens: the store holds a signing key that is not scheduled for retirement but none that may sign now: %w", err)
	}
	if err == nil {
		m.log.InfoContext(ctx, "adopted the signing key another instance created", "kid", m.state.Load().signer.kid)
	}
	return err
}

// errNoActiveKey: the store holds no key that may sign now.
var errNoActiveKey = errors.New("tokens: no active signing key in the store")

// Reload re-reads the keys from the store (for example after another
// instance rotated). It decrypts a private key only when the active key
// changed, so it is cheap to call periodically. On error the previous
// snapshot stays in use.
func (m *KeyManager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reloadLocked(ctx)
}

func (m *KeyManager) reloadLocked(ctx context.Context) error {
	stored, err := m.store.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("tokens: list signing keys: %w", err)
	}
	now := m.now()
	st := &keyState{
		byKID:    make(map[string]*publicKey, len(stored)),
		byHeader: make(map[string]knownHeader, 2*len(stored)),
	}
	var active *model.SigningKey
	for _, k := range stored {
		pub, err := parsePublicJWK(k.PublicJWK)
		if err == nil && k.Alg != AlgES256 {
			err = fmt.Errorf("unsupported alg %q", k.Alg)
		}
		if err == nil {
			if tp := thumbprint(pub); tp != k.KID {
				err = errors.New("kid is not the RFC 7638 thumbprint of the public key")
			}
		}
		if err != nil {
			// One unreadable published key must not stop token service.
			m.log.ErrorContext(ctx, "skipping unusable signing key", "kid", k.KID, "err", err)
			continue
		}
		pk := &publicKey{kid: k.KID, pub: pub, retireAt: k.RetireAt}
		st.byKID[k.KID] = pk
		for _, typ := range []string{TypeAccessToken, TypeIDToken} {
			if h, err := encodeHeader(k.KID, typ); err == nil {
				st.byHeader[h] = knownHeader{key: pk, typ: typ}
			}
		}
		meta := *k
		meta.PrivateEnc = nil
		meta.PublicJWK = slices.Clone(k.PublicJWK)
		st.keys = append(st.keys, &meta)
		if usableSigner(k, now) && (active == nil || newer(k, active)) {
			active = k
		}
	}
	if active == nil {
		return errNoActiveKey
	}
	slices.SortFunc(st.keys, func(a, b *model.SigningKey) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return compareStrings(a.KID, b.KID)
	})

	if cur := m.state.Load(); cur != nil && cur.signer.kid == active.KID {
		st.signer = cur.signer // already decrypted
	} else {
		s, err := m.openSigner(active, st.byKID[active.KID].pub)
		if err != nil {
			return err
		}
		st.signer = s
	}
	m.state.Store(st)
	return nil
}

// usableSigner reports whether k may be the active signer at now.
func usableSigner(k *model.SigningKey, now time.Time) bool {
	return k.Alg == AlgES256 && k.RetireAt.IsZero() && !k.ActiveAt.After(now) && len(k.PrivateEnc) > 0
}

// newer orders candidate signers deterministically, so that every instance
// reading the same store picks the same active key.
func newer(a, b *model.SigningKey) bool {
	if c := a.ActiveAt.Compare(b.ActiveAt); c != 0 {
		return c > 0
	}
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c > 0
	}
	return a.KID > b.KID
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// openSigner decrypts k's private key and checks it against its public key.
func (m *KeyManager) openSigner(k *model.SigningKey, pub *ecdsa.PublicKey) (*signer, error) {
	der, err := m.kek.Open(k.PrivateEnc, SigningKeyAAD(k.KID))
	if err != nil {
		return nil, fmt.Errorf("tokens: cannot decrypt signing key %s (is this the key-encryption key the keys were created with?): %w", k.KID, err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("tokens: signing key %s: parse private key: %w", k.KID, err)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("tokens: signing key %s is not an ECDSA P-256 key", k.KID)
	}
	if !priv.PublicKey.Equal(pub) {
		return nil, fmt.Errorf("tokens: signing key %s: private key does not match the published public key", k.KID)
	}
	return newSigner(k.KID, priv)
}

func newSigner(kid string, priv *ecdsa.PrivateKey) (*signer, error) {
	s := &signer{kid: kid, priv: priv, headers: make(map[string]string, 3)}
	for _, typ := range []string{TypeAccessToken, TypeIDToken, TypeSET} {
		h, err := encodeHeader(kid, typ)
		if err != nil {
			return nil, err
		}
		s.headers[typ] = h
	}
	return s, nil
}

// newKey generates a new ES256 key, active from now, with its private
// key sealed under the KEK (not stored yet).
func (m *KeyManager) newKey() (*model.SigningKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tokens: generate key: %w", err)
	}
	kid := thumbprint(&priv.PublicKey)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("tokens: encode private key: %w", err)
	}
	enc, err := m.kek.Seal(der, SigningKeyAAD(kid))
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("tokens: encrypt private key: %w", err)
	}
	jwk, err := marshalPublicJWK(&priv.PublicKey, kid)
	if err != nil {
		return nil, err
	}
	now := m.now()
	return &model.SigningKey{
		KID:        kid,
		Alg:        AlgES256,
		PrivateEnc: enc,
		PublicJWK:  jwk,
		CreatedAt:  now,
		ActiveAt:   now,
	}, nil
}

// ErrConcurrentRotation: another rotation, on this instance or another
// one, replaced the signing key this one was replacing; this one wrote
// nothing.
var ErrConcurrentRotation = errors.New("tokens: the signing key was rotated concurrently; nothing was rotated")

// Rotate creates a new key that becomes the active signer at once. Every
// previously active key gets RetireAt = now+RetireAfter and stays published
// in JWKS (and accepted by Verify) until then. The new key, the
// retirements and their key.created and key.rotated commit in one store
// transaction, or nothing does. The rotation replaces the key the store
// says signs now: of rotations racing from that state, on any number of
// instances, exactly one happens and the others get
// ErrConcurrentRotation. If the rotation committed but publishing its
// events on the bus failed, it returns the new key together with the
// error.
func (m *KeyManager) Rotate(ctx context.Context, actor string) (*model.SigningKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The store decides which key signs now (another instance may have
	// rotated since this one loaded): that is the key replaced.
	if err := m.reloadLocked(ctx); err != nil {
		return nil, err
	}
	previous := m.state.Load().signer.kid
	k, err := m.newKey()
	if err != nil {
		return nil, err
	}
	retireAt := k.ActiveAt.Add(m.retireAfter)
	created := m.event(model.EventKeyCreated, actor, map[string]string{"kid": k.KID})
	rotated := m.event(model.EventKeyRotated, actor, nil)
	ectx := m.events.PendingEvents(ctx, func(retired []string) []*model.Event {
		rotated.Data = rotationData(k.KID, retireAt, retired)
		return []*model.Event{created, rotated}
	})
	retired, err := m.store.RotateSigningKey(ectx, k, previous, retireAt)
	if errors.Is(err, store.ErrAlreadyUsed) {
		err = ErrConcurrentRotation
		if rerr := m.reloadLocked(ctx); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("tokens: rotate: %w", err)
	}
	rotated.Data = rotationData(k.KID, retireAt, retired) // what the committed run built
	if err := m.reloadLocked(ctx); err != nil {
		return nil, err
	}
	m.log.InfoContext(ctx, "rotated signing key", "kid", k.KID, "previous", retired, "retire_at", retireAt)

	meta := *k
	meta.PrivateEnc = nil
	if err := errors.Join(m.events.Emit(ectx, created), m.events.Emit(ectx, rotated)); err != nil {
		return &meta, fmt.Errorf("tokens: key rotated to %s but publishing events failed: %w", k.KID, err)
	}
	return &meta, nil
}

// rotationData is the Data of key.rotated: the new kid, when the keys it
// replaced (previous_kid, previous_kid_2, ... in kid order) leave JWKS.
func rotationData(kid string, retireAt time.Time, previous []string) map[string]string {
	rot := map[string]string{"kid": kid, "retire_at": retireAt.UTC().Format(time.RFC3339)}
	previous = slices.Sorted(slices.Values(previous))
	for i, p := range previous {
		if i == 0 {
			rot["previous_kid"] = p
		} else {
			rot[fmt.Sprintf("previous_kid_%d", i+1)] = p
		}
	}
	return rot
}

// Errors of Retire.
var (
	// ErrActiveKey: the key that signs now cannot be retired; rotate
	// first.
	ErrActiveKey = errors.New("tokens: the active signing key cannot be retired: rotate first")
	// ErrNoKey: no signing key has that kid.
	ErrNoKey = errors.New("tokens: no such signing key")
)

// Retire removes a key that no longer signs at once, without waiting for
// its RetireAt: for a key that leaked. It is deleted from the store
// (private key included), so it leaves JWKS and Verify here and, at their
// next reload, on every instance; tokens it signed stop verifying at once
// here and at resource servers when they fetch JWKS again. The active key
// is refused (ErrActiveKey: rotate first), and so is a retirement that a
// rotation on another instance overtook (ErrConcurrentRotation: nothing
// was retired; look again). The key and its key.retired (Data: kid,
// immediate "true") are deleted and recorded in one store transaction.
func (m *KeyManager) Retire(ctx context.Context, actor, kid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The store decides which key is active (another process may have
	// rotated since this one loaded).
	if err := m.reloadLocked(ctx); err != nil {
		return err
	}
	signer := m.state.Load().signer.kid
	if signer == kid {
		return ErrActiveKey
	}
	ev := m.event(model.EventKeyRetired, actor, map[string]string{"kid": kid, "immediate": "true"})
	ectx := m.events.Pending(ctx, ev, nil)
	// The store deletes kid only while signer still signs and kid does
	// not come after it, in the statement that deletes: a rotation on
	// another instance since the reload above cannot make this delete
	// the key that signs now.
	if err := m.store.RetireSigningKey(ectx, kid, signer); err != nil {
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("%w: %s", ErrNoKey, kid)
		case errors.Is(err, store.ErrAlreadyUsed):
			err = fmt.Errorf("%w (%s was not retired)", ErrConcurrentRotation, kid)
			if rerr := m.reloadLocked(ctx); rerr != nil {
				err = errors.Join(err, rerr)
			} else if m.state.Load().signer.kid == kid {
				err = ErrActiveKey
			}
			return err
		}
		return fmt.Errorf("tokens: retire %s: %w", kid, err)
	}
	m.log.InfoContext(ctx, "retired signing key before its time", "kid", kid, "actor", actor)
	err := m.reloadLocked(ctx)
	if perr := m.events.Emit(ectx, ev); perr != nil {
		err = errors.Join(err, fmt.Errorf("tokens: key %s retired but publishing the event failed: %w", kid, perr))
	}
	return err
}

// PurgeRetired deletes every key whose RetireAt has passed and publishes
// key.retired for each. Tokens signed by those keys no longer verify.
func (m *KeyManager) PurgeRetired(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	stored, err := m.store.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("tokens: purge: list signing keys: %w", err)
	}
	now := m.now()
	var errs []error
	var purged bool
	for _, k := range stored {
		if k.RetireAt.IsZero() || now.Before(k.RetireAt) {
			continue
		}
		ev := m.event(model.EventKeyRetired, "", map[string]string{"kid": k.KID})
		ectx := m.events.Pending(ctx, ev, nil)
		if err := m.store.DeleteSigningKey(ectx, k.KID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue // another instance purged it (and recorded it)
			}
			errs = append(errs, fmt.Errorf("tokens: purge %s: %w", k.KID, err))
			continue
		}
		purged = true
		m.log.InfoContext(ctx, "retired signing key", "kid", k.KID)
		if err := m.events.Emit(ectx, ev); err != nil {
			errs = append(errs, fmt.Errorf("tokens: key %s retired but publishing event failed: %w", k.KID, err))
		}
	}
	if purged {
		if err := m.reloadLocked(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// event is a key.* event by actor ("" for ActorSystem).
func (m *KeyManager) event(t model.EventType, actor string, data map[string]string) *model.Event {
	if actor == "" {
		actor = ActorSystem
	}
	return &model.Event{Type: t, Actor: actor, Data: data}
}

// Keys returns the metadata of every loaded key, oldest first, without
// private material (PrivateEnc is nil).
func (m *KeyManager) Keys() []*model.SigningKey {
	st := m.state.Load()
	out := make([]*model.SigningKey, len(st.keys))
	for i, k := range st.keys {
		c := *k
		c.PublicJWK = slices.Clone(k.PublicJWK)
		out[i] = &c
	}
	return out
}

// ActiveKID returns the kid of the key that signs now.
func (m *KeyManager) ActiveKID() string { return m.state.Load().signer.kid }

// JWKS returns the public keys of every key not past its RetireAt, with
// kid, alg ES256 and use sig.
func (m *KeyManager) JWKS() jose.JSONWebKeySet {
	st := m.state.Load()
	now := m.now()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(st.keys))}
	for _, k := range st.keys {
		pk := st.byKID[k.KID]
		if !pk.published(now) {
			continue
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pk.pub, KeyID: pk.kid, Algorithm: AlgES256, Use: "sig"})
	}
	return set
}

// published reports whether the key is still published at now.
func (p *publicKey) published(now time.Time) bool {
	return p.retireAt.IsZero() || now.Before(p.retireAt)
}

// LogValue describes the manager without key material.
func (m *KeyManager) LogValue() slog.Value {
	st := m.state.Load()
	if st == nil {
		return slog.StringValue("tokens.KeyManager{not loaded}")
	}
	return slog.GroupValue(slog.String("active_kid", st.signer.kid), slog.Int("keys", len(st.keys)))
}

// thumbprint is the RFC 7638 SHA-256 JWK thumbprint of an ES256 key.
func thumbprint(pub *ecdsa.PublicKey) string {
	tp, err := jws.Thumbprint(pub)
	if err != nil {
		panic("tokens: invalid P-256 public key") // keys are validated on load
	}
	return tp
}

// coordinates returns the fixed-length (32-byte) X and Y of a P-256 key.
func coordinates(pub *ecdsa.PublicKey) (x, y []byte) {
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil || len(raw) != 65 {
		panic("tokens: invalid P-256 public key") // keys are validated on load
	}
	return raw[1:33], raw[33:]
}

// jwkJSON is the stored public JWK.
type jwkJSON struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
}

func marshalPublicJWK(pub *ecdsa.PublicKey, kid string) (json.RawMessage, error) {
	x, y := coordinates(pub)
	return json.Marshal(jwkJSON{
		Kty: "EC", Crv: "P-256",
		X:   base64.RawURLEncoding.EncodeToString(x),
		Y:   base64.RawURLEncoding.EncodeToString(y),
		Kid: kid, Alg: AlgES256, Use: "sig",
	})
}

func parsePublicJWK(b []byte) (*ecdsa.PublicKey, error) {
	var j jwkJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("public JWK: %w", err)
	}
	if j.Kty != "EC" || j.Crv != "P-256" {
		return nil, fmt.Errorf("public JWK: want EC P-256, got %q %q", j.Kty, j.Crv)
	}
	raw := make([]byte, 1, 65)
	raw[0] = 4
	for _, c := range []string{j.X, j.Y} {
		v, err := base64.RawURLEncoding.Strict().DecodeString(c)
		if err != nil || len(v) != 32 {
			return nil, errors.New("public JWK: bad coordinate")
		}
		raw = append(raw, v...)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("public JWK: %w", err)
	}
	return pub, nil
}
