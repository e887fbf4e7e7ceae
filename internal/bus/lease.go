package bus

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// Leaser is the store's lease (the one the audit export sinks and the
// detectors hold on their cursors): with several instances on one
// database and one NATS, only the holder of the relay's lease publishes.
type Leaser interface {
	ClaimExportCursor(ctx context.Context, sink, owner string, start int64, now, until time.Time) (store.ExportCursor, bool, error)
	ReleaseExportCursor(ctx context.Context, sink, owner string) error
	SetExportCursorState(ctx context.Context, sink, owner, state string, now time.Time) (bool, error)
}

// DefaultRelayLeaseTTL is how long a relay's lease lasts unless renewed.
// It is renewed when two thirds are left (every 2 s); its holder stops
// starting windows when one third is left (the fence) and stops waiting
// for acknowledgements, and sending, when a sixth is left. A standby
// takes the lease only once it has ended on its own clock, so instances
// whose clocks differ by less than a sixth of it (1 s) never publish at
// the same time; should they, the stream's own checks (expected
// sequence, message id) still keep it in order and free of copies. A
// standby tries to claim it every tenth: after a crash of the holder,
// events wait at most TTL + TTL/10 (about 7 s) for the next relay.
const DefaultRelayLeaseTTL = 6 * time.Second

// leaseName is the relay's row among the export cursors: one per stream.
// A sink name cannot hold ':', so it cannot collide with a sink.
func (r *relay) leaseName() string { return "relay:" + r.n.o.Stream }

// claimRetry is how often a standby tries to take the lease over.
func (r *relay) claimRetry() time.Duration { return max(r.ttl/10, 50*time.Millisecond) }

// fence is the part of the lease at whose start the holder stops
// publishing if it could not renew.
func (r *relay) fence() time.Duration { return r.ttl / 3 }

// ensureLease takes the lease, or renews it when a third of it has run,
// and reports whether this relay may publish now. Without a lease
// (embedded server: this process owns its stream) it always may.
func (r *relay) ensureLease(ctx context.Context) bool {
	if r.lease == nil {
		return true
	}
	now := time.Now()
	due := !r.held || r.leaseUntil.Sub(now) <= 2*r.ttl/3
	if due && !now.Before(r.nextClaim) {
		r.claim(ctx, now)
	}
	return r.mayPublish(time.Now())
}

func (r *relay) claim(ctx context.Context, now time.Time) {
	until := now.Add(r.ttl)
	c, held, err := r.lease.ClaimExportCursor(ctx, r.leaseName(), r.owner, 0, now, until)
	switch {
	case err != nil:
		r.nextClaim = now.Add(r.claimRetry())
		if !r.leaseFailing {
			r.log.Warn("relay: claiming the relay lease failed", "owner", r.owner, "err", err)
			r.leaseFailing = true
		}
	case !held:
		r.nextClaim = now.Add(r.claimRetry())
		r.leaseFailing = false
		if r.held {
			r.log.Warn("relay: another instance took the relay over", "holder", c.Owner)
			r.drop()
		}
	default:
		r.nextClaim = time.Time{}
		r.leaseFailing = false
		if !r.held || now.After(r.leaseUntil) {
			// Another relay may have published meanwhile (also if this
			// process was stopped past its lease and took it back):
			// learn the stream's position afresh.
			r.log.Info("relay: relaying for the deployment", "owner", r.owner)
			r.ready, r.seqKnown, r.gap.from = false, false, 0
			clear(r.missing)
			// Take over the numbers the previous holder (or this relay
			// before it lost the lease) skipped and still watches.
			r.late = decodeLate(c.State, r.log)
			r.savedLate = c.State
		}
		if err := r.n.listenWake(true); err != nil {
			r.log.Warn("relay: cannot listen for other instances' wake-ups; polling", "err", err)
		}
		r.held, r.leaseUntil = true, until
		r.holding.Store(true)
	}
}

// lateState is the relay's state kept with its lease: the sequence
// numbers skipped at a gap and still watched for a late commit, each
// with when it was skipped ([seq, unix microseconds]).
type lateState struct {
	Late [][2]int64 `json:"late"`
}

