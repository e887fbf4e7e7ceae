package sqlstore

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- Shared Signals transmitter: streams and the SET outbox ----
//
// Lists of ids are bound as IN lists padded to a few fixed sizes (the last
// value repeated), and multi-row inserts use a few fixed chunk sizes, so
// the number of distinct statements stays small (SQLite prepares and
// caches each one).

const ssfStreamCols = `id, client_id, audience, method, endpoint_url, auth_header, events_requested,
	events_delivered, description, status, status_reason, excluded, created_at, updated_at`

func scanSSFStream(r Row) (*model.SSFStream, error) {
	var (
		st                     model.SSFStream
		aud, req, dlv, exclude string
		created, updated       int64
	)
	if err := r.Scan(&st.ID, &st.ClientID, &aud, &st.Method, &st.EndpointURL, &st.AuthHeaderEnc, &req, &dlv,
		&st.Description, &st.Status, &st.StatusReason, &exclude, &created, &updated); err != nil {
		return nil, err
	}
	var err error
	if st.Audience, err = unjsonList(aud, "stream audience"); err != nil {
		return nil, err
	}
	if st.EventsRequested, err = unjsonList(req, "events_requested"); err != nil {
		return nil, err
	}
	if st.EventsDelivered, err = unjsonList(dlv, "events_delivered"); err != nil {
		return nil, err
	}
	if st.Excluded, err = unjsonList(exclude, "excluded subjects"); err != nil {
		return nil, err
	}
	st.AuthHeaderEnc = unblob(st.AuthHeaderEnc)
	st.CreatedAt, st.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &st, nil
}

func ssfStreamArgs(st *model.SSFStream) []any {
	return []any{st.ID, st.ClientID, jsonList(st.Audience), st.Method, st.EndpointURL, blob(st.AuthHeaderEnc),
		jsonList(st.EventsRequested), jsonList(st.EventsDelivered), st.Description, st.Status, st.StatusReason,
		jsonList(st.Excluded), micros(st.CreatedAt), micros(st.UpdatedAt)}
}

const bumpSSFVersion = `UPDATE ssf_meta SET version = version + 1 WHERE id = 1`

// CreateSSFStream stores a new stream, with ctx's pending events.
func (s *Store) CreateSSFStream(ctx context.Context, st *model.SSFStream) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		_, err := q.Exec(ctx, `INSERT INTO ssf_streams (`+ssfStreamCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, ssfStreamArgs(st)...)
		if err != nil {
			return nil, s.createErr("ssf stream", err)
		}
		_, err = q.Exec(ctx, bumpSSFVersion)
		return nil, wrap("create ssf stream", err)
	})
}

// GetSSFStream returns one stream.
func (s *Store) GetSSFStream(ctx context.Context, id string) (*model.SSFStream, error) {
	st, err := scanSSFStream(s.db.Read().QueryRow(ctx, `SELECT `+ssfStreamCols+` FROM ssf_streams WHERE id = $1`, id))
	return st, s.getErr("ssf stream", err)
}

// ListSSFStreams returns the streams of a client ("" for all), oldest first.
func (s *Store) ListSSFStreams(ctx context.Context, clientID string) ([]*model.SSFStream, error) {
	if clientID == "" {
		rs, err := s.db.Read().Query(ctx, `SELECT `+ssfStreamCols+` FROM ssf_streams ORDER BY created_at, id`)
		return collect(rs, err, "list ssf streams", scanSSFStream)
	}
	rs, err := s.db.Read().Query(ctx, `SELECT `+ssfStreamCols+` FROM ssf_streams WHERE client_id = $1
		ORDER BY created_at, id`, clientID)
	return collect(rs, err, "list ssf streams", scanSSFStream)
}

