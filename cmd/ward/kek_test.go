package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
)

const (
	kekTOTPSeed   = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	kekPushHeader = "Bearer receiver-push-secret-0123456789"
)

// sealedState is what the KEK rotation tests check after it.
type sealedState struct {
	user, session, stream string
}

// kekFixture stores something of every kind sealed under the KEK: two
// signing keys, a user's TOTP seed, an SSF push stream's authorization
// header; and what is keyed under keys derived from it: a session with a
// refresh token, the user's recovery codes and a client with a stored
// secret.
func kekFixture(t *testing.T, h *harness) sealedState {
	t.Helper()
	h.ok("", "keys", "rotate")
	h.ok("", "client", "add", "svc", "--grant-type", "client_credentials")
	a := h.openApp()
	defer a.Close()
	ctx := context.Background()
	u, err := a.Identity.CreateUser(ctx, "test", identity.NewUser{Username: "tara", Password: "correct horse battery", TOTPSecret: kekTOTPSeed})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Identity.NewRecoveryCodes(ctx, "test", u.ID); err != nil {
		t.Fatal(err)
	}
	hdr := kekPushHeader
	st, err := a.CAE.CreateStream(ctx, receiverID, cae.StreamRequest{Delivery: &cae.Delivery{Method: model.DeliveryPush,
		EndpointURL: "https://receiver.example/events", AuthorizationHeader: &hdr}})
	if err != nil {
		t.Fatal(err)
	}
	return sealedState{user: u.ID, session: newSession(t, a, u.ID), stream: st.ID}
}

// opensAll reports whether kek opens every sealed value in the store, and
// whether it opens any.
func opensAll(t *testing.T, h *harness, kek *secret.KEK) (all, any bool) {
	t.Helper()
	st := openStoreOnly(t, h)
	ctx := context.Background()
	all = true
	try := func(ct, aad []byte) {
		if _, err := kek.Open(ct, aad); err == nil {
			any = true
		} else {
			all = false
		}
	}
	keys, _ := st.ListSigningKeys(ctx)
	for _, k := range keys {
		try(k.PrivateEnc, tokens.SigningKeyAAD(k.KID))
	}
	users, _ := st.ListUsers(ctx)
	for _, u := range users {
		if len(u.TOTPSecret) > 0 {
			try(u.TOTPSecret, identity.TOTPAAD(u.ID))
		}
	}
	streams, _ := st.ListSSFStreams(ctx, "")
	for _, s := range streams {
		if len(s.AuthHeaderEnc) > 0 {
			try(s.AuthHeaderEnc, cae.AuthorizationHeaderAAD(s.ID))
		}
	}
	if len(keys) < 2 || len(users) == 0 || len(streams) == 0 {
		t.Fatalf("fixture incomplete: %d keys, %d users, %d streams", len(keys), len(users), len(streams))
	}
	return all, any
}

// openStoreOnly opens the harness's SQLite store (no key needed).
func openStoreOnly(t *testing.T, h *harness) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(h.dataDir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// openAppWithKEK opens the app as a tool with kek instead of the
// configured key.
func (h *harness) openAppWithKEK(kek *secret.KEK) *app.App {
	h.t.Helper()
	cfg, err := config.LoadWith(config.LoadOptions{File: h.cfgFile, Environ: h.environ})
	if err != nil {
		h.t.Fatal(err)
	}
	a, err := app.OpenWith(context.Background(), cfg, nil, app.Options{Tool: true, KEK: kek, LookupEnv: (&cliEnv{environ: h.environ}).lookupEnv})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { a.Close() })
	return a
}

func (h *harness) currentKEK() *secret.KEK {
	h.t.Helper()
	for _, kv := range h.environ {
		if v, ok := strings.CutPrefix(kv, "WARD_KEK="); ok {
			k, err := secret.ParseKEK(v)
			if err != nil {
				h.t.Fatal(err)
			}
			return k
		}
	}
	h.t.Fatal("no WARD_KEK")
	return nil
}

