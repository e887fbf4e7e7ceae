package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Attempt is one password sign-in attempt.
type Attempt struct {
	Username  string
	Password  string
	IP        string // client IP as decided by the HTTP layer (trusted proxies)
	UserAgent string
}

// LogValue keeps the password (and the raw typed username, which is often
// a mistyped password) out of logs.
func (a Attempt) LogValue() slog.Value {
	return slog.GroupValue(slog.String("ip", a.IP), slog.String("user_agent", a.UserAgent))
}

// locked reports whether u is locked at now.
func locked(u *model.User, now time.Time) bool { return now.Before(u.LockedUntil) }

// ownLock reports whether the lock on u, if any, is the one reservation
// r set (so that r's attempt may still succeed: it was counted within
// the limit).
func ownLock(u *model.User, r *store.SignInReservation) bool {
	return r.LockedNow && u.LockedUntil.Equal(r.LockedUntil)
}

// errRefused is returned from inside UpdateUser when the account changed
// while its password or code was being checked (reason says how).
type errRefused struct{ reason string }

func (e errRefused) Error() string { return "account changed during verification: " + e.reason }

// CheckPassword verifies a sign-in attempt and returns the user on
// success.
//
// Failures return ErrInvalidCredentials (unknown user, wrong password,
// disabled user alike), ErrLocked (known or unknown username after
// MaxFailures failures, until LockoutDuration has passed) or ErrThrottled
// (the address's or the instance's budget is spent, or too many sign-ins
// wait for a hash slot). Reason and FailedUserID tell the audit log which
// case it was. An unknown username costs one argon2 computation like a
// known one.
//
// Every attempt is counted against the account (or the unknown name) in
// the store before its password is verified, in one atomic write that
// also checks the lock (store.ReserveSignIn): concurrent attempts, on any
// number of instances, cannot evaluate more than MaxFailures passwords. A
// correct password whose account was locked by other attempts, disabled
// or given a new password while it was verified gets the answer a wrong
// password gets. The attempt that reaches the limit locks, and its
// user.locked commits with the lock; if that attempt's own password then
// proves right, the sign-in lifts the lock it set.
//
// Success clears the failure count, except for users with TOTP: their
// attempt is given back and their count is cleared by CheckTOTP, so that
// knowing the password does not reset the budget for guessing codes. A
// hash made with other argon2 parameters is replaced on success.
//
// CheckPassword publishes no sign-in events; the caller does.
func (s *Service) CheckPassword(ctx context.Context, a Attempt) (*model.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, err := s.admit(a.IP)
	if err != nil {
		s.log.DebugContext(ctx, "password check refused", "ip", a.IP, "reason", Reason(err))
		return nil, err
	}
	u, err := s.checkPassword(ctx, a)
	s.settle(key, err)
	return u, err
}

func (s *Service) checkPassword(ctx context.Context, a Attempt) (*model.User, error) {
	// A place at the hash slots first: an attempt the instance has no
	// room for is refused before it costs a read or a write.
	t, err := s.enterHash(true)
	if err != nil {
		return nil, err
	}
	defer t.release()
	name := NormalizeUsername(a.Username)
	var u *model.User
	if ValidUsername(name) {
		var err error
		u, err = s.store.GetUserByUsername(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			u = nil
		} else if err != nil {
			return nil, fmt.Errorf("identity: look up user: %w", err)
		}
	}
	if u == nil {
		return nil, s.failUnknown(ctx, t, name, a)
	}
	res, err := s.reserve(ctx, u.ID, a.IP, a.UserAgent)
	switch {
	case errors.Is(err, store.ErrLocked):
		s.log.DebugContext(ctx, "password check refused", "user_id", u.ID, "ip", a.IP, "reason", ReasonLocked)
		return nil, authErr(ErrLocked, ReasonLocked, u.ID)
	case errors.Is(err, store.ErrNotFound): // deleted since the look-up
		return nil, s.failUnknown(ctx, t, name, a)
	case err != nil:
		return nil, fmt.Errorf("identity: count sign-in attempt: %w", err)
	}
	ok, h, err := s.verify(ctx, t, u.PasswordHash, a.Password)
	if err != nil {
		// Not evaluated (cancelled while waiting, or no hash slot).
		s.release(ctx, u.ID, res)
		return nil, err
	}
	// Evaluated: what follows is recorded even if the client goes away.
	ctx = context.WithoutCancel(ctx)
	if h == nil {
		s.log.WarnContext(ctx, "stored password hash is unusable", "user_id", u.ID)
	}
	if !ok || u.Disabled {
		reason := ReasonInvalidCredentials
		if u.Disabled {
			reason = ReasonDisabled
		}
		return nil, s.failed(ctx, res, ErrInvalidCredentials, u.ID, reason, a.IP, a.UserAgent)
	}
	return s.passwordSucceeded(ctx, u, h, res, a)
}

