// Package sqlite is Ward's default, embedded store.Store: one database
// file driven by the pure-Go modernc.org/sqlite, with embedded goose
// migrations.
//
// The database runs in WAL mode with synchronous=NORMAL (a commit is
// durable against process crashes; a power loss may lose the last
// transactions but never corrupts the file). All writes go through one
// connection, so writers queue in Go instead of failing with SQLITE_BUSY;
// reads use a pool of query-only connections that WAL lets run alongside
// the writer. Every statement is prepared once per connection and reused.
// A background connection checkpoints the WAL, so the fsyncs of a
// checkpoint stay off the request path.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store on SQLite.
type Store struct {
	*sqlstore.Store
	db     *database
	events *eventWriter // group commit of AppendEvent (groupcommit.go)
}

var _ store.Store = (*Store)(nil)

type options struct {
	now             func() time.Time
	busyTimeout     time.Duration
	readConns       int
	checkpointEvery time.Duration
}

// Option configures Open.
type Option func(*options)

// WithClock sets the clock RecordJTI uses to decide whether a stored key
// has expired (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process on the same file (default 5s).
func WithBusyTimeout(d time.Duration) Option { return func(o *options) { o.busyTimeout = d } }

// WithReadConns sets the size of the read pool (default max(4, GOMAXPROCS)).
func WithReadConns(n int) Option { return func(o *options) { o.readConns = n } }

// WithCheckpointInterval sets how often the background checkpointer
// copies the WAL into the database file (default 250ms).
func WithCheckpointInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.checkpointEvery = d
		}
	}
}

// Open opens (creating if needed) the database file at path and migrates
// it to the current schema. The path ":memory:" gives a private in-memory
// database on a single connection, for tests.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{busyTimeout: 5 * time.Second, readConns: max(4, runtime.GOMAXPROCS(0)), checkpointEvery: 250 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	memory := path == ":memory:"

	common := url.Values{}
	common.Add("_pragma", "busy_timeout("+strconv.FormatInt(o.busyTimeout.Milliseconds(), 10)+")")
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "temp_store(memory)")

	wq := cloneValues(common)
	if !memory {
		wq.Add("_pragma", "journal_mode(WAL)")
	}
	wq.Add("_pragma", "synchronous(NORMAL)")
	if !memory {
		// Checkpoints (copying the WAL back into the database, with two
		// fsyncs) run on a background connection; the writer checkpoints
		// itself only if that falls far behind.
		wq.Add("_pragma", "wal_autocheckpoint("+strconv.Itoa(writerCheckpointPages)+")")
		wq.Add("_pragma", "journal_size_limit("+strconv.Itoa(64<<20)+")")
	}
	wq.Set("_txlock", "immediate") // take the write lock at BEGIN: no upgrade deadlocks
	wdb, err := sql.Open("sqlite", dsn(path, wq))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := wdb.PingContext(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	if err := migrate(ctx, wdb); err != nil {
		wdb.Close()
		return nil, err
	}

	rdb := wdb
	if !memory {
		rq := cloneValues(common)
		rq.Add("_pragma", "query_only(1)")
		rdb, err = sql.Open("sqlite", dsn(path, rq))
		if err != nil {
			wdb.Close()
			return nil, fmt.Errorf("sqlite: open: %w", err)
		}
		rdb.SetMaxOpenConns(o.readConns)
		rdb.SetMaxIdleConns(o.readConns)
		rdb.SetConnMaxLifetime(0)
		rdb.SetConnMaxIdleTime(0)
	}

	db := &database{w: newPool(wdb), r: newPool(rdb)}
	if !memory {
		cq := cloneValues(common)
		cq.Add("_pragma", "synchronous(NORMAL)")
		cdb, err := sql.Open("sqlite", dsn(path, cq))
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlite: open: %w", err)
		}
		cdb.SetMaxOpenConns(1)
		db.checkpointer = newCheckpointer(cdb, o.checkpointEvery)
	}
	d := sqlstore.Dialect{IsUniqueViolation: isUniqueViolation, IsNoRows: isNoRows}
	ss := sqlstore.New(db, d, o.now)
	return &Store{Store: ss, db: db, events: newEventWriter(ss.AppendEvent, ss.AppendEvents)}, nil
}

// AppendEvent stores e and returns its sequence number. Concurrent calls
// share a transaction (group commit, see groupcommit.go); each returns
// once its own event is committed.
func (s *Store) AppendEvent(ctx context.Context, e *model.Event) (int64, error) {
	return s.events.append(ctx, e)
}

// Close writes the events already queued and releases the database;
// calling it again is a no-op.
func (s *Store) Close() error {
	s.events.close()
	return s.Store.Close()
}

