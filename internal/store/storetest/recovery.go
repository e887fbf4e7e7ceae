package storetest

import (
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// recoveryHashes returns n distinct hashes named after prefix.
func recoveryHashes(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{0, 0xff, byte(i), 'h'}
		out[i] = append(out[i], prefix...)
	}
	return out
}

func wantLeft(t *testing.T, s store.Store, what, userID string, want int) {
	t.Helper()
	got, err := s.RecoveryCodesLeft(ctx, userID)
	must(t, what+": RecoveryCodesLeft", err)
	if got != want {
		t.Errorf("%s: %d recovery codes left, want %d", what, got, want)
	}
}

// testRecoveryCodes: replacing a set (with its check and its event),
// using a code once, the counts, and the codes' end with the TOTP factor,
// with the user, and by DeleteRecoveryCodes.
func testRecoveryCodes(t *testing.T, s store.Store) {
	for _, u := range []*model.User{fullUser("u1", "alice"), fullUser("u2", "bob")} {
		u.Disabled, u.LockedUntil = false, time.Time{}
		must(t, "CreateUser", s.CreateUser(ctx, u))
	}
	first := recoveryHashes("first", 3)

	err := s.ReplaceRecoveryCodes(ctx, "nobody", first, at(0), nil)
	wantErr(t, "ReplaceRecoveryCodes of an unknown user", err, store.ErrNotFound)
	refused := errors.New("refused by check")
	var checked *model.User
	err = s.ReplaceRecoveryCodes(ctx, "u1", first, at(0), func(u *model.User) error { checked = u; return refused })
	if !errors.Is(err, refused) {
		t.Fatalf("ReplaceRecoveryCodes refused by its check: %v, want the check's error", err)
	}
	if checked == nil || checked.ID != "u1" || len(checked.TOTPSecret) == 0 {
		t.Errorf("check got %+v, want user u1 as stored", checked)
	}
	wantLeft(t, s, "after a refused replace", "u1", 0)

	// A set and its event commit together.
	e := pendingEvent("ev-codes", model.EventMFARecoveryCodesCreated, "u1")
	ectx := store.WithEvent(ctx, e)
	must(t, "ReplaceRecoveryCodes", s.ReplaceRecoveryCodes(ectx, "u1", first, at(time.Minute), func(*model.User) error { return nil }))
	if !store.EventStored(ectx, e) {
		t.Error("ReplaceRecoveryCodes: its pending event is not stored")
	}
	wantLeft(t, s, "after ReplaceRecoveryCodes", "u1", 3)
	wantLeft(t, s, "another user", "u2", 0)
	wantLeft(t, s, "an unknown user", "nobody", 0)
	must(t, "ReplaceRecoveryCodes u2", s.ReplaceRecoveryCodes(ctx, "u2", recoveryHashes("bob", 2), at(time.Minute), nil))
	byUser, err := s.RecoveryCodesLeftByUser(ctx)
	must(t, "RecoveryCodesLeftByUser", err)
	if len(byUser) != 2 || byUser["u1"] != 3 || byUser["u2"] != 2 {
		t.Errorf("RecoveryCodesLeftByUser = %v, want u1:3 u2:2", byUser)
	}

	// A code belongs to its user.
	_, err = s.UseRecoveryCode(ctx, "u2", first[0], at(2*time.Minute), nil)
	wantErr(t, "UseRecoveryCode of another user's code", err, store.ErrNotFound)
	_, err = s.UseRecoveryCode(ctx, "u1", []byte("no such code"), at(2*time.Minute), nil)
	wantErr(t, "UseRecoveryCode of an unknown code", err, store.ErrNotFound)
	_, err = s.UseRecoveryCode(ctx, "nobody", first[0], at(2*time.Minute), nil)
	wantErr(t, "UseRecoveryCode of an unknown user", err, store.ErrNotFound)

	// fn refuses: nothing changes, the code stays unused.
	_, err = s.UseRecoveryCode(ctx, "u1", first[0], at(2*time.Minute), func(u *model.User, left int) error { return refused })
	if !errors.Is(err, refused) {
		t.Fatalf("UseRecoveryCode refused by fn: %v, want fn's error", err)
	}
	wantLeft(t, s, "after a refused use", "u1", 3)

	// A use, its change of the user and its event commit together.
	e = pendingEvent("ev-used", model.EventMFARecoveryCodeUsed, "u1")
	gotLeft := -1
	ectx = store.WithEventFunc(ctx, e, func([]string) bool {
		e.Data = map[string]string{"codes_left": strconv.Itoa(gotLeft)}
		return true
	})
	u, err := s.UseRecoveryCode(ectx, "u1", first[0], at(3*time.Minute), func(u *model.User, left int) error {
		if u.ID != "u1" || u.FailedLogins != 3 {
			return errors.New("fn got the wrong user")
		}
		gotLeft = left
		u.FailedLogins = 0
		return nil
	})
	must(t, "UseRecoveryCode", err)
	if gotLeft != 2 || u == nil || u.FailedLogins != 0 {
		t.Errorf("UseRecoveryCode: fn saw %d left, returned %+v; want 2 left and the user as fn left it", gotLeft, u)
	}
	if stored, err := s.GetUser(ctx, "u1"); err != nil || stored.FailedLogins != 0 {
		t.Errorf("user after UseRecoveryCode: %+v, %v; want FailedLogins 0 saved", stored, err)
	}
	if !store.EventStored(ectx, e) {
		t.Error("UseRecoveryCode: its pending event is not stored")
	} else if got := storedEvents(t, s)["ev-used"]; got == nil || got.Data["codes_left"] != "2" {
		t.Errorf("stored event %+v, want codes_left 2", got)
	}
	wantLeft(t, s, "after a use", "u1", 2)

	// The same code again: ErrAlreadyUsed, nothing changes, no event.
	e = pendingEvent("ev-used-again", model.EventMFARecoveryCodeUsed, "u1")
	ectx = store.WithEvent(ctx, e)
	ran := false
	_, err = s.UseRecoveryCode(ectx, "u1", first[0], at(4*time.Minute), func(*model.User, int) error { ran = true; return nil })
	wantErr(t, "UseRecoveryCode of a used code", err, store.ErrAlreadyUsed)
	if ran || store.EventStored(ectx, e) || storedEvents(t, s)["ev-used-again"] != nil {
		t.Errorf("a used code ran fn (%v) or stored its event", ran)
	}
	wantLeft(t, s, "after a used code", "u1", 2)

	// A new set replaces the old one, used codes included.
	second := recoveryHashes("second", 4)
	must(t, "ReplaceRecoveryCodes again", s.ReplaceRecoveryCodes(ctx, "u1", second, at(5*time.Minute), nil))
	wantLeft(t, s, "after a new set", "u1", 4)
	_, err = s.UseRecoveryCode(ctx, "u1", first[1], at(6*time.Minute), nil)
	wantErr(t, "a code of the replaced set", err, store.ErrNotFound)
	_, err = s.UseRecoveryCode(ctx, "u1", first[0], at(6*time.Minute), nil)
	wantErr(t, "a used code of the replaced set", err, store.ErrNotFound)
	_, err = s.UseRecoveryCode(ctx, "u1", second[3], at(6*time.Minute), nil)
	must(t, "a code of the new set", err)

	// Changes of the user that keep the TOTP factor keep the codes (a
	// new seed included); removing the factor removes them.
	_, err = s.UpdateUser(ctx, "u1", func(u *model.User) error { u.DisplayName = "Alice"; u.TOTPSecret = []byte{7, 7, 7}; return nil })
	must(t, "UpdateUser", err)
	wantLeft(t, s, "after an update keeping TOTP", "u1", 3)
	_, err = s.UpdateUser(ctx, "u1", func(u *model.User) error { u.TOTPSecret = nil; return errors.New("no") })
	if err == nil {
		t.Fatal("UpdateUser with a failing fn succeeded")
	}
	wantLeft(t, s, "after a failed update", "u1", 3)
	_, err = s.UpdateUser(ctx, "u1", func(u *model.User) error { u.TOTPSecret = nil; return nil })
	must(t, "UpdateUser removing TOTP", err)
	wantLeft(t, s, "after TOTP was removed", "u1", 0)
	_, err = s.UseRecoveryCode(ctx, "u1", second[0], at(7*time.Minute), nil)
	wantErr(t, "a code after TOTP was removed", err, store.ErrNotFound)
	wantLeft(t, s, "another user's codes after TOTP was removed", "u2", 2)

	// DeleteRecoveryCodes counts used codes too.
	_, err = s.UseRecoveryCode(ctx, "u2", recoveryHashes("bob", 2)[0], at(8*time.Minute), nil)
	must(t, "UseRecoveryCode u2", err)
	n, err := s.DeleteRecoveryCodes(ctx, "u2")
	must(t, "DeleteRecoveryCodes", err)
	if n != 2 {
		t.Errorf("DeleteRecoveryCodes = %d, want 2", n)
	}
	wantLeft(t, s, "after DeleteRecoveryCodes", "u2", 0)
	if n, err := s.DeleteRecoveryCodes(ctx, "u2"); err != nil || n != 0 {
		t.Errorf("DeleteRecoveryCodes again = %d, %v; want 0, nil", n, err)
	}

	// Deleting the user deletes its codes: a user created again under the
	// same id has none.
	must(t, "ReplaceRecoveryCodes u2", s.ReplaceRecoveryCodes(ctx, "u2", recoveryHashes("bob", 2), at(9*time.Minute), nil))
	must(t, "DeleteUser", s.DeleteUser(ctx, "u2"))
	must(t, "CreateUser again", s.CreateUser(ctx, fullUser("u2", "bob")))
	wantLeft(t, s, "a user created again", "u2", 0)
	_, err = s.UseRecoveryCode(ctx, "u2", recoveryHashes("bob", 2)[1], at(10*time.Minute), nil)
	wantErr(t, "a deleted user's code", err, store.ErrNotFound)
	byUser, err = s.RecoveryCodesLeftByUser(ctx)
	must(t, "RecoveryCodesLeftByUser", err)
	if len(byUser) != 0 {
		t.Errorf("RecoveryCodesLeftByUser = %v, want none", byUser)
	}
}

