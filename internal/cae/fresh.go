package cae

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// sharedRead coalesces reads of the streams' configuration version: a
// caller gets the result of a read that began after it asked (so it sees
// every change committed before it asked), but callers that ask while a
// read is running share the next one. A thousand pushes or polls that
// each must see the current stream status then cost a few one-row reads
// instead of a thousand stream reads.
type sharedRead struct {
	mu      sync.Mutex
	running bool
	next    *readCall // the read that starts when the running one ends
}

type readCall struct {
	done chan struct{}
	v    int64
	err  error
}

// do returns the result of fn run after this call began, or ctx's error
// when ctx ends first (the read goes on for the others who wait on it:
// a shutdown does not wait for a read it no longer needs).
func (g *sharedRead) do(ctx context.Context, fn func() (int64, error)) (int64, error) {
	g.mu.Lock()
	if g.running {
		if g.next == nil {
			g.next = &readCall{done: make(chan struct{})}
		}
		c := g.next
		g.mu.Unlock()
		select {
		case <-c.done:
			return c.v, c.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	g.running = true
	g.mu.Unlock()
	v, err := fn()
	g.mu.Lock()
	c := g.next
	g.next = nil
	if c == nil {
		g.running = false
	}
	g.mu.Unlock()
	if c != nil {
		// Callers that joined during this read need one that starts now.
		go g.runNext(c, fn)
	}
	return v, err
}

func (g *sharedRead) runNext(c *readCall, fn func() (int64, error)) {
	for c != nil {
		c.v, c.err = fn()
		close(c.done)
		g.mu.Lock()
		c = g.next
		g.next = nil
		if c == nil {
			g.running = false
		}
		g.mu.Unlock()
	}
}

// readVersion reads the configuration version for sharedRead: not bound
// to one caller's context, the read may serve several.
func (s *Service) readVersion() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.o.Store.SSFStreamsVersion(ctx)
}

// currentStream returns stream id as it is in the store now: from the
// snapshot when the configuration version (read after this call began,
// shared with concurrent callers) is the snapshot's, otherwise read from
// the store. Every status change bumps the version in its transaction,
// so a stream paused or disabled by any instance is seen as such.
func (s *Service) currentStream(ctx context.Context, id string) (*model.SSFStream, error) {
	v, err := s.versionRead.do(ctx, s.readVersion)
	if err != nil {
		return nil, fmt.Errorf("cae: streams version: %w", err)
	}
	// The snapshot's version was read before its streams: equal versions
	// mean no change committed since, so the snapshot is current.
	if snap := s.snap.Load(); snap != nil && snap.version == v && !s.dirtyVersion.Load() {
		if st := snap.byID[id]; st != nil {
			return st.SSFStream, nil
		}
	}
	st, err := s.o.Store.GetSSFStream(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("cae: get stream: %w", err)
	}
	return st, nil
}