// UpdateSSFStream applies fn in one transaction; a stream that becomes
// disabled loses its queue.
func (s *Store) UpdateSSFStream(ctx context.Context, id string, fn func(*model.SSFStream) error) (*model.SSFStream, error) {
	var out *model.SSFStream
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		st, err := scanSSFStream(q.QueryRow(ctx, `SELECT `+ssfStreamCols+` FROM ssf_streams WHERE id = $1`+s.d.ForUpdate, id))
		if err != nil {
			return nil, s.getErr("ssf stream", err)
		}
		prev, clientID, created := st.Status, st.ClientID, st.CreatedAt
		if err := fn(st); err != nil {
			return nil, err
		}
		st.ID, st.ClientID, st.CreatedAt = id, clientID, created
		if _, err := q.Exec(ctx, `UPDATE ssf_streams SET client_id = $2, audience = $3, method = $4, endpoint_url = $5,
			auth_header = $6, events_requested = $7, events_delivered = $8, description = $9, status = $10,
			status_reason = $11, excluded = $12, created_at = $13, updated_at = $14 WHERE id = $1`, ssfStreamArgs(st)...); err != nil {
			return nil, wrap("update ssf stream", err)
		}
		if st.Status == model.StreamDisabled && prev != model.StreamDisabled {
			if _, err := q.Exec(ctx, `DELETE FROM ssf_outbox WHERE stream_id = $1 AND state = 0`, id); err != nil {
				return nil, wrap("drop queue of disabled ssf stream", err)
			}
		}
		if _, err := q.Exec(ctx, bumpSSFVersion); err != nil {
			return nil, wrap("update ssf stream", err)
		}
		out = st
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSSFStream deletes a stream and its queue, with ctx's pending
// events (none when the stream was already gone).
func (s *Store) DeleteSSFStream(ctx context.Context, id string) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		n, err := q.Exec(ctx, `DELETE FROM ssf_streams WHERE id = $1`, id)
		if err := deleted("ssf stream", n, err); err != nil {
			return nil, err
		}
		if _, err := q.Exec(ctx, `DELETE FROM ssf_outbox WHERE stream_id = $1`, id); err != nil {
			return nil, wrap("delete ssf stream queue", err)
		}
		_, err = q.Exec(ctx, bumpSSFVersion)
		return nil, wrap("delete ssf stream", err)
	})
}

// SSFStreamsVersion returns the configuration version of all streams.
func (s *Store) SSFStreamsVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.db.Read().QueryRow(ctx, `SELECT version FROM ssf_meta WHERE id = 1`).Scan(&v)
	return v, wrap("ssf streams version", err)
}

// inSizes are the lengths IN lists are padded to; longer lists are split.
var inSizes = [...]int{1, 4, 16, 64, 256}

// inChunks splits vals into IN lists of the sizes in inSizes, padding the
// last one by repeating its last value.
func inChunks[T any](vals []T) [][]T {
	var out [][]T
	for len(vals) > 0 {
		n := min(len(vals), inSizes[len(inSizes)-1])
		size := inSizes[len(inSizes)-1]
		for _, sz := range inSizes {
			if sz >= n {
				size = sz
				break
			}
		}
		chunk := make([]T, size)
		copy(chunk, vals[:n])
		for i := n; i < size; i++ {
			chunk[i] = vals[n-1]
		}
		out = append(out, chunk)
		vals = vals[n:]
	}
	return out
}

// insertSizes are the row counts of multi-row inserts.
var insertSizes = [...]int{64, 8, 1}

const setInsertCols = 10

const setSelectCols = `stream_id, seq, jti, dedup_key, subject_key, event_type, set_jwt, created_at, state, attempts, last_error, visible_at`

func scanSETEntry(r Row) (*store.SETEntry, error) {
	var (
		e                store.SETEntry
		created, visible int64
	)
	if err := r.Scan(&e.StreamID, &e.Seq, &e.JTI, &e.DedupKey, &e.SubjectKey, &e.EventType, &e.SET, &created,
		&e.State, &e.Attempts, &e.LastError, &visible); err != nil {
		return nil, err
	}
	e.CreatedAt, e.HeldUntil = fromMicros(created), fromMicros(visible)
	return &e, nil
}

// EnqueueSETs appends the entries to their streams' queues in one
// transaction, storing entries with HeldUntil as handed out when their
// stream allows it (see store.Store.EnqueueSETs). Each stream row is locked while its sequence numbers are
// taken (PostgreSQL: explicitly and in id order, so concurrent enqueuers
// cannot deadlock), so commits happen in sequence order per stream and a
// reader that sees seq n has seen every lower one.
func (s *Store) EnqueueSETs(ctx context.Context, es []*store.SETEntry) (int, error) {
	return s.enqueueSETs(ctx, "", es)
}

