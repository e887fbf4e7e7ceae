package sqlstore

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// bodyPool holds the buffers event bodies are encoded into for their
// record MAC.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// SetRecordMAC sets the function whose result every appended event
// stores in its mac column.
func (s *Store) SetRecordMAC(mac func(body []byte) []byte) {
	if mac == nil {
		s.recordMAC.Store(nil)
		return
	}
	s.recordMAC.Store(&mac)
}

// scanPage is how many records one query of ScanEventRecords reads.
const scanPage = 4096

// scanEventsSQL reads the records with $1 <= seq <= $2, at most $3, each
// with its chain link.
var scanEventsSQL = `SELECT e.seq, ` + qualify("e", eventCols) + `, e.mac, c.origin, c.hash
	FROM events e LEFT JOIN audit_chain c ON c.seq = e.seq
	WHERE e.seq >= $1 AND e.seq <= $2 ORDER BY e.seq LIMIT $3`

// ScanEventRecords streams the stored events in sequence order, in
// pages, encoding each row's columns (store.AppendEventBody) as read.
// (The SQLite store reads them through SQLite's C API instead, for speed:
// sqlite's rawscan.go.)
func (s *Store) ScanEventRecords(ctx context.Context, sc store.EventScan, fn func(*store.EventRecord) error) error {
	through := sc.Through
	if through <= 0 {
		through = math.MaxInt64
	}
	var (
		rec    store.EventRecord
		origin any
		mac    any
		buf    []byte
		vals   = make([]any, len(store.EventBodyColumns))
		dest   = []any{&rec.Seq}
	)
	for i := range vals {
		dest = append(dest, &vals[i])
	}
	dest = append(dest, &mac, &origin, &rec.Hash)

	// Pages continue at the last sequence number read (>=), skipping the
	// rows of it already delivered: a sequence number held twice (a
	// duplicate the verifier must see) is not lost at a page boundary.
	from, seen := sc.After+1, 0
	for {
		rs, err := s.db.Read().Query(ctx, scanEventsSQL, from, through, int64(scanPage+seen))
		if err != nil {
			return wrap("scan event records", err)
		}
		n, skip, last, lastCount := 0, seen, from, 0
		for rs.Next() {
			n++
			rec.Body, rec.MAC, rec.Hash, origin, mac = nil, nil, nil, nil, nil
			if err := rs.Scan(dest...); err != nil {
				rs.Close()
				return wrap("scan event records", err)
			}
			if skip > 0 && rec.Seq == from {
				skip--
				continue
			}
			if rec.Seq == last {
				lastCount++
			} else {
				last, lastCount = rec.Seq, 1
			}
			switch o := origin.(type) {
			case int64:
				rec.Origin = int(o)
			case nil:
				rec.Origin = 0
			default:
				rec.Origin = -1 // not an integer: the verifier reports the link as changed
			}
			buf = store.AppendEventBody(buf[:0], vals...)
			rec.Leaf = store.RecordLeaf(rec.Seq, buf, mac)
			if sc.Body {
				rec.Body = buf
				if m, ok := mac.([]byte); ok {
					rec.MAC = m // a mac that is not a blob is none (the leaf keeps what it was)
				}
			}
			if err := fn(&rec); err != nil {
				rs.Close()
				return err
			}
		}
		if err := rs.Err(); err != nil {
			rs.Close()
			return wrap("scan event records", err)
		}
		if err := rs.Close(); err != nil {
			return wrap("scan event records", err)
		}
		if n < scanPage+seen {
			return nil
		}
		if last == from {
			seen += lastCount
		} else {
			from, seen = last, lastCount
		}
	}
}

// InsertEventAt stores e under a sequence number nothing holds.
func (s *Store) InsertEventAt(ctx context.Context, seq int64, e *model.Event) (bool, error) {
	args := append([]any{seq}, s.eventValues(e)...)
	n, err := s.db.Write().Exec(ctx, `INSERT INTO events (seq, `+eventCols+`, mac)`+s.d.OverridingSystemValue+`
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
		ON CONFLICT (seq) DO NOTHING`, args...)
	if err != nil {
		return false, wrap("insert event at "+strconv.FormatInt(seq, 10), err)
	}
	return n == 1, nil
}

