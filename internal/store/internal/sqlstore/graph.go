package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// scopeKind is one kind of subject of an EventScope: its column, the
// condition that lets the query use the kind's partial index, and the
// GROUP BY order (for users, that of their index, migration 00023, so
// that a user's events are grouped as the index is walked, without a
// sort; sessions go through their user: groupSessions).
type scopeKind struct {
	col     string
	cond    string
	groupBy string
}

var scopeKinds = [4]scopeKind{
	{col: "user_id", groupBy: userGroupBy},
	{col: "session_id", groupBy: "session_id, user_id, ip, device_id, client_id, type, outcome, reason"},
	{col: "device_id", cond: "device_id <> ''", groupBy: "device_id, user_id, session_id, ip, client_id, type, outcome, reason"},
	{col: "ip", cond: "ip <> ''", groupBy: "ip, user_id, session_id, device_id, client_id, type, outcome, reason"},
}

// userGroupBy is the order of events_graph_user.
const userGroupBy = "user_id, session_id, ip, device_id, client_id, type, outcome, reason"

// inList appends vs to *args and returns "($n, ...)".
func inList(vs []string, args *[]any) string {
	ph := make([]string, len(vs))
	for i, v := range vs {
		*args = append(*args, v)
		ph[i] = "$" + strconv.Itoa(len(*args))
	}
	return "(" + strings.Join(ph, ", ") + ")"
}

// groupSessions aggregates the events of the scope's sessions. A
// session's events name its user: those of a stored session are found in
// events_graph_user under (user, session), unless the user is in the
// scope (its query counted them). The events of a session that name no
// user have an index of their own (events_session_nouser, small); the
// events of a session no longer stored are found by events_session.
func (s *Store) groupSessions(ctx context.Context, ids [4][]string, run func(k int, lead []string, args []any, groupBy string) error) error {
	var args []any
	rs, err := s.db.Read().Query(ctx, `SELECT id, user_id FROM sessions WHERE id IN `+inList(ids[1], &args), args...)
	type owner struct{ id, user string }
	owners, err := collect(rs, err, "group events: sessions", func(r Row) (owner, error) {
		var o owner
		return o, r.Scan(&o.id, &o.user)
	})
	if err != nil {
		return err
	}
	byUser := map[string][]string{}
	var users, gone []string
	for _, id := range ids[1] {
		i := slices.IndexFunc(owners, func(o owner) bool { return o.id == id })
		switch {
		case i < 0:
			gone = append(gone, id)
		case slices.Contains(ids[0], owners[i].user):
			// The user's query counted them.
		default:
			u := owners[i].user
			if byUser[u] == nil {
				users = append(users, u)
			}
			byUser[u] = append(byUser[u], id)
		}
	}
	for _, u := range users {
		var a []any
		lead := []string{"user_id IN " + inList([]string{u}, &a), "session_id IN " + inList(byUser[u], &a)}
		if err := run(1, lead, a, userGroupBy); err != nil {
			return err
		}
	}
	var a []any
	if err := run(1, []string{"session_id IN " + inList(ids[1], &a), "user_id IS NULL"}, a, scopeKinds[1].groupBy); err != nil {
		return err
	}
	if len(gone) > 0 {
		a = nil
		if err := run(1, []string{"session_id IN " + inList(gone, &a), "user_id IS NOT NULL"}, a, scopeKinds[1].groupBy); err != nil {
			return err
		}
	}
	return nil
}