// EnqueueEventSETs is EnqueueSETs for the SETs of one domain event, which
// it records as handled in the same transaction.
func (s *Store) EnqueueEventSETs(ctx context.Context, eventID string, es []*store.SETEntry) (int, error) {
	return s.enqueueSETs(ctx, eventID, es)
}

// SSFEventHandled reports whether EnqueueEventSETs recorded the event.
func (s *Store) SSFEventHandled(ctx context.Context, eventID string) (bool, error) {
	var n int64
	err := s.db.Lookup().QueryRow(ctx, `SELECT COUNT(*) FROM ssf_handled_events WHERE event_id = $1`, eventID).Scan(&n)
	return n > 0, wrap("ssf event handled", err)
}

// LastSSFHandled returns when EnqueueEventSETs last recorded an event
// (zero if never).
func (s *Store) LastSSFHandled(ctx context.Context) (time.Time, error) {
	var t int64
	err := s.db.Read().QueryRow(ctx, `SELECT COALESCE(MAX(handled_at), 0) FROM ssf_handled_events`).Scan(&t)
	return fromMicros(t), wrap("last handled ssf event", err)
}

// UnhandledSSFEvents returns up to limit events of the given types stored
// at or after since that EnqueueEventSETs has not recorded, in sequence
// order.
func (s *Store) UnhandledSSFEvents(ctx context.Context, types []model.EventType, since time.Time, limit int) ([]*store.StoredEvent, error) {
	if len(types) == 0 || limit <= 0 {
		return nil, nil
	}
	args := []any{micros(since), int64(limit)}
	ph := make([]string, len(types))
	for i, t := range types {
		args = append(args, string(t))
		ph[i] = "$" + strconv.Itoa(i+3)
	}
	rs, err := s.db.Read().Query(ctx, `SELECT seq, `+eventSelect+` FROM events e WHERE e.time >= $1 AND e.type IN (`+
		strings.Join(ph, ", ")+`) AND NOT EXISTS (SELECT 1 FROM ssf_handled_events h WHERE h.event_id = e.id)
		ORDER BY seq LIMIT $2`, args...)
	return collect(rs, err, "unhandled ssf events", func(r Row) (*store.StoredEvent, error) { return scanEvent(r) })
}

// PurgeSSFHandled forgets events handled before t.
func (s *Store) PurgeSSFHandled(ctx context.Context, t time.Time) (int64, error) {
	n, err := s.db.Write().Exec(ctx, `DELETE FROM ssf_handled_events WHERE handled_at < $1`, micros(t))
	return n, wrap("purge handled ssf events", err)
}