// failUnknown handles an attempt on a username that does not exist: it
// is counted and locked like an account, in the store, under a keyed
// hash of the name (names are often mistyped passwords).
func (s *Service) failUnknown(ctx context.Context, t *hashTicket, name string, a Attempt) error {
	key := s.names.Sum(name)
	res, err := s.store.ReserveUnknownSignIn(ctx, key, s.now(), s.rule)
	if errors.Is(err, store.ErrLocked) {
		s.log.DebugContext(ctx, "password check refused", "ip", a.IP, "reason", ReasonLocked, "known", false)
		return authErr(ErrLocked, ReasonLocked, "")
	} else if err != nil {
		return fmt.Errorf("identity: count sign-in attempt: %w", err)
	}
	if err := s.dummyVerify(ctx, t, a.Password); err != nil {
		if rerr := s.store.ReleaseUnknownSignIn(context.WithoutCancel(ctx), key, res); rerr != nil {
			s.log.ErrorContext(ctx, "giving back a sign-in attempt", "err", rerr)
		}
		return err
	}
	if res.LockedNow {
		s.log.InfoContext(ctx, "unknown username locked", "ip", a.IP)
	}
	s.log.DebugContext(ctx, "password check failed", "ip", a.IP, "reason", ReasonUnknownUser)
	return authErr(ErrInvalidCredentials, ReasonUnknownUser, "")
}

// release gives back the reservation of an attempt that turned out not
// to be a failure (not evaluated, or a replayed code). When that attempt
// had locked the account, the lift of its lock commits with its record
// (user.updated, change "unlocked").
func (s *Service) release(ctx context.Context, userID string, res *store.SignInReservation) {
	ctx = context.WithoutCancel(ctx)
	lifted, lev := false, lockLifted(userID, "")
	lev.Reason = "locking_attempt_given_back"
	ectx := ctx
	if res.LockedNow {
		ectx = s.events.Pending(ctx, lev, func(ids []string) bool {
			lifted = len(ids) > 0
			return lifted
		})
	}
	if err := s.store.ReleaseSignIn(ectx, userID, res); err != nil {
		// The attempt stays counted (and its lock in place): safe, only
		// stricter.
		s.log.ErrorContext(ctx, "giving back a sign-in attempt", "user_id", userID, "err", err)
		return
	}
	if lifted {
		s.emitLift(ectx, lev)
	}
}

// reserve counts an attempt on userID's account (store.ReserveSignIn).
// The attempt that reaches the limit locks the account, and its
// user.locked commits with the lock in the reservation's write: a lock is
// never left without its record, nor the record without the lock.
func (s *Service) reserve(ctx context.Context, userID, ip, ua string) (*store.SignInReservation, error) {
	now := s.now()
	ev := &model.Event{Type: model.EventUserLocked, Actor: "system", UserID: userID, IP: ip, UserAgent: ua,
		Outcome: model.OutcomeSuccess, Reason: "too_many_failures"}
	ectx := s.events.Pending(ctx, ev, func(ids []string) bool {
		if len(ids) < 2 {
			return false // not locked by this attempt
		}
		ev.Data = map[string]string{"failures": ids[1], "locked_until": now.Add(s.rule.LockFor).UTC().Format(time.RFC3339)}
		return true
	})
	res, err := s.store.ReserveSignIn(ectx, userID, now, s.rule)
	if err != nil || !res.LockedNow {
		return res, err
	}
	s.log.WarnContext(ctx, "user locked", "user_id", userID, "ip", ip, "until", res.LockedUntil)
	if ev.Data == nil { // a store that did not record it
		ev.Data = map[string]string{"failures": strconv.Itoa(res.Failures), "locked_until": res.LockedUntil.UTC().Format(time.RFC3339)}
	}
	if perr := s.events.Emit(ectx, ev); perr != nil {
		s.log.ErrorContext(ctx, "publishing user.locked", "user_id", userID, "err", perr)
	}
	return res, nil
}

