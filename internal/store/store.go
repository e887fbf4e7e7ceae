// Package store defines Ward's persistence interface and its sentinel
// errors. Implementations live in the sqlite and postgres subpackages and
// must pass the conformance suite in storetest.
//
// Every method takes a context first. Methods that must be atomic (code
// redemption, refresh rotation, JTI recording) are single calls so that a
// backend can run them in one transaction.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// Sentinel errors. Implementations wrap them (errors.Is works).
var (
	ErrNotFound      = errors.New("store: not found")
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrRiskChanged: the user's risk changed since a decision read it
	// (CreateSessionAtRisk).
	ErrRiskChanged = errors.New("store: user risk changed")
	// ErrAlreadyUsed: a one-time value (code, refresh token, PAR request
	// URI) was presented again. Returned together with the stored record
	// where the method says so, so the caller can react to the reuse.
	ErrAlreadyUsed = errors.New("store: already used")
	// ErrReplay: a DPoP jti (or other one-time key) was seen before.
	ErrReplay = errors.New("store: replay")
	// ErrLocked: a sign-in attempt was refused because the account (or
	// the unknown name) is locked.
	ErrLocked = errors.New("store: locked")
)

// Lockout is the rule by which sign-in attempts lock an account or an
// unknown name: the attempt that makes MaxFailures counted attempts
// within Window (each one counted less than Window after the one before)
// locks for LockFor. A lock that has expired starts a fresh count.
type Lockout struct {
	MaxFailures int
	LockFor     time.Duration
	Window      time.Duration
}

// SignInReservation is a sign-in attempt counted before its password or
// code is checked (ReserveSignIn, ReserveUnknownSignIn): the check of the
// lock and the count are one atomic write, so concurrent attempts, on
// any number of instances, cannot all pass the check before any of them
// is counted. An attempt that turns out not to be a failure gives its
// reservation back (ReleaseSignIn, ReleaseUnknownSignIn).
type SignInReservation struct {
	// Failures is the count including this attempt.
	Failures int
	// LockedUntil is the lock this attempt set (LockedNow) or, with
	// ErrLocked, the lock in force.
	LockedUntil time.Time
	// LockedNow reports that this attempt reached MaxFailures and locked.
	LockedNow bool
}

// EventFilter selects audit events. Zero fields do not filter.
type EventFilter struct {
	Types     []model.EventType
	UserID    string
	SessionID string
	ClientID  string
	// DeviceID, IP and Outcome select events of one registered device,
	// one client address (exact) and one outcome (success, failure).
	DeviceID string
	IP       string
	Outcome  string
	// CorrelationID finds the events of one request (the id shown on
	// error pages and in error descriptions).
	CorrelationID string
	Since         time.Time // inclusive
	Until         time.Time // exclusive
	Limit         int       // 0: implementation default (100); max 1000
	// BeforeSeq pages backwards: only events with a sequence number below it.
	BeforeSeq int64
}

// StoredEvent is an event with its store-assigned sequence number.
type StoredEvent struct {
	Seq int64
	model.Event
}

// SessionFilter selects sessions.
type SessionFilter struct {
	UserID     string
	ActiveOnly bool      // not revoked and not past ExpiresAt at Now
	Now        time.Time // required with ActiveOnly
	Limit      int       // 0: 100
}

// DeviceFilter selects devices. Zero fields do not filter.
type DeviceFilter struct {
	UserID string
	Status string
	// Compliance selects one compliance state (model.Compliant, ...).
	Compliance string
	Limit      int // 0: 100; max 1000
}

// EventCountFilter selects the events CountEvents counts: of Types (at
// least one), with Since <= time < Until, in buckets of Bucket from Since.
type EventCountFilter struct {
	Types        []model.EventType
	Since, Until time.Time
	Bucket       time.Duration
}

// EventCount is how many events of one type and outcome fell in the
// bucket that starts at Start.
type EventCount struct {
	Start   time.Time
	Type    model.EventType
	Outcome string
	Count   int64
}

// SessionBinding is what a session's live refresh tokens are bound to:
// the registered devices (DeviceIDs) and the DPoP keys of no registered
// device (JKTs), each listed once, with the clients holding them. A
// session with none of either has bearer refresh tokens or none at all.
type SessionBinding struct {
	DeviceIDs []string
	JKTs      []string
	ClientIDs []string
	// Unbound counts live refresh tokens bound to no key.
	Unbound int
}

// RefreshGrant is a refresh token with its session and user.
type RefreshGrant struct {
	Token   *model.RefreshToken
	Session *model.Session // nil: the session no longer exists
	User    *model.User    // nil: the user no longer exists
	// Device is the registered device whose key has the thumbprint
	// GetRefreshGrant was given, read with the rest (nil: none, or no
	// thumbprint given).
	Device *model.Device
}

