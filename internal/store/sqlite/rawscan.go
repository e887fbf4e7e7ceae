package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/ward-idp/ward/internal/store"
)

// ScanEventRecords streams the events with their chain links, for the
// audit chain (store.AuditLog). `ward logs verify` reads every event of
// the log this way, so it reads them through SQLite's C API on
// connections of its own instead of database/sql: the driver makes
// several calls per column, each taking the connection's mutex, and
// allocates every value, which cost more than twice the hashing. Here a
// connection is opened without SQLite's mutex (one goroutine uses it at
// a time), each column is read in place and appended to the canonical
// encoding (store.AppendRecordValue, same bytes as the driver's values
// give it), and nothing is allocated per event. The semantics are those
// of sqlstore's: pages of scanPage records by sequence number, no
// transaction held between pages.
func (s *Store) ScanEventRecords(ctx context.Context, sc store.EventScan, fn func(*store.EventRecord) error) error {
	if s.raw == nil {
		return s.Store.ScanEventRecords(ctx, sc, fn)
	}
	rc, err := s.raw.get()
	if err != nil {
		return fmt.Errorf("store: scan event records: %w", err)
	}
	err = rc.scan(ctx, sc, fn)
	s.raw.put(rc, err)
	return err
}

// rawScanSQL selects every column of the events (store.EventColumns) and
// the chain link: ?1 <= seq <= ?2, at most ?3.
const rawScanSQL = `SELECT e.seq, e.id, e.type, e.time, e.actor, e.user_id, e.session_id, e.client_id, e.device_id,
	e.token_id, e.ip, e.user_agent, e.outcome, e.reason, e.binding, e.binding_reason, e.correlation_id, e.data, e.mac,
	c.origin, c.hash FROM events e LEFT JOIN audit_chain c ON c.seq = e.seq
	WHERE e.seq >= ?1 AND e.seq <= ?2 ORDER BY e.seq LIMIT ?3`

// rawScanPage is how many records one execution of rawScanSQL reads.
const rawScanPage = 4096

// rawPool keeps idle raw connections to one database file.
type rawPool struct {
	path string

	mu     sync.Mutex
	idle   []*rawConn
	closed bool
}

const rawIdle = 4

func (p *rawPool) get() (*rawConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("sqlite: store closed")
	}
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	return openRaw(p.path)
}

func (p *rawPool) put(c *rawConn, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil || p.closed || len(p.idle) >= rawIdle {
		c.close()
		return
	}
	p.idle = append(p.idle, c)
}

func (p *rawPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.idle {
		c.close()
	}
	p.idle = nil
}

// rawConn is a read-only connection driven through the C API.
type rawConn struct {
	tls  *libc.TLS
	db   uintptr
	stmt uintptr
	buf  []byte
}

func openRaw(path string) (_ *rawConn, err error) {
	c := &rawConn{tls: libc.NewTLS(), buf: make([]byte, 0, 1024)}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	name, err := libc.CString(path)
	if err != nil {
		return nil, err
	}
	defer libc.Xfree(c.tls, name)
	pp := c.tls.Alloc(int(unsafe.Sizeof(uintptr(0))))
	defer c.tls.Free(int(unsafe.Sizeof(uintptr(0))))
	*(*uintptr)(cptr(pp)) = 0
	// No SQLITE_OPEN_FULLMUTEX: this connection is used by one goroutine
	// at a time (the pool hands it out), so SQLite's own locking of it
	// would only cost time.
	rc := sqlite3.Xsqlite3_open_v2(c.tls, name, pp, sqlite3.SQLITE_OPEN_READWRITE|sqlite3.SQLITE_OPEN_NOMUTEX, 0)
	c.db = *(*uintptr)(cptr(pp))
	if rc != sqlite3.SQLITE_OK {
		return nil, c.err(rc, "open")
	}
	sqlite3.Xsqlite3_busy_timeout(c.tls, c.db, 5000)
	if err := c.exec(`PRAGMA query_only = 1`); err != nil {
		return nil, err
	}
	if c.stmt, err = c.prepare(rawScanSQL, pp); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *rawConn) prepare(q string, pp uintptr) (uintptr, error) {
	zq, err := libc.CString(q)
	if err != nil {
		return 0, err
	}
	defer libc.Xfree(c.tls, zq)
	*(*uintptr)(cptr(pp)) = 0
	if rc := sqlite3.Xsqlite3_prepare_v2(c.tls, c.db, zq, -1, pp, 0); rc != sqlite3.SQLITE_OK {
		return 0, c.err(rc, "prepare")
	}
	return *(*uintptr)(cptr(pp)), nil
}

func (c *rawConn) exec(q string) error {
	zq, err := libc.CString(q)
	if err != nil {
		return err
	}
	defer libc.Xfree(c.tls, zq)
	if rc := sqlite3.Xsqlite3_exec(c.tls, c.db, zq, 0, 0, 0); rc != sqlite3.SQLITE_OK {
		return c.err(rc, q)
	}
	return nil
}

func (c *rawConn) err(rc int32, op string) error {
	msg := libc.GoString(sqlite3.Xsqlite3_errstr(c.tls, rc))
	if c.db != 0 {
		msg = libc.GoString(sqlite3.Xsqlite3_errmsg(c.tls, c.db))
	}
	return fmt.Errorf("sqlite: %s: %s (%d)", op, msg, rc)
}

func (c *rawConn) close() {
	if c.stmt != 0 {
		sqlite3.Xsqlite3_finalize(c.tls, c.stmt)
		c.stmt = 0
	}
	if c.db != 0 {
		sqlite3.Xsqlite3_close_v2(c.tls, c.db)
		c.db = 0
	}
	c.tls.Close()
}

