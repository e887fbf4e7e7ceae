package identity

import (
	"crypto/sha256"
	"sync"
	"time"
)

// ipLimiter is a per-IP token bucket of failed attempts: burst `rate`,
// refilled at `rate` per minute. Every attempt takes a token up front (so
// that a burst of parallel attempts cannot all pass the check before any
// failure is counted) and successful or aborted attempts give it back. The
// map is bounded: full buckets are dropped first (a full bucket equals no
// entry), then arbitrary ones, which can only give an address its budget
// back early.
type ipLimiter struct {
	mu     sync.Mutex
	rate   float64 // tokens per minute == burst
	max    int
	bucket map[string]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

func newIPLimiter(perMinute, max int) *ipLimiter {
	return &ipLimiter{rate: float64(perMinute), max: max, bucket: make(map[string]*tokenBucket)}
}

// refill brings b up to date at now; callers hold mu.
func (l *ipLimiter) refill(b *tokenBucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens += d.Minutes() * l.rate
		if b.tokens > l.rate {
			b.tokens = l.rate
		}
	}
	b.last = now
}

// take spends one token of ip's budget; false (and nothing spent) when
// the bucket holds less than one.
func (l *ipLimiter) take(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket[ip]
	if b == nil {
		if len(l.bucket) >= l.max {
			l.evict(now)
		}
		b = &tokenBucket{tokens: l.rate, last: now}
		l.bucket[ip] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refund gives back a token taken for an attempt that did not fail.
func (l *ipLimiter) refund(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.bucket[ip]; b != nil {
		l.refill(b, now)
		b.tokens = min(b.tokens+1, l.rate)
	}
}

// evict makes room; callers hold mu.
func (l *ipLimiter) evict(now time.Time) {
	for k, b := range l.bucket {
		l.refill(b, now)
		if b.tokens >= l.rate {
			delete(l.bucket, k)
		}
	}
	for k := range l.bucket { // random order
		if len(l.bucket) < l.max*9/10 {
			break
		}
		delete(l.bucket, k)
	}
}

// unknownTracker counts failures for usernames that do not exist, so that
// they lock exactly like real accounts. Keys are SHA-256 digests of the
// normalised name: bounded size, and no typed-in passwords kept in memory.
// The map is bounded: expired locks go first, then arbitrary entries.
type unknownTracker struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*unknownState
}

type unknownState struct {
	failures    int
	lockedUntil time.Time
}

func newUnknownTracker(max int) *unknownTracker {
	return &unknownTracker{max: max, m: make(map[[32]byte]*unknownState)}
}

func unknownKey(name string) [32]byte { return sha256.Sum256([]byte(name)) }

// locked reports whether name is locked at now.
func (t *unknownTracker) locked(name string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[unknownKey(name)]
	return st != nil && now.Before(st.lockedUntil)
}

// fail records a failure; it applies the same rules as recordUserFailure
// and reports whether this failure locked the name.
func (t *unknownTracker) fail(name string, now time.Time, maxFail int, lockFor time.Duration) (lockedNow bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := unknownKey(name)
	st := t.m[k]
	if st == nil {
		if len(t.m) >= t.max {
			t.evict(now)
		}
		st = &unknownState{}
		t.m[k] = st
	}
	return applyFailure(&st.failures, &st.lockedUntil, now, maxFail, lockFor)
}

func (t *unknownTracker) evict(now time.Time) {
	for k, st := range t.m {
		if !st.lockedUntil.IsZero() && !now.Before(st.lockedUntil) {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < t.max*9/10 {
			break
		}
		delete(t.m, k)
	}
}

// applyFailure is the one lockout rule for real and unknown accounts: a
// lock that has expired starts a fresh count; the failure that reaches
// maxFail locks for lockFor. It reports whether this failure locked.
func applyFailure(failures *int, lockedUntil *time.Time, now time.Time, maxFail int, lockFor time.Duration) bool {
	if !lockedUntil.IsZero() {
		if now.Before(*lockedUntil) {
			return false // already locked (a concurrent attempt); do not extend
		}
		*failures = 0
		*lockedUntil = time.Time{}
	}
	*failures++
	if *failures >= maxFail {
		*lockedUntil = now.Add(lockFor)
		return true
	}
	return false
}
