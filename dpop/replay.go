package dpop

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

const (
	replayShards = 64
	// replaySweepEvery is how often each shard drops expired entries, so
	// an entry lives at most this long past its expiry.
	replaySweepEvery = 30 * time.Second
)

// MemoryReplayCache is an in-process ReplayCache for a single server
// instance (use a shared store when several instances serve the same
// endpoints). It is safe for concurrent use. Keys are stored as 128-bit
// keyed hashes, so an entry costs a few dozen bytes whatever the jti
// length, and entries are dropped once expired: memory is bounded by the
// number of proofs accepted within one retention window.
type MemoryReplayCache struct {
	now    func() time.Time
	s1, s2 maphash.Seed
	shards [replayShards]replayShard
}

type replayShard struct {
	mu        sync.Mutex
	m         map[[2]uint64]int64 // hashed key -> expiry (unix nanoseconds)
	nextSweep int64
	_         [40]byte // keep shards on separate cache lines
}

// NewMemoryReplayCache returns an empty cache using the given clock
// (time.Now if nil).
func NewMemoryReplayCache(now func() time.Time) *MemoryReplayCache {
	if now == nil {
		now = time.Now
	}
	c := &MemoryReplayCache{now: now, s1: maphash.MakeSeed(), s2: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[[2]uint64]int64)
	}
	return c
}

// Record implements ReplayCache: it stores key until exp and returns
// ErrReplay if key is already stored and not yet expired.
func (c *MemoryReplayCache) Record(_ context.Context, key string, exp time.Time) error {
	h := [2]uint64{maphash.String(c.s1, key), maphash.String(c.s2, key)}
	now := c.now().UnixNano()
	sh := &c.shards[h[0]%replayShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now >= sh.nextSweep {
		for k, e := range sh.m {
			if e <= now {
				delete(sh.m, k)
			}
		}
		sh.nextSweep = now + int64(replaySweepEvery)
	}
	if e, ok := sh.m[h]; ok && e > now {
		return ErrReplay
	}
	sh.m[h] = exp.UnixNano()
	return nil
}

// Len returns the number of stored entries, expired ones not yet swept
// included.
func (c *MemoryReplayCache) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