// Store is the whole persistence interface.
type Store interface {
	ExportCursors // audit export sinks' positions (export.go)
	SSFReceivers  // Ward's streams at other SSF transmitters (ssfrx.go)
	RiskStore     // risk levels, detections and their history (risk.go)
	EventGraph    // events by subject and time, by id (graph.go)
	WebAuthnStore // passkeys and security keys, WebAuthn ceremonies (webauthn.go)
	IncidentStore // incidents, their detections and timelines (incident.go)

	// Users. Usernames are unique (compared case-insensitively; stored as given
	// lower-cased by the caller).
	CreateUser(ctx context.Context, u *model.User) error
	GetUser(ctx context.Context, id string) (*model.User, error)
	GetUserByUsername(ctx context.Context, username string) (*model.User, error)
	ListUsers(ctx context.Context) ([]*model.User, error)
	// UpdateUser loads the user, applies fn and saves the result atomically.
	// If fn returns an error nothing is saved and that error is returned.
	UpdateUser(ctx context.Context, id string, fn func(*model.User) error) (*model.User, error)
	DeleteUser(ctx context.Context, id string) error

	// Groups.
	CreateGroup(ctx context.Context, g *model.Group) error
	GetGroup(ctx context.Context, id string) (*model.Group, error)
	GetGroupByName(ctx context.Context, name string) (*model.Group, error)
	ListGroups(ctx context.Context) ([]*model.Group, error)
	UpdateGroup(ctx context.Context, id string, fn func(*model.Group) error) (*model.Group, error)
	DeleteGroup(ctx context.Context, id string) error
	GroupsOfUser(ctx context.Context, userID string) ([]*model.Group, error)

	// Clients.
	CreateClient(ctx context.Context, c *model.Client) error
	GetClient(ctx context.Context, id string) (*model.Client, error)
	ListClients(ctx context.Context) ([]*model.Client, error)
	UpdateClient(ctx context.Context, id string, fn func(*model.Client) error) (*model.Client, error)
	DeleteClient(ctx context.Context, id string) error

	// Sessions.
	CreateSession(ctx context.Context, s *model.Session) error
	// CreateSessionAtRisk is CreateSession on the condition that the
	// user's risk is still what a sign-in's Conditional Access decision
	// read (seen), checked and written in one statement under a shared
	// lock of the user's row (so a risk response holding that row either
	// commits first and the session is refused, or waits and finds the
	// session to revoke). ErrRiskChanged, and nothing written, when the
	// level or its time differs; ErrNotFound when the user is gone.
	CreateSessionAtRisk(ctx context.Context, s *model.Session, seen RiskSeen) error
	GetSession(ctx context.Context, id string) (*model.Session, error)
	ListSessions(ctx context.Context, f SessionFilter) ([]*model.Session, error)
	// TouchSession sets LastSeen (idle lifetime) of an unrevoked session.
	TouchSession(ctx context.Context, id string, at time.Time) error
	// BindSessionKey records the DBSC key (thumbprint and public JWK) of
	// an unrevoked session that has none yet: ErrNotFound when the session
	// is missing or revoked, ErrAlreadyExists when it is already bound.
	// ctx's pending events (session.dbsc_registered) commit with the
	// binding, and only with it.
	BindSessionKey(ctx context.Context, id, jkt string, jwk json.RawMessage) error
	// RevokeSession marks the session revoked and deletes its refresh
	// tokens, and reports whether this call revoked it: revoking a revoked
	// session is not an error, changes nothing and returns false, so of
	// concurrent revocations exactly one returns true. ErrNotFound when
	// the session does not exist.
	RevokeSession(ctx context.Context, id string, at time.Time, cause string) (bool, error)
	// SessionBindings returns, for each of ids that has live refresh
	// tokens (unrotated, unexpired at now), what they are bound to; the
	// other ids are absent. At most 1000 ids.
	SessionBindings(ctx context.Context, ids []string, now time.Time) (map[string]*SessionBinding, error)
	// RevokeUserSessions revokes every active session of a user and
	// returns the ids revoked, with ctx's pending events (their builder
	// gets the ids).
	RevokeUserSessions(ctx context.Context, userID string, at time.Time, cause string) ([]string, error)
	// RevokeUserSessionsUnremediated is RevokeUserSessions for the
	// response to what happened at b.Activity: it revokes the user's
	// active sessions created at or before b.Until, or at or before the user's
	// first remediation after b.Activity when there is one (see
	// RemediationEvents), and the session b.Subject whenever it was
	// created. The remediation is looked up by the statement that revokes,
	// so a remediation committed concurrently is either seen by it or
	// followed by sessions it cannot see. b.Applied is set to the bound
	// applied, inside the transaction, before a pending event is built.
	RevokeUserSessionsUnremediated(ctx context.Context, userID string, at time.Time, cause string, b *RemediationBound) ([]string, error)

	// Refresh tokens.
	// CreateRefreshToken stores t with ctx's pending events
	// (store.WithEvent: the grant's token.issued) in one transaction.
	CreateRefreshToken(ctx context.Context, t *model.RefreshToken) error
	GetRefreshToken(ctx context.Context, hash []byte) (*model.RefreshToken, error)
	// GetRefreshGrant returns a refresh token with its session and its
	// user (RefreshToken.SessionID, RefreshToken.UserID), read together:
	// what the refresh grant checks before it rotates. ErrNotFound when
	// the token does not exist; Session or User is nil when that one no
	// longer exists. With a key thumbprint jkt (the request's DPoP key)
	// it also reads the registered device holding that key, if any.
	GetRefreshGrant(ctx context.Context, hash []byte, jkt string) (*RefreshGrant, error)
	// RotateRefreshToken atomically marks oldHash rotated at `at` and stores
	// next. If oldHash was already rotated it stores nothing and returns the
	// old record with ErrAlreadyUsed (reuse: the caller revokes the session).
	// A rotation commits ctx's pending events (store.WithEvent: the
	// grant's token.refreshed) with it, or neither commits; a call that
	// does not rotate appends none.
	RotateRefreshToken(ctx context.Context, oldHash []byte, at time.Time, next *model.RefreshToken) (*model.RefreshToken, error)
	// DeleteRefreshToken deletes a refresh token with ctx's pending events
	// in one transaction; ErrNotFound (and no event) when there is none.
	DeleteRefreshToken(ctx context.Context, hash []byte) error
	// RevokeClientGrant ends one client's grant in a session: it deletes
	// the client's refresh tokens of the session and records revokedKey
	// (an access token's jti, namespaced) until exp, in one transaction
	// that also commits ctx's pending events (store.WithEvent) when
	// revokedKey was not recorded before. It reports whether it was new;
	// ErrNotFound when the session does not exist.
	RevokeClientGrant(ctx context.Context, sessionID, clientID, revokedKey string, exp time.Time) (bool, error)

	// Authorization codes.
	CreateAuthCode(ctx context.Context, c *model.AuthCode) error
	// GetAuthCode reads a code without using it (the token endpoint checks
	// a request before it redeems the code).
	GetAuthCode(ctx context.Context, hash []byte) (*model.AuthCode, error)
	// RedeemAuthCode marks an unused code used at `at`, stores rt (nil:
	// none) and commits ctx's pending events (store.WithEvent: the
	// grant's token.issued, or the refusal that spent the code) in one
	// transaction, or none of them. A code used before comes back with
	// ErrAlreadyUsed (its first UsedAt) and nothing is written; a missing
	// one is ErrNotFound. Of concurrent calls exactly one succeeds.
	RedeemAuthCode(ctx context.Context, hash []byte, at time.Time, rt *model.RefreshToken) (*model.AuthCode, error)
	// RefuseAuthCode spends an unused code at `at` for a refused
	// redemption, as RedeemAuthCode does with no token, and marks it
	// Refused with the refused request's DPoP key jkt ("" without one).
	RefuseAuthCode(ctx context.Context, hash []byte, at time.Time, jkt string) (*model.AuthCode, error)

	// Pushed authorization requests (one-time).
	CreatePushedRequest(ctx context.Context, p *model.PushedRequest) error
	ConsumePushedRequest(ctx context.Context, requestURI string, at time.Time) (*model.PushedRequest, error)

	// Signing keys. CreateSigningKey and DeleteSigningKey commit ctx's
	// pending events (key.created, key.retired) with the key's row.
	CreateSigningKey(ctx context.Context, k *model.SigningKey) error
	ListSigningKeys(ctx context.Context) ([]*model.SigningKey, error)
	UpdateSigningKey(ctx context.Context, kid string, fn func(*model.SigningKey) error) (*model.SigningKey, error)
	DeleteSigningKey(ctx context.Context, kid string) error
	// RotateSigningKey is a key rotation in one transaction: it sets
	// RetireAt = retireAt on every key that is not scheduled for
	// retirement and is active at k.ActiveAt, stores k, and commits ctx's
	// pending events (their builder gets the kids it scheduled, sorted),
	// returning those kids. previous is the key the caller saw signing:
	// when this call does not schedule it (a concurrent rotation, on any
	// instance, did first, or it is gone) nothing is written and the
	// result is ErrAlreadyUsed, so of concurrent rotations from one
	// state exactly one happens.
	RotateSigningKey(ctx context.Context, k *model.SigningKey, previous string, retireAt time.Time) ([]string, error)
	// CreateFirstSigningKey stores k, with ctx's pending events
	// (key.created), only when the store holds no key of k's algorithm
	// with a private key that is not scheduled for retirement; the look
	// and the insert are one transaction, so of instances starting
	// together on an empty database exactly one creates a key (true) and
	// the others write nothing (false, nil) and adopt it.
	CreateFirstSigningKey(ctx context.Context, k *model.SigningKey) (bool, error)
	// RetireSigningKey deletes kid before its time, with ctx's pending
	// events (key.retired), in one conditional statement: only while
	// signer, the key the caller saw signing, is still not scheduled for
	// retirement and kid is neither signer nor a key that comes after it
	// (a later ActiveAt, or the same and a later CreatedAt). Otherwise
	// nothing is written and the result is ErrAlreadyUsed (ErrNotFound
	// when kid does not exist), so a retirement racing a rotation, on any
	// instance, never deletes the key that signs.
	RetireSigningKey(ctx context.Context, kid, signer string) error

	// Events (the audit and sign-in log). AppendEvent assigns Seq.
	AppendEvent(ctx context.Context, e *model.Event) (int64, error)
	ListEvents(ctx context.Context, f EventFilter) ([]*StoredEvent, error)
	// EventsAfter returns up to limit events with Seq > seq in ascending
	// Seq order (limit 0: 100; max 1000): the outbox the event relay reads.
	// It returns only committed events; on PostgreSQL a concurrent writer
	// may commit a lower Seq after a higher one became visible, so a
	// reader following a cursor must allow for late arrivals.
	EventsAfter(ctx context.Context, seq int64, limit int) ([]*StoredEvent, error)
	// CountEvents counts the events f selects by bucket, type and outcome
	// (buckets without events are absent), in one read; the console's
	// charts. Bucket must be positive and Until after Since.
	CountEvents(ctx context.Context, f EventCountFilter) ([]EventCount, error)
	// The tamper-evident audit log over the events table; audit retention
	// deletes whole checkpointed segments (AuditLog.DeleteAuditSegment).
	AuditLog

	// Devices. JKT is unique across devices (ErrAlreadyExists).
	CreateDevice(ctx context.Context, d *model.Device) error
	GetDevice(ctx context.Context, id string) (*model.Device, error)
	GetDeviceByJKT(ctx context.Context, jkt string) (*model.Device, error)
	ListDevices(ctx context.Context, f DeviceFilter) ([]*model.Device, error)
	UpdateDevice(ctx context.Context, id string, fn func(*model.Device) error) (*model.Device, error)
	DeleteDevice(ctx context.Context, id string) error
	// RevokeDeviceSessions revokes every unrevoked session that holds a
	// refresh token bound to the device (RefreshToken.DeviceID) and returns
	// the session ids.
	RevokeDeviceSessions(ctx context.Context, deviceID string, at time.Time, cause string) ([]string, error)

	// Device authorization requests (RFC 8628). User codes are unique
	// among unexpired requests (ErrAlreadyExists).
	CreateDeviceCode(ctx context.Context, c *model.DeviceCode) error
	GetDeviceCode(ctx context.Context, hash []byte) (*model.DeviceCode, error)
	GetDeviceCodeByUserCode(ctx context.Context, userCode string) (*model.DeviceCode, error)
	// UpdateDeviceCode loads the request by device-code hash, applies fn
	// and saves atomically (approval, denial, polling time), with ctx's
	// pending events (store.WithEvents: built after fn, so they may say
	// what it saw; an error from fn records nothing). The row is locked
	// while fn runs: of an approval and a denial racing, the one fn sees
	// second finds the request answered.
	UpdateDeviceCode(ctx context.Context, hash []byte, fn func(*model.DeviceCode) error) (*model.DeviceCode, error)
	// RedeemDeviceCode is RedeemAuthCode for an approved device
	// authorization request: ErrAlreadyUsed when it was used before,
	// ErrNotFound when there is none or it is not approved.
	RedeemDeviceCode(ctx context.Context, hash []byte, at time.Time, rt *model.RefreshToken) (*model.DeviceCode, error)

	// Compliance policies (at most one per platform; "*" for all).
	PutCompliancePolicy(ctx context.Context, p *model.CompliancePolicy) error
	GetCompliancePolicy(ctx context.Context, platform string) (*model.CompliancePolicy, error)
	ListCompliancePolicies(ctx context.Context) ([]*model.CompliancePolicy, error)
	DeleteCompliancePolicy(ctx context.Context, platform string) error

	// RecordJTI stores a one-time key until exp; ErrReplay if present and
	// unexpired. It backs the DPoP replay cache shared by all instances
	// and restarts (see also DeferredJTIs, DeferredJTI). The events
	// pending on ctx (WithEvent) commit with a new key and are not
	// recorded for a replayed one.
	RecordJTI(ctx context.Context, key string, exp time.Time) error
	// HasJTI reports whether key is recorded and unexpired at the store
	// clock's now (revoked access tokens, see RevokeClientGrant).
	HasJTI(ctx context.Context, key string) (bool, error)

	// Sign-in lockout. ReserveSignIn counts an attempt on the user's
	// account (FailedLogins, LockedUntil) at now under rule, in one
	// atomic write, unless the account is locked at now: then it counts
	// nothing and returns the lock in force with ErrLocked (ErrNotFound
	// when the user does not exist). ctx's pending events (user.locked)
	// commit with the write; their builder gets the user's id and the
	// count including this attempt (decimal) when this attempt locked the
	// account, nil otherwise. ReleaseSignIn gives a reservation
	// back: one count less, and the lock it set (if any, and still in
	// force unchanged) lifted; ctx's pending events (the lift's record)
	// commit with it, their builder getting the user's id when this call
	// lifted the lock, nil otherwise. ReserveUnknownSignIn and
	// ReleaseUnknownSignIn do the same for a username that does not
	// exist, keyed by an opaque key (a keyed hash of the name); such
	// records are purged by PurgeExpired once they no longer count.
	ReserveSignIn(ctx context.Context, userID string, now time.Time, rule Lockout) (*SignInReservation, error)
	ReleaseSignIn(ctx context.Context, userID string, r *SignInReservation) error
	ReserveUnknownSignIn(ctx context.Context, key []byte, now time.Time, rule Lockout) (*SignInReservation, error)
	ReleaseUnknownSignIn(ctx context.Context, key []byte, r *SignInReservation) error

	// Recovery codes: one-time codes a user signs in with instead of a
	// TOTP code (the authenticator is lost). Only keyed hashes are
	// stored. They belong to the TOTP second factor: an UpdateUser that
	// leaves a user with TOTP without one deletes the user's codes in
	// its transaction, and deleting the user deletes them too. A used
	// code keeps its row (so that presenting it again is told apart
	// from a wrong code) until the set is replaced or deleted.
	//
	// ReplaceRecoveryCodes replaces the user's codes with hashes
	// (unused, created at `at`) in one transaction that first locks the
	// user's row and passes the user to check: an error from check
	// changes nothing and is returned (ErrNotFound when the user does
	// not exist). It commits ctx's pending events (WithEvent).
	ReplaceRecoveryCodes(ctx context.Context, userID string, hashes [][]byte, at time.Time, check func(*model.User) error) error
	// UseRecoveryCode marks the user's unused code with this hash used
	// at `at`, in one transaction that locks the user's row first; fn
	// then gets the user and how many unused codes are left, and may
	// change the user (saved in the same transaction, as UpdateUser
	// does). An error from fn rolls everything back (the code stays
	// unused) and is returned. It commits ctx's pending events
	// (WithEvent). ErrNotFound: no such user or no such code;
	// ErrAlreadyUsed: the code was used before (nothing changes). Of
	// concurrent calls with one code, on any number of instances,
	// exactly one succeeds.
	UseRecoveryCode(ctx context.Context, userID string, hash []byte, at time.Time, fn func(u *model.User, left int) error) (*model.User, error)
	// RecoveryCodesLeft counts the user's unused codes (0 for a user
	// that has none or does not exist). RecoveryCodesLeftByUser does it
	// for every user that has unused codes, in one read.
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
	RecoveryCodesLeftByUser(ctx context.Context) (map[string]int, error)
	// DeleteRecoveryCodes deletes all of the user's codes, used or not,
	// and returns how many there were.
	DeleteRecoveryCodes(ctx context.Context, userID string) (int, error)

	// PurgeExpired deletes expired codes, PAR requests, JTIs, refresh tokens,
	// sessions past their absolute lifetime and the sign-in failures of
	// unknown names that no longer count.
	PurgeExpired(ctx context.Context, now time.Time) error

	// Conditional Access policy versions. CreatePolicyVersion stores
	// v.Version, which must be one more than the latest (1 for the first):
	// a version already taken is ErrAlreadyExists, a gap is an error, so
	// two concurrent writers cannot both win. LatestPolicyVersion is
	// ErrNotFound when none was stored.
	CreatePolicyVersion(ctx context.Context, v *model.PolicyVersion) error
	LatestPolicyVersion(ctx context.Context) (*model.PolicyVersion, error)
	// LatestPolicyVersionNumber is LatestPolicyVersion without the
	// document (0 when none), for cheap change polling.
	LatestPolicyVersionNumber(ctx context.Context) (int64, error)
	GetPolicyVersion(ctx context.Context, version int64) (*model.PolicyVersion, error)
	// ListPolicyVersions returns versions newest first, without their
	// documents; limit 0 means 100.
	ListPolicyVersions(ctx context.Context, limit int) ([]*model.PolicyVersion, error)

	// ResealAll rewrites the values sealed under the key-encryption key
	// (every Sealed kind) in one transaction, for a KEK rotation: reseal
	// gets each stored value and returns its new ciphertext, or nil to
	// leave it as it is; an error from reseal rolls everything back and
	// is returned. It returns how many values it rewrote; rewriting an
	// SSF stream's header bumps SSFStreamsVersion. It takes pending
	// events (WithEvent), whose ids are the rewritten values as
	// "kind:owner". reseal runs inside the transaction (on SQLite on the
	// writer goroutine): it may only compute, never call the store, and
	// it may run more than once.
	ResealAll(ctx context.Context, reseal func(v *Sealed) ([]byte, error)) (int, error)

	// Ping checks the connection; Close releases it.
	Ping(ctx context.Context) error
	Close() error

	// Shared Signals transmitter (internal/cae). Every change of a
	// stream's configuration bumps SSFStreamsVersion, so instances notice
	// changes made by others with one read. Stream ids are unique
	// (ErrAlreadyExists).
	// CreateSSFStream stores a new stream, with ctx's pending events.
	CreateSSFStream(ctx context.Context, s *model.SSFStream) error
	GetSSFStream(ctx context.Context, id string) (*model.SSFStream, error)
	// ListSSFStreams returns the streams of one client ("" for all),
	// oldest first.
	ListSSFStreams(ctx context.Context, clientID string) ([]*model.SSFStream, error)
	// UpdateSSFStream loads the stream, applies fn and saves atomically
	// (ID, ClientID and CreatedAt cannot change), with ctx's pending
	// events (store.WithEvents: built after fn). When the status becomes
	// disabled, the stream's queued SETs are deleted in the same
	// transaction.
	UpdateSSFStream(ctx context.Context, id string, fn func(*model.SSFStream) error) (*model.SSFStream, error)
	// DeleteSSFStream deletes the stream and its queue, with ctx's
	// pending events (ErrNotFound, and none, when it is gone).
	DeleteSSFStream(ctx context.Context, id string) error
	SSFStreamsVersion(ctx context.Context) (int64, error)
	// EnqueueSETs appends SETs to the queues of their streams in one
	// transaction, giving each stream's entries the stream's next
	// sequence numbers in slice order (it sets Seq). Entries of streams
	// that are gone or disabled, and entries whose (stream, DedupKey) is
	// already queued, are dropped and get Seq 0; it returns how many were
	// stored.
	//
	// Entries with HeldUntil set are handed out as they are stored (to a
	// long poll waiting on their stream): when their stream is an enabled
	// poll stream with no other queued entry, held or not, they are
	// stored as a poll hands them out (held back until HeldUntil,
	// Attempts 1); otherwise, or when the call fails, HeldUntil is
	// cleared and they are stored as usual. Only a stream's first entries
	// may have it.
	EnqueueSETs(ctx context.Context, es []*SETEntry) (int, error)
	// EnqueueEventSETs is EnqueueSETs for the SETs of one domain event
	// (possibly none): in the same transaction it records the event id,
	// which SSFEventHandled then reports, so that a catch-up after a
	// crash can tell events whose SETs were queued from those whose were
	// not.
	EnqueueEventSETs(ctx context.Context, eventID string, es []*SETEntry) (int, error)
	SSFEventHandled(ctx context.Context, eventID string) (bool, error)
	// PurgeSSFHandled forgets events recorded before t.
	PurgeSSFHandled(ctx context.Context, t time.Time) (int64, error)
	// LastSSFHandled returns the latest time EnqueueEventSETs recorded an
	// event (zero if never). UnhandledSSFEvents returns up to limit events
	// of the given types stored at or after since that it has not
	// recorded, in sequence order: the recovery after a crash.
	LastSSFHandled(ctx context.Context) (time.Time, error)
	UnhandledSSFEvents(ctx context.Context, types []model.EventType, since time.Time, limit int) ([]*StoredEvent, error)
	// QueuedSETs returns up to n queued SETs of a stream with Seq > after,
	// in Seq order, whether or not a poll holds them back.
	QueuedSETs(ctx context.Context, streamID string, after int64, n int) ([]*SETEntry, error)
	// SSFStreamsWithQueuedSETs returns the ids of the streams that have
	// queued SETs.
	SSFStreamsWithQueuedSETs(ctx context.Context) ([]string, error)
	// SSFStreamsWithVisibleSETs returns those of the streams ids that have
	// a queued entry no poll holds back at now: what the long polls
	// waiting on them would be handed.
	SSFStreamsWithVisibleSETs(ctx context.Context, ids []string, now time.Time) ([]string, error)
	// DeleteSETs deletes delivered entries (missing ones are ignored).
	DeleteSETs(ctx context.Context, keys []SETKey) error
	// RefuseSET marks a queued entry as refused by the receiver with the
	// reason, so it is never sent again.
	RefuseSET(ctx context.Context, k SETKey, reason string) error
	// RecordSETFailure counts a failed delivery attempt of a queued entry.
	RecordSETFailure(ctx context.Context, k SETKey, reason string) error
	// PollSETs processes one RFC 8936 poll in one transaction: deletes
	// the acknowledged entries, marks the refused ones, and returns up to
	// p.Max queued entries that no earlier poll holds back (in Seq order),
	// holding them until p.Hold; more reports whether others are waiting.
	PollSETs(ctx context.Context, streamID string, p SETPoll) (sets []*SETEntry, more bool, err error)
	// PollSETsBatch runs several polls, in order, in one transaction
	// (concurrent polls of many streams share a commit); it fails as a
	// whole.
	PollSETsBatch(ctx context.Context, polls []SETPollRequest) ([]SETPollResult, error)
	// CountSETs counts a stream's queued and refused entries.
	CountSETs(ctx context.Context, streamID string) (SETCounts, error)
	// PurgeRefusedSETs deletes refused entries created before t.
	PurgeRefusedSETs(ctx context.Context, t time.Time) (int64, error)
	// ClaimSSFStreams leases enabled push streams to owner until `until`:
	// those owner holds whose lease ends before renewBefore (all of them),
	// and at most take without a live lease at now (take < 0: all). It
	// returns the ids it leased or renewed. A stream is pushed only by the
	// holder of its lease, so instances sharing the database never push
	// one stream concurrently.
	ClaimSSFStreams(ctx context.Context, owner string, now, renewBefore, until time.Time, take int) ([]string, error)
	// ReleaseSSFStreams ends owner's leases on the streams ids, or on all
	// of them without ids (on shutdown).
	ReleaseSSFStreams(ctx context.Context, owner string, ids ...string) error
}

