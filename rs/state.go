package rs

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for StateConfig fields left zero.
const (
	// DefaultMaxTokenLifetime is the longest access-token lifetime the
	// state assumes (Ward's maximum for CAE-capable clients). Validators
	// using the state refuse tokens that live longer, so an expired
	// revocation can never let an old token through.
	DefaultMaxTokenLifetime = 24 * time.Hour
	// DefaultClockSkew is the tolerance for exp, nbf and iat.
	DefaultClockSkew = 30 * time.Second
)

// DefaultACRLevels are Ward's authentication context classes from weakest
// to strongest.
var DefaultACRLevels = []string{"urn:ward:acr:password", "urn:ward:acr:mfa"}

// StateConfig configures a RevocationState.
type StateConfig struct {
	// MaxTokenLifetime is the longest exp - iat of any token the
	// resource accepts (DefaultMaxTokenLifetime if zero). A revocation
	// at time T is dropped after T + MaxTokenLifetime + ClockSkew: every
	// token it could reject has expired by then.
	MaxTokenLifetime time.Duration
	// ClockSkew is the tolerance the validator applies to exp
	// (DefaultClockSkew if zero).
	ClockSkew time.Duration
	// ACRLevels orders acr values from weakest to strongest for
	// requirements ("acr at least X"); nil means DefaultACRLevels. An acr
	// not in the list satisfies only a requirement for exactly itself.
	ACRLevels []string
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Requirement is what a user's tokens must show, whenever they were
// issued, until the requirement expires (Since + MaxTokenLifetime +
// ClockSkew). It models "the resource now needs step-up from this user".
type Requirement struct {
	// ACR, if set, is the weakest acceptable acr (by ACRLevels).
	ACR string
	// AuthTimeAfter, if set, requires auth_time later than this
	// (re-authentication after an event).
	AuthTimeAfter time.Time
	// Since is when the requirement was set (now if zero).
	Since time.Time
	// Risk marks a step-up asked for by a risk-level-change to MEDIUM:
	// a change back to LOW at or after Since lifts it, and leaves any
	// other requirement (an assurance-level-change) in place.
	Risk bool
}

// DecisionKind says why CAE state rejected a token.
type DecisionKind int

// Decision kinds.
const (
	// Revoked: the token was issued at or before a revocation; a token
	// issued later is needed.
	Revoked DecisionKind = iota + 1
	// StepUp: the token does not meet a Requirement; the user must
	// authenticate again (stronger, or more recently).
	StepUp
)

// Decision is a rejection by the CAE state.
type Decision struct {
	Kind DecisionKind
	// By names what matched: "session", "user", "device", "user_device",
	// "token" (Revoked) or "requirement" (StepUp).
	By string
	// RevokedAt is the revocation time (Revoked): a token is accepted
	// again when its iat or nbf is later than this (whole seconds).
	RevokedAt time.Time
	// Requirement is the unmet requirement (StepUp).
	Requirement Requirement
}

// Reason returns a stable reason code for logs and usage records.
func (d *Decision) Reason() string {
	if d.Kind == StepUp {
		return "cae_step_up"
	}
	return "cae_revoked_" + d.By
}

// Key kinds; part of the hashed key so that equal ids of different kinds
// never collide.
const (
	kindSession byte = iota + 1
	kindUser
	kindDevice
	kindUserDevice
	kindToken
	kindCount
)

var kindNames = [kindCount]string{"", "session", "user", "device", "user_device", "token"}

const (
	stateShards = 64
	sweepEvery  = time.Minute
)

// RevocationState is the in-memory Continuous Access Evaluation state of a
// resource server: revocations by session id (sid), user (iss, sub), device
// (did), user on a device, and single token (iss, jti), each with its time,
// plus per-user requirements. A token whose iat (or nbf, if later) is at or
// before a matching revocation time is rejected.
//
// Identifiers are stored as 64-bit keyed hashes (hash/maphash with a
// per-process random seed), so an entry costs the same few dozen bytes
// whatever the id length and callers cannot choose colliding ids; a chance
// collision (about n/2^64 per lookup) can only reject a token issued before
// the colliding revocation, which the client repairs by fetching a new one.
// Entries expire after MaxTokenLifetime + ClockSkew, swept as the state is
// written. It is safe for concurrent use; lookups take one shared lock per
// key kind in use.
type RevocationState struct {
	maxLife   int64 // seconds
	skew      int64 // seconds
	levels    []string
	now       func() time.Time
	seed      maphash.Seed
	kindCount [kindCount]atomic.Int64 // entries per kind; zero skips the lookup
	shards    [stateShards]stateShard

	reqMu sync.RWMutex
	reqs  map[uint64]Requirement
	nreqs atomic.Int64
}

type stateShard struct {
	mu        sync.RWMutex
	m         map[uint64]int64 // hashed key -> revocation time (unix seconds) << 8 | kind
	peak      int
	nextSweep int64
	_         [32]byte // keep shards on separate cache lines
}

// NewRevocationState returns an empty state.
func NewRevocationState(cfg StateConfig) *RevocationState {
	if cfg.MaxTokenLifetime <= 0 {
		cfg.MaxTokenLifetime = DefaultMaxTokenLifetime
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.ACRLevels == nil {
		cfg.ACRLevels = DefaultACRLevels
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &RevocationState{
		maxLife: int64(cfg.MaxTokenLifetime / time.Second),
		skew:    int64((cfg.ClockSkew + time.Second - 1) / time.Second),
		levels:  slices.Clone(cfg.ACRLevels),
		now:     cfg.Now,
		seed:    maphash.MakeSeed(),
		reqs:    make(map[uint64]Requirement),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[uint64]int64)
	}
	return s
}

// MaxTokenLifetime returns the longest token lifetime the state covers.
func (s *RevocationState) MaxTokenLifetime() time.Duration {
	return time.Duration(s.maxLife) * time.Second
}

// ACRLevels returns the acr order used for requirements.
func (s *RevocationState) ACRLevels() []string { return slices.Clone(s.levels) }

// RevokeSession rejects tokens of session sid issued at or before at.
func (s *RevocationState) RevokeSession(sid string, at time.Time) {
	s.revoke(kindSession, "", sid, "", at)
}

// RevokeUser rejects tokens of user sub at issuer iss issued at or before at.
func (s *RevocationState) RevokeUser(iss, sub string, at time.Time) {
	s.revoke(kindUser, iss, sub, "", at)
}

// RevokeDevice rejects tokens bound to device did issued at or before at.
func (s *RevocationState) RevokeDevice(did string, at time.Time) {
	s.revoke(kindDevice, "", did, "", at)
}

// RevokeUserDevice rejects tokens of user (iss, sub) on device did issued
// at or before at (a CAEP session-revoked event with a user + device
// complex subject: every session derived from both).
func (s *RevocationState) RevokeUserDevice(iss, sub, did string, at time.Time) {
	s.revoke(kindUserDevice, iss, sub, did, at)
}

// RevokeToken rejects the token with the given iss and jti (if it was
// issued at or before at).
func (s *RevocationState) RevokeToken(iss, jti string, at time.Time) {
	s.revoke(kindToken, iss, jti, "", at)
}

// Require sets the requirement for user (iss, sub), replacing an earlier
// one (by Since): a requirement of a later event is kept when one of an
// earlier event comes after it (SETs can arrive out of order).
func (s *RevocationState) Require(iss, sub string, r Requirement) {
	now := s.now()
	if r.Since.IsZero() || r.Since.After(now) {
		r.Since = now
	}
	if r.ACR == "" && r.AuthTimeAfter.IsZero() {
		s.ClearRequirement(iss, sub)
		return
	}
	k := s.key(kindUser, iss, sub, "")
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	nowSec := now.Unix()
	for kk, v := range s.reqs {
		if s.expired(v.Since.Unix(), nowSec) {
			delete(s.reqs, kk)
		}
	}
	if old, ok := s.reqs[k]; ok && old.Since.Unix() > r.Since.Unix() {
		return
	}
	s.reqs[k] = r
	s.nreqs.Store(int64(len(s.reqs)))
}

// ClearRequirement removes the requirement for user (iss, sub).
func (s *RevocationState) ClearRequirement(iss, sub string) {
	s.clearRequirement(iss, sub, time.Time{}, false)
}

// clearRequirement removes the requirement for user (iss, sub) unless it
// was set after at (zero: whatever its time); with onlyRisk, only a
// risk step-up.
func (s *RevocationState) clearRequirement(iss, sub string, at time.Time, onlyRisk bool) {
	k := s.key(kindUser, iss, sub, "")
	s.reqMu.Lock()
	if r, ok := s.reqs[k]; ok && (at.IsZero() || r.Since.Unix() <= at.Unix()) && (r.Risk || !onlyRisk) {
		delete(s.reqs, k)
	}
	s.nreqs.Store(int64(len(s.reqs)))
	s.reqMu.Unlock()
}

// Len returns the number of revocation entries (not yet swept).
func (s *RevocationState) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// expired reports whether a revocation or requirement from time t (unix
// seconds) can no longer affect any acceptable token at now.
func (s *RevocationState) expired(t, now int64) bool {
	return t+s.maxLife+s.skew < now
}

func (s *RevocationState) revoke(kind byte, a, b, c string, at time.Time) {
	now := s.now().Unix()
	t := at.Unix()
	if t > now {
		t = now // a revocation "in the future" would block tokens not yet issued
	}
	if s.expired(t, now) {
		return // older than any live token
	}
	k := s.key(kind, a, b, c)
	sh := &s.shards[k%stateShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now >= sh.nextSweep {
		s.sweepLocked(sh, now)
	}
	if old, ok := sh.m[k]; ok {
		if t > old>>8 {
			sh.m[k] = pack(t, kind) // revocations only move forward
		}
		return
	}
	sh.m[k] = pack(t, kind)
	s.kindCount[kind].Add(1)
	if len(sh.m) > sh.peak {
		sh.peak = len(sh.m)
	}
}

// Sweep drops every expired entry now (it also happens as the state is
// written, at most once a minute per shard).
func (s *RevocationState) Sweep() {
	now := s.now().Unix()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.sweepLocked(sh, now)
		sh.mu.Unlock()
	}
	s.reqMu.Lock()
	for k, v := range s.reqs {
		if s.expired(v.Since.Unix(), now) {
			delete(s.reqs, k)
		}
	}
	s.nreqs.Store(int64(len(s.reqs)))
	s.reqMu.Unlock()
}

func (s *RevocationState) sweepLocked(sh *stateShard, now int64) {
	sh.nextSweep = now + int64(sweepEvery/time.Second)
	for k, v := range sh.m {
		if s.expired(v>>8, now) {
			delete(sh.m, k)
			s.kindCount[byte(v)].Add(-1)
		}
	}
	// Go maps never give memory back; rebuild a shard that shrank a lot
	// so a burst of revocations does not pin its peak size for ever.
	if sh.peak > 1024 && len(sh.m) < sh.peak/4 {
		m := make(map[uint64]int64, len(sh.m))
		for k, v := range sh.m {
			m[k] = v
		}
		sh.m, sh.peak = m, len(m)
	}
}

// lookup returns the revocation time for key k, if any.
func (s *RevocationState) lookup(k uint64) (int64, bool) {
	sh := &s.shards[k%stateShards]
	sh.mu.RLock()
	v, ok := sh.m[k]
	sh.mu.RUnlock()
	return v >> 8, ok
}

// pack stores a revocation time (at most maxNumericDate, so it fits in 55
// bits) with the kind of its key, which the sweep needs for the counters.
func pack(t int64, kind byte) int64 { return t<<8 | int64(kind) }

// Check returns nil if the token is acceptable to the CAE state, or why
// not. Revocations are checked before requirements.
func (s *RevocationState) Check(t *TokenInfo) *Decision {
	issued := t.IssuedAt.Unix()
	if nbf := t.NotBefore.Unix(); !t.NotBefore.IsZero() && nbf > issued {
		issued = nbf
	}
	var best int64
	var by byte
	try := func(kind byte, a, b, c string) {
		if s.kindCount[kind].Load() == 0 {
			return
		}
		if rt, ok := s.lookup(s.key(kind, a, b, c)); ok && issued <= rt && (by == 0 || rt > best) {
			best, by = rt, kind
		}
	}
	if t.SessionID != "" {
		try(kindSession, "", t.SessionID, "")
	}
	try(kindUser, t.Issuer, t.Subject, "")
	if t.DeviceID != "" {
		try(kindDevice, "", t.DeviceID, "")
		try(kindUserDevice, t.Issuer, t.Subject, t.DeviceID)
	}
	if t.JTI != "" {
		try(kindToken, t.Issuer, t.JTI, "")
	}
	if by != 0 {
		return &Decision{Kind: Revoked, By: kindNames[by], RevokedAt: time.Unix(best, 0)}
	}
	if s.nreqs.Load() == 0 {
		return nil
	}
	k := s.key(kindUser, t.Issuer, t.Subject, "")
	s.reqMu.RLock()
	r, ok := s.reqs[k]
	s.reqMu.RUnlock()
	if !ok || s.expired(r.Since.Unix(), s.now().Unix()) || s.meets(t, r) {
		return nil
	}
	return &Decision{Kind: StepUp, By: "requirement", Requirement: r}
}

// meets reports whether t satisfies r.
func (s *RevocationState) meets(t *TokenInfo, r Requirement) bool {
	if !r.AuthTimeAfter.IsZero() && (t.AuthTime.IsZero() || t.AuthTime.Unix() <= r.AuthTimeAfter.Unix()) {
		return false
	}
	if r.ACR != "" && !s.acrAtLeast(t.ACR, r.ACR) {
		return false
	}
	return true
}

// acrAtLeast reports whether acr is at least as strong as want.
func (s *RevocationState) acrAtLeast(acr, want string) bool {
	if acr == want {
		return true
	}
	i, j := slices.Index(s.levels, acr), slices.Index(s.levels, want)
	return i >= 0 && j >= 0 && i >= j
}

// acrAtLeastValues lists the acr values that satisfy "at least want", in
// order of preference (weakest acceptable first).
func (s *RevocationState) acrAtLeastValues(want string) []string {
	j := slices.Index(s.levels, want)
	if j < 0 {
		return []string{want}
	}
	return slices.Clone(s.levels[j:])
}

// key hashes (kind, a, b, c) into a map key. Lengths are written before
// the first two strings so that no two tuples share an encoding.
func (s *RevocationState) key(kind byte, a, b, c string) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	var hdr [9]byte
	hdr[0] = kind
	binary.LittleEndian.PutUint32(hdr[1:], uint32(len(a)))
	binary.LittleEndian.PutUint32(hdr[5:], uint32(len(b)))
	_, _ = h.Write(hdr[:])
	_, _ = h.WriteString(a)
	_, _ = h.WriteString(b)
	_, _ = h.WriteString(c)
	return h.Sum64()
}
