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

var base = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// refreshToken is a refresh token of session s1 with hash h.
func refreshToken(h string) *model.RefreshToken {
	return &model.RefreshToken{Hash: []byte(h), SessionID: "s1", ClientID: "c1", UserID: "u1",
		CreatedAt: base, ExpiresAt: base.Add(time.Hour), Generation: 1}
}

// raceTwoInstances opens two store instances on one database with user
// u1 and session s1 (setup adds what the race is about), runs op n times
// at once, alternating the instances, each call with its own pending
// event of type typ, and checks that exactly one call succeeded, the
// others failed with lost (ErrAlreadyUsed; ErrReplay for a one-time
// key), and the events table holds exactly the winner's event. It
// returns the winner and the instance b.
func raceTwoInstances(t *testing.T, k backendtest.Kind, typ model.EventType, lost error, setup func(s store.Store) error,
	op func(s store.Store, ctx context.Context, i int) error) (winner int, b store.Store) {
	t.Helper()
	ctx := context.Background()
	open := k.Opener(t, nil)
	a, b := open(), open()
	if err := a.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := setup(a); err != nil {
		t.Fatal(err)
	}
	const n = 8
	evs := make([]*model.Event, n)
	ectxs := make([]context.Context, n)
	errs := make([]error, n)
	for i := range n {
		evs[i] = &model.Event{ID: "ev-" + strconv.Itoa(i), Type: typ, Time: base,
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
			errs[i] = op(s, ectxs[i], i)
		})
	}
	close(start)
	wg.Wait()
	winner = -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("calls %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, lost):
			t.Errorf("call %d: %v, want %v", i, err, lost)
		}
	}
	if winner < 0 {
		t.Fatal("no call succeeded")
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
			t.Errorf("call %d: EventStored %v, want %v", i, got, i == winner)
		}
	}
	return winner, b
}

// successorsStored checks that of the refresh tokens next-0 … next-7 only
// the winner's was stored.
func successorsStored(t *testing.T, s store.Store, winner int) {
	t.Helper()
	for i := range 8 {
		_, err := s.GetRefreshToken(context.Background(), []byte("next-"+strconv.Itoa(i)))
		if got := err == nil; got != (i == winner) {
			t.Errorf("refresh token %d stored %v (%v), want %v", i, got, err, i == winner)
		}
	}
}

// Two instances on one database rotate one refresh token at once, each
// rotation with its own pending token.refreshed: exactly one rotates, and
// the events table holds exactly its event.
func TestRotationWithEventTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventTokenRefreshed, store.ErrAlreadyUsed,
				func(s store.Store) error { return s.CreateRefreshToken(context.Background(), refreshToken("old")) },
				func(s store.Store, ctx context.Context, i int) error {
					_, err := s.RotateRefreshToken(ctx, []byte("old"), base.Add(time.Minute), refreshToken("next-"+strconv.Itoa(i)))
					return err
				})
			successorsStored(t, b, winner)
		})
	}
}

// Two instances on one database redeem one authorization code at once,
// each redemption with its own refresh token and pending token.issued:
// exactly one spends the code, and only its token and its event are
// stored (the attacker who races the client with a stolen code gets
// nothing, and neither instance records a token that was not issued).
func TestRedeemCodeWithEventTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventTokenIssued, store.ErrAlreadyUsed,
				func(s store.Store) error {
					return s.CreateAuthCode(context.Background(), &model.AuthCode{Hash: []byte("code"), ClientID: "c1",
						UserID: "u1", SessionID: "s1", RedirectURI: "https://app.example/cb", CodeChallenge: "x",
						CodeChallengeMethod: "S256", AuthTime: base, CreatedAt: base, ExpiresAt: base.Add(time.Minute)})
				},
				func(s store.Store, ctx context.Context, i int) error {
					_, err := s.RedeemAuthCode(ctx, []byte("code"), base.Add(time.Second), refreshToken("next-"+strconv.Itoa(i)))
					return err
				})
			successorsStored(t, b, winner)
			ac, err := b.GetAuthCode(context.Background(), []byte("code"))
			if err != nil || ac.UsedAt.IsZero() {
				t.Errorf("code after the race: %+v, %v; want it spent", ac, err)
			}
		})
	}
}