func encodeLate(late map[int64]time.Time) string {
	if len(late) == 0 {
		return ""
	}
	st := lateState{Late: make([][2]int64, 0, len(late))}
	for s, at := range late {
		st.Late = append(st.Late, [2]int64{s, at.UnixMicro()})
	}
	slices.SortFunc(st.Late, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	b, _ := json.Marshal(st) // cannot fail
	return string(b)
}

func decodeLate(state string, log *slog.Logger) map[int64]time.Time {
	late := map[int64]time.Time{}
	if state == "" {
		return late
	}
	var st lateState
	if err := json.Unmarshal([]byte(state), &st); err != nil {
		log.Warn("relay: the state kept with the relay lease is unreadable; not watching the previous holder's skipped numbers", "err", err)
		return late
	}
	for _, e := range st.Late {
		late[e[0]] = time.UnixMicro(e[1])
	}
	if len(late) > 0 {
		log.Info("relay: watching the sequence numbers the previous holder skipped", "count", len(late))
	}
	return late
}

// saveLate stores the watched numbers with the lease, in one statement
// with the check that this relay still holds it (a holder that lost the
// lease cannot overwrite its successor's set). It reports whether they
// are stored (always without a lease: nobody takes this relay over).
func (r *relay) saveLate(ctx context.Context) bool {
	if r.lease == nil {
		return true
	}
	state := encodeLate(r.late)
	if state == r.savedLate {
		return true
	}
	ok, err := r.lease.SetExportCursorState(ctx, r.leaseName(), r.owner, state, time.Now())
	switch {
	case err != nil:
		r.log.Warn("relay: storing the watched sequence numbers with the lease failed", "err", err)
		return false
	case !ok:
		r.log.Warn("relay: lost the relay lease while storing the watched sequence numbers", "owner", r.owner)
		r.drop()
		return false
	}
	r.savedLate = state
	return true
}

// mayPublish reports whether the lease leaves time to publish (and wait
// for the acknowledgements) before the fence.
func (r *relay) mayPublish(now time.Time) bool {
	if r.lease == nil {
		return true
	}
	if r.held && now.Add(r.fence()).Before(r.leaseUntil) {
		return true
	}
	if r.held {
		r.log.Warn("relay: could not renew the relay lease in time; stopped publishing", "owner", r.owner)
		r.drop()
	}
	return false
}

func (r *relay) drop() {
	r.held = false
	r.holding.Store(false)
	_ = r.n.listenWake(false) // a standby needs no wake-ups
}

// sendable reports whether a message may still be sent: until the
// lease's last sixth (a process stopped in the middle of a window and
// resumed must not go on sending it).
func (r *relay) sendable() bool {
	return r.lease == nil || time.Now().Add(r.ttl/6).Before(r.leaseUntil)
}

// ackDeadline bounds the wait for a window's acknowledgements: before
// the lease's last sixth, so that nothing this relay sent is pending
// when another instance may take over (besides the stream's own checks).
func (r *relay) ackDeadline() time.Duration {
	d := publishTimeout + time.Second
	if r.lease != nil {
		d = min(d, time.Until(r.leaseUntil)-r.ttl/6)
	}
	return max(d, time.Millisecond)
}

// release ends the lease on shutdown, so a standby takes over at once.
func (r *relay) release() {
	if r.lease == nil || !r.held || r.abandon.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.lease.ReleaseExportCursor(ctx, r.leaseName(), r.owner); err != nil {
		r.log.Debug("relay: releasing the relay lease failed", "err", err)
	}
	r.drop()
}

// leaseWait returns how soon the lease needs a claim or a renewal (0:
// no lease), whatever the poll interval.
func (r *relay) leaseWait() time.Duration {
	if r.lease == nil {
		return 0
	}
	at := r.nextClaim
	if r.held {
		if renew := r.leaseUntil.Add(-2 * r.ttl / 3); renew.After(at) {
			at = renew
		}
	}
	return max(time.Until(at), time.Millisecond)
}
