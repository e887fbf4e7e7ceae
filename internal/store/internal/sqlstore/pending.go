package sqlstore

import (
	"context"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// inTxEvent is s.db.InTx for the writes that commit a change together
// with the domain events recording it (store.WithEvent). When ctx carries
// pending events that no earlier write took, the change (fn) and the
// events' append run in one transaction, the appends last, after fn
// succeeded, and only the events the pending builder returns for the ids
// fn reports (none: nothing is recorded); they are marked stored once
// InTx has reported the commit. A failing fn or append rolls back
// everything. Without pending events this is s.db.InTx and nothing more.
//
// Everything here runs on the transaction's querier: on SQLite the
// callback runs on the group-commit writer's goroutine, so it must not
// call s.db.Write, s.db.InTx or any Store method (they queue on that same
// writer and would wait for themselves). The builder is the service's and
// only looks at values. On SQLite the callback may run a second time (see
// sqlite's InTx); appended is reset on every run.
func (s *Store) inTxEvent(ctx context.Context, fn func(q Querier) ([]string, error)) error {
	return s.inTxPending(ctx, store.TakeEvent(ctx), fn)
}

// inTxPending is inTxEvent with the pending events already taken (nil:
// none), for a write that took them to decide how to run.
func (s *Store) inTxPending(ctx context.Context, p *store.PendingEvent, fn func(q Querier) ([]string, error)) error {
	if p == nil {
		return s.db.InTx(ctx, func(q Querier) error {
			_, err := fn(q)
			return err
		})
	}
	var appended []*model.Event
	err := s.db.InTx(ctx, func(q Querier) error {
		appended = nil
		ids, err := fn(q)
		if err != nil {
			return err
		}
		evs := p.Events(ids)
		for _, e := range evs {
			if _, err := s.appendEvent(ctx, q, e); err != nil {
				return wrap("append event", err)
			}
		}
		appended = evs
		return nil
	})
	if err == nil && len(appended) > 0 {
		p.MarkStored(appended)
	}
	return err
}

// execEvent runs the single-statement write fn with ctx's pending events
// (store.WithEvent): without any it runs as one statement on its own (no
// transaction of its own on the common path); with some, fn and their
// appends run in one transaction, so that the change never commits
// without its record, nor the record without the change.
func (s *Store) execEvent(ctx context.Context, fn func(q Querier) error) error {
	p := store.TakeEvent(ctx)
	if p == nil {
		return fn(s.db.Write())
	}
	return s.inTxPending(ctx, p, func(q Querier) ([]string, error) { return nil, fn(q) })
}

// execPendingIDs is execEvent for a single statement whose record
// depends on what it did (the ids it reports to the pending builder):
// without pending events it runs on its own, outside a transaction.
func (s *Store) execPendingIDs(ctx context.Context, fn func(q Querier) ([]string, error)) error {
	p := store.TakeEvent(ctx)
	if p == nil {
		_, err := fn(s.db.Write())
		return err
	}
	return s.inTxPending(ctx, p, fn)
}
