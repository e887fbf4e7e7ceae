package identity

import (
	"crypto/sha256"
	"sync"
	"time"
)

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
