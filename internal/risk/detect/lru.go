package detect

import "time"

// lru is a map of bounded size whose least recently used entries (by
// activity time) are dropped first: when it is full, and when they have
// been idle for longer than idle. Not safe for concurrent use (the Engine
// holds its lock).
type lru[V any] struct {
	m          map[string]*entry[V]
	head, tail *entry[V] // head: most recent
	max        int
	idle       time.Duration
	evicted    *uint64 // dropped to make room
	expired    *uint64 // dropped when idle
	// onEvict, when set, sees an entry before it is dropped.
	onEvict func(key string, v *V, last time.Time, full bool)
}

type entry[V any] struct {
	key        string
	last       time.Time
	prev, next *entry[V]
	v          V
}

func newLRU[V any](max int, idle time.Duration, evicted, expired *uint64) *lru[V] {
	return &lru[V]{m: make(map[string]*entry[V], min(max, 1024)), max: max, idle: idle, evicted: evicted, expired: expired}
}

func (l *lru[V]) len() int { return len(l.m) }

// get returns the entry of key and marks it used at now, or nil.
func (l *lru[V]) get(key string, now time.Time) *entry[V] {
	e := l.m[key]
	if e != nil {
		l.touch(e, now)
	}
	return e
}

// peek returns the entry of key without marking it used.
func (l *lru[V]) peek(key string) *entry[V] { return l.m[key] }

// add returns the entry of key, created (zero V) if absent, marked used at now.
func (l *lru[V]) add(key string, now time.Time) (*entry[V], bool) {
	if e := l.m[key]; e != nil {
		l.touch(e, now)
		return e, false
	}
	e := &entry[V]{key: key, last: now}
	l.m[key] = e
	l.pushFront(e)
	for len(l.m) > l.max && l.tail != nil {
		l.drop(l.tail, true)
	}
	return e, true
}

// expire drops the entries idle since before now-idle.
func (l *lru[V]) expire(now time.Time) {
	if l.idle <= 0 {
		return
	}
	limit := now.Add(-l.idle)
	for l.tail != nil && l.tail.last.Before(limit) {
		l.drop(l.tail, false)
	}
}

// remove drops key if present (not counted as an eviction).
func (l *lru[V]) remove(key string) {
	if e := l.m[key]; e != nil {
		l.unlink(e)
		delete(l.m, key)
	}
}

// drop removes e: full says whether to make room (an entry still in
// use) or because it was idle.
func (l *lru[V]) drop(e *entry[V], full bool) {
	if l.onEvict != nil {
		l.onEvict(e.key, &e.v, e.last, full)
	}
	l.unlink(e)
	delete(l.m, e.key)
	switch {
	case full && l.evicted != nil:
		*l.evicted++
	case !full && l.expired != nil:
		*l.expired++
	}
}

// touch moves e to the front. Activity slightly out of order never moves
// an entry's time backwards.
func (l *lru[V]) touch(e *entry[V], now time.Time) {
	if now.After(e.last) {
		e.last = now
	}
	if l.head == e {
		return
	}
	l.unlink(e)
	l.pushFront(e)
}

func (l *lru[V]) pushFront(e *entry[V]) {
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

func (l *lru[V]) unlink(e *entry[V]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
