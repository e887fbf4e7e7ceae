package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/metadata"
	"github.com/go-webauthn/webauthn/metadata/providers/memory"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

const (
	rpOrigin = "https://id.example.com"
	rpID     = "id.example.com"
)

// pkEnv is two identity services (two instances) over one SQLite
// database file, with a shared event recorder and a settable clock.
type pkEnv struct {
	t      testing.TB
	ctx    context.Context
	st     store.Store
	a, b   *identity.Service
	rec    *bus.Recorder
	mu     sync.Mutex
	now    time.Time
	alice  *model.User
	mallet *model.User
}

func (e *pkEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *pkEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func newPKEnv(t testing.TB, wa *identity.WebAuthnOptions) *pkEnv {
	return newPKEnvOn(t, wa, "sqlite")
}

// pkBackends are the databases the attack tests run on: SQLite always,
// PostgreSQL when WARD_TEST_POSTGRES_DSN is set.
func pkBackends(t *testing.T) []string {
	if os.Getenv("WARD_TEST_POSTGRES_DSN") == "" {
		t.Logf("WARD_TEST_POSTGRES_DSN is not set: PostgreSQL is not tested")
		return []string{"sqlite"}
	}
	return []string{"sqlite", "postgres"}
}

// opener returns a function opening another handle on one fresh
// database of the backend (a second instance).
func opener(t testing.TB, backend string, now func() time.Time) func() store.Store {
	ctx := context.Background()
	if backend == "postgres" {
		dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
		b := make([]byte, 8)
		rand.Read(b)
		schema := "ward_test_" + hex.EncodeToString(b)
		t.Cleanup(func() { // registered first: runs after the handles closed
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Errorf("drop schema %s: %v", schema, err)
				return
			}
			defer conn.Close(ctx)
			conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		})
		return func() store.Store {
			st, err := postgres.Open(ctx, dsn, postgres.WithSchema(schema), postgres.WithClock(now))
			if err != nil {
				t.Fatalf("postgres.Open: %v", err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
	}
	path := filepath.Join(t.TempDir(), "ward.db")
	return func() store.Store {
		st, err := sqlite.Open(ctx, path, sqlite.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}

func newPKEnvOn(t testing.TB, wa *identity.WebAuthnOptions, backend string) *pkEnv {
	t.Helper()
	e := &pkEnv{t: t, ctx: context.Background(), now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), rec: &bus.Recorder{}}
	open := opener(t, backend, e.clock)
	kek, _ := secret.NewKEK(make([]byte, secret.KEKSize))
	b := bus.NewLocal()
	b.Subscribe("rec", e.rec.Handle)
	if wa == nil {
		wa = &identity.WebAuthnOptions{RPID: rpID, Origins: []string{rpOrigin}}
	}
	var svcs []*identity.Service
	for range 2 {
		st := open()
		if e.st == nil {
			e.st = st
		}
		w := *wa
		svcs = append(svcs, identity.New(identity.Options{
			Store: st, Bus: b, KEK: kek, Now: e.clock, WebAuthn: &w,
			Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		}))
	}
	e.a, e.b = svcs[0], svcs[1]
	var err error
	if e.alice, err = e.a.CreateUser(e.ctx, "admin", identity.NewUser{Username: "alice", Password: "a long enough passphrase"}); err != nil {
		t.Fatal(err)
	}
	if e.mallet, err = e.a.CreateUser(e.ctx, "admin", identity.NewUser{Username: "mallet", Password: "a long enough passphrase"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// register enrols a passkey of kind for u with authenticator au.
func (e *pkEnv) register(u *model.User, au *webauthntest.Authenticator, kind, name string) (*model.WebAuthnCredential, *webauthntest.Credential) {
	e.t.Helper()
	e.advance(time.Second)
	c, err := e.a.BeginPasskeyRegistration(e.ctx, u, kind)
	if err != nil {
		e.t.Fatalf("BeginPasskeyRegistration: %v", err)
	}
	resp, sc, err := au.Create(c.Options)
	if err != nil {
		e.t.Fatalf("authenticator create: %v", err)
	}
	cred, err := e.a.FinishPasskeyRegistration(e.ctx, u.ID, u, c.ID, name, resp)
	if err != nil {
		e.t.Fatalf("FinishPasskeyRegistration: %v (reason %s)", err, identity.Reason(err))
	}
	return cred, sc
}

func wantReason(t *testing.T, what string, err error, sentinel error, reason string) {
	t.Helper()
	if !errors.Is(err, sentinel) || identity.Reason(err) != reason {
		t.Errorf("%s: got %v (reason %q), want %v (reason %q)", what, err, identity.Reason(err), sentinel, reason)
	}
}

func (e *pkEnv) count(typ model.EventType) int {
	n := 0
	for _, ev := range e.rec.Events() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func (e *pkEnv) last(typ model.EventType) *model.Event {
	evs := e.rec.Events()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return &evs[i]
		}
	}
	return nil
}

// TestPasskeyRegistrationAndSignIn: a passkey is registered with user
// verification, its record and event are right, and it signs in without
// a username (on another instance), with hwk/swk + user + mfa.
func TestPasskeyRegistrationAndSignIn(t *testing.T) {
	e := newPKEnv(t, nil)
	au := webauthntest.New(rpOrigin)
	cred, _ := e.register(e.alice, au, identity.MethodPasskey, "Laptop")
	if !cred.Discoverable || cred.Name != "Laptop" || cred.UserID != e.alice.ID || len(cred.PublicKey) == 0 || cred.AttestationFormat != "none" {
		t.Errorf("stored credential: %+v", cred)
	}
	ev := e.last(model.EventMFAEnrolled)
	if ev == nil || ev.UserID != e.alice.ID || ev.Data["method"] != "passkey" || ev.Data["credential"] != cred.ID || ev.Data["name"] != "Laptop" {
		t.Fatalf("mfa.enrolled: %+v", ev)
	}
	if code := model.EventCodes[ev.Type]; code != "W1002I" {
		t.Errorf("code %s", code)
	}

	// Usernameless sign-in, begun on one instance, finished on the other.
	c, err := e.a.BeginPasskeyLogin(e.ctx, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	var opts struct {
		PublicKey struct {
			UserVerification string `json:"userVerification"`
			RPID             string `json:"rpId"`
			AllowCredentials []any  `json:"allowCredentials"`
		} `json:"publicKey"`
	}
	json.Unmarshal(c.Options, &opts)
	if opts.PublicKey.UserVerification != "required" || opts.PublicKey.RPID != rpID || len(opts.PublicKey.AllowCredentials) != 0 {
		t.Errorf("login options: %s", c.Options)
	}
	resp, err := au.Get(c.Options, nil)
	if err != nil {
		t.Fatal(err)
	}
	use, err := e.b.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
	if err != nil {
		t.Fatalf("FinishPasskeyLogin: %v (%s)", err, identity.Reason(err))
	}
	if use.User.ID != e.alice.ID || strings.Join(use.AMR, " ") != "hwk user mfa" || use.Credential.SignCount != 1 || use.Credential.LastUsedAt.IsZero() {
		t.Errorf("use: user %s amr %v count %d", use.User.ID, use.AMR, use.Credential.SignCount)
	}

	// A synced passkey (backup eligible) is swk.
	synced := webauthntest.New(rpOrigin)
	synced.BackupEligible, synced.BackupState = true, true
	sc, _ := e.register(e.mallet, synced, identity.MethodPasskey, "")
	if !sc.BackupEligible || !sc.BackupState || sc.Name != "Passkey 1" {
		t.Errorf("synced passkey: %+v", sc)
	}
	c, _ = e.a.BeginPasskeyLogin(e.ctx, "192.0.2.1")
	resp, _ = synced.Get(c.Options, nil)
	use, err = e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
	if err != nil || use.User.ID != e.mallet.ID || use.AMR[0] != "swk" {
		t.Fatalf("synced passkey sign-in: %v, %+v", err, use)
	}

	// Several named credentials per user; the authenticator already
	// registered is excluded.
	if _, _, err := au.Create(mustBegin(t, e, e.alice).Options); err == nil {
		t.Error("the same authenticator registered a second credential despite excludeCredentials")
	}
	key := webauthntest.New(rpOrigin)
	sk, _ := e.register(e.alice, key, identity.MethodSecurityKey, "YubiKey")
	if sk.Discoverable {
		t.Error("a security key was recorded as a passkey")
	}
	l, err := e.a.ListPasskeys(e.ctx, e.alice.ID)
	if err != nil || len(l) != 2 || l[0].Name != "Laptop" || l[1].Name != "YubiKey" {
		t.Errorf("ListPasskeys: %v", err)
	}
}

func mustBegin(t *testing.T, e *pkEnv, u *model.User) *identity.Ceremony {
	t.Helper()
	c, err := e.a.BeginPasskeyRegistration(e.ctx, u, identity.MethodPasskey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPasskeyAttacks plays what an attacker would send; each is refused
// with its reason and changes nothing (the stored counter stays).
func TestPasskeyAttacks(t *testing.T) {
	for _, backend := range pkBackends(t) {
		t.Run(backend, func(t *testing.T) { testPasskeyAttacks(t, backend) })
	}
}

func testPasskeyAttacks(t *testing.T, backend string) {
	e := newPKEnvOn(t, nil, backend)
	au := webauthntest.New(rpOrigin)
	cred, sc := e.register(e.alice, au, identity.MethodPasskey, "Laptop")
	malletKey := webauthntest.New(rpOrigin)
	_, msc := e.register(e.mallet, malletKey, identity.MethodSecurityKey, "mallet's key")

	login := func() *identity.Ceremony {
		c, err := e.a.BeginPasskeyLogin(e.ctx, "192.0.2.1")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stored := func() uint32 {
		c, err := e.st.GetWebAuthnCredential(e.ctx, cred.CredentialID)
		if err != nil {
			t.Fatal(err)
		}
		return c.SignCount
	}

	t.Run("replayed assertion on the other instance", func(t *testing.T) {
		c := login()
		resp, _ := au.Get(c.Options, sc)
		if _, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
		n := stored()
		_, err := e.b.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "replay", err, identity.ErrPasskeyExpired, identity.ReasonPasskeyChallenge)
		if stored() != n {
			t.Error("a replay changed the counter")
		}
	})

	t.Run("replayed assertion under a fresh challenge", func(t *testing.T) {
		c1 := login()
		resp, _ := au.Get(c1.Options, sc)
		c2 := login()
		_, err := e.a.FinishPasskeyLogin(e.ctx, c2.ID, resp, "192.0.2.1")
		wantReason(t, "answer to another challenge", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyChallenge)
	})

	t.Run("concurrent answers to one challenge across instances", func(t *testing.T) {
		c := login()
		resp, _ := au.Get(c.Options, sc)
		var ok atomic.Int32
		var wg sync.WaitGroup
		for i := range 6 {
			svc := e.a
			if i%2 == 1 {
				svc = e.b
			}
			wg.Go(func() {
				if _, err := svc.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1"); err == nil {
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 {
			t.Errorf("%d of 6 concurrent submissions of one assertion succeeded, want 1", ok.Load())
		}
	})

	t.Run("phishing proxy origin", func(t *testing.T) {
		phish := *au
		phish.Origin = "https://id.example.com.evil.test"
		c := login()
		resp, _ := phish.Get(c.Options, sc)
		n := stored()
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "wrong origin", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyWrongOrigin)
		if stored() != n {
			t.Error("a refused assertion changed the counter")
		}
	})

	t.Run("wrong rp id", func(t *testing.T) {
		other := *au
		other.RPID = "evil.test"
		c := login()
		resp, _ := other.Get(c.Options, sc)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "wrong rp id", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyWrongRP)
	})

	t.Run("user verification missing", func(t *testing.T) {
		noUV := *au
		noUV.NoUV = true
		c := login()
		resp, _ := noUV.Get(c.Options, sc)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "no UV", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyNoUV)
		// and at registration
		rc := mustBegin(t, e, e.alice)
		fresh := webauthntest.New(rpOrigin)
		fresh.NoUV = true
		r, _, _ := fresh.Create(rc.Options)
		_, err = e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, rc.ID, "", r)
		wantReason(t, "registration without UV", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyNoUV)
		if ev := e.last(model.EventPasskeyRejected); ev == nil || ev.Reason != identity.ReasonPasskeyNoUV || model.EventCodes[ev.Type] != "W1011W" {
			t.Errorf("passkey.rejected: %+v", ev)
		}
	})

	t.Run("bad signature", func(t *testing.T) {
		c := login()
		resp, _ := au.Get(c.Options, sc)
		var m map[string]any
		json.Unmarshal(resp, &m)
		r := m["response"].(map[string]any)
		sig, _ := base64.RawURLEncoding.DecodeString(r["signature"].(string))
		sig[len(sig)-1] ^= 1
		r["signature"] = base64.RawURLEncoding.EncodeToString(sig)
		resp, _ = json.Marshal(m)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "tampered signature", err, identity.ErrInvalidPasskey, identity.ReasonPasskeySignature)
	})

	t.Run("malformed", func(t *testing.T) {
		for name, body := range map[string][]byte{
			"not json":     []byte("{"),
			"empty":        {},
			"bad cbor":     []byte(`{"id":"AQ","rawId":"AQ","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"_w","signature":"AA"}}`),
			"hostile size": []byte(`{"id":"` + strings.Repeat("A", identity.MaxWebAuthnResponse) + `"}`),
			"unknown cred": []byte(`{"id":"AQID","rawId":"AQID","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 37)) + `","signature":"AA","userHandle":"AA"}}`),
		} {
			c := login()
			_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, body, "192.0.2.1")
			if !errors.Is(err, identity.ErrInvalidPasskey) {
				t.Errorf("%s: %v, want ErrInvalidPasskey", name, err)
			}
		}
		// and at registration: malformed attestation object
		rc := mustBegin(t, e, e.alice)
		_, err := e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, rc.ID, "", []byte(`{"id":"AQ","rawId":"AQ","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oWNmbXQ"}}`))
		wantReason(t, "malformed attestation", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyMalformed)
	})

	t.Run("another user's credential at step-up", func(t *testing.T) {
		c, err := e.a.BeginWebAuthnMFA(e.ctx, e.alice)
		if err != nil {
			t.Fatal(err)
		}
		// Mallet signs alice's challenge with his own key.
		resp, _ := malletKey.Get(c.Options, msc)
		_, err = e.a.FinishWebAuthnMFA(e.ctx, e.alice, c.ID, resp, "192.0.2.1")
		wantReason(t, "mallet's key for alice", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyOtherUser)
		// A step-up ceremony of alice cannot be answered as a usernameless
		// sign-in, nor as mallet's step-up.
		c, _ = e.a.BeginWebAuthnMFA(e.ctx, e.alice)
		resp, _ = au.Get(c.Options, sc)
		_, err = e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "mfa ceremony as login", err, identity.ErrPasskeyExpired, identity.ReasonPasskeyChallenge)
		c, _ = e.a.BeginWebAuthnMFA(e.ctx, e.alice)
		resp, _ = au.Get(c.Options, sc)
		_, err = e.a.FinishWebAuthnMFA(e.ctx, e.mallet, c.ID, resp, "192.0.2.1")
		wantReason(t, "alice's ceremony for mallet", err, identity.ErrPasskeyExpired, identity.ReasonPasskeyChallenge)
		// Alice's own key passes.
		c, _ = e.a.BeginWebAuthnMFA(e.ctx, e.alice)
		resp, _ = au.Get(c.Options, sc)
		if use, err := e.b.FinishWebAuthnMFA(e.ctx, e.alice, c.ID, resp, "192.0.2.1"); err != nil || use.User.ID != e.alice.ID {
			t.Errorf("alice's step-up: %v", err)
		}
	})

	t.Run("user handle of another account", func(t *testing.T) {
		forged := *au
		c := login()
		sc2 := *sc
		sc2.UserHandle = []byte(e.mallet.ID)
		resp, _ := forged.Get(c.Options, &sc2)
		sc.Counter = sc2.Counter
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		if !errors.Is(err, identity.ErrInvalidPasskey) {
			t.Errorf("forged user handle: %v", err)
		}
	})

	t.Run("counter regression", func(t *testing.T) {
		n := stored()
		clone := *sc
		clone.Counter, clone.FixedCounter = n-1, true
		c := login()
		resp, _ := au.Get(c.Options, &clone)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "counter went back", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyCounter)
		if stored() != n {
			t.Errorf("counter %d after a regression, want %d", stored(), n)
		}
		ev := e.last(model.EventPasskeyCloneSuspected)
		if ev == nil || ev.UserID != e.alice.ID || ev.Data["credential"] != cred.ID || model.EventCodes[ev.Type] != "W1010E" {
			t.Fatalf("passkey.clone_suspected: %+v", ev)
		}
		det := e.last(model.EventRiskDetected)
		if det == nil || det.Reason != "passkey_clone_suspected" || det.Data[model.DataDetectionSource] != model.DetectionSourceSignIn ||
			det.Data[model.DataDetectionSeverity] != "high" || !strings.HasPrefix(det.Data[model.DataDetectionID], "passkey:") {
			t.Errorf("risk.detected: %+v", det)
		}
		// The same counter value again (a clone replaying its own count).
		clone.Counter = n
		c = login()
		resp, _ = au.Get(c.Options, &clone)
		_, err = e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "counter did not grow", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyCounter)
	})

	t.Run("expired challenge", func(t *testing.T) {
		c := login()
		resp, _ := au.Get(c.Options, sc)
		e.advance(identity.DefaultWebAuthnTimeout + time.Second)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "expired", err, identity.ErrPasskeyExpired, identity.ReasonPasskeyChallenge)
	})

	t.Run("locked user", func(t *testing.T) {
		for range identity.DefaultMaxFailures {
			e.a.CheckPassword(e.ctx, identity.Attempt{Username: "alice", Password: "wrong password", IP: "203.0.113.9"})
		}
		defer e.a.Unlock(e.ctx, "admin", e.alice.ID)
		c := login()
		resp, _ := au.Get(c.Options, sc)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "locked", err, identity.ErrLocked, identity.ReasonLocked)
	})

	t.Run("disabled user", func(t *testing.T) {
		if err := e.a.SetDisabled(e.ctx, "admin", e.alice.ID, true); err != nil {
			t.Fatal(err)
		}
		defer e.a.SetDisabled(e.ctx, "admin", e.alice.ID, false)
		c := login()
		resp, _ := au.Get(c.Options, sc)
		_, err := e.a.FinishPasskeyLogin(e.ctx, c.ID, resp, "192.0.2.1")
		wantReason(t, "disabled", err, identity.ErrInvalidPasskey, identity.ReasonDisabled)
	})
}

// TestPasskeyRegistrationRefusals: a credential id registered to one
// account cannot be registered to another; registering needs a fresh
// ceremony of the same user; the attestation allow list refuses an
// unattested authenticator.
func TestPasskeyRegistrationRefusals(t *testing.T) {
	e := newPKEnv(t, nil)
	au := webauthntest.New(rpOrigin)
	_, _ = e.register(e.alice, au, identity.MethodPasskey, "Laptop")

	// Mallet registers alice's credential id (a client claiming it).
	c, _ := e.a.BeginPasskeyRegistration(e.ctx, e.mallet, identity.MethodPasskey)
	dup := webauthntest.New(rpOrigin)
	dup.Reuse = au.Credentials()[0]
	resp, _, _ := dup.Create(c.Options)
	_, err := e.a.FinishPasskeyRegistration(e.ctx, e.mallet.ID, e.mallet, c.ID, "", resp)
	wantReason(t, "alice's credential id for mallet", err, identity.ErrPasskeyTaken, identity.ReasonPasskeyTaken)
	if l, _ := e.a.ListPasskeys(e.ctx, e.mallet.ID); len(l) != 0 {
		t.Errorf("mallet has %d passkeys", len(l))
	}
	// Alice's ceremony cannot be finished by mallet.
	c2, _ := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodPasskey)
	resp2, _, _ := webauthntest.New(rpOrigin).Create(c2.Options)
	_, err = e.a.FinishPasskeyRegistration(e.ctx, e.mallet.ID, e.mallet, c2.ID, "", resp2)
	wantReason(t, "alice's ceremony finished by mallet", err, identity.ErrPasskeyExpired, identity.ReasonPasskeyChallenge)

	// Wrong origin at registration.
	c3, _ := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodPasskey)
	evil := webauthntest.New("https://evil.test")
	resp3, _, _ := evil.Create(c3.Options)
	_, err = e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, c3.ID, "", resp3)
	wantReason(t, "registration from another origin", err, identity.ErrInvalidPasskey, identity.ReasonPasskeyWrongOrigin)
	if l, _ := e.a.ListPasskeys(e.ctx, e.alice.ID); len(l) != 1 {
		t.Errorf("%d credentials after refusals, want 1", len(l))
	}
	// Names are bounded and printable.
	c4, _ := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodPasskey)
	resp4, _, _ := webauthntest.New(rpOrigin).Create(c4.Options)
	if _, err := e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, c4.ID, "bad\x00name", resp4); !errors.Is(err, identity.ErrInvalidInput) {
		t.Errorf("control character in name: %v", err)
	}

	// Allow list: "none" attestation of an unlisted (or any unattested)
	// authenticator is refused.
	allowed := uuid.MustParse("ee882879-721c-4913-9775-3dfcce97072a")
	e2 := newPKEnv(t, &identity.WebAuthnOptions{RPID: rpID, Origins: []string{rpOrigin}, Attestation: identity.AttestationAllowList, AllowedAAGUIDs: []uuid.UUID{allowed}})
	c5, _ := e2.a.BeginPasskeyRegistration(e2.ctx, e2.alice, identity.MethodSecurityKey)
	if !strings.Contains(string(c5.Options), `"attestation":"direct"`) {
		t.Errorf("allow list options do not ask for direct attestation: %s", c5.Options)
	}
	k := webauthntest.New(rpOrigin)
	copy(k.AAGUID[:], allowed[:])
	resp5, _, _ := k.Create(c5.Options)
	_, err = e2.a.FinishPasskeyRegistration(e2.ctx, e2.alice.ID, e2.alice, c5.ID, "", resp5)
	wantReason(t, "unattested listed AAGUID", err, identity.ErrPasskeyNotAllowed, identity.ReasonPasskeyNotAllowed)
	if ev := e2.last(model.EventPasskeyRejected); ev == nil || ev.Data["aaguid"] != strings.ReplaceAll(allowed.String(), "-", "") {
		t.Errorf("passkey.rejected: %+v", ev)
	}
	// A listed AAGUID with a self attestation (signed by the new key
	// itself: nothing vouches for the model) is refused too.
	c6, _ := e2.a.BeginPasskeyRegistration(e2.ctx, e2.alice, identity.MethodSecurityKey)
	selfAtt := webauthntest.New(rpOrigin)
	selfAtt.SelfAttest = true
	copy(selfAtt.AAGUID[:], allowed[:])
	resp6, _, _ := selfAtt.Create(c6.Options)
	_, err = e2.a.FinishPasskeyRegistration(e2.ctx, e2.alice.ID, e2.alice, c6.ID, "", resp6)
	wantReason(t, "self-attested listed AAGUID", err, identity.ErrPasskeyNotAllowed, identity.ReasonPasskeyNotAllowed)

	// Under the default policy a packed self attestation is verified and
	// recorded as such.
	c7, _ := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodPasskey)
	resp7, _, _ := selfAtt.Create(c7.Options)
	cred, err := e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, c7.ID, "", resp7)
	if err != nil || cred.AttestationFormat != "packed" || cred.AttestationType != "basic_surrogate" {
		t.Errorf("packed self attestation: %v %+v", err, cred)
	}
	// A self attestation whose signature does not verify is refused.
	c8, _ := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodPasskey)
	forged := webauthntest.New(rpOrigin)
	forged.SelfAttest = true
	resp8, _, _ := forged.Create(c8.Options)
	resp8 = tamperAttSig(t, resp8)
	_, err = e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, c8.ID, "", resp8)
	wantReason(t, "forged self attestation", err, identity.ErrInvalidPasskey, identity.ReasonPasskeySignature)
}

