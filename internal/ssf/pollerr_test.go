package ssf_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// wantPollError checks an error of the poll endpoint: status, exactly the
// RFC 8935 §2.3 members {"err", "description"} (no OAuth "error"), the
// code, a bounded description that echoes no credential, and no caching.
func wantPollError(t testing.TB, what string, r response, status int, code string, secrets ...string) {
	t.Helper()
	wantStatus(t, what, r, status)
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%s: body is not a JSON object: %s", what, r.body)
	}
	if len(m) != 2 || m["err"] != code {
		t.Fatalf("%s: body %s, want exactly {\"err\": %q, \"description\": …}", what, r.body, code)
	}
	d, ok := m["description"].(string)
	if !ok || d == "" || len(d) > 200 {
		t.Errorf("%s: description %q, want a short text", what, m["description"])
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(string(r.body), s) {
			t.Errorf("%s: the body echoes a credential or the request", what)
		}
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s: Cache-Control %q", what, cc)
	}
}

// TestPollErrors: every error of the poll endpoint has the same shape
// (status, RFC 8935 body with a registry code; RFC 6750 challenges for
// token errors), and a refused request applies nothing, its
// acknowledgements included.
func TestPollErrors(t *testing.T) { testPollErrors(t, start(t)) }

// TestPollErrorsPostgres: the same on PostgreSQL (which refuses a NUL in
// text: a setErrs description must be cleaned before it is stored).
func TestPollErrorsPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN not set")
	}
	testPollErrors(t, wardtest.Start(t, wardtest.Options{RealClock: true, PostgresDSN: dsn, Configure: ssfClients}))
}