// ---- values sealed under the key-encryption key ----

// Kinds of values sealed under the KEK (Sealed.Kind). Each ciphertext is
// bound (AEAD associated data) to its owner, so it cannot be moved to
// another row.
const (
	SealedSigningKey    = "signing_key"              // SigningKey.PrivateEnc; owner: the kid
	SealedTOTP          = "totp"                     // User.TOTPSecret; owner: the user id
	SealedSSFAuthHeader = "ssf_authorization_header" // SSFStream.AuthHeaderEnc; owner: the stream id
	SealedAuditKey      = "audit_key"                // AuditKey.PublicEnc; owner: the kid
	SealedAuditSecret   = "audit_secret"             // AuditSecret; owner: its name
)

// SealedKinds lists every kind, in the order ResealAll visits them.
var SealedKinds = []string{SealedSigningKey, SealedTOTP, SealedSSFAuthHeader, SealedAuditKey, SealedAuditSecret}

// Sealed is one stored value sealed under the KEK.
type Sealed struct {
	Kind       string
	Owner      string
	Ciphertext []byte
}

// ---- domain events committed with their change ----

// A critical change and the domain events that record it commit in one
// transaction, so that a crash cannot leave the change without its event
// (and so without its audit record and its CAE signal). The service
// stamps the event (id, time, origin: bus.Emitter), attaches it to the
// context of the store write that makes the change (WithEvent), and then
// publishes it with that same context; the write appends the event to
// the events table in its own transaction, and the audit persister,
// seeing EventStored, does not append it a second time.
//
// The writes that take pending events are CreateUser, UpdateUser, DeleteUser,
// CreateSession, CreateSessionAtRisk, RevokeSession, RevokeUserSessions,
// CreateDevice, CreateSigningKey, CreateFirstSigningKey, RotateSigningKey,
// DeleteSigningKey, RetireSigningKey, BindSessionKey, ReserveSignIn (only
// when it counts), ReleaseSignIn,
// UpdateDeviceCode, CreateSSFStream, UpdateSSFStream, DeleteSSFStream,
// PutCompliancePolicy,
// DeleteCompliancePolicy,
// UpdateDevice, DeleteDevice, RevokeDeviceSessions, CreateClient,
// UpdateClient, DeleteClient, CreateGroup, UpdateGroup, DeleteGroup,
// RevokeClientGrant, CreateRefreshToken, RotateRefreshToken (only when it
// rotates), DeleteRefreshToken, RedeemAuthCode and RedeemDeviceCode
// (only when they spend the code), CreatePolicyVersion,
// ReplaceRecoveryCodes, UseRecoveryCode, CreateWebAuthnCredential,
// RenameWebAuthnCredential, DeleteWebAuthnCredential(s),
// RevokeUserSessionsUnremediated, UpdateRisk (with the revocation it
// carries out: RiskState.Revoke) and ResealAll: the first of them made with the context takes
// them (later ones, such as a bus subscriber's, never append them again),
// and appends them only when the write succeeds. Every other method
// ignores them.

