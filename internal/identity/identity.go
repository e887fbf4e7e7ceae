// Package identity manages Ward's local accounts: users, groups, password
// hashing (argon2id), TOTP second factors, account lockout and per-IP
// throttling of failed sign-ins.
//
// The Service decides and the store persists; every change is published on
// the bus as a domain event (user.created, user.locked, mfa.enrolled, ...).
// Sign-in checks (CheckPassword, CheckTOTP) publish no sign-in events
// themselves: the sign-in flow does that, using Reason and FailedUserID to
// record why an attempt failed while the user sees only ErrInvalidCredentials,
// ErrLocked, ErrThrottled or ErrInvalidTOTP.
//
// Security properties:
//   - Passwords are stored only as argon2id PHC strings and never appear in
//     errors, events or logs (Attempt and NewUser redact themselves in slog).
//     Failed usernames of unknown accounts are not logged either, because
//     people type passwords into the username field.
//   - An unknown username costs one argon2 computation like a known one, and
//     gets the same error, and is locked out after the same number of
//     failures (tracked in a bounded in-memory map), so neither timing nor
//     lockout reveals whether an account exists. Disabled accounts fail like
//     a wrong password.
//   - Argon2 computations are bounded by a semaphore (MaxConcurrentHashes)
//     so a burst of sign-ins cannot exhaust memory or CPU; waiting honours
//     the context.
//   - Failed attempts are limited per client IP with an in-memory token
//     bucket (per process), and per account in the store (shared by all
//     instances). TOTP failures count against both, so a stolen password
//     does not allow guessing codes.
//   - TOTP seeds are stored AES-GCM encrypted under the KEK, bound to the
//     user id; a code is accepted once only (Store.RecordJTI), across
//     instances.
package identity

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/ratelimit"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Options configure a Service. Zero values take the documented defaults.
type Options struct {
	Store  store.Store // required
	Bus    bus.Bus     // nil: events are not published
	KEK    *secret.KEK // required for TOTP
	Now    func() time.Time
	Logger *slog.Logger

	Argon2 Argon2Params
	// MaxConcurrentHashes bounds concurrent argon2 computations (default
	// runtime.NumCPU()); excess callers wait, honouring their context.
	MaxConcurrentHashes int
	// MaxFailures is the number of failed attempts on one account before
	// it is locked (default 5).
	MaxFailures int
	// LockoutDuration is how long a lock lasts (default 15m).
	LockoutDuration time.Duration
	// IPFailuresPerMinute is the per-IP failed sign-in budget (default 30):
	// a token bucket with that burst, refilled at that rate.
	IPFailuresPerMinute int
	// MinPasswordLength in characters (default 10).
	MinPasswordLength int
}

// Defaults.
const (
	DefaultMaxFailures         = 5
	DefaultLockoutDuration     = 15 * time.Minute
	DefaultIPFailuresPerMinute = 30
	DefaultMinPasswordLength   = 10
)

// In-memory tracking bounds.
const (
	defaultMaxUnknownTracked = 10000
	defaultMaxIPTracked      = 65536
)

// Service is the identity service. It is safe for concurrent use.
type Service struct {
	store  store.Store
	events *bus.Emitter // records domain events (nothing without a bus)
	kek    *secret.KEK
	now    func() time.Time
	log    *slog.Logger

	params     Argon2Params
	hashSlots  chan struct{}
	dummySalt  []byte
	maxFail    int
	lockFor    time.Duration
	minPwLen   int
	ipLimiter  *ratelimit.Limiter
	unknownLim *unknownTracker

	// hashHook, when set (tests), is called with +1 after a hash slot is
	// acquired and -1 before it is released.
	hashHook func(delta int)
}