// TestPasskeyRemovalAndRecovery: self-service removal of one credential
// (mfa.removed, only the owner's), and the administrator's reset of all
// of them (passkey.recovery, mfa.removed, risk.detected from admin).
func TestPasskeyRemovalAndRecovery(t *testing.T) {
	e := newPKEnv(t, nil)
	c1, _ := e.register(e.alice, webauthntest.New(rpOrigin), identity.MethodPasskey, "Laptop")
	e.register(e.alice, webauthntest.New(rpOrigin), identity.MethodPasskey, "Phone")
	mc, _ := e.register(e.mallet, webauthntest.New(rpOrigin), identity.MethodPasskey, "")

	if err := e.a.RemovePasskey(e.ctx, e.alice.ID, e.alice.ID, mc.ID); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("removing another user's passkey: %v, want ErrNotFound", err)
	}
	if err := e.a.RemovePasskey(e.ctx, e.alice.ID, e.alice.ID, c1.ID); err != nil {
		t.Fatal(err)
	}
	ev := e.last(model.EventMFARemoved)
	if ev == nil || ev.Data["method"] != "passkey" || ev.Data["credential"] != c1.ID || ev.Data["name"] != "Laptop" || ev.Actor != e.alice.ID {
		t.Errorf("mfa.removed: %+v", ev)
	}
	// The removed credential no longer signs in.
	if l, _ := e.a.ListPasskeys(e.ctx, e.alice.ID); len(l) != 1 || l[0].Name != "Phone" {
		t.Errorf("after removal: %d", len(l))
	}
	if _, err := e.a.RenamePasskey(e.ctx, e.alice.ID, e.alice.ID, c1.ID, "x"); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("rename removed: %v", err)
	}

	n, err := e.a.ResetPasskeys(e.ctx, "admin-1", e.alice.ID, "lost phone, identity checked by video call")
	if err != nil || n != 1 {
		t.Fatalf("ResetPasskeys: %d, %v", n, err)
	}
	rec := e.last(model.EventPasskeyRecovery)
	if rec == nil || rec.Reason != "admin_reset" || rec.Data["removed"] != "1" || rec.Actor != "admin-1" || model.EventCodes[rec.Type] != "W1012W" {
		t.Errorf("passkey.recovery: %+v", rec)
	}
	rm := e.last(model.EventMFARemoved)
	if rm == nil || rm.Data["count"] != "1" || rm.Data["reason"] != "recovery" {
		t.Errorf("mfa.removed of the reset: %+v", rm)
	}
	det := e.last(model.EventRiskDetected)
	if det == nil || det.UserID != e.alice.ID || det.Data[model.DataDetectionSource] != model.DetectionSourceAdmin ||
		det.Data[model.DataDetectionID] != "passkey-recovery:"+rec.ID || det.Data[model.DataDetectionEvidence] != rec.ID {
		t.Errorf("risk.detected: %+v", det)
	}
	if e.a.HasPasskey(e.ctx, e.alice.ID) {
		t.Error("alice still has a passkey after the reset")
	}
	// Both events are in the audit log (committed with the deletion).
	stored, err := e.st.ListEvents(e.ctx, store.EventFilter{UserID: e.alice.ID})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range stored {
		got = append(got, string(s.Type))
	}
	if !strings.Contains(strings.Join(got, " "), "passkey.recovery") {
		t.Errorf("audit log of alice: %v", got)
	}
}

