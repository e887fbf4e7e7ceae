package tokens

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseAccessToken feeds arbitrary strings, and mutations of a valid
// token, to the JWT verifier: it must never panic, must fail with
// ErrInvalidToken, and must never echo the input in its error.
func FuzzParseAccessToken(f *testing.F) {
	fx := newFixture(f)
	now := fx.clock.Now()
	valid, err := fx.m.MintAccessToken(validClaims(now))
	if err != nil {
		f.Fatal(err)
	}
	idt, _ := fx.m.MintIDToken(&IDClaims{Issuer: "https://ward.example", Subject: "u", Audience: Audience{"c"}, IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 60})
	for _, s := range []string{valid, idt, "", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", valid + "x", strings.Replace(valid, ".", "..", 1)} {
		f.Add(s)
	}
	issuer := validClaims(now).Issuer
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := fx.m.ParseAccessToken(tok, issuer, now)
		if err == nil {
			if tok != valid {
				// Only Ward's own signature can produce a valid token; the
				// one malleable variant is ECDSA's (r, n-s), which must
				// still carry the same claims.
				if c.JTI != validClaims(now).JTI {
					t.Fatalf("accepted a token with foreign claims: %+v", c)
				}
			}
			return
		}
		if !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("error does not wrap ErrInvalidToken: %v", err)
		}
		if len(tok) > 16 && strings.Contains(err.Error(), tok) {
			t.Fatalf("error echoes the token")
		}
	})
}
