package oauth2x_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net/http"

	"golang.org/x/oauth2"

	"github.com/ward-idp/ward/agent/oauth2x"
	"github.com/ward-idp/ward/dpop"
)

// A web application using golang.org/x/oauth2 with Ward: DPoP-bound
// tokens, claims challenges followed by the transport, and a new sign-in
// with the claims when Ward wants the user.
func Example() {
	ctx := context.Background()
	cfg := &oauth2.Config{
		ClientID:    "docs-app",
		RedirectURL: "https://app.example/callback",
		Scopes:      []string{"openid", "offline_access"},
		Endpoint:    oauth2.Endpoint{AuthURL: "https://id.example.com/authorize", TokenURL: "https://id.example.com/token"},
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := dpop.NewSigner(key)
	c, err := oauth2x.New(cfg, nil, oauth2x.Options{
		Signer: signer,
		// Ward rotates the refresh token on every use: keep the latest.
		OnToken: func(tok *oauth2.Token) error { return saveToken(tok) },
	})
	if err != nil {
		log.Fatal(err)
	}

	// Sign-in: claims "" just declares that this client follows claims
	// challenges (Ward then issues long-lived CAE tokens).
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state", oauth2.S256ChallengeOption(verifier), oauth2x.DPoPOption(signer), oauth2x.ClaimsOption(""))
	code := redirectUserTo(authURL)
	if _, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err != nil {
		log.Fatal(err)
	}

	// Requests: a claims challenge is answered with a refresh carrying
	// the claims, and the request is sent once more.
	resp, err := c.HTTPClient().Get("https://docs.example.com/report")
	var re *oauth2x.ReauthError
	switch {
	case errors.As(err, &re):
		// Ward wants the user (MFA, a newer sign-in, the session ended):
		// sign in again with the claims, then exchange with them too.
		verifier = oauth2.GenerateVerifier()
		authURL = cfg.AuthCodeURL("state", oauth2.S256ChallengeOption(verifier), oauth2x.DPoPOption(signer), oauth2x.ClaimsOption(re.Claims))
		code = redirectUserTo(authURL)
		_, err = c.Exchange(ctx, code, oauth2.VerifierOption(verifier), oauth2x.ClaimsOption(re.Claims))
	case err == nil:
		defer resp.Body.Close()
	}
	if err != nil {
		log.Fatal(err)
	}
}

// Reading a claims challenge yourself, for a client that does not use
// Client.Transport.
func ExampleParseChallenge() {
	resp := &http.Response{StatusCode: http.StatusUnauthorized, Header: http.Header{}}
	resp.Header.Set("WWW-Authenticate", `DPoP algs="ES256", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxODAwMDAwMDAwIn19fQ"`)
	if ch, ok := oauth2x.ParseChallenge(resp); ok {
		fmt.Println(ch.Error)
		fmt.Println(ch.Claims)
		fmt.Println(oauth2x.ClaimsRequest(ch.Claims)) // for RefreshToken, or ClaimsOption(ch.Claims)
	}
	// Output:
	// insufficient_claims
	// {"access_token":{"nbf":{"essential":true,"value":"1800000000"}}}
	// {"access_token":{"nbf":{"essential":true,"value":"1800000000"},"xms_cc":{"values":["cp1"]}}}
}

// RefreshToken on its own: the refresh_token grant with claims, for an
// application that keeps its tokens itself. For DPoP-bound tokens the
// context's HTTP client must add the proofs (Client.Context does).
func ExampleRefreshToken() {
	ctx := context.Background()
	cfg := &oauth2.Config{ClientID: "web", ClientSecret: "…", Endpoint: oauth2.Endpoint{TokenURL: "https://id.example.com/token"}}
	claims := `{"access_token":{"nbf":{"essential":true,"value":"1800000000"}}}` // a challenge's Claims
	tok, err := oauth2x.RefreshToken(ctx, cfg, loadRefreshToken(), claims)
	if errors.Is(err, oauth2x.ErrReauthRequired) {
		// send the user through cfg.AuthCodeURL with ClaimsOption(claims)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	_ = saveToken(tok) // the refresh token was rotated
}

func saveToken(*oauth2.Token) error        { return nil }
func loadRefreshToken() string             { return "" }
func redirectUserTo(authURL string) string { return "" }
