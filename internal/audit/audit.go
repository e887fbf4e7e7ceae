// Package audit keeps Ward's audit record: every domain event published
// on the bus is appended to the store's events table (the audit log and
// the outbox the event relay reads) before the publish returns. Exporters
// of the record to other systems belong here too.
//
// The vocabulary of the record lives with the types it describes, in
// internal/model: event types and their stable codes (model.EventCodes,
// read here through Code and EventTypes), outcomes, and the reasons that
// several packages set or react to (model.RevocationCause, the Reason
// constants). A test keeps the code registry complete and unique.
package audit

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Query selects events of the audit record, and Record is one of them
// with its sequence number, whose JSON is the documented event shape
// (`ward logs --json`, the admin API, the event stream). The store keeps
// the record; readers name it through these, and read it through any
// type with ListEvents (store.Store has it), without depending on the
// store.
type (
	Query  = store.EventFilter
	Record = store.StoredEvent
)

// Options configure the persister.
type Options struct {
	Store store.Store // required
	Now   func() time.Time
	Log   *slog.Logger
}

// Persister appends published events to the store.
type Persister struct {
	store store.Store
	now   func() time.Time
	log   *slog.Logger
}

// New returns a persister. It panics without a Store (a configuration
// error).
func New(o Options) *Persister {
	if o.Store == nil {
		panic("audit: Options.Store is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Persister{store: o.Store, now: o.Now, log: o.Log.With("component", "audit")}
}

// Subscribe registers a persister on b as its first synchronous
// subscriber, so that every later subscriber (the session revoker, the
// CAE transmitter) sees events that are already recorded, and returns the
// function that removes it.
func Subscribe(b bus.Bus, o Options) (unsubscribe func()) {
	return b.Subscribe("audit", New(o).Handle)
}

// Handle appends e to the store before Publish returns; a failure to
// persist fails the publish, so a change whose record cannot be written
// is reported instead of going unrecorded. An event the store already
// committed in the transaction of the change it records (store.WithEvent:
// the critical changes behind CAE signals) is not appended again. An
// event that reaches it unstamped is stamped as the bus.Emitter would.
func (p *Persister) Handle(ctx context.Context, e *model.Event) error {
	if store.EventStored(ctx, e) {
		return nil
	}
	bus.Stamp(ctx, e, p.now)
	if _, err := p.store.AppendEvent(ctx, e); err != nil {
		p.log.ErrorContext(ctx, "persisting event failed", "type", string(e.Type), "event_id", e.ID,
			"correlation_id", e.CorrelationID, "err", err)
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Code returns the stable code of event type t ("" for an unknown type).
func Code(t model.EventType) string { return model.EventCodes[t] }

// EventTypes returns every event type with a code, ordered by code.
func EventTypes() []model.EventType {
	out := make([]model.EventType, 0, len(model.EventCodes))
	for t := range model.EventCodes {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return model.EventCodes[out[i]] < model.EventCodes[out[j]] })
	return out
}

// MinRetention is the shortest audit retention allowed: longer than the
// event stream keeps events and than the CAE transmitter remembers what it
// handled (8 days), so retention never deletes an event something still
// reads.
const MinRetention = 8 * 24 * time.Hour

// pruneEvents bounds one maintenance round's deletions (whole segments,
// so a round may go past it by less than one segment); pruneSegments
// bounds how many checkpoints it reads.
const (
	pruneEvents   = 200000
	pruneSegments = 1000
)

// Prune is audit retention (0: keep everything): it deletes whole
// segments of the tamper-evident log, each from one checkpoint to the
// next (internal/audit/chain), whose closing checkpoint was signed longer
// than retention ago (no less than MinRetention), oldest first. The
// checkpoint at the cut stays as the signed anchor the rest of the chain
// is verified from, so events live up to one segment (audit.
// checkpoint_events or audit.checkpoint_interval) longer than retention,
// and events no checkpoint covers yet are kept. It deletes about
// pruneEvents events per call so that a maintenance round stays short
// (each segment in one transaction); the next round goes on. It returns
// how many events it deleted.
func Prune(ctx context.Context, st store.Store, now time.Time, retention time.Duration) (int, error) {
	if retention <= 0 {
		return 0, nil
	}
	if retention < MinRetention {
		retention = MinRetention
	}
	before := now.Add(-retention)
	cps, err := st.AuditCheckpoints(ctx, 0, 0, pruneSegments)
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	total := 0
	for _, cp := range cps {
		if !cp.CreatedAt.Before(before) || total >= pruneEvents {
			break
		}
		n, err := st.DeleteAuditSegment(ctx, cp.Seq)
		total += n
		if err != nil {
			return total, fmt.Errorf("audit: prune events through seq %d (checkpoint of %s): %w", cp.Seq, cp.CreatedAt.UTC().Format(time.RFC3339), err)
		}
	}
	return total, nil
}