func readKEKFile(t *testing.T, path string) (*secret.KEK, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := secret.ParseKEK(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return k, strings.TrimSpace(string(b))
}

// After ward keys rotate-kek, Ward opens with the new key and everything
// sealed decrypts under it (the signing keys sign and verify, the TOTP
// seed checks codes, the push header opens), the old key opens nothing and
// Ward no longer starts with it; sessions ended, and the client whose
// secret Ward stored is named.
func TestRotateKEK(t *testing.T) {
	h := newHarness(t, "")
	fx := kekFixture(t, h)
	old := h.currentKEK()
	if all, _ := opensAll(t, h, old); !all {
		t.Fatal("fixture: the current key does not open everything")
	}
	newFile := filepath.Join(t.TempDir(), "kek.new")
	out, errs, code := h.run("", "keys", "rotate-kek", "--new-kek-file", newFile)
	if code != 0 {
		t.Fatalf("rotate-kek: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"2 signing key(s), 1 TOTP seed(s), 1 SSF push authorization header(s)", "ended 1 session(s)",
		"ward client rotate-secret svc", "ward user recovery-codes tara", "put the new key in place"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(newFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new key file: %v %v", fi, err)
	}
	next, nextText := readKEKFile(t, newFile)
	if strings.Contains(out+errs, nextText) {
		t.Error("the new key was printed")
	}

	// The old key opens nothing, and Ward does not start with it.
	if _, errs, code := h.run("", "user", "list"); code != exitFailure || !strings.Contains(errs, "cannot decrypt signing key") {
		t.Errorf("with the old key: exit %d %q", code, errs)
	}
	h.environ = []string{"WARD_KEK=" + nextText}
	if all, any := opensAll(t, h, old); all || any {
		t.Error("the old key still opens sealed values")
	}
	if all, _ := opensAll(t, h, next); !all {
		t.Fatal("the new key does not open everything")
	}

	// With the new key everything sealed works.
	h.ok("", "keys", "list")
	a := h.openApp()
	ctx := context.Background()
	tok, err := a.Keys.MintAccessToken(&tokens.AccessClaims{Issuer: a.Config.Issuer, Subject: "svc", Audience: tokens.Audience{"x"},
		IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Minute).Unix(), JTI: "j1", ClientID: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Keys.Verify(tok, tokens.TypeAccessToken, nil); err != nil {
		t.Errorf("a token of the re-sealed signing key: %v", err)
	}
	u, _ := a.Store.GetUser(ctx, fx.user)
	code2, _ := totp.GenerateCode(kekTOTPSeed, time.Now())
	if err := a.Identity.CheckTOTP(ctx, u, code2, "192.0.2.1"); err != nil {
		t.Errorf("TOTP under the new key: %v", err)
	}
	st, _ := a.Store.GetSSFStream(ctx, fx.stream)
	if h, err := next.Open(st.AuthHeaderEnc, cae.AuthorizationHeaderAAD(st.ID)); err != nil || string(h) != kekPushHeader {
		t.Errorf("push header under the new key: %q %v", h, err)
	}
	if n, err := a.Identity.RecoveryCodesLeft(ctx, fx.user); err != nil || n != 0 {
		t.Errorf("recovery codes keyed under the old key: %d left, %v; want deleted", n, err)
	}
	se, _ := a.Store.GetSession(ctx, fx.session)
	if se.RevokedAt.IsZero() || se.RevokeCause != string(model.CauseKEKRotated) {
		t.Errorf("session after the rotation: revoked %v, cause %q", se.RevokedAt, se.RevokeCause)
	}
	evs, _ := a.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventKEKRotated}})
	if len(evs) != 1 || evs[0].Actor != actorCLI || evs[0].Data["signing_keys"] != "2" || evs[0].Data["totp_seeds"] != "1" ||
		evs[0].Data["ssf_authorization_headers"] != "1" || evs[0].Code() != "W6003W" {
		t.Errorf("kek.rotated events: %+v", evs)
	}
	a.Close()
	// The listed client gets a working secret under the new key.
	out = h.ok("", "client", "rotate-secret", "svc")
	m := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out)
	a = h.openApp()
	c, _ := a.Clients.Get(ctx, "svc")
	if m == nil || !a.Clients.CheckSecret(c, m[1]) {
		t.Errorf("rotate-secret after the KEK rotation: %q", out)
	}
}