// New returns a Service. It panics if o.Store is nil or the argon2
// parameters are invalid (a configuration error).
func New(o Options) *Service {
	if o.Store == nil {
		panic("identity: Options.Store is required")
	}
	p := o.Argon2.withDefaults()
	if err := p.validate(); err != nil {
		panic(err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConcurrentHashes <= 0 {
		o.MaxConcurrentHashes = runtime.NumCPU()
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.LockoutDuration <= 0 {
		o.LockoutDuration = DefaultLockoutDuration
	}
	if o.IPFailuresPerMinute <= 0 {
		o.IPFailuresPerMinute = DefaultIPFailuresPerMinute
	}
	if o.MinPasswordLength <= 0 {
		o.MinPasswordLength = DefaultMinPasswordLength
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		panic(err)
	}
	return &Service{
		store:      o.Store,
		events:     bus.NewEmitter(o.Bus, o.Now),
		kek:        o.KEK,
		now:        o.Now,
		log:        o.Logger.With("component", "identity"),
		params:     p,
		hashSlots:  make(chan struct{}, o.MaxConcurrentHashes),
		dummySalt:  salt,
		maxFail:    o.MaxFailures,
		lockFor:    o.LockoutDuration,
		minPwLen:   o.MinPasswordLength,
		ipLimiter:  ratelimit.PerMinute(o.IPFailuresPerMinute, defaultMaxIPTracked),
		unknownLim: newUnknownTracker(defaultMaxUnknownTracked),
	}
}

// Errors. Their messages are safe to show to the person signing in or to
// an administrator; internal causes go to Reason and the logs.
var (
	// ErrInvalidCredentials: wrong username or password. Identical for an
	// unknown user, a wrong password and a disabled user.
	ErrInvalidCredentials = errors.New("invalid username or password")
	// ErrLocked: too many failed attempts on this account; returned for
	// existing and unknown usernames alike.
	ErrLocked = errors.New("too many failed attempts; the account is temporarily locked, try again later")
	// ErrThrottled: too many failed attempts from this network address.
	ErrThrottled = errors.New("too many failed attempts from this address; try again later")
	// ErrInvalidTOTP: the one-time code is wrong, expired or already used.
	ErrInvalidTOTP = errors.New("invalid verification code")
	// ErrWeakPassword: the password does not meet the policy. Returned
	// errors wrap it with the rule that failed.
	ErrWeakPassword = errors.New("password does not meet the password policy")
	// ErrInvalidUsername: usernames are 1..64 characters of a-z 0-9 . _ @ -
	ErrInvalidUsername = errors.New("invalid username: use 1 to 64 characters from a-z, 0-9, '.', '_', '@' and '-'")
	// ErrInvalidInput: another field (email, display name, group name,
	// role, TOTP secret) is malformed. Returned errors wrap it with detail.
	ErrInvalidInput = errors.New("invalid input")
	// ErrExists: a user or group with that name already exists. It wraps
	// store.ErrAlreadyExists.
	ErrExists error = existsError{}
)

type existsError struct{}

func (existsError) Error() string { return "already exists" }
func (existsError) Unwrap() error { return store.ErrAlreadyExists }

// Reason codes returned by Reason, for the audit log and risk engine.
const (
	ReasonInvalidCredentials = "invalid_credentials" // wrong password
	ReasonUnknownUser        = "unknown_user"
	ReasonDisabled           = "disabled"
	ReasonLocked             = "locked"
	ReasonThrottled          = "throttled"
	ReasonInvalidTOTP        = "invalid_totp"
	ReasonTOTPReplay         = "totp_replay" // a correct code presented a second time
	ReasonNoTOTP             = "no_totp"     // CheckTOTP on a user without TOTP
	ReasonWeakPassword       = "weak_password"
	ReasonInvalidUsername    = "invalid_username"
	ReasonInvalidInput       = "invalid_input"
	ReasonExists             = "exists"
	ReasonNotFound           = "not_found"
	ReasonCanceled           = "canceled"
	ReasonInternal           = "internal"
)

// authError is a user-facing sentinel plus the internal reason and the
// account it concerns. Its message is the sentinel's, so callers that show
// err.Error() reveal nothing the sentinel does not.
type authError struct {
	public error
	reason string
	userID string
}

func (e *authError) Error() string { return e.public.Error() }
func (e *authError) Unwrap() error { return e.public }

func authErr(public error, reason, userID string) error {
	return &authError{public: public, reason: reason, userID: userID}
}

// Reason returns a machine-readable reason code for err (see the Reason*
// constants), "" for nil. It distinguishes what the user must not see, for
// example ReasonUnknownUser and ReasonDisabled behind ErrInvalidCredentials.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	if ae, ok := errors.AsType[*authError](err); ok {
		return ae.reason
	}
	switch {
	case errors.Is(err, ErrInvalidCredentials):
		return ReasonInvalidCredentials
	case errors.Is(err, ErrLocked):
		return ReasonLocked
	case errors.Is(err, ErrThrottled):
		return ReasonThrottled
	case errors.Is(err, ErrInvalidTOTP):
		return ReasonInvalidTOTP
	case errors.Is(err, ErrWeakPassword):
		return ReasonWeakPassword
	case errors.Is(err, ErrInvalidUsername):
		return ReasonInvalidUsername
	case errors.Is(err, ErrInvalidInput):
		return ReasonInvalidInput
	case errors.Is(err, ErrExists), errors.Is(err, store.ErrAlreadyExists):
		return ReasonExists
	case errors.Is(err, store.ErrNotFound):
		return ReasonNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ReasonCanceled
	}
	return ReasonInternal
}

// FailedUserID returns the id of the existing account a failed
// CheckPassword or CheckTOTP concerned, for the audit event's UserID; ""
// when the username was unknown or err did not come from those checks.
// Never show it to the user.
func FailedUserID(err error) string {
	if ae, ok := errors.AsType[*authError](err); ok {
		return ae.userID
	}
	return ""
}

// newID returns a random RFC 4122 version 4 UUID.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// acquireHash takes an argon2 slot, waiting while all are busy.
func (s *Service) acquireHash(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.hashHook != nil {
		s.hashHook(+1)
	}
	return nil
}

func (s *Service) releaseHash() {
	if s.hashHook != nil {
		s.hashHook(-1)
	}
	<-s.hashSlots
}

// hash computes a new PHC string under the service's parameters within
// the concurrency bound.
func (s *Service) hash(ctx context.Context, password string) (string, error) {
	if err := s.acquireHash(ctx); err != nil {
		return "", err
	}
	defer s.releaseHash()
	return HashPassword(s.params, password)
}

// verify checks password against a stored PHC string within the
// concurrency bound. An unusable stored hash still costs one computation
// (with the current parameters) and reports false, so it is
// indistinguishable from a wrong password. It returns the parsed hash for
// the re-hash decision (nil if unusable).
func (s *Service) verify(ctx context.Context, stored, password string) (bool, *phc, error) {
	h, perr := parsePHC(stored)
	if err := s.acquireHash(ctx); err != nil {
		return false, nil, err
	}
	defer s.releaseHash()
	if perr != nil {
		s.dummyHashLocked(password)
		return false, nil, nil
	}
	return h.verify(password), h, nil
}

// dummyVerify spends one argon2 computation for an unknown user.
func (s *Service) dummyVerify(ctx context.Context, password string) error {
	if err := s.acquireHash(ctx); err != nil {
		return err
	}
	defer s.releaseHash()
	s.dummyHashLocked(password)
	return nil
}

func (s *Service) dummyHashLocked(password string) {
	h := &phc{params: s.params, salt: s.dummySalt, key: make([]byte, keyLen)}
	_ = h.verify(password)
}

// VerifyPassword reports whether password is u's current password (the
// argon2id comparison, under the bound on concurrent hashing). It changes
// nothing: no lockout counting, no events.
func (s *Service) VerifyPassword(ctx context.Context, u *model.User, password string) (bool, error) {
	if u == nil || u.PasswordHash == "" {
		return false, nil
	}
	ok, _, err := s.verify(ctx, u.PasswordHash, password)
	return ok, err
}