type pendingEventKey struct{}

// PendingEvent holds the events waiting for the store write that commits
// them (WithEvent, WithEventFunc, WithEvents). Services only use those
// functions and EventStored; the methods are for store implementations.
type PendingEvent struct {
	build func(ids []string) []*model.Event
	taken atomic.Bool
	// stored is what the committed transaction appended (set once, after
	// the commit).
	stored atomic.Pointer[[]*model.Event]
}

// WithEvent returns ctx carrying e as the pending event of the next
// event-taking write made with it (see above). e must be complete (ID,
// Time, origin) before that write.
func WithEvent(ctx context.Context, e *model.Event) context.Context {
	return WithEventFunc(ctx, e, nil)
}

// WithEventFunc is WithEvent for an event that depends on the outcome of
// the write. The store calls complete inside the write's transaction,
// after the change and before appending e, with the ids the write reports
// (the session ids RevokeUserSessions and RevokeDeviceSessions revoked;
// for RevokeSession the session's id when this call revoked it, nil when
// it was revoked before; nil for the other writes); complete may fill in
// e from them or from what an update function saw, and returns false when
// e is not to be recorded (nothing changed). complete may run more than
// once (a write can be retried) and must only look at values and fill in
// e: it runs inside the transaction (on SQLite on the single writer
// goroutine), so calling the store from it would deadlock.
func WithEventFunc(ctx context.Context, e *model.Event, complete func(ids []string) bool) context.Context {
	return WithEvents(ctx, func(ids []string) []*model.Event {
		if complete != nil && !complete(ids) {
			return nil
		}
		return []*model.Event{e}
	})
}

