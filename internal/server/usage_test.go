package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/usage"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

const reporterSecret = "reporter-secret-0123456789"

// withReporters adds the clients of resource servers: "reporter" may
// report usage (confidential, DPoP optional), "nosuch" may not.
func withReporters(c *config.Config) {
	c.StaticClients = append(c.StaticClients,
		config.StaticClient{ID: "reporter", Name: "API gateway", AuthMethod: "client_secret_basic", Secret: reporterSecret,
			GrantTypes: []string{"client_credentials"}, Scopes: []string{usage.Scope, "api"}},
		config.StaticClient{ID: "nosuch", Name: "Other service", AuthMethod: "client_secret_basic", Secret: reporterSecret,
			GrantTypes: []string{"client_credentials"}, Scopes: []string{"api"}})
}

// clientToken gets a client-credentials token (DPoP-bound with s).
func clientToken(t *testing.T, in *wardtest.Instance, id, scope string, s *dpop.Signer) string {
	t.Helper()
	r := do(t, in, call{path: "/token", basic: [2]string{id, reporterSecret}, signer: s,
		form: url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}})
	if r.Status != 200 {
		t.Fatalf("client token: %d %s", r.Status, r.Body)
	}
	return r.str("access_token")
}

// postUsage sends a report body with token tok (DPoP with s when set).
func postUsage(t *testing.T, in *wardtest.Instance, tok string, s *dpop.Signer, body string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, in.URL+usage.Path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case tok == "":
	case s != nil:
		req.Header.Set("Authorization", "DPoP "+tok)
	default:
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if s != nil {
		p, err := s.ProofAt(http.MethodPost, in.URL+usage.Path, tok, "", in.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("DPoP", p)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := result{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &out.JSON)
	return out
}

func usageEvents(t *testing.T, in *wardtest.Instance) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventTokenUsed}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// A gateway's report becomes token.used events, one per record, with the
// use's own address (not the gateway's), result, proof status and keys;
// a DPoP-bound reporter token works; the response counts what was
// recorded.
func TestUsageReportRecorded(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: withReporters})
	key := newSigner(t)
	tok := clientToken(t, in, "reporter", usage.Scope, key)
	now := in.Clock.Now().UTC().Format(time.RFC3339Nano)
	body := `{"records":[
	 {"time":"` + now + `","jti":"at-1","sid":"s-1","sub":"u-1","client_id":"spa","did":"d-1","jkt":"K2","bound_jkt":"K1","proof":"wrong_key","aud":"https://api.example","client_ip":"198.51.100.7","user_agent":"curl/8","result":"rejected","reason":"dpop_jkt_mismatch"},
	 {"time":"` + now + `","jti":"at-1","sid":"s-1","sub":"u-1","client_id":"spa","jkt":"K1","bound_jkt":"K1","proof":"ok","client_ip":"192.0.2.1","result":"allowed","count":40},
	 {"time":"` + now + `","jti":"at-9","sub":"svc","client_id":"svc","jkt":"K9","client_ip":"192.0.2.2","result":"allowed"}
	],"dropped":3}`
	r := postUsage(t, in, tok, key, body)
	if r.Status != 200 || r.JSON["accepted"] != float64(3) || r.JSON["refused"] != float64(0) {
		t.Fatalf("report: %d %s", r.Status, r.Body)
	}
	evs := usageEvents(t, in)
	if len(evs) != 3 {
		t.Fatalf("%d token.used events", len(evs))
	}
	byIP := map[string]activity.Activity{}
	for _, e := range evs {
		ev := e.Event
		a, ok := activity.FromEvent(&ev)
		if !ok || a.Kind != activity.KindTokenUse {
			t.Fatalf("not token_use activity: %+v", ev)
		}
		byIP[a.IP] = a
	}
	if a := byIP["198.51.100.7"]; a.Result != activity.ResultFailure || a.Reason != "dpop_jkt_mismatch" || a.Proof != activity.ProofWrongKey ||
		a.JKT != "K2" || a.BoundJKT != "K1" || a.UserID != "u-1" || a.SessionID != "s-1" || a.TokenID != "at-1" || a.DeviceID != "d-1" ||
		a.Resource != "https://api.example" || a.UserAgent != "curl/8" || a.Uses() != 1 {
		t.Errorf("rejected use: %+v", a)
	}
	if a := byIP["192.0.2.1"]; a.Result != activity.ResultSuccess || a.Count != 40 || a.Proof != activity.ProofOK {
		t.Errorf("aggregated use: %+v", a)
	}
	// A reporter without proof statuses sends the token's key as jkt; a
	// client's own token names no user.
	if a := byIP["192.0.2.2"]; a.BoundJKT != "K9" || a.JKT != "" || a.UserID != "" || a.ClientID != "svc" {
		t.Errorf("legacy record: %+v", a)
	}
	for _, e := range evs {
		if e.IP == "127.0.0.1" || e.Data["reporter"] != "reporter" {
			t.Errorf("event records the reporter's address or not the reporter: %s %v", e.IP, e.Data)
		}
	}
}

