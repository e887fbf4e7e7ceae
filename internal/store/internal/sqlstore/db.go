// Package sqlstore implements store.Store once, in hand-written SQL that
// runs unchanged on SQLite (modernc.org/sqlite) and PostgreSQL (pgx). The
// sqlite and postgres packages supply a DB (connection handling, prepared
// statements, transactions) and a Dialect (the few places where the two
// databases differ) and own their migrations.
//
// Storage conventions shared by both schemas:
//   - times are BIGINT unix microseconds, 0 meaning the zero time;
//   - durations are BIGINT nanoseconds;
//   - string slices, string maps and raw JSON are TEXT holding JSON, ”
//     meaning nil/empty;
//   - secrets and hashes are BLOB/BYTEA, NULL meaning nil/empty.
package sqlstore

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// Row is one result row (sql.Row, pgx.Row).
type Row interface {
	Scan(dest ...any) error
}

// Rows is a result set.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Querier runs statements. Exec returns the number of rows affected.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// DB is a backend's connection handling.
type DB interface {
	// Read returns a querier for reads that need not see the caller's
	// own uncommitted writes (a read pool on SQLite).
	Read() Querier
	// Lookup returns a querier for the small primary-key and unique-index
	// reads on the token endpoint's path (QueryRow only). It reads
	// committed data like Read; a backend may serve it from a connection
	// whose caches are warmer (SQLite: the write connection when it is
	// idle).
	Lookup() Querier
	// Write returns a querier for single-statement writes, each atomic
	// on its own. Query must be supported too (UPDATE … RETURNING); the
	// backend may read all rows before returning them (SQLite's writer
	// does, since the statement's transaction may be shared).
	Write() Querier
	// InTx runs fn in one read-write transaction, committing if fn
	// returns nil and rolling back otherwise. fn's error is returned
	// unchanged.
	InTx(ctx context.Context, fn func(q Querier) error) error
	Ping(ctx context.Context) error
	Close() error
}

// Grouper is implemented by a DB that groups the independent inserts of
// concurrent callers into shared commits (PostgreSQL; SQLite's Write
// does that for every write already).
type Grouper interface {
	// Grouped returns a querier for one insert (Exec, or QueryRow with
	// RETURNING) that is atomic on its own, reads nothing other callers
	// write, and can conflict with another caller's only on the same key
	// (ordered by key within a group; "" for none). Its result is
	// delivered once it is committed.
	Grouped(key string) Querier
}

// grouped returns the querier of an insert keyed by key: the DB's
// Grouped, or Write.
func (s *Store) grouped(key string) Querier {
	if g, ok := s.db.(Grouper); ok {
		return g.Grouped(key)
	}
	return s.db.Write()
}

// Dialect describes where the backends differ.
type Dialect struct {
	// ForUpdate is appended to the SELECT of a read-modify-write
	// transaction (" FOR UPDATE" on PostgreSQL; SQLite serialises writers
	// and needs nothing).
	ForUpdate string
	// ForShare is appended to the SELECT that a write is conditional on,
	// to hold the row against a concurrent read-modify-write until the
	// write commits (" FOR SHARE" on PostgreSQL; nothing on SQLite).
	ForShare string
	// LockSession, when not empty, is a statement taking a session id
	// that locks the session row against a concurrent revocation before
	// a refresh token of that session is written. Without it a
	// RevokeSession racing a rotation on PostgreSQL (READ COMMITTED) could
	// miss the freshly inserted token.
	LockSession string
	// LockSigningKeys, when not empty, is a statement that keeps other
	// writers of signing_keys out until the transaction ends (readers
	// go on), so that of instances creating a first key at once on
	// PostgreSQL (READ COMMITTED) only one finds none.
	LockSigningKeys string
	// RotateInOneStatement makes RotateRefreshToken one statement of
	// data-modifying CTEs (rotateRefreshSQL, PostgreSQL) instead of a
	// transaction of four: one round trip and one commit. The rotation's
	// pending event, and CreateRefreshToken with its pending event, go
	// into the statement too (rotateRefreshEventSQL,
	// createRefreshEventSQL).
	RotateInOneStatement bool
	// IsUniqueViolation reports a primary-key or unique constraint error.
	IsUniqueViolation func(error) bool
	// IsNoRows reports an empty result of QueryRow.Scan.
	IsNoRows func(error) bool
	// OverridingSystemValue goes between the column list and VALUES of an
	// INSERT that gives an identity column its value (PostgreSQL's
	// " OVERRIDING SYSTEM VALUE"; SQLite needs nothing).
	OverridingSystemValue string
	// PlanEachTime, when set, returns the arguments of a query that the
	// database must plan for its parameter values every time rather than
	// once for any values (PostgreSQL's generic plans of prepared
	// statements): the aggregations of store.GroupEvents, whose best plan
	// depends on how many events a subject has. PostgreSQL: pgx's
	// QueryExecModeExec (an unnamed statement, planned with its values).
	PlanEachTime func(args []any) []any
}

// Store implements store.Store over a DB.
type Store struct {
	db  DB
	d   Dialect
	now func() time.Time
	// recordMAC is the record MAC function (SetRecordMAC); nil: none.
	recordMAC atomic.Pointer[func([]byte) []byte]
}

// New returns a Store. now is the clock used by RecordJTI (nil: time.Now).
func New(db DB, d Dialect, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, d: d, now: now}
}

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.db.Ping(ctx) }

// Close releases the connections.
func (s *Store) Close() error { return s.db.Close() }

var _ store.Store = (*Store)(nil)