// A crash in the middle of the rotation (here the database refusing the
// TOTP seed's update, after the signing keys were re-sealed in the same
// transaction) leaves everything under the old key; the same command with
// the same new key file then finishes the rotation.
func TestRotateKEKCrashAndResume(t *testing.T) {
	h := newHarness(t, "")
	fx := kekFixture(t, h)
	old := h.currentKEK()
	db, err := sql.Open("sqlite", filepath.Join(h.dataDir, "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER crash BEFORE UPDATE OF totp_secret ON users BEGIN SELECT RAISE(ABORT, 'simulated crash'); END`); err != nil {
		t.Fatal(err)
	}
	newFile := filepath.Join(t.TempDir(), "kek.new")
	_, errs, code := h.run("", "keys", "rotate-kek", "--new-kek-file", newFile)
	if code != exitFailure || !strings.Contains(errs, "the current key-encryption key opens everything") {
		t.Fatalf("interrupted rotation: exit %d %q", code, errs)
	}
	next, _ := readKEKFile(t, newFile) // written before anything changed
	if all, _ := opensAll(t, h, old); !all {
		t.Fatal("after the interruption the old key does not open everything")
	}
	if _, any := opensAll(t, h, next); any {
		t.Fatal("after the interruption the new key opens something")
	}
	h.ok("", "user", "list") // Ward works on with the old key
	a := h.openApp()
	if se, _ := a.Store.GetSession(context.Background(), fx.session); !se.RevokedAt.IsZero() {
		t.Error("a session ended although the rotation did not happen")
	}
	a.Close()

	if _, err := db.Exec(`DROP TRIGGER crash`); err != nil {
		t.Fatal(err)
	}
	out, errs, code := h.run("", "keys", "rotate-kek", "--new-kek-file", newFile)
	if code != 0 || !strings.Contains(errs, "finishing a rotation") || !strings.Contains(out, "2 signing key(s), 1 TOTP seed(s)") {
		t.Fatalf("resumed rotation: exit %d\n%s\n%s", code, out, errs)
	}
	if all, _ := opensAll(t, h, next); !all {
		t.Fatal("after the resumed rotation the new key does not open everything")
	}
}

// A crash after the commit, before the sessions were ended: everything is
// under the new key; running the command again with the key file leaves
// the values alone and finishes the rest. A fresh key instead of the
// file's is refused without changing anything.
func TestRotateKEKAfterCommit(t *testing.T) {
	h := newHarness(t, "")
	fx := kekFixture(t, h)
	old := h.currentKEK()
	raw := bytes.Repeat([]byte{9}, secret.KEKSize)
	next, _ := secret.NewKEK(raw)
	newFile := filepath.Join(t.TempDir(), "kek.new")
	if err := os.WriteFile(newFile, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWith(config.LoadOptions{File: h.cfgFile, Environ: h.environ})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.RotateKEK(context.Background(), cfg, nil, old, next, actorCLI); err != nil {
		t.Fatal(err)
	}
	// Another fresh key: the values open under neither; nothing changes.
	if _, errs, code := h.run("", "keys", "rotate-kek"); code != exitFailure || !strings.Contains(errs, "opens under neither") {
		t.Errorf("rotation to a third key: exit %d %q", code, errs)
	}
	if all, _ := opensAll(t, h, next); !all {
		t.Fatal("a refused rotation changed values")
	}
	out, errs, code := h.run("", "keys", "rotate-kek", "--new-kek-file", newFile)
	if code != 0 || !strings.Contains(out, "0 signing key(s), 0 TOTP seed(s), 0 SSF") || !strings.Contains(out, "ended 1 session(s)") {
		t.Fatalf("finishing: exit %d\n%s\n%s", code, out, errs)
	}
	a := h.openAppWithKEK(next)
	if se, _ := a.Store.GetSession(context.Background(), fx.session); se.RevokeCause != string(model.CauseKEKRotated) {
		t.Errorf("session cause %q", se.RevokeCause)
	}
	evs, _ := a.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventKEKRotated}})
	if len(evs) != 1 {
		t.Errorf("%d kek.rotated events, want the one of the committed rotation", len(evs))
	}
}

// Without --new-kek-file the new key is stdout's only line (the report goes
// to stderr); the same key is refused; a running server's lock is
// respected.
func TestRotateKEKStdoutAndRefusals(t *testing.T) {
	h := newHarness(t, "")
	kekFixture(t, h)
	release, err := lockServerStore(filepath.Join(h.dataDir, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	if _, errs, code := h.run("", "keys", "rotate-kek"); code != exitFailure || !strings.Contains(errs, "ward serve is running") {
		t.Errorf("beside a server: exit %d %q", code, errs)
	}
	release()
	same := filepath.Join(t.TempDir(), "same.key")
	os.WriteFile(same, []byte(testKEK+"\n"), 0o600)
	if _, errs, code := h.run("", "keys", "rotate-kek", "--new-kek-file", same); code != exitUsage || !strings.Contains(errs, "the one in use") {
		t.Errorf("the same key: exit %d %q", code, errs)
	}
	out, errs, code := h.run("", "keys", "rotate-kek")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(errs, "re-sealed under the new key-encryption key") {
		t.Fatalf("stdout mode: exit %d\nstdout %q\nstderr %s", code, out, errs)
	}
	next, err := secret.ParseKEK(out)
	if err != nil {
		t.Fatal(err)
	}
	if all, _ := opensAll(t, h, next); !all {
		t.Error("the printed key does not open everything")
	}
}