// A metadata file that is not a FIDO-signed BLOB is refused (the start
// fails rather than run an allow list on unverified data).
func TestParseMetadataBLOBRefusesGarbage(t *testing.T) {
	for _, blob := range [][]byte{nil, []byte("not a jwt"), []byte("eyJhbGciOiJub25lIn0.eyJubyI6MX0.")} {
		if _, err := identity.ParseMetadataBLOB(blob); err == nil {
			t.Errorf("ParseMetadataBLOB(%q) accepted", blob)
		}
	}
}

// Beginning usernameless ceremonies (a database row each) is bounded per
// network; another network is not affected.
func TestPasskeyLoginBeginBounded(t *testing.T) {
	e := newPKEnv(t, nil)
	for i := range identity.DefaultPasskeyLoginsPerMinute {
		if _, err := e.a.BeginPasskeyLogin(e.ctx, "198.51.100.9"); err != nil {
			t.Fatalf("ceremony %d: %v", i, err)
		}
	}
	if _, err := e.a.BeginPasskeyLogin(e.ctx, "198.51.100.9"); !errors.Is(err, identity.ErrPasskeyBusy) {
		t.Errorf("one more: %v, want ErrPasskeyBusy", err)
	}
	if _, err := e.a.BeginPasskeyLogin(e.ctx, "203.0.113.5"); err != nil {
		t.Errorf("another network: %v", err)
	}
	e.advance(time.Minute)
	if _, err := e.a.BeginPasskeyLogin(e.ctx, "198.51.100.9"); err != nil {
		t.Errorf("a minute later: %v", err)
	}
}