// WithEvents is WithEventFunc for a write whose record is any number of
// events: build gets the write's ids (as complete does) and returns the
// complete events to append, in order, or none. The rules of complete
// apply to build; it may run more than once, and only the events of the
// run that committed are stored.
func WithEvents(ctx context.Context, build func(ids []string) []*model.Event) context.Context {
	return context.WithValue(ctx, pendingEventKey{}, &PendingEvent{build: build})
}

// EventStored reports whether a store write made with ctx has appended
// exactly e (the same pointer) to the events table, in its transaction,
// and committed.
func EventStored(ctx context.Context, e *model.Event) bool {
	p, _ := ctx.Value(pendingEventKey{}).(*PendingEvent)
	if p == nil {
		return false
	}
	stored := p.stored.Load()
	if stored == nil {
		return false
	}
	for _, s := range *stored {
		if s == e {
			return true
		}
	}
	return false
}

// TakeEvent returns the events pending on ctx for the calling write to
// append, or nil when there are none or an earlier write took them. For
// store implementations.
func TakeEvent(ctx context.Context) *PendingEvent {
	p, _ := ctx.Value(pendingEventKey{}).(*PendingEvent)
	if p == nil || !p.taken.CompareAndSwap(false, true) {
		return nil
	}
	return p
}

// Events returns the events to append for a write that reported ids,
// in order (none: record nothing). Call it inside the transaction.
func (p *PendingEvent) Events(ids []string) []*model.Event {
	return p.build(ids)
}

