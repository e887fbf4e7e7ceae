package identity

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Recovery codes are one-time codes a user with TOTP signs in with
// instead of a TOTP code, when the authenticator is lost. They are a
// backup of the TOTP factor, not a factor of their own: only a user with
// TOTP has them, removing TOTP deletes them, and they answer the same
// second-factor step.
//
// A code is 10 characters of Crockford's base32 alphabet (50 random
// bits), shown as xxxxx-xxxxx. Each attempt is counted against the
// account's lockout like a TOTP code, so an online guess has a chance of
// about MaxFailures×10 in 2^50 per lockout period. Only an HMAC of each
// code, under a key derived from the KEK and bound to the user, is
// stored: a database dump alone does not let anyone test guesses.

// RecoveryCodeCount is the number of codes in a set.
const RecoveryCodeCount = 10

const (
	recoveryCodeLen = 10 // characters of 5 bits: 50 random bits
	// recoveryAlphabet is Crockford's base32 in lower case: no i, l, o
	// or u, so no character reads as another.
	recoveryAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"
)

var (
	// ErrInvalidRecoveryCode: the recovery code is wrong (or the account
	// cannot use it: disabled, changed meanwhile).
	ErrInvalidRecoveryCode = errors.New("invalid recovery code")
	// ErrRecoveryCodeUsed: the recovery code was right but has been used
	// already; each code works once. It wraps ErrInvalidRecoveryCode.
	ErrRecoveryCodeUsed error = recoveryUsedError{}
)

type recoveryUsedError struct{}

func (recoveryUsedError) Error() string { return "recovery code already used" }
func (recoveryUsedError) Unwrap() error { return ErrInvalidRecoveryCode }

// Reasons of recovery-code failures (see Reason).
const (
	ReasonInvalidRecoveryCode = "invalid_recovery_code"
	ReasonRecoveryCodeReplay  = "recovery_code_replay" // a used code presented again
)

// NormalizeRecoveryCode returns the canonical form of a typed recovery
// code (any case, with or without the dash or spaces; o read as 0, i and
// l as 1, as Crockford's base32 does), and whether it is well formed.
func NormalizeRecoveryCode(s string) (string, bool) {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			continue
		case r == 'o':
			r = '0'
		case r == 'i' || r == 'l':
			r = '1'
		}
		if r > 0x7f || !strings.ContainsRune(recoveryAlphabet, r) {
			return "", false
		}
		if b.Len() == recoveryCodeLen {
			return "", false
		}
		b.WriteRune(r)
	}
	if b.Len() != recoveryCodeLen {
		return "", false
	}
	return b.String(), true
}

// newRecoveryCode returns a fresh code in canonical form. The alphabet
// has 32 characters, so 5 random bits per character are uniform.
func newRecoveryCode() string {
	var raw [recoveryCodeLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	out := make([]byte, recoveryCodeLen)
	for i, v := range raw {
		out[i] = recoveryAlphabet[v&31]
	}
	clear(raw[:])
	return string(out)
}

// formatRecoveryCode shows a canonical code as xxxxx-xxxxx.
func formatRecoveryCode(c string) string { return c[:5] + "-" + c[5:] }

// recoveryHash is the stored form of a canonical code: its HMAC, bound
// to the user (a code of one user is nothing to another).
func (s *Service) recoveryHash(userID, canonical string) []byte {
	return s.recovery.Sum("ward/recovery-code\x00" + userID + "\x00" + canonical)
}

// NewRecoveryCodes gives a user with TOTP a new set of RecoveryCodeCount
// one-time recovery codes, which replaces any earlier set at once (codes
// not used yet stop working). The codes are returned once, formatted
// xxxxx-xxxxx, and only their keyed hashes are stored. It publishes
// mfa.recovery_codes_created, committed with the new set. ErrNoTOTP when
// the user has no TOTP factor (recovery codes stand in for it);
// ErrNotFound when there is no such user.
func (s *Service) NewRecoveryCodes(ctx context.Context, actor, userID string) ([]secret.String, error) {
	if s.recovery == nil {
		return nil, errors.New("identity: no key-encryption key configured; recovery codes are unavailable")
	}
	codes := make([]secret.String, 0, RecoveryCodeCount)
	hashes := make([][]byte, 0, RecoveryCodeCount)
	seen := map[string]bool{}
	for len(codes) < RecoveryCodeCount {
		c := newRecoveryCode()
		if seen[c] {
			continue
		}
		seen[c] = true
		codes = append(codes, secret.String(formatRecoveryCode(c)))
		hashes = append(hashes, s.recoveryHash(userID, c))
	}
	ev := &model.Event{Type: model.EventMFARecoveryCodesCreated, Actor: actor, UserID: userID,
		Data: map[string]string{"count": strconv.Itoa(RecoveryCodeCount)}}
	ctx = s.events.Pending(ctx, ev, nil)
	err := s.store.ReplaceRecoveryCodes(ctx, userID, hashes, s.now(), func(u *model.User) error {
		if !s.HasTOTP(u) {
			return ErrNoTOTP
		}
		return nil
	})
	if errors.Is(err, ErrNoTOTP) {
		return nil, err
	} else if err != nil {
		return nil, fmt.Errorf("identity: recovery codes of user %s: %w", userID, notFound(err))
	}
	s.log.InfoContext(ctx, "recovery codes created", "actor", actor, "user_id", userID, "count", RecoveryCodeCount)
	return codes, s.events.Emit(ctx, ev)
}

// RecoveryCodesLeft returns how many of the user's recovery codes are
// unused (0 when the user has none or does not exist).
func (s *Service) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	n, err := s.store.RecoveryCodesLeft(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("identity: recovery codes of user %s: %w", userID, err)
	}
	return n, nil
}

