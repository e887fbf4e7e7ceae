package sqlstore

import (
	"context"

	"github.com/ward-idp/ward/internal/store"
)

// inTxEvent is s.db.InTx for the writes that commit a change together
// with the domain event recording it (store.WithEvent). When ctx carries
// a pending event that no earlier write took, the change (fn) and the
// event's append run in one transaction, the append last, after fn
// succeeded and only if the event's completion function keeps it (it gets
// the ids fn returns); the event is marked stored once InTx has reported
// the commit. A failing fn or append rolls back both. Without a pending
// event this is s.db.InTx and nothing more.
//
// Everything here runs on the transaction's querier: on SQLite the
// callback runs on the group-commit writer's goroutine, so it must not
// call s.db.Write, s.db.InTx or any Store method (they queue on that same
// writer and would wait for themselves). The completion function is the
// service's and only looks at values. On SQLite the callback may run a
// second time (see sqlite's InTx); appended is reset on every run.
func (s *Store) inTxEvent(ctx context.Context, fn func(q Querier) ([]string, error)) error {
	p := store.TakeEvent(ctx)
	if p == nil {
		return s.db.InTx(ctx, func(q Querier) error {
			_, err := fn(q)
			return err
		})
	}
	appended := false
	err := s.db.InTx(ctx, func(q Querier) error {
		appended = false
		ids, err := fn(q)
		if err != nil || !p.Complete(ids) {
			return err
		}
		if _, err := appendEvent(ctx, q, p.Event()); err != nil {
			return wrap("append event", err)
		}
		appended = true
		return nil
	})
	if err == nil && appended {
		p.MarkStored()
	}
	return err
}