// MarkStored records that evs were appended and that the transaction
// holding them committed. Call it only after the commit.
func (p *PendingEvent) MarkStored(evs []*model.Event) { p.stored.Store(&evs) }

// DeferredJTIs is a capability of a store that one process serves (the
// embedded SQLite store): recording one-time keys without a write of
// their own on the caller's path.
type DeferredJTIs interface {
	// RecordJTIDeferred is RecordJTI for a caller that itself refuses a
	// key presented twice within this process (an in-memory cache in
	// front): it returns ErrReplay for a key that a committed write
	// recorded and that has not expired (one read: a key from before a
	// restart), and otherwise queues the insert and returns without
	// waiting for it. Queued keys are written together within a few
	// milliseconds, and before Close returns; a process crash may lose
	// those of the last few milliseconds.
	RecordJTIDeferred(ctx context.Context, key string, exp time.Time) error
}

// RemediationBound bounds RevokeUserSessionsUnremediated.
type RemediationBound struct {
	// Activity is the time of what the revocation answers: only a
	// remediation strictly after it narrows the bound.
	Activity time.Time
	// Until is the widest bound (the time of the response); required.
	Until time.Time
	// Now says Until is the moment of the statement itself (the response
	// runs now). With no remediation after Activity the statement then
	// revokes every active session it sees, whatever its created_at, and
	// it counts every remediation after Activity it sees, whatever its
	// time: a session or a remediation stamped by an instance whose clock
	// is ahead of this one's was still committed before the response, so
	// its stamps must not spare a session created before the response.
	Now bool
	// Subject is a session revoked whatever its creation time (the
	// session the finding is about); "" for none.
	Subject string
	// Applied is set by the store to the bound the statement applied:
	// Until, or the time of the first remediation after Activity.
	Applied time.Time
}

// RemediationEvents are the audit events after which the account is back
// in its user's hands, so that a session created afterwards is not the
// one a finding about an earlier activity is about: a password change
// (by the user, `ward user passwd` or an administrator's reset; every
// session ends with it) and the revocation of every session of the user
// by an administrator or by a confirmed compromise. Each is committed in
// the transaction of the change it records. Not remediations: a
// sign-in, even with a second factor (it is what an attacker holding the
// factors does), an earlier automatic response (the attacker can sign in
// again), one session's revocation or sign-out, and a dismissal or a
// level set by an administrator (they end no session).
var RemediationEvents = []struct {
	Type    model.EventType
	Reasons []model.RevocationCause // nil: any reason
}{
	{model.EventPasswordChanged, nil},
	{model.EventUserSessionsRevoked, []model.RevocationCause{model.CauseAdminRevoked, model.CauseCompromiseConfirmed}},
}
