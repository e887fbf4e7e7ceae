package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// Recovery codes are tested on the real stores (SQLite, and PostgreSQL
// with WARD_TEST_POSTGRES_DSN): the one-time use and the codes' end with
// the TOTP factor are the store's transactions.

// recoveryUser creates alice with a password and TOTP on svc and moves
// past the enrolment code's window.
func recoveryUser(t *testing.T, svc *Service, clk *clock.Fake) *model.User {
	t.Helper()
	ctx := context.Background()
	u, err := svc.CreateUser(ctx, "admin", NewUser{Username: "alice", Password: goodPassword})
	if err != nil {
		t.Fatal(err)
	}
	sec, _, _ := svc.NewTOTPKey(u, "Ward")
	if err := svc.EnrollTOTP(ctx, u.ID, u.ID, sec, codeAt(t, sec, clk.Now())); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Minute)
	return u
}

func newCodes(t *testing.T, svc *Service, userID string) []string {
	t.Helper()
	cs, err := svc.NewRecoveryCodes(context.Background(), "admin-1", userID)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Reveal()
	}
	return out
}

func wantCodesLeft(t *testing.T, svc *Service, userID string, want int) {
	t.Helper()
	if n, err := svc.RecoveryCodesLeft(context.Background(), userID); err != nil || n != want {
		t.Errorf("RecoveryCodesLeft = %d, %v; want %d", n, err, want)
	}
}

