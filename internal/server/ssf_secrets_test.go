package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/wardtest"
)

// ssfSecretFlow runs the Shared Signals flows that handle secrets: a
// receiver client's secret and access tokens, and the push
// authorization_header a receiver gives its stream (sealed under the KEK,
// sent with each push, never returned). It returns those secrets, and
// fails if the pushes did not carry the header (so the scan that follows
// looks at a flow that really used it).
func ssfSecretFlow(t *testing.T, in *wardtest.Instance) []string {
	t.Helper()
	ctx := context.Background()
	_, sec, err := in.App.Clients.Create(ctx, "test", clientspec.Spec{ID: "ssf-receiver", Name: "SSF receiver",
		AuthMethod: model.AuthClientSecretBasic, GrantTypes: []string{"client_credentials"}, Scopes: []string{"ssf.manage", "ssf.poll"}})
	if err != nil {
		t.Fatal(err)
	}
	cc := do(t, in, call{path: "/token", basic: [2]string{"ssf-receiver", sec.Reveal()}, noProof: true,
		form: url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf.manage ssf.poll"}}})
	tok := cc.str("access_token")
	if tok == "" {
		t.Fatalf("ssf receiver token: %d %s", cc.Status, cc.Body)
	}
	header1 := "Bearer push-" + secret.RandomToken()
	header2 := "Bearer push-" + secret.RandomToken()
	var mu sync.Mutex
	seen := map[string]int{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("Authorization")]++
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer rcv.Close()
	ssf := func(method, path string, body any) (int, string) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, in.URL+path, strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	status, body := ssf(http.MethodPost, "/ssf/stream", map[string]any{"delivery": map[string]any{
		"method": model.DeliveryPush, "endpoint_url": rcv.URL + "/events", "authorization_header": header1}})
	if status != http.StatusCreated {
		t.Fatalf("create stream: %d %s", status, body)
	}
	var st struct {
		StreamID string `json:"stream_id"`
	}
	json.Unmarshal([]byte(body), &st)
	wait := func(h string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := seen[h]
			mu.Unlock()
			if n > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no push carried the stream's authorization header")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if status, body := ssf(http.MethodPost, "/ssf/verify", map[string]any{"stream_id": st.StreamID, "state": "s1"}); status != http.StatusNoContent {
		t.Fatalf("verify: %d %s", status, body)
	}
	wait(header1)
	// A new header (PATCH), then a real event through it.
	if status, body := ssf(http.MethodPatch, "/ssf/stream", map[string]any{"stream_id": st.StreamID, "delivery": map[string]any{
		"method": model.DeliveryPush, "endpoint_url": rcv.URL + "/events", "authorization_header": header2}}); status != http.StatusOK ||
		strings.Contains(body, "push-") {
		t.Fatalf("update stream: %d %s", status, body)
	}
	bob, err := in.App.Store.GetUserByUsername(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.App.Identity.SetRisk(ctx, "admin", bob.ID, "high", "test"); err != nil {
		t.Fatal(err)
	}
	wait(header2)
	// Reads never return the header.
	if _, body := ssf(http.MethodGet, "/ssf/stream?stream_id="+st.StreamID, nil); strings.Contains(body, "push-") {
		t.Fatalf("the authorization header was returned: %s", body)
	}
	return []string{sec.Reveal(), tok, header1, header2, strings.TrimPrefix(header1, "Bearer "), strings.TrimPrefix(header2, "Bearer ")}
}