// GroupEvents aggregates the events in scope, one query per kind of
// subject. The events a kind selects exclude those an earlier kind
// selected (a session's events that belong to a user of the scope are
// that user's), so every event is counted once. Each query returns its
// groups in the order of its index (so that the database streams them
// from the index: no sort, and a LIMIT it can stop at), at most
// MaxEventGroups+1; the earliest n of all are kept.
func (s *Store) GroupEvents(ctx context.Context, sc store.EventScope, n int) ([]*store.EventGroup, bool, error) {
	switch {
	case n <= 0:
		n = defaultGroups
	case n > store.MaxEventGroups:
		n = store.MaxEventGroups
	}
	ids := [4][]string{dedupe(sc.UserIDs), dedupe(sc.SessionIDs), dedupe(sc.DeviceIDs), dedupe(sc.IPs)}
	if len(ids[0])+len(ids[1])+len(ids[2])+len(ids[3]) > store.MaxScopeSubjects {
		return nil, false, fmt.Errorf("store: group events: more than %d subjects", store.MaxScopeSubjects)
	}
	if sc.Since.IsZero() || sc.Until.IsZero() || !sc.Since.Before(sc.Until) {
		return nil, false, errors.New("store: group events: the window needs a start before its end")
	}
	var out []*store.EventGroup
	more := false
	run := func(k int, lead []string, leadArgs []any, groupBy string) error {
		args := slices.Clone(leadArgs)
		arg := func(v any) string {
			args = append(args, v)
			return "$" + strconv.Itoa(len(args))
		}
		where := slices.Clone(lead)
		where = append(where, "time >= "+arg(micros(sc.Since)), "time < "+arg(micros(sc.Until)))
		for j := range k {
			if len(ids[j]) > 0 {
				where = append(where, "COALESCE("+scopeKinds[j].col+", '') NOT IN "+inList(ids[j], &args))
			}
		}
		q := `SELECT COALESCE(user_id, ''), COALESCE(session_id, ''), COALESCE(client_id, ''), device_id, ip, type, outcome, reason,
			COUNT(*), MIN(time), MAX(time), MIN(seq), MAX(seq) FROM events WHERE ` + strings.Join(where, " AND ") +
			` GROUP BY ` + groupBy + ` ORDER BY ` + groupBy + ` LIMIT ` + arg(int64(store.MaxEventGroups+1))
		if s.d.PlanEachTime != nil {
			args = s.d.PlanEachTime(args)
		}
		rs, err := s.db.Read().Query(ctx, q, args...)
		gs, err := collect(rs, err, "group events", scanEventGroup)
		if err != nil {
			return err
		}
		if len(gs) > store.MaxEventGroups {
			gs, more = gs[:store.MaxEventGroups], true
		}
		out = append(out, gs...)
		return nil
	}
	for k, kind := range scopeKinds {
		if len(ids[k]) == 0 {
			continue
		}
		if k == 1 {
			if err := s.groupSessions(ctx, ids, run); err != nil {
				return nil, false, err
			}
			continue
		}
		var args []any
		lead := []string{kind.col + " IN " + inList(ids[k], &args)}
		if kind.cond != "" {
			lead = append(lead, kind.cond)
		}
		if err := run(k, lead, args, kind.groupBy); err != nil {
			return nil, false, err
		}
	}
	slices.SortFunc(out, func(a, b *store.EventGroup) int { return cmpInt64(a.FirstSeq, b.FirstSeq) })
	if len(out) > n {
		out, more = out[:n], true
	}
	return out, more, nil
}

// defaultGroups is GroupEvents' limit when none is given.
const defaultGroups = 1000

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func scanEventGroup(r Row) (*store.EventGroup, error) {
	var (
		g          store.EventGroup
		typ        string
		first, lst int64
	)
	if err := r.Scan(&g.UserID, &g.SessionID, &g.ClientID, &g.DeviceID, &g.IP, &typ, &g.Outcome, &g.Reason,
		&g.Count, &first, &lst, &g.FirstSeq, &g.LastSeq); err != nil {
		return nil, err
	}
	g.Type = model.EventType(typ)
	g.First, g.Last = fromMicros(first), fromMicros(lst)
	return &g, nil
}

// EventsByID returns the events with the given ids, oldest first.
func (s *Store) EventsByID(ctx context.Context, ids []string) ([]*store.StoredEvent, error) {
	ids = dedupe(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > store.MaxEventLookup {
		return nil, fmt.Errorf("store: events by id: more than %d ids", store.MaxEventLookup)
	}
	args := make([]any, len(ids))
	ph := make([]string, len(ids))
	for i, id := range ids {
		args[i], ph[i] = id, "$"+strconv.Itoa(i+1)
	}
	rs, err := s.db.Read().Query(ctx, `SELECT seq, `+eventSelect+` FROM events WHERE id IN (`+strings.Join(ph, ", ")+`) ORDER BY seq`, args...)
	return collect(rs, err, "events by id", scanEvent)
}

// EventsBySeq returns the events with the given sequence numbers, oldest
// first.
func (s *Store) EventsBySeq(ctx context.Context, seqs []int64) ([]*store.StoredEvent, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	if len(seqs) > store.MaxEventLookup {
		return nil, fmt.Errorf("store: events by seq: more than %d sequence numbers", store.MaxEventLookup)
	}
	args := make([]any, 0, len(seqs))
	ph := make([]string, 0, len(seqs))
	seen := make(map[int64]bool, len(seqs))
	for _, v := range seqs {
		if seen[v] {
			continue
		}
		seen[v] = true
		args = append(args, v)
		ph = append(ph, "$"+strconv.Itoa(len(args)))
	}
	rs, err := s.db.Read().Query(ctx, `SELECT seq, `+eventSelect+` FROM events WHERE seq IN (`+strings.Join(ph, ", ")+`) ORDER BY seq`, args...)
	return collect(rs, err, "events by seq", scanEvent)
}