// The endpoint from the attacker's side: no token, a token of another
// scope, a user's token, a bound token without its proof or with another
// key, a replayed proof, and bodies that are too large, of the wrong
// type or malformed are refused whole, with the status and error code
// that say why, and record nothing. A malformed or hostile record is
// refused by itself: the others are recorded.
func TestUsageReportRefusals(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: withReporters})
	key, other := newSigner(t), newSigner(t)
	bound := clientToken(t, in, "reporter", usage.Scope, key)
	bearer := clientToken(t, in, "reporter", usage.Scope, nil)
	now := in.Clock.Now().UTC().Format(time.RFC3339)
	good := `{"time":"` + now + `","jti":"at-1","result":"allowed"}`
	one := `{"records":[` + good + `]}`

	for _, tc := range []struct {
		name   string
		tok    string
		s      *dpop.Signer
		authz  string // overrides the Authorization header
		body   string
		status int
		code   string
	}{
		{"no token", "", nil, "", one, 401, "invalid_token"},
		{"garbage token", "not-a-token", nil, "", one, 401, "invalid_token"},
		{"another scope", clientToken(t, in, "nosuch", "api", nil), nil, "", one, 403, "insufficient_scope"},
		{"scope not asked for", clientToken(t, in, "reporter", "api", nil), nil, "", one, 403, "insufficient_scope"},
		{"bound token as bearer", bound, nil, "", one, 401, "invalid_token"},
		{"bound token, another key", bound, other, "", one, 401, "invalid_dpop_proof"},
		{"too large", bearer, nil, "", `{"records":[` + strings.Repeat(good+",", usage.MaxBody/len(good)+1) + good + `]}`, 413, "invalid_request"},
		{"too many records", bearer, nil, "", `{"records":[` + strings.Repeat(good+",", usage.MaxRecords) + good + `]}`, 400, "invalid_request"},
		{"not JSON", bearer, nil, "", `records=1`, 400, "invalid_request"},
		{"records missing", bearer, nil, "", `{"dropped":1}`, 400, "invalid_request"},
		{"records not a list", bearer, nil, "", `{"records":{"a":1}}`, 400, "invalid_request"},
		{"unknown envelope field", bearer, nil, "", `{"records":[],"token":"x"}`, 400, "invalid_request"},
		{"negative dropped", bearer, nil, "", `{"records":[],"dropped":-1}`, 400, "invalid_request"},
		{"trailing data", bearer, nil, "", one + `{}`, 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(usageEvents(t, in))
			r := postUsage(t, in, tc.tok, tc.s, tc.body)
			if r.Status != tc.status || r.str("error") != tc.code {
				t.Fatalf("got %d %q (%s), want %d %q", r.Status, r.str("error"), r.str("error_description"), tc.status, tc.code)
			}
			if (tc.status == 401 || tc.status == 403) && r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("no challenge")
			}
			if tc.status == 403 && !strings.Contains(r.Header.Get("WWW-Authenticate"), `scope="`+usage.Scope+`"`) {
				t.Errorf("challenge does not name the scope: %s", r.Header.Get("WWW-Authenticate"))
			}
			if n := len(usageEvents(t, in)); n != before {
				t.Errorf("a refused report recorded %d events", n-before)
			}
		})
	}

	// Wrong content type.
	req, _ := http.NewRequest(http.MethodPost, in.URL+usage.Path, strings.NewReader(one))
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 415 {
		t.Fatalf("text/plain: %v %v", resp, err)
	}

	// A user's token, even one that somehow has the scope's name, is not a
	// reporter's: the spa client cannot ask for it, so use a user token as is.
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	userTok := exchange(t, in, "spa", code, verifier, s).str("access_token")
	if r := postUsage(t, in, userTok, s, one); r.Status != 403 || r.str("error") != "insufficient_scope" {
		t.Fatalf("user token: %d %s", r.Status, r.Body)
	}

	// A replayed proof.
	p, _ := key.ProofAt(http.MethodPost, in.URL+usage.Path, bound, "", in.Clock.Now())
	for i, want := range []int{200, 401} {
		req, _ := http.NewRequest(http.MethodPost, in.URL+usage.Path, strings.NewReader(one))
		req.Header.Set("Authorization", "DPoP "+bound)
		req.Header.Set("DPoP", p)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("proof use %d: %v %v, want %d", i+1, resp.StatusCode, err, want)
		}
		resp.Body.Close()
	}

	// Bad records are refused one by one; the good ones are recorded.
	old := in.Clock.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	future := in.Clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	long := strings.Repeat("a", usage.MaxField+1)
	bad := []string{
		`{"time":"` + now + `","result":"maybe"}`,
		`{"time":"` + now + `","result":"allowed","proof":"trust-me"}`,
		`{"time":"` + now + `","result":"allowed","client_ip":"999.1.1.1"}`,
		`{"time":"` + now + `","result":"allowed","jti":"` + long + `"}`,
		`{"time":"` + now + `","result":"allowed","user_agent":"a\u0000b"}`,
		`{"time":"` + now + `","result":"allowed","count":-4}`,
		`{"time":"` + now + `","result":"allowed","count":"4"}`,
		`{"time":"` + now + `","result":"allowed","access_token":"eyJhbGciOi.secret.sig"}`,
		`{"time":"yesterday","result":"allowed"}`,
		`{"result":"allowed"}`,
		`{"time":"` + old + `","result":"allowed"}`,
		`{"time":"` + future + `","result":"allowed"}`,
		`"a string"`,
		`[1,2]`,
	}
	before := len(usageEvents(t, in))
	body := `{"records":[` + good + "," + strings.Join(bad, ",") + "," + good + `]}`
	r := postUsage(t, in, bearer, nil, body)
	if r.Status != 200 || r.JSON["accepted"] != float64(2) || r.JSON["refused"] != float64(len(bad)) {
		t.Fatalf("mixed report: %d %s", r.Status, r.Body)
	}
	if n := len(usageEvents(t, in)) - before; n != 2 {
		t.Fatalf("%d events recorded from the mixed report, want 2", n)
	}
	errs, _ := r.JSON["errors"].([]any)
	if len(errs) != len(bad) {
		t.Fatalf("errors: %v", r.JSON["errors"])
	}
	for i, e := range errs {
		m := e.(map[string]any)
		if m["index"] != float64(i+1) || m["error"] == "" {
			t.Errorf("error %d: %v", i, m)
		}
	}
	if strings.Contains(r.Body, "eyJhbGciOi") || strings.Contains(r.Body, "secret.sig") || strings.Contains(r.Body, long) {
		t.Errorf("the response echoes record contents: %s", r.Body)
	}
}