func failures(t *testing.T, st store.Store, userID string) int {
	t.Helper()
	u, err := st.GetUser(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	return u.FailedLogins
}

var recoveryCodeFormat = regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$`)

func TestRecoveryCodes(t *testing.T) {
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			reopen := be.Opener(t, clk.Now)
			st := reopen()
			svc, rec := realEnv(t, st, clk, func(o *Options) { o.MaxFailures = 5 })
			ctx := context.Background()

			// Only a user with TOTP gets codes.
			bob, err := svc.CreateUser(ctx, "admin", NewUser{Username: "bob", Password: goodPassword})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.NewRecoveryCodes(ctx, "admin-1", bob.ID); !errors.Is(err, ErrNoTOTP) {
				t.Errorf("codes for a user without TOTP: %v, want ErrNoTOTP", err)
			}
			if _, err := svc.NewRecoveryCodes(ctx, "admin-1", "nobody"); !errors.Is(err, ErrNotFound) {
				t.Errorf("codes for an unknown user: %v, want ErrNotFound", err)
			}
			wantCodesLeft(t, svc, bob.ID, 0)

			alice := recoveryUser(t, svc, clk)
			codes := newCodes(t, svc, alice.ID)
			if len(codes) != RecoveryCodeCount {
				t.Fatalf("%d codes, want %d", len(codes), RecoveryCodeCount)
			}
			seen := map[string]bool{}
			for _, c := range codes {
				if !recoveryCodeFormat.MatchString(c) || seen[c] {
					t.Errorf("code %q: not xxxxx-xxxxx of the alphabet, or repeated", c)
				}
				seen[c] = true
			}
			wantCodesLeft(t, svc, alice.ID, 10)
			evs, err := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARecoveryCodesCreated}})
			if err != nil || len(evs) != 1 || evs[0].UserID != alice.ID || evs[0].Actor != "admin-1" || evs[0].Data["count"] != "10" || evs[0].Code() != "W1004I" {
				t.Fatalf("mfa.recovery_codes_created: %v, %v", evs, err)
			}
			for k, v := range evs[0].Data {
				for _, c := range codes {
					if strings.Contains(v, c) || strings.Contains(v, strings.ReplaceAll(c, "-", "")) {
						t.Errorf("event data %s carries a code", k)
					}
				}
			}

			// Accepted in any case, without the dash, with spaces.
			typed := " " + strings.ToUpper(strings.ReplaceAll(codes[0], "-", " ")) + " "
			if err := svc.CheckRecoveryCode(ctx, alice, typed, "192.0.2.1"); err != nil {
				t.Fatalf("CheckRecoveryCode(%q): %v", typed, err)
			}
			wantCodesLeft(t, svc, alice.ID, 9)
			evs, _ = st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARecoveryCodeUsed}})
			if len(evs) != 1 || evs[0].UserID != alice.ID || evs[0].Actor != alice.ID || evs[0].IP != "192.0.2.1" ||
				evs[0].Data["codes_left"] != "9" || evs[0].Code() != "W1005W" {
				t.Fatalf("mfa.recovery_code_used: %+v", evs)
			}
			if pub := rec.Events(); pub[len(pub)-1].Type != model.EventMFARecoveryCodeUsed || pub[len(pub)-1].ID != evs[0].ID {
				t.Errorf("the stored event was not published: %+v", pub[len(pub)-1])
			}

			// Once only, on every instance: the same code again, here and on
			// a second instance sharing the database, is "already used", not
			// counted as a guess.
			other, _ := realEnv(t, reopen(), clk, func(o *Options) { o.MaxFailures = 5 })
			for i, s := range []*Service{svc, other, svc} {
				err := s.CheckRecoveryCode(ctx, alice, codes[0], "192.0.2.1")
				if !errors.Is(err, ErrRecoveryCodeUsed) || !errors.Is(err, ErrInvalidRecoveryCode) || Reason(err) != ReasonRecoveryCodeReplay ||
					FailedUserID(err) != alice.ID || err.Error() == ErrInvalidRecoveryCode.Error() {
					t.Fatalf("used code again (%d): %v (%s)", i, err, Reason(err))
				}
			}
			if n := failures(t, st, alice.ID); n != 0 {
				t.Errorf("FailedLogins after used codes = %d, want 0", n)
			}
			// The second instance accepts another code of the set.
			if err := other.CheckRecoveryCode(ctx, alice, codes[1], "192.0.2.1"); err != nil {
				t.Fatalf("second instance, another code: %v", err)
			}
			wantCodesLeft(t, svc, alice.ID, 8)

			// Wrong and malformed codes count like wrong TOTP codes; a
			// right one clears the count.
			for i, bad := range []string{"aaaaa-aaaaa", "not-a-code", codes[2] + "x", strings.Replace(codes[2], codes[2][:1], "u", 1)} {
				err := svc.CheckRecoveryCode(ctx, alice, bad, "192.0.2.1")
				if !errors.Is(err, ErrInvalidRecoveryCode) || errors.Is(err, ErrRecoveryCodeUsed) || Reason(err) != ReasonInvalidRecoveryCode {
					t.Fatalf("bad code %q: %v (%s)", bad, err, Reason(err))
				}
				if n := failures(t, st, alice.ID); n != i+1 {
					t.Errorf("FailedLogins after %d bad codes = %d", i+1, n)
				}
			}
			if err := svc.CheckRecoveryCode(ctx, alice, codes[2], "192.0.2.1"); err != nil {
				t.Fatal(err)
			}
			if n := failures(t, st, alice.ID); n != 0 {
				t.Errorf("FailedLogins after a right code = %d, want 0", n)
			}

			// A code is the user's own: another user's code is wrong.
			carol, _ := svc.CreateUser(ctx, "admin", NewUser{Username: "carol", Password: goodPassword, TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
			if err := svc.CheckRecoveryCode(ctx, carol, codes[3], "192.0.2.2"); Reason(err) != ReasonInvalidRecoveryCode {
				t.Errorf("alice's code for carol: %v (%s)", err, Reason(err))
			}

			// A new set replaces the old one at once.
			fresh := newCodes(t, svc, alice.ID)
			wantCodesLeft(t, svc, alice.ID, 10)
			if err := svc.CheckRecoveryCode(ctx, alice, codes[4], "192.0.2.1"); Reason(err) != ReasonInvalidRecoveryCode {
				t.Errorf("a code of the replaced set: %v (%s)", err, Reason(err))
			}

			// A locked or disabled account refuses a right code like a wrong
			// one, and the code stays unused.
			if _, err := st.UpdateUser(ctx, alice.ID, func(u *model.User) error { u.LockedUntil = clk.Now().Add(time.Minute); return nil }); err != nil {
				t.Fatal(err)
			}
			if err := svc.CheckRecoveryCode(ctx, alice, fresh[0], "192.0.2.1"); !errors.Is(err, ErrLocked) {
				t.Errorf("right code on a locked account: %v", err)
			}
			must(t, svc.Unlock(ctx, "admin", alice.ID))
			must(t, svc.SetDisabled(ctx, "admin", alice.ID, true))
			if err := svc.CheckRecoveryCode(ctx, alice, fresh[0], "192.0.2.1"); !errors.Is(err, ErrInvalidRecoveryCode) || Reason(err) != ReasonDisabled ||
				err.Error() != ErrInvalidRecoveryCode.Error() {
				t.Errorf("right code on a disabled account: %v (%s)", err, Reason(err))
			}
			must(t, svc.SetDisabled(ctx, "admin", alice.ID, false))
			wantCodesLeft(t, svc, alice.ID, 10)
			if err := svc.CheckRecoveryCode(ctx, alice, fresh[0], "192.0.2.1"); err != nil {
				t.Errorf("the code refused on a locked and a disabled account, afterwards: %v", err)
			}

			// Removing TOTP removes the codes: a code is then not counted
			// (the user has no second factor to check), and a new
			// enrolment does not bring them back.
			must(t, svc.RemoveTOTP(ctx, "admin", alice.ID))
			wantCodesLeft(t, svc, alice.ID, 0)
			if err := svc.CheckRecoveryCode(ctx, alice, fresh[1], "192.0.2.1"); Reason(err) != ReasonNoTOTP {
				t.Errorf("a code after RemoveTOTP: %v (%s)", err, Reason(err))
			}
			sec, _, _ := svc.NewTOTPKey(alice, "Ward")
			must(t, svc.EnrollTOTP(ctx, "admin", alice.ID, sec, codeAt(t, sec, clk.Now())))
			if err := svc.CheckRecoveryCode(ctx, alice, fresh[1], "192.0.2.1"); Reason(err) != ReasonInvalidRecoveryCode {
				t.Errorf("an old code after a new enrolment: %v (%s)", err, Reason(err))
			}

			// DeleteRecoveryCodes (a KEK rotation's) ends them all.
			newCodes(t, svc, alice.ID)
			if n, err := svc.DeleteRecoveryCodes(ctx, "cli", alice.ID); err != nil || n != 10 {
				t.Errorf("DeleteRecoveryCodes = %d, %v; want 10", n, err)
			}
			wantCodesLeft(t, svc, alice.ID, 0)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNormalizeRecoveryCode: case, dashes and spaces do not matter, the
// letters Crockford's alphabet leaves out read as the digits they look
// like, and nothing else is accepted.
func TestNormalizeRecoveryCode(t *testing.T) {
	for in, want := range map[string]string{
		"abcde-fghjk":     "abcdefghjk",
		"ABCDE-FGHJK":     "abcdefghjk",
		"abcdefghjk":      "abcdefghjk",
		" abcde fghjk ":   "abcdefghjk",
		"a-b-c-d-e01-234": "abcde01234",
		"OIL23-45678":     "0112345678",
		"o1L23-45678":     "0112345678",
	} {
		got, ok := NormalizeRecoveryCode(in)
		if !ok || got != want {
			t.Errorf("NormalizeRecoveryCode(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "abcde", "abcde-fghjkm", "abcde-fghju", "abcde-fghj!", "abcde_fghjk", "äbcde-fghjk", "abcde-fghj\x00"} {
		if got, ok := NormalizeRecoveryCode(bad); ok {
			t.Errorf("NormalizeRecoveryCode(%q) = %q, want refused", bad, got)
		}
	}
	for range 200 {
		c := newRecoveryCode()
		if got, ok := NormalizeRecoveryCode(formatRecoveryCode(c)); !ok || got != c || !recoveryCodeFormat.MatchString(formatRecoveryCode(c)) {
			t.Fatalf("generated %q does not read back (%q, %v)", c, got, ok)
		}
	}
}

// TestRecoveryCodesNeedAKEK: without a key-encryption key there is
// nothing to key the codes with, so none are made.
func TestRecoveryCodesNeedAKEK(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.KEK = nil })
	u := e.mustCreate(t, "alice")
	if _, err := e.svc.NewRecoveryCodes(context.Background(), "admin", u.ID); err == nil || !strings.Contains(err.Error(), "key-encryption key") {
		t.Errorf("NewRecoveryCodes without a KEK: %v", err)
	}
}

// TestConcurrentRecoveryCodeGuessesReserveTheLockout: 60 concurrent
// wrong recovery codes after a correct password; at most the lockout
// limit are evaluated, every other one is answered "locked", and the
// right code afterwards is refused by the lock and stays unused.
func TestConcurrentRecoveryCodeGuessesReserveTheLockout(t *testing.T) {
	const n, maxFail = 60, 5
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			st := be.Opener(t, clk.Now)()
			svc, _ := realEnv(t, st, clk, func(o *Options) { o.MaxFailures = maxFail })
			ctx := context.Background()
			u := recoveryUser(t, svc, clk)
			codes := newCodes(t, svc, u.ID)
			var err error
			if u, err = svc.CheckPassword(ctx, Attempt{Username: "alice", Password: goodPassword, IP: "192.0.2.1"}); err != nil {
				t.Fatal(err)
			}
			var out raceOutcome
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					guess := fmt.Sprintf("zzzzz-%05d", i)
					<-start
					out.add(svc.CheckRecoveryCode(ctx, u, guess, fmt.Sprintf("198.51.100.%d", i%4+1)))
				})
			}
			close(start)
			wg.Wait()
			evaluated := out.answers[ErrInvalidRecoveryCode.Error()]
			t.Logf("%s: %d of %d wrong recovery codes evaluated (limit %d); answers %v", be.Name, evaluated, n, maxFail, out.answers)
			if evaluated > maxFail {
				t.Errorf("%d codes evaluated, limit %d", evaluated, maxFail)
			}
			if out.answers[ErrLocked.Error()] != n-evaluated {
				t.Errorf("answers %v: want only invalid and locked", out.answers)
			}
			if err := svc.CheckRecoveryCode(ctx, u, codes[0], "192.0.2.9"); !errors.Is(err, ErrLocked) {
				t.Errorf("right code after the burst: %v, want ErrLocked", err)
			}
			wantCodesLeft(t, svc, u.ID, RecoveryCodeCount)
		})
	}
}

// TestConcurrentUseOfOneRecoveryCode: one right code posted 16 times at
// once, on two instances sharing the database: exactly one sign-in, the
// others "already used", nothing counted against the account in the end.
// (The lockout limit is above the burst here: every attempt in flight is
// counted until it is settled, so a burst larger than the limit also
// meets "locked", as concurrent TOTP codes do.)
func TestConcurrentUseOfOneRecoveryCode(t *testing.T) {
	const n = 16
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := newFakeClock()
			reopen := be.Opener(t, clk.Now)
			st := reopen()
			mod := func(o *Options) { o.MaxFailures = 2 * n }
			a, _ := realEnv(t, st, clk, mod)
			b, _ := realEnv(t, reopen(), clk, mod)
			ctx := context.Background()
			u := recoveryUser(t, a, clk)
			codes := newCodes(t, a, u.ID)
			var out raceOutcome
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				svc := a
				if i%2 == 1 {
					svc = b
				}
				wg.Go(func() {
					<-start
					out.add(svc.CheckRecoveryCode(ctx, u, codes[7], fmt.Sprintf("198.51.100.%d", i%4+1)))
				})
			}
			close(start)
			wg.Wait()
			if out.answers[""] != 1 || out.answers[ErrRecoveryCodeUsed.Error()] != n-1 {
				t.Errorf("answers %v: want one success and %d already used", out.answers, n-1)
			}
			wantCodesLeft(t, a, u.ID, RecoveryCodeCount-1)
			if f := failures(t, st, u.ID); f != 0 {
				t.Errorf("FailedLogins = %d, want 0", f)
			}
			evs, _ := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARecoveryCodeUsed}})
			if len(evs) != 1 {
				t.Errorf("%d mfa.recovery_code_used events, want 1", len(evs))
			}
		})
	}
}

// changingStore changes the account right after an attempt is reserved:
// another attempt, an administrator or a second instance acting while
// the code is checked.
type changingStore struct {
	store.Store
	change func(u *model.User)
}

func (c *changingStore) ReserveSignIn(ctx context.Context, id string, now time.Time, r store.Lockout) (*store.SignInReservation, error) {
	res, err := c.Store.ReserveSignIn(ctx, id, now, r)
	if err == nil && c.change != nil {
		if _, uerr := c.Store.UpdateUser(ctx, id, func(u *model.User) error { c.change(u); return nil }); uerr != nil {
			return nil, uerr
		}
	}
	return res, err
}

// TestRecoveryCodeAccountChangedDuringCheck: a right code whose account
// was locked by other attempts, disabled or rid of its TOTP factor while
// it was checked answers like a wrong one, stays counted, and the code
// is not used up (unless the factor, and with it the code, is gone).
func TestRecoveryCodeAccountChangedDuringCheck(t *testing.T) {
	cases := []struct {
		name   string
		change func(now time.Time) func(u *model.User)
		reason string
		left   int
	}{
		{"locked", func(now time.Time) func(*model.User) {
			return func(u *model.User) { u.LockedUntil = now.Add(time.Minute) }
		}, ReasonLocked, RecoveryCodeCount},
		{"disabled", func(time.Time) func(*model.User) { return func(u *model.User) { u.Disabled = true } }, ReasonDisabled, RecoveryCodeCount},
		{"TOTP removed", func(time.Time) func(*model.User) { return func(u *model.User) { u.TOTPSecret = nil } }, ReasonInvalidRecoveryCode, 0},
	}
	for _, be := range backendtest.Kinds(t) {
		for _, tc := range cases {
			t.Run(be.Name+"/"+tc.name, func(t *testing.T) {
				clk := newFakeClock()
				cs := &changingStore{Store: be.Opener(t, clk.Now)()}
				svc, _ := realEnv(t, cs, clk, nil)
				ctx := context.Background()
				u := recoveryUser(t, svc, clk)
				codes := newCodes(t, svc, u.ID)
				if err := svc.CheckRecoveryCode(ctx, u, "aaaaa-aaaaa", "192.0.2.1"); !errors.Is(err, ErrInvalidRecoveryCode) {
					t.Fatal(err)
				}
				cs.change = tc.change(clk.Now())
				err := svc.CheckRecoveryCode(ctx, u, codes[0], "192.0.2.1")
				cs.change = nil
				if !errors.Is(err, ErrInvalidRecoveryCode) || err.Error() != ErrInvalidRecoveryCode.Error() || Reason(err) != tc.reason {
					t.Fatalf("%s during the check: %v (%s), want the wrong-code answer with %s", tc.name, err, Reason(err), tc.reason)
				}
				if f := failures(t, cs, u.ID); f != 2 {
					t.Errorf("FailedLogins = %d, want 2 (the refused attempt counts)", f)
				}
				wantCodesLeft(t, svc, u.ID, tc.left)
			})
		}
	}
}

// TestRecoveryCodeEventsCommitWithChange: a set whose
// mfa.recovery_codes_created the database refuses is not stored, and a
// use whose mfa.recovery_code_used it refuses leaves the code unused (a
// trigger refuses the events, as in TestEventCommitsWithChange).
func TestRecoveryCodeEventsCommitWithChange(t *testing.T) {
	clk := newFakeClock()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	st, err := sqlite.Open(ctx, path, sqlite.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	refuse := func(typ model.EventType) {
		t.Helper()
		if _, err := db.Exec(`DROP TRIGGER IF EXISTS refuse`); err != nil {
			t.Fatal(err)
		}
		if typ != "" {
			if _, err := db.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.type = '` + string(typ) + `'
				BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
				t.Fatal(err)
			}
		}
	}
	svc, _ := realEnv(t, st, clk, nil)
	u := recoveryUser(t, svc, clk)
	codes := newCodes(t, svc, u.ID)

	refuse(model.EventMFARecoveryCodesCreated)
	if _, err := svc.NewRecoveryCodes(ctx, "admin", u.ID); err == nil {
		t.Fatal("NewRecoveryCodes with its event refused: got nil error")
	}
	if err := svc.CheckRecoveryCode(ctx, u, codes[0], "192.0.2.1"); err != nil {
		t.Errorf("the earlier set was replaced although the new one's event was refused: %v", err)
	}
	refuse(model.EventMFARecoveryCodeUsed)
	if err := svc.CheckRecoveryCode(ctx, u, codes[1], "192.0.2.1"); err == nil || errors.Is(err, ErrInvalidRecoveryCode) {
		t.Fatalf("use with its event refused: %v, want an internal error", err)
	}
	wantCodesLeft(t, svc, u.ID, RecoveryCodeCount-1)
	if f := failures(t, st, u.ID); f != 0 {
		t.Errorf("FailedLogins = %d after an internal error, want 0 (given back)", f)
	}
	refuse("")
	if err := svc.CheckRecoveryCode(ctx, u, codes[1], "192.0.2.1"); err != nil {
		t.Errorf("the code after the refused use: %v", err)
	}
	wantCodesLeft(t, svc, u.ID, RecoveryCodeCount-2)
}