// AuditChainHead returns the highest chain link.
func (s *Store) AuditChainHead(ctx context.Context) (*store.ChainLink, error) {
	var l store.ChainLink
	err := s.db.Read().QueryRow(ctx, `SELECT seq, origin, hash FROM audit_chain ORDER BY seq DESC LIMIT 1`).
		Scan(&l.Seq, &l.Origin, &l.Hash)
	if err != nil {
		return nil, s.getErr("audit chain head", err)
	}
	return &l, nil
}

// AuditChainStart returns the lowest sealed sequence number and the last
// event written before the chain existed.
func (s *Store) AuditChainStart(ctx context.Context) (first, legacyThrough int64, err error) {
	err = s.db.Read().QueryRow(ctx, `SELECT COALESCE((SELECT MIN(seq) FROM audit_chain), 0),
		COALESCE((SELECT legacy_through FROM audit_chain_state WHERE id = 1), 0)`).Scan(&first, &legacyThrough)
	return first, legacyThrough, wrap("audit chain start", err)
}

// sealChunks are the row counts of the INSERTs SealEvents uses: a batch
// is cut into these (largest first), so that only this many statement
// texts exist to prepare.
var sealChunks = []int{256, 64, 16, 4, 1}

func sealInsert(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_chain (seq, origin, hash) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(" + placeholders(3*i+1, 3) + ")")
	}
	return b.String()
}

var sealInserts = func() map[int]string {
	m := map[int]string{}
	for _, n := range sealChunks {
		m[n] = sealInsert(n)
	}
	return m
}()

