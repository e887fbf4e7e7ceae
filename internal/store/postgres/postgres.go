// Package postgres is Ward's store.Store on PostgreSQL, for deployments
// that run more than one Ward instance. It uses pgx (pgxpool) and its own
// embedded goose migrations, and runs the same SQL as the sqlite backend.
//
// Atomic one-time operations are single conditional statements
// (UPDATE ... WHERE used_at = 0 RETURNING, INSERT ... ON CONFLICT DO
// UPDATE ... WHERE) or short READ COMMITTED transactions that lock the rows
// they change (SELECT ... FOR UPDATE). Writes of refresh tokens first take
// a share lock on their session row, so a concurrent RevokeSession can
// never miss a token that is being created.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store on PostgreSQL.
type Store struct {
	*sqlstore.Store
	schema string
	pool   *pgxpool.Pool
	count  *counter
	group  *groupWriter
}

// Schema returns the schema given to WithSchema ("" when none).
func (s *Store) Schema() string { return s.schema }

var _ store.Store = (*Store)(nil)

type options struct {
	now      func() time.Time
	schema   string
	maxConns int32
	pool     *Pool
}

// Pool holds the connection pool and statement settings (zero fields keep
// pgx's defaults, or the DSN's pool_* parameters).
type Pool struct {
	MaxConns        int32
	MinConns        int32
	MaxConnLifetime time.Duration
	MaxConnIdleTime time.Duration
	// QueryExecMode is one of QueryExecModes ("" keeps cache_statement).
	QueryExecMode string
	// StatementCacheCapacity sizes both the prepared-statement and the
	// description cache of each connection (0 keeps pgx's 512).
	StatementCacheCapacity int
}

// QueryExecModes maps the names accepted in Pool.QueryExecMode to pgx's modes.
var QueryExecModes = map[string]pgx.QueryExecMode{
	"cache_statement": pgx.QueryExecModeCacheStatement,
	"cache_describe":  pgx.QueryExecModeCacheDescribe,
	"describe_exec":   pgx.QueryExecModeDescribeExec,
	"exec":            pgx.QueryExecModeExec,
	"simple_protocol": pgx.QueryExecModeSimpleProtocol,
}

// WithPool applies the pool and statement settings of the configuration.
func WithPool(p Pool) Option { return func(o *options) { o.pool = &p } }

// apply sets p's non-zero fields on cfg.
func (p *Pool) apply(cfg *pgxpool.Config) error {
	if p.MaxConns > 0 {
		cfg.MaxConns = p.MaxConns
	}
	if p.MinConns > 0 {
		cfg.MinConns = p.MinConns
	}
	if cfg.MinConns > cfg.MaxConns {
		return fmt.Errorf("postgres: min_conns %d is more than max_conns %d", cfg.MinConns, cfg.MaxConns)
	}
	if p.MaxConnLifetime > 0 {
		cfg.MaxConnLifetime = p.MaxConnLifetime
	}
	if p.MaxConnIdleTime > 0 {
		cfg.MaxConnIdleTime = p.MaxConnIdleTime
	}
	if p.QueryExecMode != "" {
		mode, ok := QueryExecModes[p.QueryExecMode]
		if !ok {
			return fmt.Errorf("postgres: unknown query exec mode %q", p.QueryExecMode)
		}
		cfg.ConnConfig.DefaultQueryExecMode = mode
	}
	if p.StatementCacheCapacity > 0 {
		cfg.ConnConfig.StatementCacheCapacity = p.StatementCacheCapacity
		cfg.ConnConfig.DescriptionCacheCapacity = p.StatementCacheCapacity
	}
	return nil
}

// PoolStat is a snapshot of the pool's state.
type PoolStat struct {
	MaxConns, TotalConns, IdleConns, AcquiredConns int32
	QueryExecMode                                  string
	// Statements, Batches and Prepares count what was sent since Open:
	// statements run alone (BEGIN and COMMIT included), pipelined
	// batches and statement preparations, one round trip each.
	Statements, Batches, Prepares int64
}

// RoundTrips is the number of round trips to the server in st.
func (st PoolStat) RoundTrips() int64 { return st.Statements + st.Batches + st.Prepares }

