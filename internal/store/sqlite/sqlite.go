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

	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store on SQLite.
type Store struct {
	*sqlstore.Store
	db  *database
	now func() time.Time
	// jtisBefore is the latest expiry of the keys recorded before Open:
	// RecordJTIDeferred reads the database only until then.
	jtisBefore time.Time
	// raw reads the events for the audit chain (rawscan.go); nil for
	// ":memory:", which no other connection can see.
	raw *rawPool
}

// Close releases the connections; calling it again is a no-op.
func (s *Store) Close() error {
	if s.raw != nil {
		s.raw.close()
	}
	return s.Store.Close()
}

var (
	_ store.Store        = (*Store)(nil)
	_ store.DeferredJTIs = (*Store)(nil)
)

// RecordJTIDeferred implements store.DeferredJTIs: a read refuses a key
// committed before, and the insert is a deferred operation of the
// group-commit writer (groupcommit.go), written within deferWait with
// the others queued meanwhile in one transaction, instead of a commit of
// its own on the caller's path. The keys this process recorded are the
// caller's to refuse, so the read is needed only while a key recorded
// before Open may be unexpired (minutes after a restart; never on a new
// database). A key that another writer recorded meanwhile is left as it
// is.
func (s *Store) RecordJTIDeferred(ctx context.Context, key string, exp time.Time) error {
	if s.now().Before(s.jtisBefore) {
		seen, err := s.HasJTI(ctx, key)
		if err != nil {
			return err
		}
		if seen {
			return store.ErrReplay
		}
	}
	s.db.writer.later(func(q sqlstore.Querier) error {
		if err := s.RecordJTIOn(context.Background(), q, key, exp); err != nil && !errors.Is(err, store.ErrReplay) {
			return err
		}
		return nil
	})
	return nil
}

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
	db.run = &sqlRunner{p: db.w}
	db.writer = newWriter(db.run)
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
	st := &Store{Store: ss, db: db, now: o.now}
	if st.now == nil {
		st.now = time.Now
	}
	if st.jtisBefore, err = ss.LatestJTIExpiry(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if !memory {
		st.raw = &rawPool{path: path}
	}
	return st, nil
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

// database implements sqlstore.DB over a write pool of one connection,
// driven only by the group-commit writer (groupcommit.go), and a read
// pool.
type database struct {
	w, r         *pool
	run          *sqlRunner
	writer       *writer
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

func (d *database) Read() sqlstore.Querier { return d.r }

// Lookup returns the querier of point reads on the request path. They
// run on the write connection when the writer is idle, and on the read
// pool otherwise: a read connection reloads every page a read touches
// once the WAL changed since its last read, which under a steady stream
// of commits is every time (a lookup of a refresh token with its session
// and user costs about three times as much), while the write connection
// made those changes itself and its cache stays valid. An idle writer
// does not wait for the read pool, and a busy one is never waited for.
func (d *database) Lookup() sqlstore.Querier { return lookupQuerier{d} }

// Write returns the querier of single-statement writes; each statement
// is an operation of the group-commit writer.
func (d *database) Write() sqlstore.Querier { return writeQuerier{d.writer} }

func (d *database) Ping(ctx context.Context) error {
	if err := d.w.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close runs the writes already queued, then releases the database;
// calling it again is a no-op.
func (d *database) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	d.writer.close()
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

// InTx runs fn atomically as one operation of the group-commit writer:
// in a BEGIN IMMEDIATE transaction of its own, or in a savepoint of a
// transaction it shares with the writes that arrived with it. fn may run
// a second time (alone) if a shared transaction fails as a whole, so it
// must have no effects besides its statements and its results.
func (d *database) InTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return d.writer.do(ctx, true, fn)
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

// txQuerier runs statements inside a transaction of the writer. It
// ignores the callers' contexts: an interrupted statement would roll back
// the whole transaction, which other callers' operations share; an
// operation, once started, runs to completion. Statements the pool has
// prepared are reused; new ones run unprepared and are prepared once the
// connection is free.
type txQuerier struct {
	tx      *sql.Tx
	p       *pool
	aborted *atomic.Bool // set when SQLite rolled the transaction back by itself
	missed  []string
}

var bg = context.Background()

func (t *txQuerier) stmt(q string) *sql.Stmt {
	if st := t.p.cached(q); st != nil {
		return t.tx.StmtContext(bg, st)
	}
	t.missed = append(t.missed, q)
	return nil
}

func (t *txQuerier) Exec(_ context.Context, q string, args ...any) (int64, error) {
	if t.aborted.Load() {
		return 0, errTxAborted
	}
	var (
		res sql.Result
		err error
	)
	if st := t.stmt(q); st != nil {
		res, err = st.ExecContext(bg, args...)
	} else {
		res, err = t.tx.ExecContext(bg, q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *txQuerier) Query(_ context.Context, q string, args ...any) (sqlstore.Rows, error) {
	if t.aborted.Load() {
		return nil, errTxAborted
	}
	if st := t.stmt(q); st != nil {
		return st.QueryContext(bg, args...)
	}
	return t.tx.QueryContext(bg, q, args...)
}

func (t *txQuerier) QueryRow(_ context.Context, q string, args ...any) sqlstore.Row {
	if t.aborted.Load() {
		return errRow{errTxAborted}
	}
	if st := t.stmt(q); st != nil {
		return st.QueryRowContext(bg, args...)
	}
	return t.tx.QueryRowContext(bg, q, args...)
}

// autoQuerier runs single statements in autocommit mode on the write
// pool, with the writer's context (see txQuerier).
type autoQuerier struct{ p *pool }

func (a autoQuerier) Exec(_ context.Context, q string, args ...any) (int64, error) {
	return a.p.Exec(bg, q, args...)
}

func (a autoQuerier) Query(_ context.Context, q string, args ...any) (sqlstore.Rows, error) {
	return a.p.Query(bg, q, args...)
}

func (a autoQuerier) QueryRow(_ context.Context, q string, args ...any) sqlstore.Row {
	return a.p.QueryRow(bg, q, args...)
}

// lookupQuerier serves Lookup (QueryRow only).
type lookupQuerier struct{ d *database }

func (q lookupQuerier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return lookupRow{q.d, ctx, query, args}
}

func (q lookupQuerier) Exec(context.Context, string, ...any) (int64, error) {
	return 0, errors.New("sqlite: Exec on the lookup querier")
}

func (q lookupQuerier) Query(context.Context, string, ...any) (sqlstore.Rows, error) {
	return nil, errors.New("sqlite: Query on the lookup querier")
}

type lookupRow struct {
	d     *database
	ctx   context.Context
	query string
	args  []any
}

// Scan runs the query, on the write connection if the writer is not
// using it. Outside the writer's transactions that connection reads
// committed data, as a read connection does.
func (r lookupRow) Scan(dest ...any) error {
	if r.d.run.mu.TryLock() {
		defer r.d.run.mu.Unlock()
		return r.d.w.QueryRow(r.ctx, r.query, r.args...).Scan(dest...)
	}
	return r.d.r.QueryRow(r.ctx, r.query, r.args...).Scan(dest...)
}

// sqlRunner runs the writer's operations on the write connection.
type sqlRunner struct {
	p *pool
	// mu is held while the writer uses the write connection (lookups
	// take it when it is free).
	mu sync.Mutex
	// hooked is the driver connection whose rollback hook sets aborted.
	hooked  any
	aborted atomic.Bool
}

func (r *sqlRunner) alone(op *writeOp) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !op.multi {
		op.err = op.run(autoQuerier{r.p})
		return
	}
	if err := r.tx([]*writeOp{op}); err != nil {
		op.err = err
	}
}

func (r *sqlRunner) together(ops []*writeOp) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tx(ops)
}

// tx runs ops in one BEGIN IMMEDIATE transaction and commits it. A lone
// operation that fails rolls the transaction back and keeps its own
// error; operations sharing the transaction are isolated by savepoints.
// The error is for the transaction as a whole (nothing committed).
func (r *sqlRunner) tx(ops []*writeOp) error {
	var missed []string
	err := r.withConn(func(conn *sql.Conn) error {
		tx, err := conn.BeginTx(bg, nil)
		if err != nil {
			return fmt.Errorf("sqlite: begin: %w", err)
		}
		r.aborted.Store(false)
		q := &txQuerier{tx: tx, p: r.p, aborted: &r.aborted}
		defer func() { missed = q.missed }()
		shared := len(ops) > 1
		for _, op := range ops {
			if err := r.runOp(q, op, shared); err != nil {
				_ = tx.Rollback()
				return err
			}
		}
		if !shared && ops[0].err != nil {
			_ = tx.Rollback()
			return nil
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("sqlite: commit: %w", err)
		}
		return nil
	})
	r.p.prepareMissed(bg, missed)
	return err
}

// runOp runs op in the transaction of q, inside a savepoint when it
// shares the transaction and may run several statements (a single
// statement is atomic by itself). It returns an error when the
// transaction can no longer be committed.
func (r *sqlRunner) runOp(q *txQuerier, op *writeOp, shared bool) error {
	sp := shared && op.multi
	if sp {
		if _, err := q.Exec(bg, `SAVEPOINT op`); err != nil {
			return err
		}
	}
	op.err = op.run(q)
	if sp {
		if op.err != nil {
			if _, err := q.Exec(bg, `ROLLBACK TO op`); err != nil {
				return err
			}
		}
		if _, err := q.Exec(bg, `RELEASE op`); err != nil {
			return err
		}
	}
	if r.aborted.Load() && (shared || op.err == nil) {
		return errTxAborted
	}
	return nil
}

// withConn runs fn with the write connection, its rollback hook in place.
func (r *sqlRunner) withConn(fn func(*sql.Conn) error) error {
	conn, err := r.p.db.Conn(bg)
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	defer conn.Close()
	if err := conn.Raw(r.hook); err != nil {
		return err
	}
	return fn(conn)
}

// hook registers, once per driver connection, the rollback hook that
// tells the writer SQLite ended a transaction by itself.
func (r *sqlRunner) hook(dc any) error {
	if dc == r.hooked {
		return nil
	}
	h, ok := dc.(sqlite.HookRegisterer)
	if !ok {
		return errors.New("sqlite: the driver connection cannot report rollbacks")
	}
	h.RegisterRollbackHook(func() { r.aborted.Store(true) })
	r.hooked = dc
	return nil
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
