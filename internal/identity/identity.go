// Package identity manages Ward's local accounts: users, groups, password
// hashing (argon2id), TOTP second factors, account lockout and per-IP
// throttling of failed sign-ins.
//
// The Service decides and the store persists; every change is published on
// the bus as a domain event (user.created, user.locked, mfa.enrolled, ...).
// Sign-in checks (CheckPassword, CheckTOTP, CheckRecoveryCode) publish no sign-in events
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
//     failures, counted in the store like an account's (under a keyed hash
//     of the name), so neither timing nor lockout, nor a second instance or
//     a restart, reveals whether an account exists. Disabled accounts fail
//     like a wrong password.
//   - Every attempt is counted against its account (or unknown name) in
//     the store before its password or code is checked, in one atomic
//     write that also checks the lock, so concurrent attempts on any
//     number of instances cannot evaluate more guesses than the limit.
//   - Argon2 computations are bounded by a semaphore (MaxConcurrentHashes)
//     so a burst of sign-ins cannot exhaust memory or CPU; the queue in
//     front of it is bounded too (MaxHashQueue): an attempt that finds it
//     full is refused at once. Waiting honours the context.
//   - Failed attempts are also limited per network (IPv4 address, IPv6
//     /64) and per instance with in-memory token buckets. TOTP failures
//     count like password failures, so a stolen password does not allow
//     guessing codes.
//   - TOTP seeds are stored AES-GCM encrypted under the KEK, bound to the
//     user id; a code is accepted once only (Store.RecordJTI), across
//     instances.
//   - Recovery codes (NewRecoveryCodes, CheckRecoveryCode) stand in for a
//     lost authenticator: one-time, 50 random bits each, stored only as an
//     HMAC under a KEK-derived key, counted against the lockout like TOTP
//     codes, and deleted with the TOTP factor.
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
	// MaxHashQueue bounds the sign-in attempts waiting for an argon2 slot
	// (default 4 × MaxConcurrentHashes); one more is refused at once with
	// ErrThrottled.
	MaxHashQueue int
	// MaxFailures is the number of failed attempts on one account before
	// it is locked (default 5).
	MaxFailures int
	// LockoutDuration is how long a lock lasts (default 15m).
	LockoutDuration time.Duration
	// FailureWindow: a failure count whose last failure is this old
	// starts afresh (default 24h). It is what lets the store forget the
	// failures of unknown names, and it applies to accounts alike.
	FailureWindow time.Duration
	// IPFailuresPerMinute is the failed sign-in budget of one network
	// (default 30): a token bucket with that burst, refilled at that rate.
	IPFailuresPerMinute int
	// IPv4Prefix and IPv6Prefix are the prefix lengths that make one
	// network for IPFailuresPerMinute (defaults 32 and 64).
	IPv4Prefix, IPv6Prefix int
	// GlobalFailuresPerMinute is the failed sign-in budget of the whole
	// instance (default 600), counted like the per-network one.
	GlobalFailuresPerMinute int
	// MinPasswordLength in characters (default 10).
	MinPasswordLength int
	// WebAuthn enables passkeys and security keys (nil: disabled).
	WebAuthn *WebAuthnOptions
}

// Defaults.
const (
	DefaultMaxFailures             = 5
	DefaultLockoutDuration         = 15 * time.Minute
	DefaultFailureWindow           = 24 * time.Hour
	DefaultIPFailuresPerMinute     = 30
	DefaultIPv4Prefix              = 32
	DefaultIPv6Prefix              = 64
	DefaultGlobalFailuresPerMinute = 600
	DefaultMinPasswordLength       = 10
)

// defaultMaxIPTracked bounds the per-network buckets kept in memory.
const defaultMaxIPTracked = 65536

// Service is the identity service. It is safe for concurrent use.
type Service struct {
	store  store.Store
	events *bus.Emitter // records domain events (nothing without a bus)
	kek    *secret.KEK
	now    func() time.Time
	log    *slog.Logger

	params    Argon2Params
	hashSlots chan struct{}
	hashQueue chan struct{} // a place in the queue for a slot
	dummySalt []byte
	rule      store.Lockout
	minPwLen  int
	names     *secret.Hasher // keys of unknown names in the store
	recovery  *secret.Hasher // stored form of recovery codes (nil without a KEK)
	ipLimiter *ratelimit.Limiter
	global    *ratelimit.Limiter
	v4Bits    int
	v6Bits    int
	wa        *webAuthnState // nil: passkeys disabled

	// hashHook, when set (tests), is called with +1 after a hash slot is
	// acquired and -1 before it is released.
	hashHook func(delta int)
}

