package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/store/storetest"
)

// refuseAppends installs, through a connection of its own, a trigger that
// makes the database at path refuse to insert events whose reason is
// storetest.RefusedAppend: the statement fails and the transaction
// around it goes on, so only the writer's own rollback undoes the change.
func refuseAppends(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TRIGGER storetest_refuse BEFORE INSERT ON events
		WHEN NEW.reason = '` + storetest.RefusedAppend + `'
		BEGIN SELECT RAISE(ABORT, 'event refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
}

func TestEventAtomicity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	refuseAppends(t, path)
	storetest.RunEventAtomicity(t, s)
}

// TestCreateEventAtomicity runs storetest.RunCreateEventAtomicity: a
// created (or deleted) row commits with its record or not at all.
func TestCreateEventAtomicity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	refuseAppends(t, path)
	storetest.RunCreateEventAtomicity(t, s)
}

func TestTokenEventAtomicity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	refuseAppends(t, path)
	storetest.RunTokenEventAtomicity(t, s)
}

// TestEventAtomicityGroupCommit runs writes with events concurrently, so
// that the group-commit writer shares transactions between them (each
// write in a savepoint): a refused append rolls back its own write and
// nothing else, and every other write commits with its event.
func TestEventAtomicityGroupCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	refuseAppends(t, path)
	const n = 64
	for i := range n {
		if err := s.CreateUser(ctx, &model.User{ID: fmt.Sprint("u", i), Username: fmt.Sprint("user", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	stored := make([]bool, n)
	for round := range 3 {
		for i := range n {
			wg.Go(func() {
				e := &model.Event{ID: fmt.Sprint("ev-", round, "-", i), Type: model.EventUserRiskChanged, UserID: fmt.Sprint("u", i)}
				if i%3 == 0 {
					e.Reason = storetest.RefusedAppend
				}
				ectx := store.WithEvent(ctx, e)
				_, errs[i] = s.UpdateUser(ectx, e.UserID, func(u *model.User) error {
					u.RiskLevel = fmt.Sprint("level-", round)
					return nil
				})
				stored[i] = store.EventStored(ectx, e)
			})
		}
		wg.Wait()
		for i := range n {
			u, err := s.GetUser(ctx, fmt.Sprint("u", i))
			if err != nil {
				t.Fatal(err)
			}
			refused := i%3 == 0
			switch {
			case refused && (errs[i] == nil || stored[i] || u.RiskLevel != ""):
				t.Errorf("round %d, u%d (event refused): err %v, stored %v, risk %q; want an error and no change", round, i, errs[i], stored[i], u.RiskLevel)
			case !refused && (errs[i] != nil || !stored[i] || u.RiskLevel != fmt.Sprint("level-", round)):
				t.Errorf("round %d, u%d: err %v, stored %v, risk %q; want the change and its event", round, i, errs[i], stored[i], u.RiskLevel)
			}
		}
	}
	evs, err := s.EventsAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * (n - (n+2)/3); len(evs) != want {
		t.Errorf("%d events stored, want %d", len(evs), want)
	}
	for _, e := range evs {
		if e.Reason == storetest.RefusedAppend {
			t.Errorf("refused event %s stored", e.ID)
		}
	}
}
