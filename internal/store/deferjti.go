package store

import (
	"context"
	"sync"
	"time"
)

// DeferredJTI holds a request's one-time key (its DPoP proof's jti) that
// the replay cache left for the write that commits the request's audit
// event: RecordJTI with that event pending (WithEvent) records both in
// one write, or neither when the key was recorded before (ErrReplay).
// On PostgreSQL that is one statement instead of two round trips.
//
// Only a request that writes nothing the key guards before its event
// may defer its key: the client credentials grant, whose token is sent
// only after its event committed. Whoever handles such a request records
// a key still pending at its end (a refusal, an error) on its own.
type DeferredJTI struct {
	mu    sync.Mutex
	key   string
	exp   time.Time
	held  bool // a key was deferred
	taken bool // handed to a RecordJTI (Take)
}

type deferredJTIKey struct{}

// WithDeferredJTI returns ctx on which the replay cache may defer one
// key (DeferJTI), and the holder to find it in.
func WithDeferredJTI(ctx context.Context) (context.Context, *DeferredJTI) {
	d := &DeferredJTI{}
	return context.WithValue(ctx, deferredJTIKey{}, d), d
}

// DeferJTI leaves key (until exp) on ctx's holder and reports whether it
// did; false when ctx has none or it holds a key already: the caller
// records key now.
func DeferJTI(ctx context.Context, key string, exp time.Time) bool {
	d, _ := ctx.Value(deferredJTIKey{}).(*DeferredJTI)
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held {
		return false
	}
	d.key, d.exp, d.held = key, exp, true
	return true
}

// DeferredJTIOf returns ctx's holder (nil: none).
func DeferredJTIOf(ctx context.Context) *DeferredJTI {
	d, _ := ctx.Value(deferredJTIKey{}).(*DeferredJTI)
	return d
}

// Take returns the deferred key and marks it taken: the caller runs
// RecordJTI for it next. ok is false when there is none or it was taken
// (safe on a nil holder).
func (d *DeferredJTI) Take() (key string, exp time.Time, ok bool) {
	if d == nil {
		return "", time.Time{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.held || d.taken {
		return "", time.Time{}, false
	}
	d.taken = true
	return d.key, d.exp, true
}
