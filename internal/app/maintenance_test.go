package app

import (
	"context"
	"testing"

	"github.com/ward-idp/ward/internal/tokens"
)

// A key rotated by another process (`ward keys rotate`) is picked up by a
// running server at its next maintenance round.
func TestMaintainPicksUpRotatedKey(t *testing.T) {
	cfg := testConfig(t, true)
	a := open(t, cfg, nil)
	before := a.Keys.ActiveKID()
	other, err := tokens.NewKeyManager(context.Background(), tokens.KeyOptions{Store: a.Store, KEK: a.KEK, Now: a.Now})
	if err != nil {
		t.Fatal(err)
	}
	k, err := other.Rotate(context.Background(), "cli")
	if err != nil {
		t.Fatal(err)
	}
	if a.Keys.ActiveKID() != before {
		t.Fatal("running server changed keys before maintenance")
	}
	a.Maintain(context.Background())
	if got := a.Keys.ActiveKID(); got != k.KID || got == before {
		t.Fatalf("active kid after maintenance = %s, want %s", got, k.KID)
	}
	// The old key stays published for the overlap.
	if n := len(a.Keys.JWKS().Keys); n != 2 {
		t.Fatalf("JWKS has %d keys during overlap, want 2", n)
	}
}
