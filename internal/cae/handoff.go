package cae

import (
	"bytes"
	"context"
	"sync"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Hand-off to waiting long polls.
//
// A long poll that found nothing to return parks on its stream. An
// enqueue on this instance claims one parked poll per stream before its
// store call and marks that stream's first SETs (up to the poll's
// maxEvents) as handed out (store.SETEntry.HeldUntil = now + PollHold).
// The store grants it in the insert transaction only when the stream is
// an enabled poll stream with nothing else queued, held or not: the new
// SETs are then the head of the queue, exactly what a poll would hand
// out, and they are stored held as a poll would leave them. The claimed
// poll answers with them from memory, without a poll transaction of its
// own. Not granted, or the store call failed: the poll gets nothing from
// the enqueue and looks in the store as before.
//
// Handed-out SETs are held rows like polled ones: acknowledged (or
// refused) by jti in a later poll, returned again after PollHold if not,
// so a response lost on the way still reaches the receiver later. Only
// the one claimed poll gets them; another poll of the stream finds them
// held.

// parked is a long poll waiting on its stream with nothing to return.
type parked struct {
	stream string
	max    int
	// ch receives the claiming enqueue's outcome (buffered: the enqueue
	// never blocks on a poll that has gone).
	ch      chan handed
	claimed bool // guarded by handOffs.mu
}

// handed is what an enqueue gives a claimed poll.
type handed struct {
	sets []*store.SETEntry // nil: nothing, look in the store
	more bool
}

// handOffs are the parked long polls by stream, oldest first.
type handOffs struct {
	mu sync.Mutex
	m  map[string][]*parked
}

// park registers a long poll of stream that may be handed at most max
// SETs.
func (h *handOffs) park(stream string, max int) *parked {
	p := &parked{stream: stream, max: max, ch: make(chan handed, 1)}
	h.mu.Lock()
	if h.m == nil {
		h.m = map[string][]*parked{}
	}
	h.m[stream] = append(h.m[stream], p)
	h.mu.Unlock()
	return p
}

// unpark removes p. It reports false when an enqueue has claimed it: the
// outcome then comes on p.ch.
func (h *handOffs) unpark(p *parked) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.claimed {
		return false
	}
	l := h.m[p.stream]
	for i, q := range l {
		if q == p {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(h.m, p.stream)
	} else {
		h.m[p.stream] = l
	}
	return true
}

// streams returns the ids of the streams with parked polls.
func (h *handOffs) streams() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.m))
	for id := range h.m {
		ids = append(ids, id)
	}
	return ids
}

// handOff is one enqueue's claimed polls, by stream.
type handOff map[string]*parked

// startHandOff claims a parked poll for each stream of entries that has
// one and marks the stream's first entries, up to the poll's max, to be
// stored as handed out. Nil when no poll is parked.
func (s *Service) startHandOff(entries []*store.SETEntry) handOff {
	h := &s.handOffs
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) == 0 {
		return nil
	}
	var (
		ho    handOff
		n     map[string]int
		tried map[string]bool
	)
	hold := s.o.Now().Add(s.o.PollHold)
	for _, e := range entries {
		p := ho[e.StreamID]
		if p == nil {
			if tried[e.StreamID] {
				continue
			}
			if tried == nil {
				tried, n, ho = map[string]bool{}, map[string]int{}, handOff{}
			}
			tried[e.StreamID] = true
			l := h.m[e.StreamID]
			if len(l) == 0 {
				continue
			}
			p = l[0]
			p.claimed = true
			if len(l) == 1 {
				delete(h.m, e.StreamID)
			} else {
				h.m[e.StreamID] = l[1:]
			}
			ho[e.StreamID] = p
		}
		if n[e.StreamID] < p.max {
			e.HeldUntil = hold
			n[e.StreamID]++
		}
	}
	return ho
}