// SealEvents stores chain links in one transaction.
func (s *Store) SealEvents(ctx context.Context, links []store.ChainLink) error {
	if len(links) == 0 {
		return nil
	}
	err := s.db.InTx(ctx, func(q Querier) error {
		rest := links
		for len(rest) > 0 {
			n := 1
			for _, c := range sealChunks {
				if c <= len(rest) {
					n = c
					break
				}
			}
			args := make([]any, 0, 3*n)
			for _, l := range rest[:n] {
				args = append(args, l.Seq, int64(l.Origin), l.Hash)
			}
			if _, err := q.Exec(ctx, sealInserts[n], args...); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	if err != nil && s.d.IsUniqueViolation(err) {
		return alreadyExists("audit chain link")
	}
	return wrap("seal events", err)
}

const checkpointCols = `seq, hash, created_at, kid, jws`

func scanCheckpoint(r Row) (*store.AuditCheckpoint, error) {
	var (
		cp store.AuditCheckpoint
		t  int64
	)
	if err := r.Scan(&cp.Seq, &cp.Hash, &t, &cp.KID, &cp.JWS); err != nil {
		return nil, err
	}
	cp.CreatedAt = fromMicros(t)
	return &cp, nil
}

// CreateAuditCheckpoint stores a checkpoint.
func (s *Store) CreateAuditCheckpoint(ctx context.Context, cp *store.AuditCheckpoint) error {
	_, err := s.db.Write().Exec(ctx, `INSERT INTO audit_checkpoints (`+checkpointCols+`) VALUES ($1, $2, $3, $4, $5)`,
		cp.Seq, cp.Hash, micros(cp.CreatedAt), cp.KID, cp.JWS)
	return s.createErr("audit checkpoint", err)
}

// AuditCheckpoints returns checkpoints in a range, ascending.
func (s *Store) AuditCheckpoints(ctx context.Context, after, through int64, n int) ([]*store.AuditCheckpoint, error) {
	if through <= 0 {
		through = math.MaxInt64
	}
	if n <= 0 {
		n = math.MaxInt32
	}
	rs, err := s.db.Read().Query(ctx, `SELECT `+checkpointCols+` FROM audit_checkpoints WHERE seq > $1 AND seq <= $2
		ORDER BY seq LIMIT $3`, after, through, int64(n))
	return collect(rs, err, "list audit checkpoints", scanCheckpoint)
}

// LatestAuditCheckpoint returns the newest checkpoint.
func (s *Store) LatestAuditCheckpoint(ctx context.Context) (*store.AuditCheckpoint, error) {
	cp, err := scanCheckpoint(s.db.Read().QueryRow(ctx, `SELECT `+checkpointCols+` FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`))
	if err != nil {
		return nil, s.getErr("audit checkpoint", err)
	}
	return cp, nil
}

// PutAuditKey records a checkpoint key once.
func (s *Store) PutAuditKey(ctx context.Context, k *store.AuditKey) error {
	_, err := s.db.Write().Exec(ctx, `INSERT INTO audit_keys (kid, public_enc, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (kid) DO NOTHING`, k.KID, k.PublicEnc, micros(k.CreatedAt))
	return wrap("put audit key", err)
}

// ListAuditKeys returns the checkpoint keys, oldest first.
func (s *Store) ListAuditKeys(ctx context.Context) ([]*store.AuditKey, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT kid, public_enc, created_at FROM audit_keys ORDER BY created_at, kid`)
	return collect(rs, err, "list audit keys", func(r Row) (*store.AuditKey, error) {
		var (
			k store.AuditKey
			t int64
		)
		err := r.Scan(&k.KID, &k.PublicEnc, &t)
		k.CreatedAt = fromMicros(t)
		return &k, err
	})
}

// AuditSecret returns a sealed secret, creating it once.
func (s *Store) AuditSecret(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	get := func() ([]byte, error) {
		var v []byte
		err := s.db.Write().QueryRow(ctx, `SELECT value_enc FROM audit_secrets WHERE name = $1`, name).Scan(&v)
		return v, err
	}
	v, err := get()
	if err == nil {
		return v, nil
	}
	if !s.d.IsNoRows(err) {
		return nil, wrap("get audit secret", err)
	}
	nv, err := create()
	if err != nil {
		return nil, err
	}
	if _, err := s.db.Write().Exec(ctx, `INSERT INTO audit_secrets (name, value_enc) VALUES ($1, $2)
		ON CONFLICT (name) DO NOTHING`, name, nv); err != nil {
		return nil, wrap("create audit secret", err)
	}
	v, err = get()
	return v, wrap("get audit secret", err)
}

// DeleteAuditSegment deletes the events and links up to through and the
// checkpoints below it.
func (s *Store) DeleteAuditSegment(ctx context.Context, through int64) (int, error) {
	var n int64
	err := s.db.InTx(ctx, func(q Querier) error {
		var err error
		if n, err = q.Exec(ctx, `DELETE FROM events WHERE seq <= $1`, through); err != nil {
			return err
		}
		if _, err = q.Exec(ctx, `DELETE FROM audit_chain WHERE seq <= $1`, through); err != nil {
			return err
		}
		_, err = q.Exec(ctx, `DELETE FROM audit_checkpoints WHERE seq < $1`, through)
		return err
	})
	if err != nil {
		return 0, wrap("delete audit segment", err)
	}
	return int(n), nil
}

// EventSeqAt finds the event at a time boundary.
func (s *Store) EventSeqAt(ctx context.Context, t time.Time, first bool) (int64, error) {
	q := `SELECT seq FROM events WHERE time >= $1 ORDER BY time, seq LIMIT 1`
	if !first {
		q = `SELECT seq FROM events WHERE time < $1 ORDER BY time DESC, seq DESC LIMIT 1`
	}
	var seq int64
	if err := s.db.Read().QueryRow(ctx, q, micros(t)).Scan(&seq); err != nil {
		return 0, s.getErr("event at "+t.UTC().Format(time.RFC3339), err)
	}
	return seq, nil
}

// CountEventsAfter counts the events after seq.
func (s *Store) CountEventsAfter(ctx context.Context, seq int64) (int64, error) {
	var n int64
	err := s.db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE seq > $1`, seq).Scan(&n)
	return n, wrap("count events", err)
}
