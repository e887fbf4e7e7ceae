package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// An unauthenticated flood of token requests with 60 KB client ids must
// not fill the disk: what an event records of such a request is bounded,
// and a network that keeps failing client authentication is answered 429
// (not recorded) once it has spent its budget. Other networks and real
// clients are not affected.
func TestFailedClientAuthCannotFillTheDisk(t *testing.T) {
	in := startBehindProxy(t, "", nil)
	ctx := context.Background()
	huge := strings.Repeat("A", 60<<10)
	before, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Limit: 10000})
	const n = 200
	codes := map[int]int{}
	for range n {
		r := do(t, in, call{path: "/token", basic: [2]string{huge, "x"}, header: http.Header{"X-Forwarded-For": {"2001:db8:77::1"}},
			form: url.Values{"grant_type": {"client_credentials"}}})
		codes[r.Status]++
		if r.Status == http.StatusTooManyRequests && r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[401] != 60 || codes[429] != n-60 {
		t.Errorf("answers %v, want 60 × 401 (the budget) then 429", codes)
	}
	after, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Limit: 10000})
	recorded := len(after) - len(before)
	if recorded > 60 {
		t.Errorf("%d events recorded for %d refused requests, want at most the budget (60)", recorded, n)
	}
	for _, e := range after[:recorded] {
		if len(e.ClientID) > bus.MaxEventField || len(e.Actor) > bus.MaxEventField {
			t.Fatalf("event %s records a client id of %d bytes", e.Type, len(e.ClientID))
		}
	}
	// Another address of the same /64 shares the budget; another network
	// does not, and a real client from it is served.
	r := do(t, in, call{path: "/token", basic: [2]string{"nobody", "x"}, header: http.Header{"X-Forwarded-For": {"2001:db8:77::2"}},
		form: url.Values{"grant_type": {"client_credentials"}}})
	wantError(t, r, 429, "invalid_request")
	r = do(t, in, call{path: "/token", basic: [2]string{"nobody", "x"}, header: http.Header{"X-Forwarded-For": {"198.51.100.9"}},
		form: url.Values{"grant_type": {"client_credentials"}}})
	wantError(t, r, 401, "invalid_client")
	r = do(t, in, call{path: "/token", basic: serviceAuth, header: http.Header{"X-Forwarded-For": {"198.51.100.9"}},
		form: url.Values{"grant_type": {"client_credentials"}}})
	if r.Status != 200 {
		t.Errorf("a real client from another network: %d %s", r.Status, r.Body)
	}
	if e := lastEvent(t, in, model.EventTokenIssued); e.ClientID != "service" {
		t.Errorf("token.issued %+v", e)
	}
}