func (s *Store) enqueueSETs(ctx context.Context, eventID string, es []*store.SETEntry) (int, error) {
	if len(es) == 0 && eventID == "" {
		return 0, nil
	}
	byStream := map[string][]*store.SETEntry{}
	var ids []string
	for _, e := range es {
		if _, ok := byStream[e.StreamID]; !ok {
			ids = append(ids, e.StreamID)
		}
		byStream[e.StreamID] = append(byStream[e.StreamID], e)
	}
	slices.Sort(ids)
	byCount := map[int][]string{}
	var counts []int
	for _, id := range ids {
		n := len(byStream[id])
		if _, ok := byCount[n]; !ok {
			counts = append(counts, n)
		}
		byCount[n] = append(byCount[n], id)
	}
	slices.Sort(counts)
	// Streams whose entries ask to be stored held (handed out to a
	// waiting long poll): those that may are listed in handOff.
	var asked []string
	for _, id := range ids {
		if !byStream[id][0].HeldUntil.IsZero() {
			asked = append(asked, id)
		}
	}
	stored := 0
	inserted := map[store.SETKey]bool{}
	handOff := map[string]bool{}
	err := s.db.InTx(ctx, func(q Querier) error {
		stored = 0
		clear(inserted)
		clear(handOff)
		if eventID != "" {
			// The event's SETs are queued once: by the synchronous path or
			// by a catch-up, whichever commits first. The record is taken
			// first, in the same transaction, so the other finds it (or
			// waits for it, on PostgreSQL) and queues nothing, even when
			// the first SETs were delivered and deleted meanwhile.
			n, err := q.Exec(ctx, `INSERT INTO ssf_handled_events (event_id, handled_at) VALUES ($1, $2)
				ON CONFLICT (event_id) DO NOTHING`, eventID, micros(s.now()))
			if err != nil {
				return wrap("mark ssf event handled", err)
			}
			if n == 0 {
				return nil
			}
		}
		if s.d.ForUpdate != "" {
			for _, chunk := range inChunks(ids) {
				rs, err := q.Query(ctx, `SELECT id FROM ssf_streams WHERE id IN (`+placeholders(1, len(chunk))+`) ORDER BY id`+s.d.ForUpdate, anys(chunk)...)
				if _, err := collect(rs, err, "lock ssf streams", scanString); err != nil {
					return err
				}
			}
		}
		base := make(map[string]int64, len(ids))
		for _, n := range counts {
			for _, chunk := range inChunks(byCount[n]) {
				args := append([]any{int64(n)}, anys(chunk)...)
				rs, err := q.Query(ctx, `UPDATE ssf_streams SET next_seq = next_seq + $1 WHERE id IN (`+placeholders(2, len(chunk))+
					`) AND status <> 'disabled' RETURNING id, next_seq`, args...)
				type idSeq struct {
					id  string
					seq int64
				}
				got, err := collect(rs, err, "enqueue sets", func(r Row) (idSeq, error) {
					var v idSeq
					return v, r.Scan(&v.id, &v.seq)
				})
				if err != nil {
					return err
				}
				for _, v := range got {
					base[v.id] = v.seq - int64(n)
				}
			}
		}
		// A hand-off is allowed only on an enabled poll stream with nothing
		// else queued (neither visible nor held by an earlier poll): the
		// new entries are then the head of the queue, which a poll would
		// hand out in the same way. Checked after the stream rows are
		// locked (PostgreSQL) or on the single writer (SQLite), so no
		// other enqueue can slip rows in between.
		for _, chunk := range inChunks(asked) {
			args := append([]any{model.DeliveryPoll}, anys(chunk)...)
			rs, err := q.Query(ctx, `SELECT id FROM ssf_streams s WHERE id IN (`+placeholders(2, len(chunk))+
				`) AND status = 'enabled' AND method = $1
				AND NOT EXISTS (SELECT 1 FROM ssf_outbox o WHERE o.stream_id = s.id AND o.state = 0)`, args...)
			free, err := collect(rs, err, "enqueue sets: hand-off", scanString)
			if err != nil {
				return err
			}
			for _, id := range free {
				handOff[id] = true
			}
		}
		var rows []*store.SETEntry
		for _, id := range ids {
			b, ok := base[id]
			if !ok {
				continue // gone or disabled
			}
			for i, e := range byStream[id] {
				e.Seq = b + int64(i)
				rows = append(rows, e)
			}
		}
		for len(rows) > 0 {
			size := 1
			for _, sz := range insertSizes {
				if len(rows) >= sz {
					size = sz
					break
				}
			}
			var b strings.Builder
			b.WriteString(`INSERT INTO ssf_outbox (stream_id, seq, jti, dedup_key, subject_key, event_type, set_jwt, created_at,
				visible_at, attempts) VALUES `)
			args := make([]any, 0, size*setInsertCols)
			for i, e := range rows[:size] {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("(" + placeholders(i*setInsertCols+1, setInsertCols) + ")")
				var visible, attempts int64
				if handOff[e.StreamID] && !e.HeldUntil.IsZero() {
					visible, attempts = micros(e.HeldUntil), 1 // as a poll hands it out
				}
				args = append(args, e.StreamID, e.Seq, e.JTI, e.DedupKey, e.SubjectKey, e.EventType, e.SET, micros(e.CreatedAt),
					visible, attempts)
			}
			b.WriteString(` ON CONFLICT (stream_id, dedup_key) DO NOTHING RETURNING stream_id, seq`)
			rs, err := q.Query(ctx, b.String(), args...)
			keys, err := collect(rs, err, "enqueue sets", func(r Row) (store.SETKey, error) {
				var k store.SETKey
				return k, r.Scan(&k.StreamID, &k.Seq)
			})
			if err != nil {
				return err
			}
			for _, k := range keys {
				inserted[k] = true
			}
			stored += len(keys)
			rows = rows[size:]
		}
		return nil
	})
	for _, e := range es {
		if err != nil || !inserted[store.SETKey{StreamID: e.StreamID, Seq: e.Seq}] {
			e.Seq = 0
		}
		if e.Seq == 0 || !handOff[e.StreamID] {
			e.HeldUntil = time.Time{}
		} else if !e.HeldUntil.IsZero() {
			e.Attempts = 1
		}
	}
	if err != nil {
		return 0, err
	}
	return stored, nil
}

