package rs_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/ward-idp/ward/rs"
)

// A document API protected by Ward: DPoP-bound tokens only, CAE events
// by push, token use reported to the IdP.
func Example() {
	ctx := context.Background()
	const issuer = "https://ward.example.com"

	state := rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: 24 * time.Hour})

	// The IdP's usage endpoint takes a token of this service (client
	// credentials, for example); cache and refresh it in the func.
	serviceToken := func(context.Context) (string, error) { return "…", nil }
	usage, err := rs.NewUsageReporter(rs.UsageConfig{
		Endpoint: issuer + "/usage", // the IdP's token-use endpoint (deployment specific)
		Token:    serviceToken,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer usage.Close(ctx)

	v, err := rs.New(rs.Config{
		Issuer:      issuer,
		Audience:    "https://docs.example.com",
		ExternalURL: "https://docs.example.com", // as clients address us, behind the proxy
		State:       state,
		Usage:       usage,
	})
	if err != nil {
		log.Fatal(err)
	}

	recv, err := rs.NewReceiver(rs.ReceiverConfig{
		Issuer:   issuer,
		Audience: "https://docs.example.com",
		State:    state,
		Keys:     v.Keys(), // same issuer, same keys
	})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("POST /ssf/events", recv.PushHandler(rs.RequireBearer("the authorization_header value given to the stream")))
	mux.Handle("GET /docs/{id}", v.Require("docs.read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := rs.FromContext(r.Context())
		fmt.Fprintf(w, "document %s for %s on device %s\n", r.PathValue("id"), tok.Subject, tok.DeviceID)
	})))
	_ = http.ListenAndServe(":8080", mux)
}

// Without middleware: authenticate, then decide.
func ExampleValidator_Authenticate() {
	v, err := rs.New(rs.Config{Issuer: "https://ward.example.com", Audience: "https://docs.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/docs/", func(w http.ResponseWriter, r *http.Request) {
		tok, err := v.Authenticate(r, "docs.read")
		if err != nil {
			v.WriteError(w, err) // 400/401/403 with the right WWW-Authenticate
			return
		}
		fmt.Fprintln(w, "hello", tok.Subject)
	})
}

// Following SSF events by polling instead of push.
func ExampleReceiver_NewPoller() {
	ctx := context.Background()
	state := rs.NewRevocationState(rs.StateConfig{})
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: "https://ward.example.com", Audience: "https://docs.example.com", State: state})
	if err != nil {
		log.Fatal(err)
	}
	p, err := recv.NewPoller(rs.PollConfig{
		Endpoint: "https://ward.example.com/ssf/streams/123/poll", // the stream's delivery.endpoint_url
		Token:    func(context.Context) (string, error) { return "…", nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	go p.Run(ctx) // long-polls until ctx ends, then sends its last acknowledgements
}

// A client reading the claims challenge of a rejected request.
func ExampleParseClaimsChallenge() {
	h := http.Header{}
	h.Set("WWW-Authenticate", `DPoP algs="ES256", error="insufficient_claims", error_description="the access token was issued before a revocation; obtain a new token", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxODAwMDAwMDAwIn19fQ"`)
	c, ok := rs.ParseClaimsChallenge(h)
	if !ok {
		return
	}
	nbf, _ := c.RequiredNotBefore()
	fmt.Println(c.Error)
	fmt.Println(string(c.Claims)) // send back as the "claims" parameter of /authorize or /token
	fmt.Println(nbf.UTC().Format(time.RFC3339))
	// Output:
	// insufficient_claims
	// {"access_token":{"nbf":{"essential":true,"value":"1800000000"}}}
	// 2027-01-15T08:00:00Z
}