// lockLifted is the record of the lift of the lock an attempt set on
// reaching the limit (user.locked), when that attempt then proved right
// (reason locking_attempt_succeeded) or was given back unchecked
// (locking_attempt_given_back): this user.updated (change "unlocked",
// actor system) commits with the update that lifts it.
func lockLifted(userID, ip string) *model.Event {
	return &model.Event{Type: model.EventUserUpdated, Actor: "system", UserID: userID, IP: ip,
		Reason: "locking_attempt_succeeded", Data: map[string]string{"change": "unlocked"}}
}

// emitLift publishes lev after the update that lifted the lock committed
// it (ectx).
func (s *Service) emitLift(ctx context.Context, lev *model.Event) {
	s.log.InfoContext(ctx, "lock lifted by the attempt that set it", "user_id", lev.UserID, "reason", lev.Reason)
	if err := s.events.Emit(ctx, lev); err != nil {
		s.log.ErrorContext(ctx, "publishing user.updated", "user_id", lev.UserID, "err", err)
	}
}

// failed finishes an evaluated attempt that failed: it was counted (and,
// reaching the limit, locked the account) when reserved. It returns
// public carrying reason.
func (s *Service) failed(ctx context.Context, res *store.SignInReservation, public error, userID, reason, ip, ua string) error {
	s.log.DebugContext(ctx, "sign-in check failed", "user_id", userID, "ip", ip, "reason", reason, "failures", res.Failures)
	return authErr(public, reason, userID)
}

// passwordSucceeded finishes a correct password. In one atomic update it
// re-checks the account after the (slow) verification, settles the
// attempt's reservation (clears the count, or for TOTP users gives the
// attempt back) and stores an upgraded hash. An account that was
// disabled, given another password or locked by other attempts meanwhile
// refuses the attempt with the answer of a wrong password; it stays
// counted.
func (s *Service) passwordSucceeded(ctx context.Context, u *model.User, h *phc, res *store.SignInReservation, a Attempt) (*model.User, error) {
	var newHash string
	if h.needsRehash(s.params) {
		if nh, err := s.hash(ctx, a.Password); err == nil {
			newHash = nh
		} else {
			s.log.WarnContext(ctx, "re-hashing password skipped", "user_id", u.ID, "err", err)
		}
	}
	oldHash := u.PasswordHash
	lifted, lev := false, lockLifted(u.ID, a.IP)
	ectx := s.events.Pending(ctx, lev, func([]string) bool { return lifted })
	got, err := s.store.UpdateUser(ectx, u.ID, func(x *model.User) error {
		now := s.now()
		switch {
		case x.Disabled:
			return errRefused{ReasonDisabled}
		case x.PasswordHash != oldHash:
			return errRefused{ReasonInvalidCredentials}
		case locked(x, now) && !ownLock(x, res):
			return errRefused{ReasonLocked}
		}
		lifted = ownLock(x, res)
		if s.HasTOTP(x) {
			x.FailedLogins = max(x.FailedLogins-1, 0)
			if ownLock(x, res) {
				x.LockedUntil = time.Time{}
			}
		} else {
			x.FailedLogins, x.LockedUntil = 0, time.Time{}
		}
		if newHash != "" {
			x.PasswordHash = newHash
		}
		x.UpdatedAt = now
		return nil
	})
	if r, ok := errors.AsType[errRefused](err); ok {
		s.log.InfoContext(ctx, "correct password refused: account changed during verification", "user_id", u.ID, "ip", a.IP, "reason", r.reason)
		return nil, s.failed(ctx, res, ErrInvalidCredentials, u.ID, r.reason, a.IP, a.UserAgent)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, authErr(ErrInvalidCredentials, ReasonUnknownUser, "")
	case err != nil:
		return nil, fmt.Errorf("identity: update user: %w", err)
	}
	if lifted {
		s.emitLift(ectx, lev)
	}
	if newHash != "" {
		s.log.InfoContext(ctx, "password re-hashed with current parameters", "user_id", u.ID)
	}
	s.log.DebugContext(ctx, "password check succeeded", "user_id", u.ID, "ip", a.IP)
	return got, nil
}