func dsn(path string, q url.Values) string { return path + "?" + q.Encode() }

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func migrate(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys)
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// database implements sqlstore.DB over a write pool of one connection and
// a read pool.
type database struct {
	w, r         *pool
	checkpointer *checkpointer
	closed       atomic.Bool
}

// writerCheckpointPages is the WAL size (in pages) at which the writer
// checkpoints by itself: a safety net for a stalled background
// checkpointer (64 MiB with 4 KiB pages).
const writerCheckpointPages = 16384

// checkpointer runs PASSIVE checkpoints on its own connection. A passive
// checkpoint takes no writer lock, so commits never wait for its fsyncs.
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	done chan struct{}
}

func newCheckpointer(db *sql.DB, every time.Duration) *checkpointer {
	c := &checkpointer{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run(every)
	return c
}

func (c *checkpointer) run(every time.Duration) {
	defer close(c.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			// Errors (e.g. SQLITE_BUSY during another checkpoint) only
			// postpone the work to the next tick.
			_, _ = c.db.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		}
	}
}

func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.db.Close()
}

func (d *database) Read() sqlstore.Querier  { return d.r }
func (d *database) Write() sqlstore.Querier { return d.w }

func (d *database) Ping(ctx context.Context) error {
	if err := d.w.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close releases the database; calling it again is a no-op.
func (d *database) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if d.checkpointer != nil {
		err = d.checkpointer.close()
	}
	err = errors.Join(err, d.w.close())
	if d.r != d.w {
		err = errors.Join(err, d.r.close())
	}
	return err
}

// InTx runs fn in a BEGIN IMMEDIATE transaction on the write connection.
// Statements the pool has prepared are reused inside the transaction;
// new ones run unprepared and are prepared once the connection is free.
func (d *database) InTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	tx, err := d.w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	q := &txQuerier{tx: tx, p: d.w}
	if err := fn(q); err != nil {
		_ = tx.Rollback()
		d.w.prepareMissed(ctx, q.missed)
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	d.w.prepareMissed(ctx, q.missed)
	return nil
}

// maxStmts bounds the statement cache; dynamic list queries beyond it run
// unprepared.
const maxStmts = 256

// pool is a *sql.DB with a cache of prepared statements.
type pool struct {
	db    *sql.DB
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

func newPool(db *sql.DB) *pool { return &pool{db: db, stmts: make(map[string]*sql.Stmt)} }

func (p *pool) cached(q string) *sql.Stmt {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.stmts[q]
}

// stmt returns the prepared statement for q, preparing it if needed, or
// nil when the cache is full. It must not be called while this pool's
// only connection is held by a transaction of the calling goroutine. The
// lock is not held while preparing: a transaction on another goroutine
// may hold the connection and need the cache to finish.
func (p *pool) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	p.mu.RLock()
	st, full := p.stmts[q], len(p.stmts) >= maxStmts
	p.mu.RUnlock()
	if st != nil || full {
		return st, nil
	}
	st, err := p.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev := p.stmts[q]; prev != nil || p.stmts == nil {
		st.Close()
		if prev == nil {
			return nil, errors.New("sqlite: store closed")
		}
		return prev, nil
	}
	p.stmts[q] = st
	return st, nil
}

func (p *pool) prepareMissed(ctx context.Context, qs []string) {
	for _, q := range qs {
		_, _ = p.stmt(context.WithoutCancel(ctx), q) // an error here resurfaces on next use
	}
}

func (p *pool) close() error {
	p.mu.Lock()
	for _, st := range p.stmts {
		st.Close()
	}
	p.stmts = nil
	p.mu.Unlock()
	return p.db.Close()
}

func (p *pool) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	st, err := p.stmt(ctx, q)
	if err != nil {
		return 0, err
	}
	var res sql.Result
	if st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = p.db.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (p *pool) Query(ctx context.Context, q string, args ...any) (sqlstore.Rows, error) {
	st, err := p.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	if st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.db.QueryContext(ctx, q, args...)
}

func (p *pool) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	st, err := p.stmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	if st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.db.QueryRowContext(ctx, q, args...)
}

// txQuerier runs statements inside a transaction.
type txQuerier struct {
	tx     *sql.Tx
	p      *pool
	missed []string
}

func (t *txQuerier) stmt(ctx context.Context, q string) *sql.Stmt {
	if st := t.p.cached(q); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	t.missed = append(t.missed, q)
	return nil
}

func (t *txQuerier) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	var (
		res sql.Result
		err error
	)
	if st := t.stmt(ctx, q); st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = t.tx.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *txQuerier) Query(ctx context.Context, q string, args ...any) (sqlstore.Rows, error) {
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

func (t *txQuerier) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
