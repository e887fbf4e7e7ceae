package identity

import (
	"bytes"
	"context"
	"encoding/base32"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

// codeAt computes the code independently with pquerna/otp's TOTP code.
func codeAt(t testing.TB, secretB32 string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secretB32, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enrolled returns an env with alice enrolled in TOTP and her secret.
func enrolled(t *testing.T, mod func(*Options)) (*env, *model.User, string) {
	t.Helper()
	e := newEnv(t, mod)
	u := e.mustCreate(t, "alice")
	sec, _, err := e.svc.NewTOTPKey(u, "Ward Test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.EnrollTOTP(context.Background(), u.ID, u.ID, sec, codeAt(t, sec, e.clock.Now())); err != nil {
		t.Fatal(err)
	}
	// Move well past the enrolment code's window.
	e.clock.Advance(5 * time.Minute)
	u, _ = e.store.GetUser(context.Background(), u.ID)
	return e, u, sec
}

func TestNewTOTPKey(t *testing.T) {
	e := newEnv(t, nil)
	u := e.mustCreate(t, "alice")
	sec, raw, err := e.svc.NewTOTPKey(u, "")
	if err != nil {
		t.Fatal(err)
	}
	seed, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(sec)
	if err != nil || len(seed) != 20 {
		t.Errorf("secret %q: %d bytes, %v; want 20", sec, len(seed), err)
	}
	pu, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	if pu.Scheme != "otpauth" || pu.Host != "totp" || q.Get("secret") != sec || q.Get("issuer") != "Ward" ||
		q.Get("digits") != "6" || q.Get("period") != "30" || q.Get("algorithm") != "SHA1" || !strings.Contains(pu.Path, "alice") {
		t.Errorf("otpauth URL = %s", raw)
	}
	if e.store.rawUser(u.ID).TOTPSecret != nil {
		t.Error("NewTOTPKey stored the secret")
	}
	other, _, _ := e.svc.NewTOTPKey(u, "")
	if other == sec {
		t.Error("two keys are equal")
	}
}

func TestEnrollTOTP(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	u := e.mustCreate(t, "alice")
	sec, _, _ := e.svc.NewTOTPKey(u, "Ward")
	now := e.clock.Now()

	wrong := codeAt(t, sec, now.Add(-5*time.Minute))
	if err := e.svc.EnrollTOTP(ctx, u.ID, u.ID, sec, wrong); !errors.Is(err, ErrInvalidTOTP) {
		t.Fatalf("enrol with wrong code: %v, want ErrInvalidTOTP", err)
	}
	if e.svc.HasTOTP(e.store.rawUser(u.ID)) {
		t.Fatal("wrong code enrolled the user")
	}
	if err := e.svc.EnrollTOTP(ctx, u.ID, u.ID, "###", codeAt(t, sec, now)); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("enrol with malformed secret: %v, want ErrInvalidInput", err)
	}
	code := codeAt(t, sec, now)
	if err := e.svc.EnrollTOTP(ctx, u.ID, u.ID, strings.ToLower(sec), code); err != nil {
		t.Fatalf("enrol: %v", err)
	}
	stored := e.store.rawUser(u.ID)
	if !e.svc.HasTOTP(stored) {
		t.Fatal("not enrolled")
	}
	if !e.rec.Has(model.EventMFAEnrolled) {
		t.Error("no mfa.enrolled event")
	}
	// The enrolment code is consumed.
	if err := e.svc.CheckTOTP(ctx, stored, code, "192.0.2.1"); !errors.Is(err, ErrInvalidTOTP) || Reason(err) != ReasonTOTPReplay {
		t.Errorf("sign-in with the enrolment code: %v (%s), want replay", err, Reason(err))
	}
}

func TestTOTPSeedStoredEncrypted(t *testing.T) {
	e, u, sec := enrolled(t, nil)
	stored := e.store.rawUser(u.ID)
	seed, _ := decodeTOTPSecret(sec)
	ct := stored.TOTPSecret
	if bytes.Contains(ct, seed) || bytes.Contains(ct, []byte(sec)) || bytes.Contains(ct, []byte(strings.ToLower(sec))) {
		t.Fatal("stored TOTPSecret contains the raw seed")
	}
	// Nowhere else in the record either.
	if s := stored.Username + stored.Email + stored.DisplayName + stored.PasswordHash + strings.Join(stored.Roles, ""); strings.Contains(s, sec) {
		t.Fatal("base32 secret found in the stored user")
	}
	pt, err := e.kek.Open(ct, []byte("ward/totp:"+u.ID))
	if err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("Open with aad ward/totp:<id> = %x, %v; want the seed", pt, err)
	}
	if _, err := e.kek.Open(ct, []byte("ward/totp:someone-else")); !errors.Is(err, secret.ErrDecrypt) {
		t.Errorf("ciphertext opens under another user's aad: %v", err)
	}
	// Moving the ciphertext to another user makes it unusable.
	bob := e.mustCreate(t, "bob")
	e.store.UpdateUser(context.Background(), bob.ID, func(x *model.User) error { x.TOTPSecret = ct; return nil })
	bobRec := e.store.rawUser(bob.ID)
	if err := e.svc.CheckTOTP(context.Background(), bobRec, codeAt(t, sec, e.clock.Now()), "192.0.2.1"); err == nil || Reason(err) != ReasonInternal {
		t.Errorf("ciphertext moved to another user: %v (%s), want an internal decryption error", err, Reason(err))
	}
}