// RecoveryCodesLeftByUser returns the number of unused recovery codes of
// every user that has some, for lists of users.
func (s *Service) RecoveryCodesLeftByUser(ctx context.Context) (map[string]int, error) {
	m, err := s.store.RecoveryCodesLeftByUser(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: recovery codes: %w", err)
	}
	return m, nil
}

// DeleteRecoveryCodes deletes all of a user's recovery codes, used or
// not, and returns how many there were. A key-encryption key rotation
// does this for everyone: the codes were keyed under a key derived from
// the old KEK, so none of them could match any more.
func (s *Service) DeleteRecoveryCodes(ctx context.Context, actor, userID string) (int, error) {
	n, err := s.store.DeleteRecoveryCodes(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("identity: delete recovery codes of user %s: %w", userID, err)
	}
	if n > 0 {
		s.log.InfoContext(ctx, "recovery codes deleted", "actor", actor, "user_id", userID, "count", n)
	}
	return n, nil
}

// CheckRecoveryCode verifies a recovery code for u (the second factor of
// a user with TOTP, in place of a TOTP code) and uses it up: each code is
// accepted once, even across instances and under concurrent attempts.
// It follows CheckTOTP's rules: every attempt is counted against the
// account before the code is checked, atomically with the check of the
// lock, so concurrent codes cannot be evaluated beyond the limit;
// success clears the account's failure count; a correct code on an
// account that was locked by other attempts, disabled or changed
// meanwhile answers like a wrong one (and is not used up); a used code
// presented again fails with ErrRecoveryCodeUsed (ReasonRecoveryCodeReplay)
// and is given back to the account's count, as a replayed TOTP code is.
// The user is re-read from the store, so a stale u cannot bypass a lock
// or a disabled flag.
//
// Success publishes mfa.recovery_code_used (Data: codes_left), committed
// with the use. Errors: ErrInvalidRecoveryCode, ErrRecoveryCodeUsed,
// ErrLocked, ErrThrottled (see Reason).
func (s *Service) CheckRecoveryCode(ctx context.Context, u *model.User, code, ip string) error {
	if u == nil {
		return authErr(ErrInvalidRecoveryCode, ReasonNoTOTP, "")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	key, err := s.admit(ip)
	if err != nil {
		s.log.DebugContext(ctx, "recovery code check refused", "user_id", u.ID, "ip", ip, "reason", Reason(err))
		return authErr(ErrThrottled, Reason(err), u.ID)
	}
	err = s.checkRecoveryCode(ctx, u, code, ip)
	s.settle(key, err)
	return err
}

func (s *Service) checkRecoveryCode(ctx context.Context, u *model.User, code, ip string) error {
	cur, err := s.store.GetUser(ctx, u.ID)
	if errors.Is(err, store.ErrNotFound) {
		return authErr(ErrInvalidRecoveryCode, ReasonUnknownUser, "")
	} else if err != nil {
		return fmt.Errorf("identity: look up user: %w", err)
	}
	if !s.HasTOTP(cur) && !cur.Disabled {
		// A caller error, not a guess: not counted (see settle).
		return authErr(ErrInvalidRecoveryCode, ReasonNoTOTP, cur.ID)
	}
	res, err := s.reserve(ctx, cur.ID, ip, "")
	switch {
	case errors.Is(err, store.ErrLocked):
		s.log.DebugContext(ctx, "recovery code check refused", "user_id", u.ID, "ip", ip, "reason", ReasonLocked)
		return authErr(ErrLocked, ReasonLocked, cur.ID)
	case errors.Is(err, store.ErrNotFound):
		return authErr(ErrInvalidRecoveryCode, ReasonUnknownUser, "")
	case err != nil:
		return fmt.Errorf("identity: count sign-in attempt: %w", err)
	}
	// Counted: what follows is recorded even if the client goes away.
	ctx = context.WithoutCancel(ctx)
	if cur.Disabled {
		return s.failed(ctx, res, ErrInvalidRecoveryCode, cur.ID, ReasonDisabled, ip, "")
	}
	canonical, ok := NormalizeRecoveryCode(code)
	if !ok || s.recovery == nil {
		return s.failed(ctx, res, ErrInvalidRecoveryCode, cur.ID, ReasonInvalidRecoveryCode, ip, "")
	}
	left := -1
	ev := &model.Event{Type: model.EventMFARecoveryCodeUsed, Actor: cur.ID, UserID: cur.ID, IP: ip}
	lifted, lev := false, lockLifted(cur.ID, ip)
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		ev.Data = map[string]string{"codes_left": strconv.Itoa(left)}
		if lifted {
			return []*model.Event{ev, lev}
		}
		return []*model.Event{ev}
	})
	// The use, the re-check of the account and the settling of the
	// attempt are one transaction: a code refused here stays unused.
	_, err = s.store.UseRecoveryCode(ectx, cur.ID, s.recoveryHash(cur.ID, canonical), s.now(), func(x *model.User, n int) error {
		switch {
		case x.Disabled:
			return errRefused{ReasonDisabled}
		case !s.HasTOTP(x):
			return errRefused{ReasonInvalidRecoveryCode}
		case locked(x, s.now()) && !ownLock(x, res):
			return errRefused{ReasonLocked}
		}
		lifted = ownLock(x, res)
		x.FailedLogins, x.LockedUntil = 0, time.Time{}
		x.UpdatedAt = s.now()
		left = n
		return nil
	})
	if r, ok := errors.AsType[errRefused](err); ok {
		s.log.InfoContext(ctx, "correct recovery code refused: account changed during verification", "user_id", cur.ID, "ip", ip, "reason", r.reason)
		return s.failed(ctx, res, ErrInvalidRecoveryCode, cur.ID, r.reason, ip, "")
	}
	switch {
	case errors.Is(err, store.ErrAlreadyUsed):
		s.release(ctx, cur.ID, res)
		s.log.WarnContext(ctx, "used recovery code presented again", "user_id", cur.ID, "ip", ip)
		return authErr(ErrRecoveryCodeUsed, ReasonRecoveryCodeReplay, cur.ID)
	case errors.Is(err, store.ErrNotFound):
		return s.failed(ctx, res, ErrInvalidRecoveryCode, cur.ID, ReasonInvalidRecoveryCode, ip, "")
	case err != nil:
		s.release(ctx, cur.ID, res)
		return fmt.Errorf("identity: use recovery code: %w", err)
	}
	s.log.WarnContext(ctx, "recovery code used", "user_id", cur.ID, "ip", ip, "codes_left", left)
	if err := s.events.Emit(ectx, ev); err != nil {
		// The sign-in stands: the use is committed (with its event when
		// the bus records events with their change).
		s.log.ErrorContext(ctx, "publishing mfa.recovery_code_used", "user_id", cur.ID, "err", err)
	}
	if lifted {
		s.emitLift(ectx, lev)
	}
	return nil
}