// finishHandOff gives each claimed poll the SETs the store stored as
// handed out (none after an error), and wakes the other instances' long
// polls of the poll streams that got SETs and were not handed them here.
func (s *Service) finishHandOff(ctx context.Context, ho handOff, entries []*store.SETEntry, err error) {
	var got map[string]*handed
	if len(ho) > 0 && err == nil {
		got = make(map[string]*handed, len(ho))
		for _, e := range entries {
			if ho[e.StreamID] == nil || e.Seq == 0 {
				continue
			}
			g := got[e.StreamID]
			if g == nil {
				g = &handed{}
				got[e.StreamID] = g
			}
			if e.HeldUntil.IsZero() {
				g.more = true
			} else {
				g.sets = append(g.sets, e)
			}
		}
	}
	for id, p := range ho {
		if g := got[id]; g != nil && len(g.sets) > 0 {
			p.ch <- *g
		} else {
			p.ch <- handed{}
		}
	}
	if err == nil {
		s.signalPolls(ctx, ho, got, entries)
	}
}

// ---- waking the other instances' long polls ----

// maxPollSignal bounds a wake-up message (NATS's default payload limit
// is 1 MB); a longer one is split, a longer one received is ignored.
const maxPollSignal = 64 << 10

// maxStreamIDLen bounds a stream id read from a wake-up (ids are 32 hex
// digits).
const maxStreamIDLen = 64

// signalPolls tells the other instances which poll streams got SETs, so
// their long polls of those streams look at once instead of at their
// next rescan. Streams whose SETs were handed out here are left out:
// nothing is left for another poll. The message is this instance's id,
// then the stream ids, one a line. Errors are only logged: the rescan
// finds the SETs anyway.
func (s *Service) signalPolls(ctx context.Context, ho handOff, got map[string]*handed, entries []*store.SETEntry) {
	n := s.o.PollNotifier
	if n == nil {
		return
	}
	snap := s.snap.Load()
	var (
		msg  []byte
		seen map[string]bool
	)
	head := append([]byte(s.o.InstanceID), '\n')
	send := func() bool {
		if len(msg) <= len(head) {
			return true
		}
		if err := n.Notify(msg); err != nil {
			s.o.Log.DebugContext(ctx, "cae: wake other instances' long polls", "err", err)
			return false
		}
		return true
	}
	for _, e := range entries {
		if e.Seq == 0 || seen[e.StreamID] {
			continue
		}
		if ho[e.StreamID] != nil {
			if g := got[e.StreamID]; g != nil && len(g.sets) > 0 && !g.more {
				continue // all handed out here
			}
		}
		if snap != nil {
			if st := snap.byID[e.StreamID]; st != nil && st.Method != model.DeliveryPoll {
				continue // push: the push worker wakes its holder
			}
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[e.StreamID] = true
		if len(msg)+len(e.StreamID)+1 > maxPollSignal {
			if !send() {
				return
			}
			msg = msg[:0]
		}
		if len(msg) == 0 {
			msg = append(msg, head...)
		} else {
			msg = append(msg, '\n')
		}
		msg = append(msg, e.StreamID...)
	}
	send()
}

// listenPolls subscribes to the other instances' wake-ups of long polls.
func (s *Service) listenPolls() {
	n := s.o.PollNotifier
	if n == nil {
		return
	}
	stop, err := n.Listen(s.onPollSignal)
	if err != nil {
		s.o.Log.Warn("cae: cannot listen for other instances' SETs; long polls rescan only", "err", err)
		return
	}
	s.unlistenPolls = stop
}

// onPollSignal wakes this instance's long polls of the streams named in
// a wake-up. The message is only a hint: a wake-up makes a poll look in
// the store, which decides what it gets, so a forged one costs at most a
// look per waiting poll. Messages that are too long or from this
// instance, and lines that cannot be stream ids, are ignored.
func (s *Service) onPollSignal(data []byte) {
	if len(data) == 0 || len(data) > maxPollSignal {
		return
	}
	from, rest, ok := bytes.Cut(data, []byte{'\n'})
	if !ok || string(from) == s.o.InstanceID {
		return
	}
	for len(rest) > 0 {
		var id []byte
		id, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(id) == 0 || len(id) > maxStreamIDLen {
			continue
		}
		s.waiters.notifyBytes(id)
	}
}

// notifyBytes is notify for an id read from a message.
func (w *waiters) notifyBytes(id []byte) {
	w.mu.Lock()
	if ch, ok := w.m[string(id)]; ok {
		close(ch)
		delete(w.m, string(id))
	}
	w.mu.Unlock()
}
