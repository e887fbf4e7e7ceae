package postgres_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// An authorization code's redemption (the code spent, its refresh token
// stored under the session's share lock, its token.issued appended) is
// one round trip and one commit: one statement. Counted with the store's
// tracer, after a first redemption has prepared the statement.
func TestRedeemCodeIsOneRoundTrip(t *testing.T) {
	s := open(t, dsn(t))
	ctx := context.Background()
	now := time.Now()
	if err := s.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var trips []int64
	for i := range n {
		hash := []byte("code-" + strconv.Itoa(i))
		if err := s.CreateAuthCode(ctx, &model.AuthCode{Hash: hash, ClientID: "c1", UserID: "u1", SessionID: "s1",
			RedirectURI: "https://app.example/cb", CodeChallenge: "x", CodeChallengeMethod: "S256",
			AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		ev := &model.Event{ID: "ev-" + strconv.Itoa(i), Type: model.EventTokenIssued, Time: now, UserID: "u1",
			SessionID: "s1", ClientID: "c1", Outcome: model.OutcomeSuccess}
		ectx := store.WithEvent(ctx, ev)
		rt := &model.RefreshToken{Hash: []byte("rt-" + strconv.Itoa(i)), SessionID: "s1", ClientID: "c1", UserID: "u1",
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), Generation: 1}
		before := s.PoolStat().RoundTrips()
		if _, err := s.RedeemAuthCode(ectx, hash, now, rt); err != nil {
			t.Fatal(err)
		}
		trips = append(trips, s.PoolStat().RoundTrips()-before)
		if !store.EventStored(ectx, ev) {
			t.Fatalf("redemption %d: its event is not stored with it", i)
		}
	}
	t.Logf("round trips per redemption: %v", trips)
	for i, n := range trips[1:] {
		if n != 1 {
			t.Errorf("redemption %d: %d round trips, want 1", i+1, n)
		}
	}
}