// testRecoveryCodeConcurrent: of 8 concurrent uses of one code exactly
// one succeeds (and runs fn to its commit); the others get
// ErrAlreadyUsed.
func testRecoveryCodeConcurrent(t *testing.T, s store.Store) {
	u := fullUser("u1", "alice")
	must(t, "CreateUser", s.CreateUser(ctx, u))
	hashes := recoveryHashes("race", 5)
	must(t, "ReplaceRecoveryCodes", s.ReplaceRecoveryCodes(ctx, "u1", hashes, at(0), nil))
	var saved atomic.Int32
	errs := race(func(i int) error {
		_, err := s.UseRecoveryCode(ctx, "u1", hashes[2], at(time.Duration(i+1)*time.Second), func(u *model.User, left int) error {
			if left != 4 {
				return errors.New("wrong count of codes left")
			}
			u.FailedLogins = i
			return nil
		})
		if err == nil {
			saved.Add(1)
		}
		return err
	})
	w := oneWinner(t, "concurrent UseRecoveryCode", errs, store.ErrAlreadyUsed)
	if saved.Load() != 1 {
		t.Errorf("%d uses succeeded, want 1", saved.Load())
	}
	wantLeft(t, s, "after the race", "u1", 4)
	if got, err := s.GetUser(ctx, "u1"); err == nil && w >= 0 && got.FailedLogins != w {
		t.Errorf("user saved by goroutine %d, want the winner %d", got.FailedLogins, w)
	}
}
