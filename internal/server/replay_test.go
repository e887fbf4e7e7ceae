package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// captured is a request an attacker recorded on the wire, with its DPoP
// proof, to send again as it is.
type captured struct {
	name   string
	call   call
	status int // what a replay is answered
	event  model.EventType
}

// captureRequests makes one accepted request to the token endpoint and
// one to the admin API, each with a fresh proof, and returns them for
// replay. issuer is the URL the proofs are made for (the deployment's),
// in the instance that serves them.
func captureRequests(t *testing.T, in *wardtest.Instance, issuer string, s *dpop.Signer, adminToken string) []captured {
	t.Helper()
	tokenProof, err := s.ProofAt(http.MethodPost, issuer+"/token", "", "", in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	adminProof, err := s.ProofAt(http.MethodGet, issuer+"/admin/api/v1/users", adminToken, "", in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	reqs := []captured{
		{name: "token endpoint", status: 400, event: model.EventDPoPProofRejected, call: call{path: "/token", proof: tokenProof,
			basic: [2]string{"service", wardtest.ServiceSecret}, form: url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}}},
		{name: "admin API", status: 401, event: model.EventAdminAccessDenied, call: call{method: http.MethodGet, path: "/admin/api/v1/users",
			authz: "DPoP " + adminToken, proof: adminProof}},
	}
	for _, c := range reqs {
		if r := do(t, in, c.call); r.Status != 200 {
			t.Fatalf("%s, first use: %d %s", c.name, r.Status, r.Body)
		}
	}
	return reqs
}

// wantReplayRefused sends each captured request again to in: each is
// refused as a replayed proof, and the refusal is recorded as one.
func wantReplayRefused(t *testing.T, in *wardtest.Instance, reqs []captured) {
	t.Helper()
	for _, c := range reqs {
		r := do(t, in, c.call)
		if r.Status != c.status || r.str("error") != "invalid_dpop_proof" {
			t.Errorf("%s replayed: %d %q (%s), want %d invalid_dpop_proof", c.name, r.Status, r.str("error"), r.str("error_description"), c.status)
			continue
		}
		evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{c.event}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Reason != "dpop_replay" {
			t.Errorf("%s replayed: last %s event %+v, want reason dpop_replay", c.name, c.event, evs)
		}
	}
}

// adminToken signs alice in through spa with the admin scope and returns
// her DPoP-bound access token.
func adminToken(t *testing.T, in *wardtest.Instance, s *dpop.Signer) string {
	t.Helper()
	code, verifier := codeFlow(t, in, "spa", s, url.Values{"scope": {"openid ward:admin"}})
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	return r.str("access_token")
}

// TestDPoPReplayAfterRestart: a request with a valid proof is accepted;
// the same request with the same proof, sent again after Ward was closed
// and started again on the same SQLite data directory (inside the proof's
// lifetime), is refused as a replay, at the token endpoint and at the
// admin API. Fresh proofs work after the restart.
func TestDPoPReplayAfterRestart(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	tok := adminToken(t, in, s)
	reqs := captureRequests(t, in, in.URL, s, tok)

	in = in.Restart(t)
	wantReplayRefused(t, in, reqs)
	captureRequests(t, in, in.URL, s, tok) // fresh proofs: accepted
}

// TestDPoPReplayAcrossInstances: two instances of one deployment (one
// PostgreSQL database, one issuer behind a load balancer) refuse each
// other's replays, in both directions, and so does an instance restarted.
func TestDPoPReplayAcrossInstances(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	a := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
	b := wardtest.Start(t, wardtest.Options{Join: a, Configure: func(c *config.Config) { c.Issuer = a.URL }})
	s := newSigner(t)
	tok := adminToken(t, a, s)

	fromA := captureRequests(t, a, a.URL, s, tok)
	wantReplayRefused(t, b, fromA)
	fromB := captureRequests(t, b, a.URL, s, tok)
	wantReplayRefused(t, a, fromB)

	a = a.Restart(t)
	wantReplayRefused(t, a, fromA)
	wantReplayRefused(t, a, fromB)
}

// TestDPoPReplayRaceAcrossInstances: a client credentials request
// captured with its proof and sent many times at once, to two instances
// on one PostgreSQL database, yields one token. Every other copy is
// refused as a replay (by the instance's memory, or by the database,
// where the proof's jti and the token's token.issued are one write), and
// the audit log holds one token.issued and one dpop_replay refusal per
// other copy: a refused copy records nothing but its refusal.
func TestDPoPReplayRaceAcrossInstances(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	a := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
	b := wardtest.Start(t, wardtest.Options{Join: a, Configure: func(c *config.Config) { c.Issuer = a.URL }})
	proof, err := newSigner(t).ProofAt(http.MethodPost, a.URL+"/token", "", "", a.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}.Encode()
	const n = 12
	status := make([]int, n)
	codes := make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		in := a
		if i%2 == 1 {
			in = b
		}
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("service", wardtest.ServiceSecret)
			req.Header.Set("DPoP", proof)
			<-start
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var body struct {
				Error string `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			status[i], codes[i] = resp.StatusCode, body.Error
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i := range n {
		switch {
		case status[i] == 200:
			ok++
		case status[i] != 400 || codes[i] != "invalid_dpop_proof":
			t.Errorf("copy %d: %d %q, want 200 once, else 400 invalid_dpop_proof", i, status[i], codes[i])
		}
	}
	if ok != 1 {
		t.Errorf("%d copies got a token, want exactly 1 (statuses %v)", ok, status)
	}
	ctx := context.Background()
	issued, err := a.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenIssued}, ClientID: "service", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != 1 {
		t.Errorf("%d token.issued events for %d copies of one proof, want 1", len(issued), n)
	}
	refused, err := a.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventDPoPProofRejected}, ClientID: "service", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	replays := 0
	for _, e := range refused {
		if e.Reason == "dpop_replay" {
			replays++
		}
	}
	if replays != n-ok || len(refused) != replays {
		t.Errorf("%d refusals, %d of them dpop_replay; want %d replays and nothing else", len(refused), replays, n-ok)
	}

	// A refused request uses up its proof too: the same proof, made
	// acceptable otherwise, is a replay at the other instance.
	s := newSigner(t)
	refusedProof, err := s.ProofAt(http.MethodPost, a.URL+"/token", "", "", a.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, a, call{path: "/token", proof: refusedProof, basic: [2]string{"service", wardtest.ServiceSecret},
		form: url.Values{"grant_type": {"client_credentials"}, "scope": {"not-a-scope"}}})
	if r.Status != 400 || r.str("error") != "invalid_scope" {
		t.Fatalf("unknown scope: %d %s, want 400 invalid_scope", r.Status, r.Body)
	}
	r = do(t, b, call{path: "/token", proof: refusedProof, basic: [2]string{"service", wardtest.ServiceSecret},
		form: url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}})
	if r.Status != 400 || r.str("error") != "invalid_dpop_proof" {
		t.Errorf("the refused request's proof again: %d %s, want 400 invalid_dpop_proof", r.Status, r.Body)
	}
}
