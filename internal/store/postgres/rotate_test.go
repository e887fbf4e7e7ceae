package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// RotateRefreshToken is one statement on PostgreSQL. These tests hold the
// rows it needs in another transaction, as a concurrent request of
// another instance would, and check its answer once that one commits.
func TestRotateOneStatementRaces(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	cases := []struct {
		name string
		// hold runs in the other transaction before the rotation starts.
		hold    string
		want    error
		rotated bool // the answer's old record has RotatedAt set
	}{
		{"rotated meanwhile", `UPDATE refresh_tokens SET rotated_at = 7 WHERE hash = 'old'`, store.ErrAlreadyUsed, true},
		// RevokeSession's order: the session row first, then its tokens.
		{"session revoked meanwhile", `UPDATE sessions SET revoked_at = 7 WHERE id = 's1';
			DELETE FROM refresh_tokens WHERE session_id = 's1'`, store.ErrNotFound, false},
		{"token deleted meanwhile", `DELETE FROM refresh_tokens WHERE hash = 'old'`, store.ErrNotFound, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openGroup(t)
			if err := s.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			tok := func(h string) *model.RefreshToken {
				return &model.RefreshToken{Hash: []byte(h), SessionID: "s1", ClientID: "c", UserID: "u1", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Generation: 1}
			}
			if err := s.CreateRefreshToken(ctx, tok("old")); err != nil {
				t.Fatal(err)
			}
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, c.hold); err != nil {
				t.Fatal(err)
			}
			type result struct {
				old *model.RefreshToken
				err error
			}
			done := make(chan result, 1)
			go func() {
				old, err := s.RotateRefreshToken(ctx, []byte("old"), now, tok("next"))
				done <- result{old, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("the rotation did not wait for the other transaction: %v", r.err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if !errors.Is(r.err, c.want) {
				t.Fatalf("got %v, want %v", r.err, c.want)
			}
			if c.rotated && (r.old == nil || r.old.RotatedAt.IsZero()) {
				t.Errorf("reuse answer without the rotation time: %+v", r.old)
			}
			if _, err := s.GetRefreshToken(ctx, []byte("next")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the next token was stored: %v", err)
			}
		})
	}
	t.Run("a revocation after the rotation removes its token", func(t *testing.T) {
		s := openGroup(t)
		if err := s.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRefreshToken(ctx, &model.RefreshToken{Hash: []byte("old"), SessionID: "s1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		old, err := s.RotateRefreshToken(ctx, []byte("old"), now, &model.RefreshToken{Hash: []byte("next"), SessionID: "s1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
		if err != nil || old.RotatedAt.IsZero() {
			t.Fatalf("rotate: %+v %v", old, err)
		}
		if _, err := s.RevokeSession(ctx, "s1", now, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetRefreshToken(ctx, []byte("next")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a token written by the rotation survived the revocation: %v", err)
		}
	})
}
