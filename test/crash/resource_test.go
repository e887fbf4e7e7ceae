package crash

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/rs"
)

// docsAudience is the resource the victim's tokens are for.
const docsAudience = "https://docs.chain.test"

// docsResource is a resource server built on Ward's rs package, as an
// application would run it: it verifies the DPoP-bound tokens, applies
// the Shared Signals Ward pushes to it (CAEP session-revoked) and reports
// every use of a token to Ward (POST /usage), which records it as
// token.used.
type docsResource struct {
	*httptest.Server
	usage  *rs.UsageReporter
	bearer string // the push stream's Authorization
}

// newDocsResource starts the resource and registers its push stream with
// Ward's SSF transmitter. clientID holds ssf.manage and ward:usage.
func newDocsResource(t *testing.T, issuer, clientID, clientSecret string) *docsResource {
	t.Helper()
	d := &docsResource{bearer: randomString(24)}
	state := rs.NewRevocationState(rs.StateConfig{})
	token := clientToken(t, issuer, clientID, clientSecret, "ssf.manage ward:usage")
	var err error
	d.usage, err = rs.NewUsageReporter(rs.UsageConfig{Endpoint: issuer + "/usage", FlushInterval: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond, HTTPClient: httpClient,
		Token: func(context.Context) (string, error) { return token, nil }})
	if err != nil {
		t.Fatal(err)
	}
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: issuer, Audience: clientID, State: state, HTTPClient: httpClient})
	if err != nil {
		t.Fatal(err)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	v, err := rs.New(rs.Config{Issuer: issuer, Audience: docsAudience, HTTPClient: httpClient, State: state, Usage: d.usage,
		TrustedProxies: trusted})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /docs/report", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := rs.FromContext(r.Context())
		json.NewEncoder(w).Encode(map[string]string{"sub": info.Subject, "sid": info.SessionID, "did": info.DeviceID})
	})))
	mux.HandleFunc("POST /ssf/events", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+d.bearer {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		_, err := recv.Process(r.Context(), strings.TrimSpace(string(b)))
		var se *rs.SETError
		switch {
		case errors.As(err, &se):
			w.WriteHeader(http.StatusBadRequest)
		case err != nil:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	})
	d.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		d.usage.Close(ctx)
	})
	r := request(context.Background(), http.MethodPost, issuer+"/ssf/stream", token, map[string]any{
		"delivery": map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": d.URL + "/ssf/events",
			"authorization_header": "Bearer " + d.bearer},
		"description": "chain test: the docs resource"})
	if r.status != http.StatusCreated {
		t.Fatalf("create the resource's push stream: %v %s", r, r.body)
	}
	return d
}
