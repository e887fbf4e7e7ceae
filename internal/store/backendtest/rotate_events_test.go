package backendtest_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// Two instances on one database rotate one refresh token at once, each
// rotation with its own pending token.refreshed: exactly one rotates, and
// the events table holds exactly its event.
func TestRotationWithEventTwoInstances(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			open := k.Opener(t, nil)
			a, b := open(), open()
			if err := a.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
				t.Fatal(err)
			}
			if err := a.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			tok := func(h string) *model.RefreshToken {
				return &model.RefreshToken{Hash: []byte(h), SessionID: "s1", ClientID: "c1", UserID: "u1",
					CreatedAt: base, ExpiresAt: base.Add(time.Hour), Generation: 1}
			}
			if err := a.CreateRefreshToken(ctx, tok("old")); err != nil {
				t.Fatal(err)
			}
			const n = 8
			evs := make([]*model.Event, n)
			ectxs := make([]context.Context, n)
			errs := make([]error, n)
			for i := range n {
				evs[i] = &model.Event{ID: "ev-" + strconv.Itoa(i), Type: model.EventTokenRefreshed, Time: base,
					UserID: "u1", SessionID: "s1", ClientID: "c1", Outcome: model.OutcomeSuccess}
				ectxs[i] = store.WithEvent(ctx, evs[i])
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				s := a
				if i%2 == 1 {
					s = b
				}
				wg.Go(func() {
					<-start
					_, errs[i] = s.RotateRefreshToken(ectxs[i], []byte("old"), base.Add(time.Minute), tok("next-"+strconv.Itoa(i)))
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("rotations %d and %d both succeeded", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, store.ErrAlreadyUsed):
					t.Errorf("rotation %d: %v, want ErrAlreadyUsed", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no rotation succeeded")
			}
			stored, err := a.EventsAfter(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range stored {
				ids = append(ids, e.ID)
			}
			if len(ids) != 1 || ids[0] != evs[winner].ID {
				t.Fatalf("events stored %v, want only the winner's %s", ids, evs[winner].ID)
			}
			for i := range n {
				if got := store.EventStored(ectxs[i], evs[i]); got != (i == winner) {
					t.Errorf("rotation %d: EventStored %v, want %v", i, got, i == winner)
				}
				_, err := b.GetRefreshToken(ctx, []byte("next-"+strconv.Itoa(i)))
				if got := err == nil; got != (i == winner) {
					t.Errorf("successor %d stored %v (%v), want %v", i, got, err, i == winner)
				}
			}
		})
	}
}
