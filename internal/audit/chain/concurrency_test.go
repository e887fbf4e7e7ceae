package chain_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Two processes on one database, each with eight goroutines writing
// events (on their own and with a change, store.WithEvent) and its own
// sealer running, while transactions that took a sequence number roll
// back: one chain comes out, every committed event in it once, every
// rolled-back number filled, and it verifies.
func TestConcurrentWritersOneChain(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			o := chain.Options{CheckpointEvents: 100, Interval: 5 * time.Millisecond, GapWait: 20 * time.Millisecond}
			e1 := newEnv(t, b, o)
			e2 := e1.join(o)
			for _, e := range []*env{e1, e2} {
				s, err := chain.Start(ctx, chain.Options{Store: e.st, KEK: e.kek, Signer: e.keys, Now: e.Now,
					CheckpointEvents: 100, Interval: 5 * time.Millisecond, GapWait: 20 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
			}
			for i := range 16 {
				if err := e1.st.CreateUser(ctx, &model.User{ID: fmt.Sprintf("u%d", i), Username: fmt.Sprintf("user%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
			const perWriter = 60
			var wg sync.WaitGroup
			var committed atomic.Int64
			errs := make(chan error, 64)
			for p, e := range []*env{e1, e2} {
				for w := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						user := fmt.Sprintf("u%d", p*8+w)
						for i := range perWriter {
							var err error
							if i%5 == 0 {
								ev := &model.Event{ID: fmt.Sprintf("ev-%s-%d", user, i), Type: model.EventUserUpdated, Time: e.Now(), UserID: user, Actor: "admin"}
								_, err = e.st.UpdateUser(store.WithEvent(ctx, ev), user, func(u *model.User) error { u.DisplayName = fmt.Sprint(i); return nil })
							} else {
								_, err = e.st.AppendEvent(ctx, &model.Event{ID: fmt.Sprintf("ev-%s-%d", user, i), Type: model.EventTokenIssued,
									Time: e.Now(), ClientID: "svc", Outcome: model.OutcomeSuccess})
							}
							if err != nil {
								errs <- err
								return
							}
							committed.Add(1)
						}
					}()
				}
			}
			// Transactions that take a number and roll back (PostgreSQL
			// gives the number up; SQLite reuses it).
			var rolledBack int64
			if b.name == "postgres" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := pgx.Connect(ctx, os.Getenv(dsnEnv))
					if err != nil {
						errs <- err
						return
					}
					defer conn.Close(ctx)
					schema := e1.st.(interface{ Schema() string }).Schema()
					if _, err := conn.Exec(ctx, `SET search_path TO `+pgx.Identifier{schema}.Sanitize()); err != nil {
						errs <- err
						return
					}
					for range 10 {
						tx, err := conn.Begin(ctx)
						if err != nil {
							errs <- err
							return
						}
						if _, err := tx.Exec(ctx, `INSERT INTO events (id, type) VALUES ('ev-rolled-back', 'token.issued')`); err != nil {
							errs <- err
							return
						}
						time.Sleep(3 * time.Millisecond)
						tx.Rollback(ctx)
						rolledBack++
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// Both sealers run on; wait until everything is sealed.
			deadline := time.Now().Add(20 * time.Second)
			for {
				n, err := e1.st.CountEventsAfter(ctx, headSeq(t, e1))
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d events still unsealed", n)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := e2.sealer.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			rep := e1.mustVerify(chain.VerifyOptions{})
			skipped, err := e1.st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventAuditSequenceSkipped}, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(skipped)) != rolledBack || rep.Records != committed.Load()+rolledBack {
				t.Errorf("%d records verified, %d skipped numbers filled; want %d events and %d filled", rep.Records, len(skipped), committed.Load(), rolledBack)
			}
			if rep.Latest == nil || rep.Latest.Seq != rep.To || rep.Checkpoints < 2 {
				t.Errorf("checkpoints: %+v", rep)
			}
		})
	}
}

func headSeq(t *testing.T, e *env) int64 {
	t.Helper()
	h, err := e.st.AuditChainHead(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

// A transaction that took a sequence number and commits slowly: the
// sealer waits at the gap, then waits for the holder instead of filling
// the number under it, and links the event in its place once it commits.
// One that rolls back gets its number filled.
func TestSlowTransactionAtAGap(t *testing.T) {
	dsn := os.Getenv(dsnEnv)
	if dsn == "" {
		t.Skipf("%s is not set: this needs PostgreSQL's concurrent commits", dsnEnv)
	}
	b := backend{name: "postgres", open: openPostgres}
	e := newEnv(t, b, chain.Options{GapWait: 30 * time.Millisecond})
	schema := e.st.(interface{ Schema() string }).Schema()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET search_path TO `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	key, err := chain.RecordKey(ctx, e.st, e.kek)
	if err != nil {
		t.Fatal(err)
	}
	mac := chain.RecordMAC(key)
	e.appendEvents(2)
	e.seal()

	for _, commit := range []bool{true, false} {
		// A transaction of Ward's (its event carries a valid MAC) holds
		// the next number; a later event commits first.
		id := fmt.Sprintf("ev-slow-%v", commit)
		vals := []any{id, "user.updated", int64(0), "admin", nil, nil, nil, "", "", "", "", "", "", "", "", "", ""}
		body := store.AppendEventBody(nil, vals...)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var slow int64
		if err := tx.QueryRow(ctx, `INSERT INTO events (id, type, time, actor, mac) VALUES ($1, 'user.updated', 0, 'admin', $2) RETURNING seq`,
			id, mac(body)).Scan(&slow); err != nil {
			t.Fatal(err)
		}
		after := e.appendEvents(1)[0]
		if after != slow+1 {
			t.Fatalf("numbers %d then %d", slow, after)
		}
		if n := e.seal(); n != 0 {
			t.Fatalf("sealed %d past a gap it had not waited for", n)
		}
		time.Sleep(50 * time.Millisecond)
		done := make(chan int, 1)
		go func() { done <- e.seal() }()
		select {
		case n := <-done:
			t.Fatalf("the sealer went past the holder of %d (sealed %d)", slow, n)
		case <-time.After(300 * time.Millisecond):
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-done:
			if n != 2 {
				t.Errorf("commit=%v: sealed %d, want the slow number and the one after", commit, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the sealer did not go on after the holder ended")
		}
		evs, err := e.st.EventsAfter(ctx, slow-1, 1)
		if err != nil || len(evs) != 1 {
			t.Fatal(evs, err)
		}
		want := map[bool]model.EventType{true: model.EventUserUpdated, false: model.EventAuditSequenceSkipped}[commit]
		if evs[0].Type != want {
			t.Errorf("commit=%v: seq %d holds %s, want %s", commit, slow, evs[0].Type, want)
		}
	}
	if err := e.sealer.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := e.mustVerify(chain.VerifyOptions{}); rep.Records != 6 {
		t.Errorf("verified %d records, want 6", rep.Records)
	}
}