func anys[T any](v []T) []any {
	out := make([]any, len(v))
	for i, s := range v {
		out[i] = s
	}
	return out
}

func scanString(r Row) (string, error) {
	var v string
	return v, r.Scan(&v)
}

// QueuedSETs returns queued entries of a stream after a sequence number.
func (s *Store) QueuedSETs(ctx context.Context, streamID string, after int64, n int) ([]*store.SETEntry, error) {
	if n <= 0 {
		n = defaultLimit
	}
	rs, err := s.db.Read().Query(ctx, `SELECT `+setSelectCols+` FROM ssf_outbox
		WHERE stream_id = $1 AND seq > $2 AND state = 0 ORDER BY seq LIMIT $3`, streamID, after, int64(min(n, maxLimit)))
	return collect(rs, err, "queued sets", scanSETEntry)
}

// SSFStreamsWithQueuedSETs returns the streams that have queued entries.
func (s *Store) SSFStreamsWithQueuedSETs(ctx context.Context) ([]string, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT id FROM ssf_streams s
		WHERE EXISTS (SELECT 1 FROM ssf_outbox o WHERE o.stream_id = s.id AND o.state = 0)`)
	return collect(rs, err, "streams with queued sets", scanString)
}

// SSFStreamsWithVisibleSETs returns those of ids with a queued entry not
// held back at now.
func (s *Store) SSFStreamsWithVisibleSETs(ctx context.Context, ids []string, now time.Time) ([]string, error) {
	var out []string
	for _, chunk := range inChunks(ids) {
		args := append([]any{micros(now)}, anys(chunk)...)
		rs, err := s.db.Read().Query(ctx, `SELECT id FROM ssf_streams s WHERE id IN (`+placeholders(2, len(chunk))+`)
			AND EXISTS (SELECT 1 FROM ssf_outbox o WHERE o.stream_id = s.id AND o.state = 0 AND o.visible_at <= $1)`, args...)
		got, err := collect(rs, err, "streams with visible sets", scanString)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// DeleteSETs deletes delivered entries in one transaction.
func (s *Store) DeleteSETs(ctx context.Context, keys []store.SETKey) error {
	if len(keys) == 0 {
		return nil
	}
	if len(keys) == 1 {
		_, err := s.db.Write().Exec(ctx, `DELETE FROM ssf_outbox WHERE stream_id = $1 AND seq = $2`, keys[0].StreamID, keys[0].Seq)
		return wrap("delete sets", err)
	}
	return s.db.InTx(ctx, func(q Querier) error {
		for _, k := range keys {
			if _, err := q.Exec(ctx, `DELETE FROM ssf_outbox WHERE stream_id = $1 AND seq = $2`, k.StreamID, k.Seq); err != nil {
				return wrap("delete sets", err)
			}
		}
		return nil
	})
}

// maxSETError bounds a stored refusal or failure reason.
const maxSETError = 512

func truncateReason(s string) string {
	if len(s) > maxSETError {
		return s[:maxSETError]
	}
	return s
}

// RefuseSET marks a queued entry refused.
func (s *Store) RefuseSET(ctx context.Context, k store.SETKey, reason string) error {
	_, err := s.db.Write().Exec(ctx, `UPDATE ssf_outbox SET state = 2, attempts = attempts + 1, last_error = $3
		WHERE stream_id = $1 AND seq = $2 AND state = 0`, k.StreamID, k.Seq, truncateReason(reason))
	return wrap("refuse set", err)
}

// RecordSETFailure counts a failed attempt.
func (s *Store) RecordSETFailure(ctx context.Context, k store.SETKey, reason string) error {
	_, err := s.db.Write().Exec(ctx, `UPDATE ssf_outbox SET attempts = attempts + 1, last_error = $3
		WHERE stream_id = $1 AND seq = $2`, k.StreamID, k.Seq, truncateReason(reason))
	return wrap("record set failure", err)
}

// PollSETs processes acknowledgements and errors and hands out the next
// queued entries, in one transaction.
func (s *Store) PollSETs(ctx context.Context, streamID string, p store.SETPoll) ([]*store.SETEntry, bool, error) {
	res, err := s.PollSETsBatch(ctx, []store.SETPollRequest{{StreamID: streamID, Poll: p}})
	if err != nil {
		return nil, false, err
	}
	return res[0].Sets, res[0].More, nil
}

// PollSETsBatch runs several polls in one transaction: concurrent long
// polls of many receivers share one commit.
func (s *Store) PollSETsBatch(ctx context.Context, reqs []store.SETPollRequest) ([]store.SETPollResult, error) {
	out := make([]store.SETPollResult, len(reqs))
	err := s.db.InTx(ctx, func(q Querier) error {
		for i, r := range reqs {
			sets, more, err := s.pollOne(ctx, q, r.StreamID, r.Poll)
			if err != nil {
				return err
			}
			out[i] = store.SETPollResult{Sets: sets, More: more}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// keySeq is a subject's first held-back SET.
type keySeq struct {
	key string
	seq int64
}

// pollHeadroom is how many held-back SETs pollHead reads beyond the ones
// it may hand out.
const pollHeadroom = 32

// pollHead reads the head of a stream's queue (visible and held SETs) with
// one query: the first max visible ones (more: there are others), and the
// subjects held back before them. ok is false when the rows read do not
// tell (more than pollHeadroom held SETs in the way): then pollSlow.
func (s *Store) pollHead(ctx context.Context, q Querier, streamID string, now int64, max int) (got []*store.SETEntry, held []keySeq, more, ok bool, err error) {
	limit := max + 1 + pollHeadroom
	rs, err := q.Query(ctx, `SELECT `+setSelectCols+` FROM ssf_outbox WHERE stream_id = $1 AND state = 0
		ORDER BY seq LIMIT $2`+s.d.ForUpdate, streamID, int64(limit))
	rows, err := collect(rs, err, "poll sets", scanSETEntry)
	if err != nil {
		return nil, nil, false, false, err
	}
	var seen map[string]bool
	for _, e := range rows {
		if micros(e.HeldUntil) <= now {
			if len(got) == max {
				more = true
				break
			}
			got = append(got, e)
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		if !seen[e.SubjectKey] {
			seen[e.SubjectKey] = true
			held = append(held, keySeq{e.SubjectKey, e.Seq})
		}
	}
	// Every queued row was read, or max+1 visible ones with every held row
	// before them: either way the answer is complete.
	ok = len(rows) < limit || more
	return got, held, more, ok, nil
}

// pollSlow is pollHead with two queries, whatever the number of held SETs.
func (s *Store) pollSlow(ctx context.Context, q Querier, streamID string, now int64, max int) (got []*store.SETEntry, more bool, held []keySeq, err error) {
	rs, err := q.Query(ctx, `SELECT `+setSelectCols+` FROM ssf_outbox WHERE stream_id = $1 AND state = 0 AND visible_at <= $2
		ORDER BY seq LIMIT $3`+s.d.ForUpdate, streamID, now, int64(max+1))
	got, err = collect(rs, err, "poll sets", scanSETEntry)
	if err != nil {
		return nil, false, nil, err
	}
	if len(got) > max {
		got, more = got[:max], true
	}
	if len(got) == 0 {
		return nil, more, nil, nil
	}
	rs, err = q.Query(ctx, `SELECT subject_key, MIN(seq) FROM ssf_outbox WHERE stream_id = $1 AND state = 0 AND visible_at > $2
		AND seq < $3 GROUP BY subject_key`, streamID, now, got[len(got)-1].Seq)
	held, err = collect(rs, err, "poll sets: held", func(r Row) (keySeq, error) {
		var v keySeq
		return v, r.Scan(&v.key, &v.seq)
	})
	if err != nil {
		return nil, false, nil, err
	}
	return got, more, held, nil
}

// pollOne is one poll inside a transaction. The entries handed out are
// exactly the queued, visible rows in [first, last] (a row with a lower
// seq is committed before one with a higher seq becomes visible, see
// EnqueueSETs), so one ranged UPDATE holds them back.
func (s *Store) pollOne(ctx context.Context, q Querier, streamID string, p store.SETPoll) ([]*store.SETEntry, bool, error) {
	acks := make([]string, 0, len(p.Ack))
	for _, a := range p.Ack {
		if a != "" {
			acks = append(acks, a)
		}
	}
	for _, chunk := range inChunks(acks) {
		args := append([]any{streamID}, anys(chunk)...)
		if _, err := q.Exec(ctx, `DELETE FROM ssf_outbox WHERE stream_id = $1 AND state = 0 AND jti IN (`+
			placeholders(2, len(chunk))+`)`, args...); err != nil {
			return nil, false, wrap("acknowledge sets", err)
		}
	}
	jtis := make([]string, 0, len(p.Errs))
	for j := range p.Errs {
		jtis = append(jtis, j)
	}
	slices.Sort(jtis)
	for _, j := range jtis {
		if _, err := q.Exec(ctx, `UPDATE ssf_outbox SET state = 2, last_error = $3 WHERE stream_id = $1 AND jti = $2 AND state = 0`,
			streamID, j, truncateReason(p.Errs[j])); err != nil {
			return nil, false, wrap("refuse polled sets", err)
		}
	}
	if p.Max <= 0 {
		return nil, false, nil
	}
	now := micros(p.Now)
	got, held, more, ok, err := s.pollHead(ctx, q, streamID, now, p.Max)
	if err != nil {
		return nil, false, err
	}
	if !ok {
		// Many SETs held back at the head of the queue: look for the
		// visible ones and the held subjects separately.
		if got, more, held, err = s.pollSlow(ctx, q, streamID, now, p.Max); err != nil {
			return nil, false, err
		}
	}
	if len(got) == 0 {
		return nil, more, nil
	}
	if len(held) > 0 {
		blocked := make(map[string]int64, len(held))
		for _, h := range held {
			blocked[h.key] = h.seq
		}
		kept := got[:0]
		for _, e := range got {
			if b, ok := blocked[e.SubjectKey]; ok && b < e.Seq {
				continue
			}
			kept = append(kept, e)
		}
		got = kept
		if len(got) == 0 {
			return nil, more, nil
		}
		seqs := make([]int64, len(got))
		for i, e := range got {
			seqs[i] = e.Seq
		}
		for _, chunk := range inChunks(seqs) {
			args := append([]any{streamID, micros(p.Hold)}, anys(chunk)...)
			if _, err := q.Exec(ctx, `UPDATE ssf_outbox SET visible_at = $2, attempts = attempts + 1
				WHERE stream_id = $1 AND seq IN (`+placeholders(3, len(chunk))+`)`, args...); err != nil {
				return nil, false, wrap("hold polled sets", err)
			}
		}
	} else if _, err := q.Exec(ctx, `UPDATE ssf_outbox SET visible_at = $2, attempts = attempts + 1
		WHERE stream_id = $1 AND seq >= $3 AND seq <= $4 AND state = 0 AND visible_at <= $5`,
		streamID, micros(p.Hold), got[0].Seq, got[len(got)-1].Seq, now); err != nil {
		return nil, false, wrap("hold polled sets", err)
	}
	for _, e := range got {
		e.Attempts++
		e.HeldUntil = p.Hold
	}
	return got, more, nil
}

// CountSETs counts a stream's queued and refused entries.
func (s *Store) CountSETs(ctx context.Context, streamID string) (store.SETCounts, error) {
	var queued, refused int64
	err := s.db.Read().QueryRow(ctx, `SELECT COALESCE(SUM(CASE WHEN state = 0 THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN state = 2 THEN 1 ELSE 0 END), 0) FROM ssf_outbox WHERE stream_id = $1`, streamID).Scan(&queued, &refused)
	return store.SETCounts{Queued: int(queued), Refused: int(refused)}, wrap("count sets", err)
}

// PurgeRefusedSETs deletes refused entries created before t.
func (s *Store) PurgeRefusedSETs(ctx context.Context, t time.Time) (int64, error) {
	n, err := s.db.Write().Exec(ctx, `DELETE FROM ssf_outbox WHERE state = 2 AND created_at < $1`, micros(t))
	return n, wrap("purge refused sets", err)
}

// ClaimSSFStreams renews owner's expiring push leases and takes at most
// take free or expired ones (take < 0: all).
//
// Each statement locks its rows in id order first (on PostgreSQL), the
// order EnqueueSETs locks them in: an UPDATE alone locks in scan order,
// and a claim of many streams could deadlock with an enqueue. The rows
// are picked in a CTE, evaluated once (a locking subquery in the WHERE
// may be rescanned and then pick more than take). The outer
// conditions repeat the inner ones: a row another instance took while
// this one waited for its lock is skipped, so a stream never gets two
// owners (this one may take fewer).
func (s *Store) ClaimSSFStreams(ctx context.Context, owner string, now, renewBefore, until time.Time, take int) ([]string, error) {
	if owner == "" {
		return nil, wrap("claim ssf streams", errEmptyOwner)
	}
	if take < 0 {
		const cond = `method = $3 AND status = 'enabled'
			AND ((lease_owner = $1 AND lease_until < $4) OR (lease_owner <> $1 AND lease_until < $5))`
		rs, err := s.db.Write().Query(ctx, `WITH picked AS (SELECT id FROM ssf_streams WHERE `+cond+` ORDER BY id`+s.d.ForUpdate+`)
			UPDATE ssf_streams SET lease_owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM picked) AND `+cond+`
			RETURNING id`, owner, micros(until), model.DeliveryPush, micros(renewBefore), micros(now))
		return collect(rs, err, "claim ssf streams", scanString)
	}
	const renew = `method = $3 AND status = 'enabled' AND lease_owner = $1 AND lease_until < $4`
	rs, err := s.db.Write().Query(ctx, `WITH picked AS (SELECT id FROM ssf_streams WHERE `+renew+` ORDER BY id`+s.d.ForUpdate+`)
		UPDATE ssf_streams SET lease_until = $2 WHERE id IN (SELECT id FROM picked) AND `+renew+`
		RETURNING id`, owner, micros(until), model.DeliveryPush, micros(renewBefore))
	ids, err := collect(rs, err, "claim ssf streams", scanString)
	if err != nil || take == 0 {
		return ids, err
	}
	const free = `method = $3 AND status = 'enabled' AND lease_owner <> $1 AND lease_until < $4`
	rs, err = s.db.Write().Query(ctx, `WITH picked AS (SELECT id FROM ssf_streams WHERE `+free+` ORDER BY id LIMIT $5`+s.d.ForUpdate+`)
		UPDATE ssf_streams SET lease_owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM picked) AND `+free+`
		RETURNING id`, owner, micros(until), model.DeliveryPush, micros(now), take)
	took, err := collect(rs, err, "claim ssf streams", scanString)
	return append(ids, took...), err
}

// ReleaseSSFStreams ends owner's leases (on ids, or all).
func (s *Store) ReleaseSSFStreams(ctx context.Context, owner string, ids ...string) error {
	if len(ids) == 0 {
		_, err := s.db.Write().Exec(ctx, `UPDATE ssf_streams SET lease_owner = '', lease_until = 0 WHERE lease_owner = $1`, owner)
		return wrap("release ssf streams", err)
	}
	for _, id := range ids {
		if _, err := s.db.Write().Exec(ctx, `UPDATE ssf_streams SET lease_owner = '', lease_until = 0 WHERE lease_owner = $1 AND id = $2`, owner, id); err != nil {
			return wrap("release ssf streams", err)
		}
	}
	return nil
}

type storeError string

func (e storeError) Error() string { return string(e) }

const errEmptyOwner = storeError("empty lease owner")