// recordDomain is store.RecordLeaf's domain separator.
const recordDomain = "ward-audit-record-v1\x00"

// scan reads the records in pages (see sqlstore's ScanEventRecords: the
// same paging, including a sequence number held twice across a page
// boundary).
func (c *rawConn) scan(ctx context.Context, sc store.EventScan, fn func(*store.EventRecord) error) error {
	through := sc.Through
	if through <= 0 {
		through = math.MaxInt64
	}
	var rec store.EventRecord
	from, seen := sc.After+1, 0
	nBody := len(store.EventBodyColumns)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		st := c.stmt
		sqlite3.Xsqlite3_reset(c.tls, st)
		sqlite3.Xsqlite3_bind_int64(c.tls, st, 1, from)
		sqlite3.Xsqlite3_bind_int64(c.tls, st, 2, through)
		sqlite3.Xsqlite3_bind_int64(c.tls, st, 3, int64(rawScanPage+seen))
		n, skip, last, lastCount := 0, seen, from, 0
		for {
			rc := sqlite3.Xsqlite3_step(c.tls, st)
			if rc == sqlite3.SQLITE_DONE {
				break
			}
			if rc != sqlite3.SQLITE_ROW {
				return c.fail(rc)
			}
			n++
			rec.Seq = sqlite3.Xsqlite3_column_int64(c.tls, st, 0)
			if skip > 0 && rec.Seq == from {
				skip--
				continue
			}
			if rec.Seq == last {
				lastCount++
			} else {
				last, lastCount = rec.Seq, 1
			}
			// domain || enc(seq) || body || enc(mac): the leaf's input,
			// with the body in the middle.
			b := append(c.buf[:0], recordDomain...)
			b = c.appendColumn(b, st, 0)
			bodyStart := len(b)
			for i := 1; i <= nBody; i++ {
				b = c.appendColumn(b, st, int32(i))
			}
			bodyEnd := len(b)
			b = c.appendColumn(b, st, int32(nBody+1))
			c.buf = b
			rec.Leaf = sha256.Sum256(b)
			rec.Body, rec.MAC = nil, nil
			if sc.Body {
				rec.Body = b[bodyStart:bodyEnd:bodyEnd]
				if sqlite3.Xsqlite3_column_type(c.tls, st, int32(nBody+1)) == sqlite3.SQLITE_BLOB {
					rec.MAC = b[bodyEnd+5:]
				}
			}
			switch sqlite3.Xsqlite3_column_type(c.tls, st, int32(nBody+2)) {
			case sqlite3.SQLITE_NULL:
				rec.Origin = 0
			case sqlite3.SQLITE_INTEGER:
				rec.Origin = int(sqlite3.Xsqlite3_column_int64(c.tls, st, int32(nBody+2)))
			default:
				rec.Origin = -1 // the verifier reports the link as changed
			}
			rec.Hash = c.blob(st, int32(nBody+3))
			if err := fn(&rec); err != nil {
				c.end()
				return err
			}
		}
		c.end()
		if n < rawScanPage+seen {
			return nil
		}
		if last == from {
			seen += lastCount
		} else {
			from, seen = last, lastCount
		}
	}
}

// end resets the statement, which ends its read transaction.
func (c *rawConn) end() { sqlite3.Xsqlite3_reset(c.tls, c.stmt) }

func (c *rawConn) fail(rc int32) error {
	err := c.err(rc, "scan event records")
	c.end()
	return err
}

// appendColumn appends the canonical encoding of column i of the current
// row (store.AppendRecordValue of the value the driver would return).
func (c *rawConn) appendColumn(b []byte, st uintptr, i int32) []byte {
	switch sqlite3.Xsqlite3_column_type(c.tls, st, i) {
	case sqlite3.SQLITE_INTEGER:
		return binary.BigEndian.AppendUint64(append(b, 0x01), uint64(sqlite3.Xsqlite3_column_int64(c.tls, st, i)))
	case sqlite3.SQLITE_TEXT:
		p := sqlite3.Xsqlite3_column_text(c.tls, st, i)
		n := sqlite3.Xsqlite3_column_bytes(c.tls, st, i)
		b = binary.BigEndian.AppendUint32(append(b, 0x02), uint32(n))
		return append(b, view(p, n)...)
	case sqlite3.SQLITE_BLOB:
		p := sqlite3.Xsqlite3_column_blob(c.tls, st, i)
		n := sqlite3.Xsqlite3_column_bytes(c.tls, st, i)
		b = binary.BigEndian.AppendUint32(append(b, 0x03), uint32(n))
		return append(b, view(p, n)...)
	case sqlite3.SQLITE_FLOAT:
		return binary.BigEndian.AppendUint64(append(b, 0x04), math.Float64bits(sqlite3.Xsqlite3_column_double(c.tls, st, i)))
	}
	return append(b, 0x00)
}

// blob returns column i as a view of SQLite's memory (nil for NULL),
// valid until the next step.
func (c *rawConn) blob(st uintptr, i int32) []byte {
	if sqlite3.Xsqlite3_column_type(c.tls, st, i) == sqlite3.SQLITE_NULL {
		return nil
	}
	p := sqlite3.Xsqlite3_column_blob(c.tls, st, i)
	return view(p, sqlite3.Xsqlite3_column_bytes(c.tls, st, i))[:]
}

// cptr turns an address in SQLite's memory (the C heap of modernc's
// libc, which the Go collector neither moves nor frees) into a pointer.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// view is n bytes of SQLite's memory at p.
func view(p uintptr, n int32) []byte {
	if p == 0 || n <= 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(cptr(p)), int(n))
}
