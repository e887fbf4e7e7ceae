package detect

import "time"

// lru is a map of bounded size whose least recently used entries (by
// activity time) are dropped first: when it is full, and when they have
// been idle for longer than idle. Not safe for concurrent use (the Engine
// holds its lock).
//
// Times are Unix nanoseconds (the Engine's clock), and dropped entries are
// kept on a short free list for the next ones: a long replay drops and
// creates millions (tokens come and go), and reusing them spares the
// allocations and the garbage collection they cost.
type lru[K comparable, V any] struct {
	m          map[K]*entry[K, V]
	head, tail *entry[K, V] // head: most recent
	max        int
	idle       int64   // nanoseconds; <= 0: never idle
	evicted    *uint64 // dropped to make room
	expired    *uint64 // dropped when idle
	// onEvict, when set, sees an entry before it is dropped.
	onEvict func(key K, v *V, last int64, full bool)
	free    *entry[K, V] // dropped entries, linked by next
	nfree   int
}

// maxFree bounds the free list, so that the memory of a burst of entries
// is given back once it has passed.
const maxFree = 4096

type entry[K comparable, V any] struct {
	key        K
	last       int64
	prev, next *entry[K, V]
	v          V
}

func newLRU[K comparable, V any](max int, idle time.Duration, evicted, expired *uint64) *lru[K, V] {
	return &lru[K, V]{m: make(map[K]*entry[K, V], min(max, 1024)), max: max, idle: int64(idle), evicted: evicted, expired: expired}
}

func (l *lru[K, V]) len() int { return len(l.m) }

// get returns the entry of key and marks it used at now, or nil.
func (l *lru[K, V]) get(key K, now int64) *entry[K, V] {
	e := l.m[key]
	if e != nil {
		l.touch(e, now)
	}
	return e
}

// peek returns the entry of key without marking it used.
func (l *lru[K, V]) peek(key K) *entry[K, V] { return l.m[key] }

// add returns the entry of key, created (zero V) if absent, marked used at now.
func (l *lru[K, V]) add(key K, now int64) (*entry[K, V], bool) {
	if e := l.m[key]; e != nil {
		l.touch(e, now)
		return e, false
	}
	var e *entry[K, V]
	if e = l.free; e != nil {
		l.free, e.next = e.next, nil
		l.nfree--
		e.key, e.last = key, now
	} else {
		e = &entry[K, V]{key: key, last: now}
	}
	l.m[key] = e
	l.pushFront(e)
	for len(l.m) > l.max && l.tail != nil {
		l.drop(l.tail, true)
	}
	return e, true
}

// expire drops the entries idle since before now-idle.
func (l *lru[K, V]) expire(now int64) {
	if l.idle <= 0 {
		return
	}
	limit := now - l.idle
	for l.tail != nil && l.tail.last < limit {
		l.drop(l.tail, false)
	}
}

// remove drops key if present (not counted as an eviction).
func (l *lru[K, V]) remove(key K) {
	if e := l.m[key]; e != nil {
		l.unlink(e)
		delete(l.m, key)
	}
}

// drop removes e: full says whether to make room (an entry still in
// use) or because it was idle.
func (l *lru[K, V]) drop(e *entry[K, V], full bool) {
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
	if l.nfree < maxFree {
		*e = entry[K, V]{next: l.free}
		l.free = e
		l.nfree++
	}
}

// touch moves e to the front. Activity slightly out of order never moves
// an entry's time backwards.
func (l *lru[K, V]) touch(e *entry[K, V], now int64) {
	if now > e.last {
		e.last = now
	}
	if l.head == e {
		return
	}
	l.unlink(e)
	l.pushFront(e)
}

func (l *lru[K, V]) pushFront(e *entry[K, V]) {
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

func (l *lru[K, V]) unlink(e *entry[K, V]) {
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
