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

// errLockedRace is returned from inside UpdateUser when the account was
// locked while the password was being verified.
var errLockedRace = errors.New("locked during verification")

// CheckPassword verifies a sign-in attempt and returns the user on
// success.
//
// Failures return ErrInvalidCredentials (unknown user, wrong password,
// disabled user alike), ErrLocked (known or unknown username after
// MaxFailures failures, until LockoutDuration has passed) or ErrThrottled
// (per-IP budget spent). Reason and FailedUserID tell the audit log which
// case it was. An unknown username costs one argon2 computation like a
// known one. Each failure counts against the account (FailedLogins, then
// LockedUntil and a user.locked event) and against the IP.
//
// Success clears the failure count, except for users with TOTP: their
// count is cleared by CheckTOTP, so that knowing the password does not
// reset the budget for guessing codes. A hash made with other argon2
// parameters is replaced on success.
//
// CheckPassword publishes no sign-in events; the caller does.
func (s *Service) CheckPassword(ctx context.Context, a Attempt) (*model.User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !s.ipLimiter.Take(a.IP, s.now()) {
		s.log.DebugContext(ctx, "password check refused", "ip", a.IP, "reason", ReasonThrottled)
		return nil, authErr(ErrThrottled, ReasonThrottled, "")
	}
	u, err := s.checkPassword(ctx, a)
	s.settleIP(a.IP, err)
	return u, err
}

// settleIP gives the attempt's IP token back unless the attempt failed
// (wrong password, unknown user, disabled, locked, bad or replayed code).
// Internal errors, cancellations and CheckTOTP on a user without TOTP are
// not the client's failure.
func (s *Service) settleIP(ip string, err error) {
	if ae, failed := errors.AsType[*authError](err); !failed || ae.reason == ReasonNoTOTP {
		s.ipLimiter.Refund(ip, s.now())
	}
}

func (s *Service) checkPassword(ctx context.Context, a Attempt) (*model.User, error) {
	now := s.now()
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
		return nil, s.failUnknown(ctx, name, a, now)
	}
	if locked(u, now) {
		s.log.DebugContext(ctx, "password check refused", "user_id", u.ID, "ip", a.IP, "reason", ReasonLocked)
		return nil, authErr(ErrLocked, ReasonLocked, u.ID)
	}
	ok, h, err := s.verify(ctx, u.PasswordHash, a.Password)
	if err != nil {
		return nil, fmt.Errorf("identity: verify password: %w", err)
	}
	if h == nil {
		s.log.WarnContext(ctx, "stored password hash is unusable", "user_id", u.ID)
	}
	if !ok || u.Disabled {
		reason := ReasonInvalidCredentials
		if u.Disabled {
			reason = ReasonDisabled
		}
		return nil, s.failUser(ctx, ErrInvalidCredentials, u.ID, reason, a.IP, a.UserAgent)
	}
	return s.passwordSucceeded(ctx, u, h, a)
}

// failUnknown handles an attempt on a username that does not exist.
func (s *Service) failUnknown(ctx context.Context, name string, a Attempt, now time.Time) error {
	if s.unknownLim.locked(name, now) {
		s.log.DebugContext(ctx, "password check refused", "ip", a.IP, "reason", ReasonLocked, "known", false)
		return authErr(ErrLocked, ReasonLocked, "")
	}
	if err := s.dummyVerify(ctx, a.Password); err != nil {
		return fmt.Errorf("identity: verify password: %w", err)
	}
	if s.unknownLim.fail(name, s.now(), s.maxFail, s.lockFor) {
		s.log.InfoContext(ctx, "unknown username locked", "ip", a.IP)
	}
	s.log.DebugContext(ctx, "password check failed", "ip", a.IP, "reason", ReasonUnknownUser)
	return authErr(ErrInvalidCredentials, ReasonUnknownUser, "")
}

// failUser counts a failure against an existing account and returns
// public carrying reason. (The IP's token was taken up front.)
func (s *Service) failUser(ctx context.Context, public error, userID, reason, ip, ua string) error {
	var lockedNow bool
	var failures int
	var until time.Time
	_, err := s.store.UpdateUser(ctx, userID, func(u *model.User) error {
		now := s.now()
		lockedNow = applyFailure(&u.FailedLogins, &u.LockedUntil, now, s.maxFail, s.lockFor)
		failures, until = u.FailedLogins, u.LockedUntil
		u.UpdatedAt = now
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The attempt failed either way; do not turn it into a success.
		s.log.ErrorContext(ctx, "recording sign-in failure", "user_id", userID, "err", err)
	}
	s.log.DebugContext(ctx, "sign-in check failed", "user_id", userID, "ip", ip, "reason", reason, "failures", failures)
	if lockedNow {
		s.log.WarnContext(ctx, "user locked", "user_id", userID, "ip", ip, "until", until)
		if perr := s.events.Emit(ctx, &model.Event{
			Type: model.EventUserLocked, Actor: "system", UserID: userID, IP: ip, UserAgent: ua,
			Outcome: model.OutcomeSuccess, Reason: "too_many_failures",
			Data: map[string]string{"failures": strconv.Itoa(failures), "locked_until": until.UTC().Format(time.RFC3339)},
		}); perr != nil {
			s.log.ErrorContext(ctx, "publishing user.locked", "user_id", userID, "err", perr)
		}
	}
	return authErr(public, reason, userID)
}

// passwordSucceeded finishes a correct password: it re-checks the account
// state after the (slow) verification, clears the failure count when no
// second factor follows, and upgrades an outdated hash.
func (s *Service) passwordSucceeded(ctx context.Context, u *model.User, h *phc, a Attempt) (*model.User, error) {
	var newHash string
	if h.needsRehash(s.params) {
		if nh, err := s.hash(ctx, a.Password); err == nil {
			newHash = nh
		} else {
			s.log.WarnContext(ctx, "re-hashing password skipped", "user_id", u.ID, "err", err)
		}
	}
	reset := !s.HasTOTP(u) && (u.FailedLogins != 0 || !u.LockedUntil.IsZero())
	oldHash := u.PasswordHash
	var err error
	if reset || newHash != "" {
		u, err = s.store.UpdateUser(ctx, u.ID, func(x *model.User) error {
			if locked(x, s.now()) || x.Disabled || x.PasswordHash != oldHash {
				return errLockedRace
			}
			if reset {
				x.FailedLogins = 0
				x.LockedUntil = time.Time{}
			}
			if newHash != "" {
				x.PasswordHash = newHash
			}
			x.UpdatedAt = s.now()
			return nil
		})
		if errors.Is(err, errLockedRace) {
			u, err = s.store.GetUser(ctx, u.ID)
		}
	} else {
		u, err = s.store.GetUser(ctx, u.ID)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, authErr(ErrInvalidCredentials, ReasonUnknownUser, "")
	case err != nil:
		return nil, fmt.Errorf("identity: update user: %w", err)
	case locked(u, s.now()):
		return nil, authErr(ErrLocked, ReasonLocked, u.ID)
	case u.Disabled:
		return nil, authErr(ErrInvalidCredentials, ReasonDisabled, u.ID)
	case u.PasswordHash != oldHash && u.PasswordHash != newHash:
		// Password changed while we verified the old one.
		return nil, authErr(ErrInvalidCredentials, ReasonInvalidCredentials, u.ID)
	}
	if newHash != "" && u.PasswordHash == newHash {
		s.log.InfoContext(ctx, "password re-hashed with current parameters", "user_id", u.ID)
	}
	s.log.DebugContext(ctx, "password check succeeded", "user_id", u.ID, "ip", a.IP)
	return u, nil
}