func TestCreateUserWithStaticTOTP(t *testing.T) {
	e := newEnv(t, nil)
	const sec = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	u, err := e.svc.CreateUser(context.Background(), "config", NewUser{Username: "svc", Password: goodPassword, TOTPSecret: "jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(u.TOTPSecret, []byte(sec)) {
		t.Fatal("seed stored in clear")
	}
	if err := e.svc.CheckTOTP(context.Background(), u, codeAt(t, sec, e.clock.Now()), "192.0.2.1"); err != nil {
		t.Fatalf("code for static secret: %v", err)
	}
	if !e.rec.Has(model.EventMFAEnrolled) {
		t.Error("no mfa.enrolled for a configured TOTP secret")
	}
}

func TestCheckTOTPOnceAndSkew(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		offset time.Duration
		ok     bool
	}{
		{"current step", 0, true},
		{"previous step", -30 * time.Second, true},
		{"next step", 30 * time.Second, true},
		{"two steps back", -60 * time.Second, false},
		{"two steps ahead", 60 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, u, sec := enrolled(t, func(o *Options) { o.MaxFailures = 100 })
			code := codeAt(t, sec, e.clock.Now().Add(tc.offset))
			err := e.svc.CheckTOTP(ctx, u, code, "192.0.2.1")
			if tc.ok != (err == nil) {
				t.Fatalf("CheckTOTP(step %+v) = %v, want ok=%v", tc.offset, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidTOTP) {
				t.Fatalf("error %v is not ErrInvalidTOTP", err)
			}
			if !tc.ok {
				return
			}
			// Accepted once only.
			err = e.svc.CheckTOTP(ctx, u, code, "192.0.2.1")
			if !errors.Is(err, ErrInvalidTOTP) || Reason(err) != ReasonTOTPReplay || FailedUserID(err) != u.ID {
				t.Fatalf("replay: %v (reason %q), want ErrInvalidTOTP/%s", err, Reason(err), ReasonTOTPReplay)
			}
			// ... even by another instance sharing the store.
			other := New(Options{Store: e.store, KEK: e.kek, Now: e.clock.Now, Argon2: testParams})
			if err := other.CheckTOTP(ctx, u, code, "192.0.2.9"); Reason(err) != ReasonTOTPReplay {
				t.Fatalf("replay on another instance: %v, want replay", err)
			}
		})
	}
}

func TestCheckTOTPMalformedCodes(t *testing.T) {
	e, u, _ := enrolled(t, func(o *Options) { o.MaxFailures = 100 })
	for _, code := range []string{"", "12345", "1234567", "abcdef", "12 456", "١٢٣٤٥٦"} {
		if err := e.svc.CheckTOTP(context.Background(), u, code, "192.0.2.1"); !errors.Is(err, ErrInvalidTOTP) || Reason(err) != ReasonInvalidTOTP {
			t.Errorf("CheckTOTP(%q) = %v, want ErrInvalidTOTP", code, err)
		}
	}
}

func TestCheckTOTPWithoutEnrolment(t *testing.T) {
	e := newEnv(t, nil)
	u := e.mustCreate(t, "alice")
	if err := e.svc.CheckTOTP(context.Background(), u, "123456", "192.0.2.1"); !errors.Is(err, ErrInvalidTOTP) || Reason(err) != ReasonNoTOTP {
		t.Errorf("CheckTOTP(no TOTP) = %v (%s), want ErrInvalidTOTP/no_totp", err, Reason(err))
	}
}

