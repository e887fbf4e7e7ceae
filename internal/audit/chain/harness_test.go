package chain_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
)

var ctx = context.Background()

// backend opens fresh stores of one kind; exec runs SQL on the database
// directly, as someone with database access would.
type backend struct {
	name string
	// open returns a new, empty database and a function that opens (more)
	// stores on it.
	open func(t *testing.T) (reopen func(t *testing.T) store.Store, exec func(t *testing.T, q string, args ...any))
}

const dsnEnv = "WARD_TEST_POSTGRES_DSN"

// backends returns SQLite, and PostgreSQL when WARD_TEST_POSTGRES_DSN is
// set.
func backends(t *testing.T) []backend {
	bs := []backend{{name: "sqlite", open: openSQLite}}
	if os.Getenv(dsnEnv) != "" {
		bs = append(bs, backend{name: "postgres", open: openPostgres})
	} else {
		t.Logf("%s is not set: PostgreSQL is not tested", dsnEnv)
	}
	return bs
}

func openSQLite(t *testing.T) (func(t *testing.T) store.Store, func(t *testing.T, q string, args ...any)) {
	path := filepath.Join(t.TempDir(), "ward.db")
	reopen := func(t *testing.T) store.Store {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	exec := func(t *testing.T, q string, args ...any) {
		t.Helper()
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return reopen, exec
}

func openPostgres(t *testing.T) (func(t *testing.T) store.Store, func(t *testing.T, q string, args ...any)) {
	dsn := os.Getenv(dsnEnv)
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_chain_" + hex.EncodeToString(b)
	reopen := func(t *testing.T) store.Store {
		s, err := postgres.Open(ctx, dsn, postgres.WithSchema(schema), postgres.WithMaxConns(12))
		if err != nil {
			t.Fatalf("postgres.Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("%s is set but the database is unreachable: %v", dsnEnv, err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
		conn.Close(context.Background())
	})
	exec := func(t *testing.T, q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, `SET search_path TO `+pgx.Identifier{schema}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return reopen, exec
}

// env is one Ward process's view of an audit log: its store (events
// carry record MACs), key manager and sealer, on a clock the test moves.
type env struct {
	t      *testing.T
	st     store.Store
	kek    *secret.KEK
	keys   *tokens.KeyManager
	sealer *chain.Sealer
	exec   func(t *testing.T, q string, args ...any)
	reopen func(t *testing.T) store.Store

	mu  sync.Mutex
	now time.Time
}

var testKEK = func() *secret.KEK {
	k, err := secret.NewKEK([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		panic(err)
	}
	return k
}()

var otherKEK = func() *secret.KEK {
	k, err := secret.NewKEK([]byte("another key-encryption key 32 by"))
	if err != nil {
		panic(err)
	}
	return k
}()

func newEnv(t *testing.T, b backend, o chain.Options) *env {
	t.Helper()
	return newEnvKEK(t, b, o, testKEK)
}

func newEnvKEK(t *testing.T, b backend, o chain.Options, kek *secret.KEK) *env {
	t.Helper()
	reopen, exec := b.open(t)
	e := &env{t: t, kek: kek, exec: exec, reopen: reopen, now: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	e.st = reopen(t)
	e.start(o)
	return e
}

// join is another process on the same database (its own store, key
// manager and sealer).
func (e *env) join(o chain.Options) *env {
	e.t.Helper()
	e2 := &env{t: e.t, kek: e.kek, exec: e.exec, reopen: e.reopen, now: e.Now()}
	e2.st = e.reopen(e.t)
	e2.start(o)
	return e2
}

func (e *env) start(o chain.Options) {
	t := e.t
	t.Helper()
	if _, err := chain.Configure(ctx, e.st, e.kek); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.keys, err = tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: e.st, KEK: e.kek, Now: e.Now}); err != nil {
		t.Fatal(err)
	}
	o.Store, o.KEK, o.Signer, o.Now = e.st, e.kek, e.keys, e.Now
	if o.GapWait == 0 {
		o.GapWait = 50 * time.Millisecond
	}
	if e.sealer, err = chain.New(ctx, o); err != nil {
		t.Fatal(err)
	}
}

func (e *env) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// appendEvents appends n events the way the audit persister does and
// returns their sequence numbers.
func (e *env) appendEvents(n int) []int64 {
	e.t.Helper()
	var seqs []int64
	for i := range n {
		ev := &model.Event{ID: fmt.Sprintf("ev-%d-%d", e.Now().UnixNano(), i), Type: model.EventTokenIssued, Time: e.Now(),
			Actor: "svc", ClientID: "svc", TokenID: fmt.Sprintf("jti-%d", i), IP: "203.0.113.7", UserAgent: "curl/8",
			Outcome: model.OutcomeSuccess, Binding: model.BindingDPoP, Data: map[string]string{"scope": "docs.read"}}
		if i%3 == 1 {
			ev.UserID, ev.SessionID = "u1", "s1"
		}
		seq, err := e.st.AppendEvent(ctx, ev)
		if err != nil {
			e.t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func (e *env) seal() int {
	e.t.Helper()
	n, err := e.sealer.Seal(ctx)
	if err != nil {
		e.t.Fatalf("Seal: %v", err)
	}
	return n
}

func (e *env) verify(o chain.VerifyOptions) *chain.Report {
	e.t.Helper()
	o.KEK = e.kek
	if o.Now == nil {
		o.Now = e.Now
	}
	rep, err := chain.Verify(ctx, e.st, o)
	if err != nil {
		e.t.Fatalf("Verify: %v", err)
	}
	return rep
}

func (e *env) mustVerify(o chain.VerifyOptions) *chain.Report {
	e.t.Helper()
	rep := e.verify(o)
	if !rep.OK() {
		e.t.Fatalf("Verify found problems: %v", rep.Problems)
	}
	return rep
}

func (e *env) checkpoints() []*store.AuditCheckpoint {
	e.t.Helper()
	cps, err := e.st.AuditCheckpoints(ctx, 0, 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return cps
}

// firstProblem fails unless rep's first problem is of kind at seq.
func firstProblem(t *testing.T, rep *chain.Report, seq int64, kind string) chain.Problem {
	t.Helper()
	if rep.OK() {
		t.Fatalf("Verify found nothing; want %s at seq %d", kind, seq)
	}
	p := rep.Problems[0]
	if p.Seq != seq || p.Kind != kind {
		t.Fatalf("first problem %v; want %s at seq %d (all: %v)", p, kind, seq, rep.Problems)
	}
	return p
}
