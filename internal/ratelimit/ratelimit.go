// Package ratelimit holds a bounded per-key token bucket for failed or
// guessable attempts (sign-ins per IP, typed device user codes per IP).
package ratelimit

import (
	"sync"
	"time"
)

// Limiter is a per-key token bucket: a burst of Burst tokens, refilled by
// one every Every. Callers Take a token up front for each attempt (so a
// burst of parallel attempts cannot all pass the check before any failure
// is counted) and Refund it when the attempt turned out not to count. The
// map is bounded: full buckets (equal to no entry) are dropped first, then
// arbitrary ones, which can only give a key its budget back early.
type Limiter struct {
	mu     sync.Mutex
	burst  float64
	every  time.Duration
	max    int
	bucket map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter with the given burst and refill period that keeps
// at most max keys.
func New(burst int, every time.Duration, max int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	if every <= 0 {
		every = time.Minute
	}
	return &Limiter{burst: float64(burst), every: every, max: max, bucket: make(map[string]*bucket)}
}

// PerMinute returns a limiter allowing n attempts per minute (burst n).
func PerMinute(n, max int) *Limiter {
	if n < 1 {
		n = 1
	}
	return New(n, time.Minute/time.Duration(n), max)
}

// refill brings b up to date at now; callers hold mu.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+float64(d)/float64(l.every), l.burst)
	}
	b.last = now
}

// Take spends one of key's tokens; false (and nothing spent) when none is
// left.
func (l *Limiter) Take(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket[key]
	if b == nil {
		if len(l.bucket) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.bucket[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Refund gives back a token taken for an attempt that did not count.
func (l *Limiter) Refund(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.bucket[key]; b != nil {
		l.refill(b, now)
		b.tokens = min(b.tokens+1, l.burst)
	}
}

// Len returns the number of keys tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.bucket)
}

// evict makes room; callers hold mu.
func (l *Limiter) evict(now time.Time) {
	for k, b := range l.bucket {
		l.refill(b, now)
		if b.tokens >= l.burst {
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