// Two instances on one database race refusals and redemptions of one
// code, each with its own pending event: exactly one spends it, only its
// event (and, for a redemption, its refresh token) is stored, and the
// code says whether a refusal spent it, with that refusal's key: what
// tells a refused client's retry from a thief's replay (code_refused_before).
func TestRefuseOrRedeemCodeTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventTokenIssued, store.ErrAlreadyUsed,
				func(s store.Store) error {
					return s.CreateAuthCode(context.Background(), &model.AuthCode{Hash: []byte("code"), ClientID: "c1",
						UserID: "u1", SessionID: "s1", RedirectURI: "https://app.example/cb", CodeChallenge: "x",
						CodeChallengeMethod: "S256", AuthTime: base, CreatedAt: base, ExpiresAt: base.Add(time.Minute)})
				},
				func(s store.Store, ctx context.Context, i int) error {
					var err error
					if i%4 < 2 {
						_, err = s.RefuseAuthCode(ctx, []byte("code"), base.Add(time.Second), "jkt-"+strconv.Itoa(i))
					} else {
						_, err = s.RedeemAuthCode(ctx, []byte("code"), base.Add(time.Second), refreshToken("next-"+strconv.Itoa(i)))
					}
					return err
				})
			ac, err := b.GetAuthCode(context.Background(), []byte("code"))
			refused := winner%4 < 2
			if err != nil || ac.UsedAt.IsZero() || ac.Refused != refused || (refused && ac.RefusedJKT != "jkt-"+strconv.Itoa(winner)) {
				t.Fatalf("code after the race (winner %d): %+v, %v", winner, ac, err)
			}
			for i := range 8 {
				if i%4 < 2 {
					continue
				}
				_, err := b.GetRefreshToken(context.Background(), refreshToken("next-"+strconv.Itoa(i)).Hash)
				if (i == winner) != (err == nil) {
					t.Errorf("redemption %d (winner %d): refresh token lookup %v", i, winner, err)
				}
			}
		})
	}
}

// Two instances on one database record one DPoP proof's jti at once,
// each with its own pending token.issued (the client credentials grant,
// whose jti and event are one write): exactly one records it, the others
// are refused as replays, and the events table holds only the winner's
// event (a replayed proof leaves no record of a token). A replay after
// the race, and one after the key expired, behave as RecordJTI alone.
func TestRecordJTIWithEventTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			exp := time.Now().Add(time.Minute)
			_, b := raceTwoInstances(t, k, model.EventTokenIssued, store.ErrReplay,
				func(store.Store) error { return nil },
				func(s store.Store, ctx context.Context, i int) error {
					return s.RecordJTI(ctx, "dpop:key:jti-1", exp)
				})
			ctx := context.Background()
			late := &model.Event{ID: "ev-late", Type: model.EventTokenIssued, Time: base, ClientID: "c1", Outcome: model.OutcomeSuccess}
			lctx := store.WithEvent(ctx, late)
			if err := b.RecordJTI(lctx, "dpop:key:jti-1", exp); !errors.Is(err, store.ErrReplay) {
				t.Fatalf("replay after the race: %v, want ErrReplay", err)
			}
			if store.EventStored(lctx, late) {
				t.Error("replay after the race: its event is reported stored")
			}
			// A new key with its event: both stored.
			fresh := &model.Event{ID: "ev-fresh", Type: model.EventTokenIssued, Time: base, ClientID: "c1", Outcome: model.OutcomeSuccess}
			fctx := store.WithEvent(ctx, fresh)
			if err := b.RecordJTI(fctx, "dpop:key:jti-2", exp); err != nil {
				t.Fatal(err)
			}
			if !store.EventStored(fctx, fresh) {
				t.Error("new key: its event is not reported stored")
			}
			if err := b.RecordJTI(ctx, "dpop:key:jti-2", exp); !errors.Is(err, store.ErrReplay) {
				t.Errorf("key recorded with its event, then alone: %v, want ErrReplay", err)
			}
			evs, err := b.EventsAfter(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range evs {
				ids = append(ids, e.ID)
			}
			if len(ids) != 2 || ids[1] != "ev-fresh" {
				t.Errorf("events %v, want the race's winner's and ev-fresh", ids)
			}
		})
	}
}
