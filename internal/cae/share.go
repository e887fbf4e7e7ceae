package cae

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// Notifier wakes the other instances of the deployment (bus.Signal, a
// core NATS subject). A lost message costs at most a rescan interval:
// the rescan stays the fallback.
type Notifier interface {
	Notify(data []byte) error
	Listen(fn func(data []byte)) (stop func(), err error)
}

// Fair share. Each serving instance holds a membership lease: a row
// "cae-push:<n>" among the export cursors (slot n, the lowest free one),
// renewed with its stream leases. The live slots count the instances;
// each takes at most ceil(push streams / instances) and, when an
// instance joins, the others give up their surplus between deliveries.
// A dead instance's slot and stream leases expire together; the others'
// share then grows and they take its streams over. The per-stream lease
// still decides who pushes a stream: shares only spread them.

// slotPrefix names the membership rows (a sink name cannot hold ':').
const slotPrefix = "cae-push:"

// maxSlots bounds the slot search (instances serving push at once).
const maxSlots = 1024

func slotName(i int) string { return fmt.Sprintf("%s%d", slotPrefix, i) }

// members renews or takes this instance's slot and returns how many
// instances hold one (this one included; at least 1). joined reports a
// newly taken slot.
func (p *pusher) members(ctx context.Context, now time.Time) (live int, joined bool, err error) {
	st, owner, d := p.s.o.Store, p.s.o.InstanceID, p.s.o.LeaseDuration
	if p.slot >= 0 && p.slotUntil.Sub(now) < d/2 {
		_, held, err := st.ClaimExportCursor(ctx, slotName(p.slot), owner, 0, now, now.Add(d))
		switch {
		case err != nil:
			return 0, false, err
		case held:
			p.slotUntil = now.Add(d)
		default:
			p.slot = -1 // expired (this process stalled) and taken
		}
	}
	cs, err := st.ListExportCursors(ctx)
	if err != nil {
		return 0, false, err
	}
	rows := map[string]bool{} // slot name -> live and another's
	others := 0
	for _, c := range cs {
		if !strings.HasPrefix(c.Sink, slotPrefix) {
			continue
		}
		live := c.LeaseUntil.After(now) && c.Owner != owner
		rows[c.Sink] = live
		if live {
			others++
		}
	}
	for i := 0; p.slot < 0 && i < maxSlots; i++ {
		if rows[slotName(i)] {
			continue
		}
		c, held, err := st.ClaimExportCursor(ctx, slotName(i), owner, 0, now, now.Add(d))
		if err != nil {
			return 0, false, err
		}
		if held {
			p.slot, p.slotUntil, joined = i, now.Add(d), true
		} else if c.Owner != owner {
			others++ // taken since the list was read
		}
	}
	return others + 1, joined, nil
}

// releaseSlot gives the slot up (on shutdown).
func (p *pusher) releaseSlot(ctx context.Context) error {
	if p.slot < 0 {
		return nil
	}
	return p.s.o.Store.ReleaseExportCursor(ctx, slotName(p.slot), p.s.o.InstanceID)
}

// share is ceil(push streams / live instances): every instance taking
// up to it leaves no stream unserved.
func share(streams, live int) int {
	if live < 1 {
		live = 1
	}
	return (streams + live - 1) / live
}

// pushStreams counts the enabled push streams of snap.
func pushStreams(snap *snapshot) int {
	n := 0
	for _, st := range snap.list {
		if st.Method == model.DeliveryPush && st.Status == model.StreamEnabled {
			n++
		}
	}
	return n
}

// surplus picks n streams to give up: idle ones (not being pushed), those
// with nothing to send first. Called with p.mu held.
func (p *pusher) surplus(n int) []string {
	var idle []*pushState
	for _, ps := range p.owned {
		if !ps.running {
			idle = append(idle, ps)
		}
	}
	slices.SortFunc(idle, func(a, b *pushState) int {
		if a.dirty != b.dirty {
			if a.dirty {
				return 1
			}
			return -1
		}
		return strings.Compare(a.id, b.id)
	})
	ids := make([]string, 0, n)
	for _, ps := range idle[:min(n, len(idle))] {
		ids = append(ids, ps.id)
		delete(p.owned, ps.id)
		p.releasing[ps.id] = true
	}
	return ids
}

// listen subscribes to the other instances' wake-ups: an empty message
// asks for a claim (an instance joined, left or gave streams up); one
// with stream ids (one a line) says SETs were queued on them.
func (p *pusher) listen() {
	n := p.s.o.Notifier
	if n == nil {
		return
	}
	stop, err := n.Listen(p.onSignal)
	if err != nil {
		p.s.o.Log.Warn("cae: cannot listen for other instances' wake-ups; rescanning only", "err", err)
		return
	}
	p.unlisten = stop
}

func (p *pusher) onSignal(data []byte) {
	if p.stopping.Load() {
		return
	}
	if len(data) == 0 {
		p.claimSoon()
		return
	}
	mine := false
	p.mu.Lock()
	for id := range strings.SplitSeq(string(data), "\n") {
		if ps, ok := p.owned[id]; ok {
			ps.dirty, ps.needRead, mine = true, true, true
		}
	}
	p.mu.Unlock()
	if mine {
		p.wake()
	}
}

// notify wakes the instances serving ids (streams this one does not
// hold). Errors are only logged: the rescan finds the SETs anyway.
func (p *pusher) notify(ids []string) {
	n := p.s.o.Notifier
	if n == nil || len(ids) == 0 {
		return
	}
	const perMsg = 2048 // well below NATS's default 1 MB payload limit
	for len(ids) > 0 {
		k := min(perMsg, len(ids))
		if err := n.Notify([]byte(strings.Join(ids[:k], "\n"))); err != nil {
			p.s.o.Log.Debug("cae: wake other instances", "err", err)
			return
		}
		ids = ids[k:]
	}
}

// announce asks every instance to claim now (nil data).
func (p *pusher) announce() {
	if n := p.s.o.Notifier; n != nil {
		if err := n.Notify(nil); err != nil {
			p.s.o.Log.Debug("cae: wake other instances", "err", err)
		}
	}
}
