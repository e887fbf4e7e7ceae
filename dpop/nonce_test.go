package dpop

import (
	"strings"
	"testing"
	"time"
)

func TestHMACNonces(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	clk := &clock{t: t0}
	n := NewHMACNonces(key, 5*time.Minute, clk.Now)
	other := NewHMACNonces(key, 5*time.Minute, clk.Now) // another instance, same key
	foreign := NewHMACNonces([]byte("fedcba9876543210fedcba9876543210"), 5*time.Minute, clk.Now)

	a := n.Nonce()
	if len(a) != 32 || strings.ContainsAny(a, "=+/") {
		t.Fatalf("nonce %q: want 32 base64url characters", a)
	}
	if !n.Check(a) || !other.Check(a) {
		t.Fatalf("fresh nonce rejected")
	}
	if foreign.Check(a) {
		t.Fatalf("nonce accepted under another key")
	}
	if b := other.Nonce(); b != a {
		t.Errorf("instances sharing a key disagree within one interval: %q vs %q", a, b)
	}
	raw, _ := b64.DecodeString(a)
	for i := range raw {
		bad := append([]byte(nil), raw...)
		bad[i] ^= 1
		if n.Check(enc(bad)) {
			t.Fatalf("nonce with byte %d flipped accepted", i)
		}
	}
	for _, bad := range []string{"", "x", a + "A", a[:31], strings.ToUpper(a), "eyJ7S_zG.eyJH0-Z.HX4w-7v"} {
		if bad != a && n.Check(bad) {
			t.Errorf("Check(%q) = true", bad)
		}
	}

	// Rotation: a new value after a fifth of the lifetime; the old one
	// stays valid until its lifetime ends.
	clk.Add(time.Minute)
	b := n.Nonce()
	if b == a {
		t.Errorf("nonce did not rotate after 1m")
	}
	if !n.Check(a) || !n.Check(b) {
		t.Errorf("old or new nonce rejected during overlap")
	}
	clk.Add(4*time.Minute + time.Second)
	if n.Check(a) {
		t.Errorf("nonce accepted after its lifetime")
	}
	if !n.Check(b) {
		t.Errorf("younger nonce rejected")
	}
	// The nonce handed out last (checked without its MAC) expires too.
	clk.Add(time.Minute)
	if n.Check(b) {
		t.Errorf("current nonce accepted after its lifetime")
	}
	// A nonce from a server whose clock is far ahead is not accepted.
	ahead := NewHMACNonces(key, 5*time.Minute, fixed(clk.Now().Add(10*time.Minute))).Nonce()
	if n.Check(ahead) {
		t.Errorf("nonce from the future accepted")
	}
}

func TestHMACNoncesDefaults(t *testing.T) {
	clk := &clock{t: t0}
	n := NewHMACNonces([]byte("0123456789abcdef"), 0, clk.Now)
	a := n.Nonce()
	clk.Add(DefaultNonceLifetime)
	if !n.Check(a) {
		t.Errorf("nonce rejected within the default lifetime")
	}
	clk.Add(time.Second)
	if n.Check(a) {
		t.Errorf("nonce accepted after the default lifetime")
	}
	defer func() {
		if recover() == nil {
			t.Errorf("short key accepted")
		}
	}()
	NewHMACNonces([]byte("short"), 0, nil)
}
