package dpop_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ward-idp/ward/dpop"
)

func Example() {
	// Client: one key per device; a fresh proof per request.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := dpop.NewSigner(key)
	accessToken := "eyJ...the access token bound to signer.Thumbprint()"
	proof, _ := signer.Proof(http.MethodGet, "https://rs.example.com/api/items?page=2", accessToken, "")

	// Resource server: check the proof against the request and the token.
	v := &dpop.Verifier{Replay: dpop.NewMemoryReplayCache(time.Now)}
	p, err := v.Verify(context.Background(), proof, dpop.Check{
		Method:      http.MethodGet,
		URL:         "https://rs.example.com/api/items?page=2",
		AccessToken: accessToken,
		JKT:         signer.Thumbprint(), // cnf.jkt of the access token
	})
	fmt.Println(err, p.HTU)

	// The same proof again is a replay.
	_, err = v.Verify(context.Background(), proof, dpop.Check{Method: http.MethodGet, URL: "https://rs.example.com/api/items"})
	var e *dpop.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.Reason)
	}
	// Output:
	// <nil> https://rs.example.com/api/items
	// invalid_dpop_proof replay
}