// New returns a Service. It panics if o.Store is nil, the argon2
// parameters or the WebAuthn options are invalid (a configuration error:
// config.Validate reports them first).
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
	if o.MaxHashQueue <= 0 {
		o.MaxHashQueue = 4 * o.MaxConcurrentHashes
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = DefaultFailureWindow
	}
	if o.IPv4Prefix <= 0 || o.IPv4Prefix > 32 {
		o.IPv4Prefix = DefaultIPv4Prefix
	}
	if o.IPv6Prefix <= 0 || o.IPv6Prefix > 128 {
		o.IPv6Prefix = DefaultIPv6Prefix
	}
	if o.GlobalFailuresPerMinute <= 0 {
		o.GlobalFailuresPerMinute = DefaultGlobalFailuresPerMinute
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
	// Unknown names are stored under an HMAC whose key only the KEK
	// gives, so every instance sharing the KEK finds the same record and a
	// database dump does not reveal typed-in names (often passwords).
	// Without a KEK (tests, tools) the key is fixed.
	nameKey := []byte("ward/signin-name (no KEK)")
	if o.KEK != nil {
		nameKey = o.KEK.Derive("signin-name")
	}
	// Recovery codes are keyed like the other high-entropy secrets, under
	// a key of their own derived from the KEK; without one there are none
	// (they stand in for TOTP, which needs the KEK too).
	var recovery *secret.Hasher
	if o.KEK != nil {
		recovery = secret.NewHasher(o.KEK.Derive("recovery-code"))
	}
	wa, err := newWebAuthn(o.WebAuthn)
	if err != nil {
		panic(err)
	}
	return &Service{
		wa:        wa,
		store:     o.Store,
		events:    bus.NewEmitter(o.Bus, o.Now),
		kek:       o.KEK,
		now:       o.Now,
		log:       o.Logger.With("component", "identity"),
		params:    p,
		hashSlots: make(chan struct{}, o.MaxConcurrentHashes),
		hashQueue: make(chan struct{}, o.MaxHashQueue),
		dummySalt: salt,
		rule:      store.Lockout{MaxFailures: o.MaxFailures, LockFor: o.LockoutDuration, Window: o.FailureWindow},
		minPwLen:  o.MinPasswordLength,
		names:     secret.NewHasher(nameKey),
		recovery:  recovery,
		ipLimiter: ratelimit.PerMinute(o.IPFailuresPerMinute, defaultMaxIPTracked),
		global:    ratelimit.PerMinute(o.GlobalFailuresPerMinute, 1),
		v4Bits:    o.IPv4Prefix,
		v6Bits:    o.IPv6Prefix,
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
	// ErrThrottled: too many failed attempts from this network address
	// (or on this instance), or too many sign-ins waiting to be checked.
	ErrThrottled = errors.New("too many failed attempts from this address; try again later")
	// ErrInvalidTOTP: the one-time code is wrong or expired.
	ErrInvalidTOTP = errors.New("invalid verification code")
	// ErrTOTPUsed: the one-time code was correct but has been used
	// already; the next one will do. It wraps ErrInvalidTOTP.
	ErrTOTPUsed error = totpUsedError{}
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
	// ErrNotFound: no such user or group. Errors that match it keep the
	// store's message and match store.ErrNotFound too.
	ErrNotFound = errors.New("identity: not found")
)

type totpUsedError struct{}

func (totpUsedError) Error() string { return "verification code already used; wait for the next one" }
func (totpUsedError) Unwrap() error { return ErrInvalidTOTP }

// notFound marks a store error that says the user or group does not
// exist as ErrNotFound, keeping its message and chain; other errors pass
// unchanged.
func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFoundError{err}
	}
	return err
}

type notFoundError struct{ error }

func (e notFoundError) Unwrap() error        { return e.error }
func (e notFoundError) Is(target error) bool { return target == ErrNotFound }

type existsError struct{}

func (existsError) Error() string { return "already exists" }
func (existsError) Unwrap() error { return store.ErrAlreadyExists }