// tamperAttSig flips a bit of the attestation signature inside a
// registration answer's attestation object (the signature is the last
// bytes of the "sig" byte string: the CBOR map puts authData last, so
// find the sig by its DER prefix instead).
func tamperAttSig(t *testing.T, resp []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(resp, &m); err != nil {
		t.Fatal(err)
	}
	r := m["response"].(map[string]any)
	att, _ := base64.RawURLEncoding.DecodeString(r["attestationObject"].(string))
	// "sig" key (0x63 's' 'i' 'g') followed by a byte string header and a
	// DER SEQUENCE (0x30).
	i := strings.Index(string(att), "csig")
	if i < 0 {
		t.Fatal("no sig in the attestation object")
	}
	j := i + 4 + 2 // key, then the byte string head (0x58 len)
	att[j+10] ^= 0x01
	r["attestationObject"] = base64.RawURLEncoding.EncodeToString(att)
	out, _ := json.Marshal(m)
	return out
}

// TestPasskeyAttestationAllowList: under allow_list a security key of a
// listed model whose full attestation chains to the metadata's root is
// registered (and signs in); the same model attested by another root, a
// listed model the metadata does not know, and a known model that is not
// listed are refused.
func TestPasskeyAttestationAllowList(t *testing.T) {
	listed := uuid.MustParse("ee882879-721c-4913-9775-3dfcce97072a")
	unknown := uuid.MustParse("2fc0579f-8113-47ea-b116-bb5a8db9202a")  // listed, not in the metadata
	unlisted := uuid.MustParse("cb69481e-8ff7-4039-93ec-0a2729a154a8") // in the metadata, not listed
	atts := map[uuid.UUID]*webauthntest.Attestation{}
	entries := map[uuid.UUID]*metadata.Entry{}
	for _, id := range []uuid.UUID{listed, unlisted} {
		at, err := webauthntest.NewAttestation(id)
		if err != nil {
			t.Fatal(err)
		}
		atts[id] = at
		entries[id] = &metadata.Entry{AaGUID: id, StatusReports: []metadata.StatusReport{{Status: metadata.FidoCertified}},
			MetadataStatement: metadata.Statement{AaGUID: id, AttestationTypes: metadata.AuthenticatorAttestationTypes{metadata.BasicFull},
				AttestationRootCertificates: []*x509.Certificate{at.Root}}}
	}
	mds, err := memory.New(memory.WithMetadata(entries))
	if err != nil {
		t.Fatal(err)
	}
	e := newPKEnv(t, &identity.WebAuthnOptions{RPID: rpID, Origins: []string{rpOrigin}, Attestation: identity.AttestationAllowList,
		AllowedAAGUIDs: []uuid.UUID{listed, unknown}, Metadata: mds})
	register := func(id uuid.UUID, at *webauthntest.Attestation) (*model.WebAuthnCredential, *webauthntest.Authenticator, error) {
		c, err := e.a.BeginPasskeyRegistration(e.ctx, e.alice, identity.MethodSecurityKey)
		if err != nil {
			t.Fatal(err)
		}
		k := webauthntest.New(rpOrigin)
		k.AAGUID, k.Attestation = id, at
		resp, _, err := k.Create(c.Options)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := e.a.FinishPasskeyRegistration(e.ctx, e.alice.ID, e.alice, c.ID, "", resp)
		return cred, k, err
	}

	cred, key, err := register(listed, atts[listed])
	if err != nil {
		t.Fatalf("listed, attested model: %v (%s)", err, identity.Reason(err))
	}
	if cred.AttestationFormat != "packed" || cred.AttestationType != "basic_full" || !strings.EqualFold(hex.EncodeToString(cred.AAGUID), strings.ReplaceAll(listed.String(), "-", "")) {
		t.Errorf("stored: format %s type %s aaguid %x", cred.AttestationFormat, cred.AttestationType, cred.AAGUID)
	}
	// It signs in as a second factor.
	c, err := e.a.BeginWebAuthnMFA(e.ctx, e.alice)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := key.Get(c.Options, nil)
	if _, err := e.a.FinishWebAuthnMFA(e.ctx, e.alice, c.ID, resp, "192.0.2.1"); err != nil {
		t.Errorf("sign-in with the attested key: %v", err)
	}

	other, _ := webauthntest.NewAttestation(listed) // the same model claimed under another root
	_, _, err = register(listed, other)
	wantReason(t, "listed model, foreign root", err, identity.ErrPasskeyNotAllowed, identity.ReasonPasskeyNotAllowed)
	u, _ := webauthntest.NewAttestation(unknown)
	_, _, err = register(unknown, u)
	wantReason(t, "listed model unknown to the metadata", err, identity.ErrPasskeyNotAllowed, identity.ReasonPasskeyNotAllowed)
	_, _, err = register(unlisted, atts[unlisted])
	wantReason(t, "known but unlisted model", err, identity.ErrPasskeyNotAllowed, identity.ReasonPasskeyNotAllowed)
	if l, _ := e.a.ListPasskeys(e.ctx, e.alice.ID); len(l) != 1 {
		t.Errorf("%d credentials, want the one accepted", len(l))
	}
}
