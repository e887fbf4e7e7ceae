package server

import (
	"fmt"
	"testing"
	"time"
)

// The stored key of a DPoP jti carries the proof's expiry in front, so
// keys sort by it (inserts of proofs made together share index pages),
// and is a function of the proof alone, so a replay has the same one.
func TestStoreKey(t *testing.T) {
	exp := time.Date(2026, 3, 1, 12, 5, 30, 123456000, time.UTC)
	k := storeKey("dpop:jkt-z:jti-1", exp)
	if want := fmt.Sprintf("dpop:%016x:jkt-z:jti-1", exp.UnixMicro()); k != want {
		t.Fatalf("storeKey = %q, want %q", k, want)
	}
	if k2 := storeKey("dpop:jkt-z:jti-1", exp); k2 != k {
		t.Errorf("the same proof gave %q and %q", k, k2)
	}
	if later := storeKey("dpop:jkt-a:jti-0", exp.Add(time.Microsecond)); later <= k {
		t.Errorf("a later expiry sorts first: %q <= %q", later, k)
	}
	if other := storeKey("dpop:jkt-z:jti-1", exp.Add(time.Second)); other == k {
		t.Errorf("another iat, same key %q", other)
	}
	if got := storeKey("totp:u:1", exp); got != "totp:u:1" {
		t.Errorf("a key of another kind changed: %q", got)
	}
}