// The reporter of rs, pointed at Ward with a client-credentials token,
// delivers what a resource saw, and neither Ward's events nor the report
// hold a token.
func TestUsageFromReporterHoldsNoToken(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: withReporters})
	tok := clientToken(t, in, "reporter", usage.Scope, nil)
	rep, err := rs.NewUsageReporter(rs.UsageConfig{Endpoint: in.URL + usage.Path, FlushInterval: time.Hour,
		Token: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	userTok := clientToken(t, in, "nosuch", "api", nil)
	for range 5 {
		rep.Report(rs.UsageRecord{Time: in.Clock.Now(), TokenID: "at-7", ClientIP: "192.0.2.8", Result: rs.ResultAllowed, Proof: rs.ProofNone})
	}
	if err := rep.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := rep.Stats(); s.Sent != 1 || s.Merged != 4 {
		t.Fatalf("reporter stats %+v", s)
	}
	evs := usageEvents(t, in)
	if len(evs) != 1 || evs[0].Data[activity.DataCount] != "5" || evs[0].TokenID != "at-7" {
		t.Fatalf("events: %+v", evs)
	}
	for _, e := range evs {
		b, _ := json.Marshal(e)
		ev := e.Event
		a, _ := activity.FromEvent(&ev)
		line, _ := activity.Marshal(&a)
		for _, secret := range []string{tok, userTok, reporterSecret} {
			for _, part := range strings.Split(secret, ".") {
				if len(part) > 16 && (strings.Contains(string(b), part) || strings.Contains(string(line), part)) {
					t.Fatalf("a token or secret reached the record: %s", b)
				}
			}
		}
	}
}