// A stolen password must not reset the lockout budget for guessing codes:
// for TOTP users only a correct code clears failures.
func TestTOTPFailuresCountTowardsLockout(t *testing.T) {
	e, u, sec := enrolled(t, func(o *Options) { o.MaxFailures = 3 })
	ctx := context.Background()
	pw := func() error {
		_, err := e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"})
		return err
	}
	wrongCode := codeAt(t, sec, e.clock.Now().Add(-10*time.Minute))
	if err := pw(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.svc.CheckTOTP(ctx, u, wrongCode, "192.0.2.1"); !errors.Is(err, ErrInvalidTOTP) {
			t.Fatalf("wrong code: %v", err)
		}
	}
	if err := pw(); err != nil { // right password; must not reset the count
		t.Fatal(err)
	}
	if got := e.store.rawUser(u.ID).FailedLogins; got != 2 {
		t.Fatalf("FailedLogins after password success = %d, want 2 (kept for TOTP users)", got)
	}
	e.svc.CheckTOTP(ctx, u, wrongCode, "192.0.2.1") // 3rd failure locks
	if err := e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.1"); !errors.Is(err, ErrLocked) {
		t.Fatalf("right code while locked: %v, want ErrLocked", err)
	}
	if err := pw(); !errors.Is(err, ErrLocked) {
		t.Fatalf("password while locked: %v, want ErrLocked", err)
	}
	e.clock.Advance(DefaultLockoutDuration)
	if err := e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.1"); err != nil {
		t.Fatalf("right code after lock: %v", err)
	}
	if got := e.store.rawUser(u.ID); got.FailedLogins != 0 || !got.LockedUntil.IsZero() {
		t.Errorf("after TOTP success: FailedLogins=%d LockedUntil=%v, want cleared", got.FailedLogins, got.LockedUntil)
	}
}

func TestCheckTOTPThrottledAndDisabled(t *testing.T) {
	e, u, sec := enrolled(t, func(o *Options) { o.IPFailuresPerMinute = 2; o.MaxFailures = 100 })
	ctx := context.Background()
	wrong := codeAt(t, sec, e.clock.Now().Add(-10*time.Minute))
	e.svc.CheckTOTP(ctx, u, wrong, "192.0.2.66")
	e.svc.CheckTOTP(ctx, u, wrong, "192.0.2.66")
	if err := e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.66"); !errors.Is(err, ErrThrottled) {
		t.Errorf("over IP budget: %v, want ErrThrottled", err)
	}
	if err := e.svc.SetDisabled(ctx, "admin", u.ID, true); err != nil {
		t.Fatal(err)
	}
	// A stale user value does not bypass the disabled flag.
	if err := e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.1"); !errors.Is(err, ErrInvalidTOTP) || Reason(err) != ReasonDisabled {
		t.Errorf("disabled: %v (%s), want ErrInvalidTOTP/disabled", err, Reason(err))
	}
}

// A correct code presented again says so (a distinct message: the person
// typed the code already used, and only needs to wait for the next one)
// and is not counted as a wrong guess: it proves the caller saw the code,
// not that it guesses. It is still refused, on every instance.
func TestTOTPReplayNotCountedAsGuess(t *testing.T) {
	const maxFail = 3
	e, u, sec := enrolled(t, func(o *Options) { o.MaxFailures = maxFail })
	ctx := context.Background()
	code := codeAt(t, sec, e.clock.Now())
	if err := e.svc.CheckTOTP(ctx, u, code, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	for i := range maxFail + 2 {
		err := e.svc.CheckTOTP(ctx, u, code, "192.0.2.1")
		if !errors.Is(err, ErrTOTPUsed) || !errors.Is(err, ErrInvalidTOTP) || Reason(err) != ReasonTOTPReplay || FailedUserID(err) != u.ID {
			t.Fatalf("replay %d: %v (%s), want ErrTOTPUsed/%s", i+1, err, Reason(err), ReasonTOTPReplay)
		}
		if err.Error() == ErrInvalidTOTP.Error() {
			t.Fatalf("replay answers %q, the message of a wrong code", err)
		}
	}
	if got := e.store.rawUser(u.ID); got.FailedLogins != 0 || !got.LockedUntil.IsZero() {
		t.Errorf("after replays: FailedLogins %d LockedUntil %v, want nothing counted", got.FailedLogins, got.LockedUntil)
	}
	// Wrong codes still count, and the next correct code still works.
	wrong := codeAt(t, sec, e.clock.Now().Add(-10*time.Minute))
	for range maxFail - 1 {
		if err := e.svc.CheckTOTP(ctx, u, wrong, "192.0.2.1"); !errors.Is(err, ErrInvalidTOTP) || errors.Is(err, ErrTOTPUsed) {
			t.Fatalf("wrong code: %v", err)
		}
	}
	e.clock.Advance(90 * time.Second)
	if err := e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.1"); err != nil {
		t.Errorf("next code after replays and %d wrong codes: %v", maxFail-1, err)
	}
}