// PoolStat reports the pool's size and use (for tests and monitoring).
func (s *Store) PoolStat() PoolStat {
	st := s.pool.Stat()
	mode := ""
	for name, m := range QueryExecModes {
		if m == s.pool.Config().ConnConfig.DefaultQueryExecMode {
			mode = name
		}
	}
	return PoolStat{MaxConns: st.MaxConns(), TotalConns: st.TotalConns(), IdleConns: st.IdleConns(),
		AcquiredConns: st.AcquiredConns(), QueryExecMode: mode, Statements: s.count.statements.Load(),
		Batches: s.count.batches.Load(), Prepares: s.count.prepares.Load()}
}

// Option configures Open.
type Option func(*options)

// WithClock sets the clock RecordJTI uses to decide whether a stored key
// has expired (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithSchema confines the store to one schema: it is created if missing,
// becomes the connections' search_path, and holds the tables and the
// migration history. Tests use it to isolate themselves.
func WithSchema(name string) Option { return func(o *options) { o.schema = name } }

// WithMaxConns sets the pool size (default: pgxpool's, max(4, NumCPU));
// it wins over WithPool's MaxConns.
func WithMaxConns(n int32) Option { return func(o *options) { o.maxConns = n } }

// Open connects to the database at dsn (a postgres:// URL or key=value
// string) and migrates it to the current schema.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors can quote the DSN, password included.
		return nil, errors.New("postgres: invalid DSN")
	}
	if o.schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{o.schema}.Sanitize()
	}
	if o.pool != nil {
		if err := o.pool.apply(cfg); err != nil {
			return nil, err
		}
	}
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
	}
	count := &counter{}
	cfg.ConnConfig.Tracer = count
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if o.schema != "" {
		if _, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{o.schema}.Sanitize()); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres: create schema: %w", err)
		}
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	d := sqlstore.Dialect{
		ForUpdate: " FOR UPDATE",
		ForShare:  " FOR SHARE",
		// SHARE ROW EXCLUSIVE conflicts with itself and with every row
		// write, not with reads.
		LockSigningKeys: "LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE",
		LockSession:     `SELECT 1 FROM sessions WHERE id = $1 FOR SHARE`,
		// One round trip and one commit instead of BEGIN, four
		// statements and COMMIT.
		RotateInOneStatement: true,
		IsUniqueViolation:    isUniqueViolation,
		IsNoRows:             func(err error) bool { return errors.Is(err, pgx.ErrNoRows) },
		// events.seq is GENERATED ALWAYS AS IDENTITY.
		OverridingSystemValue: " OVERRIDING SYSTEM VALUE",
		// A generic plan of the graph's aggregations guesses a handful of
		// rows for any subject and sorts a heavy user's 100,000 events on
		// disk; planned with the values, they walk the covering index.
		PlanEachTime: func(args []any) []any { return append([]any{pgx.QueryExecModeExec}, args...) },
	}
	db := &database{pool: pool, group: newGroupWriter(pool)}
	return &Store{Store: sqlstore.New(db, d, o.now), schema: o.schema, pool: pool, count: count, group: db.group}, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	// Instances starting together take turns: an advisory lock held for
	// the duration of the migration.
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close() // does not close the pool
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}

// database implements sqlstore.DB on a pgxpool.
type database struct {
	pool  *pgxpool.Pool
	group *groupWriter
}

// Grouped implements sqlstore.Grouper with the group-commit writer
// (groupcommit.go).
func (d *database) Grouped(key string) sqlstore.Querier { return groupQuerier{w: d.group, key: key} }

func (d *database) Read() sqlstore.Querier   { return querier{d.pool} }
func (d *database) Lookup() sqlstore.Querier { return querier{d.pool} }
func (d *database) Write() sqlstore.Querier  { return querier{d.pool} }

func (d *database) Ping(ctx context.Context) error {
	if err := d.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

func (d *database) Close() error {
	d.group.close()
	d.pool.Close()
	return nil
}

func (d *database) InTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	if err := fn(querier{tx}); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

// pgxQuerier is what pgxpool.Pool and pgx.Tx have in common.
type pgxQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type querier struct{ q pgxQuerier }

func (q querier) Exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.q.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q querier) Query(ctx context.Context, sql string, args ...any) (sqlstore.Rows, error) {
	rs, err := q.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return rows{rs}, nil
}

func (q querier) QueryRow(ctx context.Context, sql string, args ...any) sqlstore.Row {
	return q.q.QueryRow(ctx, sql, args...)
}

// rows adapts pgx.Rows, whose Close reports nothing, to sqlstore.Rows.
type rows struct{ pgx.Rows }

func (r rows) Close() error {
	r.Rows.Close()
	return r.Rows.Err()
}