// Reason codes returned by Reason, for the audit log and risk engine.
const (
	ReasonInvalidCredentials = "invalid_credentials" // wrong password
	ReasonUnknownUser        = "unknown_user"
	ReasonDisabled           = "disabled"
	ReasonLocked             = "locked"
	ReasonThrottled          = "throttled"        // the network's budget is spent
	ReasonThrottledGlobal    = "throttled_global" // the instance's budget is spent
	ReasonOverloaded         = "overloaded"       // too many attempts wait for a hash slot
	ReasonInvalidTOTP        = "invalid_totp"
	ReasonTOTPReplay         = "totp_replay" // a correct code presented a second time
	ReasonNoTOTP             = "no_totp"     // CheckTOTP or CheckRecoveryCode on a user without TOTP
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
	case errors.Is(err, ErrInvalidRecoveryCode):
		return ReasonInvalidRecoveryCode
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
// CheckPassword, CheckTOTP or CheckRecoveryCode concerned, for the audit event's UserID; ""
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

// errOverloaded: a sign-in found the queue for hash slots full.
var errOverloaded = authErr(ErrThrottled, ReasonOverloaded, "")

// hashTicket is a place at the argon2 slots: a slot, or a place in the
// queue for one. A sign-in takes its ticket before it touches the store,
// so that an attempt the instance has no room for is refused at once,
// for free (no write, no waiting).
type hashTicket struct {
	s      *Service
	held   bool // holds a slot
	queued bool // holds a place in the queue
	hooked bool // hashHook(+1) was called
}

// enterHash takes a slot if one is free, else (bounded: a sign-in) a
// place in the queue, or fails with errOverloaded when the queue is
// full. Unbounded callers (setting a password) may always wait.
func (s *Service) enterHash(bounded bool) (*hashTicket, error) {
	t := &hashTicket{s: s}
	select {
	case s.hashSlots <- struct{}{}:
		t.held = true
		return t, nil
	default:
	}
	if bounded {
		select {
		case s.hashQueue <- struct{}{}:
			t.queued = true
		default:
			return nil, errOverloaded
		}
	}
	return t, nil
}

// wait blocks until t holds a slot, honouring ctx.
func (t *hashTicket) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !t.held {
		select {
		case t.s.hashSlots <- struct{}{}:
			t.held = true
		case <-ctx.Done():
			return ctx.Err()
		}
		if t.queued {
			<-t.s.hashQueue
			t.queued = false
		}
	}
	if t.s.hashHook != nil {
		t.hooked = true
		t.s.hashHook(+1)
	}
	return nil
}

// release gives the slot or the place back; it may be called twice.
func (t *hashTicket) release() {
	if t.hooked {
		t.hooked = false
		t.s.hashHook(-1)
	}
	if t.queued {
		t.queued = false
		<-t.s.hashQueue
	}
	if t.held {
		t.held = false
		<-t.s.hashSlots
	}
}

// hash computes a new PHC string under the service's parameters within
// the concurrency bound.
func (s *Service) hash(ctx context.Context, password string) (string, error) {
	t, _ := s.enterHash(false)
	defer t.release()
	if err := t.wait(ctx); err != nil {
		return "", err
	}
	return HashPassword(s.params, password)
}

// verify checks password against a stored PHC string with the slot of
// ticket t (released when done). An unusable stored hash still costs one
// computation (with the current parameters) and reports false, so it is
// indistinguishable from a wrong password. It returns the parsed hash for
// the re-hash decision (nil if unusable).
func (s *Service) verify(ctx context.Context, t *hashTicket, stored, password string) (bool, *phc, error) {
	defer t.release()
	h, perr := parsePHC(stored)
	if err := t.wait(ctx); err != nil {
		return false, nil, err
	}
	if perr != nil {
		s.dummyHashLocked(password)
		return false, nil, nil
	}
	return h.verify(password), h, nil
}

// dummyVerify spends one argon2 computation for an unknown user with the
// slot of ticket t (released when done).
func (s *Service) dummyVerify(ctx context.Context, t *hashTicket, password string) error {
	defer t.release()
	if err := t.wait(ctx); err != nil {
		return err
	}
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
	t, err := s.enterHash(true)
	if err != nil {
		return false, err
	}
	ok, _, err := s.verify(ctx, t, u.PasswordHash, password)
	return ok, err
}