func testPollErrors(t *testing.T, in *wardtest.Instance) {
	tok := receiverToken(t, in)
	otok := token(t, in, otherID, otherSecret, "ssf.manage ssf.poll")
	noPoll := token(t, in, receiverID, receiverSecret, "ssf.manage")
	ctx := context.Background()
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	push := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPush,
		"endpoint_url": "https://127.0.0.1:9/e"}})["stream_id"].(string)
	p := poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	poll(t, in, tok, id, map[string]any{"maxEvents": 0, "ack": jtis(p)})
	if err := in.App.Identity.SetRisk(ctx, "admin-1", userID(t, in, "bob"), "high", ""); err != nil {
		t.Fatal(err)
	}
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	if len(p.Sets) != 1 {
		t.Fatalf("queued: %v", jtis(p))
	}
	jti := jtis(p)[0]
	stillQueued := func(what string) {
		t.Helper()
		c, err := in.App.CAE.QueueCounts(ctx, receiverID, id)
		if err != nil || c.Queued != 1 || c.Refused != 0 {
			t.Fatalf("%s: queue %+v %v, want the SET queued, not refused", what, c, err)
		}
	}
	path := "/ssf/poll/" + id
	ack := []string{jti}
	long := strings.Repeat("j", 257)

	cases := []struct {
		name   string
		path   string
		tok    string
		body   any
		status int
		code   string
	}{
		{"bad JSON", path, tok, `{"ack": [`, 400, "invalid_request"},
		{"not an object", path, tok, `["ack"]`, 400, "invalid_request"},
		{"two objects", path, tok, `{} {}`, 400, "invalid_request"},
		{"empty body", path, tok, ``, 400, "invalid_request"},
		{"maxEvents negative", path, tok, map[string]any{"maxEvents": -1, "ack": ack}, 400, "invalid_request"},
		{"maxEvents fraction", path, tok, `{"maxEvents": 1.5, "ack": ["` + jti + `"]}`, 400, "invalid_request"},
		{"maxEvents huge", path, tok, `{"maxEvents": 1e300, "ack": ["` + jti + `"]}`, 400, "invalid_request"},
		{"maxEvents string", path, tok, map[string]any{"maxEvents": "10", "ack": ack}, 400, "invalid_request"},
		{"returnImmediately string", path, tok, map[string]any{"returnImmediately": "yes", "ack": ack}, 400, "invalid_request"},
		{"ack not a list", path, tok, map[string]any{"ack": jti}, 400, "invalid_request"},
		{"ack of numbers", path, tok, map[string]any{"ack": []any{jti, 7}}, 400, "invalid_request"},
		{"empty ack jti", path, tok, map[string]any{"ack": []string{jti, ""}}, 400, "invalid_request"},
		{"oversized ack jti", path, tok, map[string]any{"ack": []string{jti, long}}, 400, "invalid_request"},
		{"ack jti with a control character", path, tok, map[string]any{"ack": []string{jti, "a\nb"}}, 400, "invalid_request"},
		{"setErrs not an object", path, tok, map[string]any{"ack": ack, "setErrs": []string{"x"}}, 400, "invalid_request"},
		{"setErrs value not an object", path, tok, map[string]any{"ack": ack, "setErrs": map[string]any{"x": "invalid_request"}}, 400, "invalid_request"},
		{"setErrs without err", path, tok, map[string]any{"ack": ack, "setErrs": map[string]any{"x": map[string]any{"description": "d"}}}, 400, "invalid_request"},
		{"setErrs err with a space", path, tok, map[string]any{"ack": ack, "setErrs": map[string]any{"x": map[string]any{"err": "bad code"}}}, 400, "invalid_request"},
		{"setErrs oversized err", path, tok, map[string]any{"ack": ack, "setErrs": map[string]any{"x": map[string]any{"err": strings.Repeat("e", 65)}}}, 400, "invalid_request"},
		{"setErrs description not a string", path, tok, map[string]any{"ack": ack, "setErrs": map[string]any{"x": map[string]any{"err": "invalid_request", "description": 7}}}, 400, "invalid_request"},
		{"setErrs oversized jti", path, tok, map[string]any{"ack": ack, "setErrs": map[string]any{long: map[string]any{"err": "invalid_request"}}}, 400, "invalid_request"},
		{"oversized body", path, tok, map[string]any{"ack": ack, "padding": strings.Repeat("p", 70<<10)}, 413, "invalid_request"},
		{"unknown stream", "/ssf/poll/no-such-stream", tok, map[string]any{"ack": ack}, 404, "invalid_request"},
		{"another receiver's stream", "/ssf/poll/" + id, otok, map[string]any{"ack": ack}, 404, "invalid_request"},
		{"a push stream", "/ssf/poll/" + push, tok, map[string]any{"ack": ack}, 400, "invalid_request"},
		{"oversized stream id", "/ssf/poll/" + strings.Repeat("s", 300), tok, map[string]any{"ack": ack}, 400, "invalid_request"},
		{"no token", path, "", map[string]any{"ack": ack}, 401, "authentication_failed"},
		{"invalid token", path, tok + "x", map[string]any{"ack": ack}, 401, "authentication_failed"},
		{"token without ssf.poll", path, noPoll, map[string]any{"ack": ack}, 403, "access_denied"},
		{"a user's token", path, userToken(t, in, "bob", wardtest.BobPassword), map[string]any{"ack": ack}, 403, "access_denied"},
	}
	for _, c := range cases {
		r := call(t, in, http.MethodPost, c.path, c.tok, c.body)
		wantPollError(t, c.name, r, c.status, c.code, tok, otok, long, strings.Repeat("d", 100))
		stillQueued(c.name)
	}

	// Token errors keep RFC 6750's challenge (the OAuth code is there).
	r := call(t, in, http.MethodPost, path, "", map[string]any{})
	if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer") || strings.Contains(ch, "error=") {
		t.Errorf("no token: challenge %q, want Bearer without an error", ch)
	}
	r = call(t, in, http.MethodPost, path, tok+"x", map[string]any{})
	if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) {
		t.Errorf("invalid token: challenge %q", ch)
	}
	r = call(t, in, http.MethodPost, path, noPoll, map[string]any{})
	if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="ssf.poll"`) {
		t.Errorf("without ssf.poll: challenge %q", ch)
	}
	// A token in the query string is refused like the other endpoints do.
	r = call(t, in, http.MethodPost, path+"?access_token="+tok, "", map[string]any{})
	wantPollError(t, "token in the query", r, 400, "invalid_request", tok)
	// Too many acknowledgements (the service's own bound).
	many := make([]string, 10001)
	for i := range many {
		many[i] = "a"
	}
	many[0] = jti
	wantPollError(t, "10,001 acks", call(t, in, http.MethodPost, path, tok, map[string]any{"ack": many}), 400, "invalid_request")
	stillQueued("10,001 acks")

	// Not errors: unknown members are ignored (extensions), maxEvents
	// above 1000 is cut to 1000, null members are absent ones, acks of
	// unknown jtis are no-ops, and a paused stream answers no SETs.
	poll(t, in, tok, id, map[string]any{"returnImmediately": true, "maxEvents": 5000, "x-extension": map[string]any{"a": 1},
		"ack": []string{"no-such-jti"}, "setErrs": nil})
	stillQueued("unknown members")
	wantStatus(t, "pause", call(t, in, http.MethodPost, "/ssf/status", tok, map[string]any{"stream_id": id, "status": "paused"}), http.StatusOK)
	r = call(t, in, http.MethodPost, path, tok, map[string]any{"returnImmediately": true})
	wantStatus(t, "paused", r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `{"sets":{},"moreAvailable":false}` {
		t.Errorf("paused stream: %s", r.body)
	}
	// The receiver's own refusal, on a paused stream, is applied; its
	// description is free text, cleaned (a NUL, which PostgreSQL refuses
	// in text) and cut, not a reason to refuse the request.
	poll(t, in, tok, id, map[string]any{"maxEvents": 0, "setErrs": map[string]any{jti: map[string]any{"err": "invalid_key",
		"description": "unknown kid\x00\n" + strings.Repeat("d", 5000)}}})
	// (Queued counts the stream-updated SET of the pause.)
	if c, _ := in.App.CAE.QueueCounts(ctx, receiverID, id); c.Refused != 1 {
		t.Errorf("after setErrs: queue %+v, want the SET refused", c)
	}
}
