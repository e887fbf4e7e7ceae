package ssf_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// vectorsDir holds the SSF 1.0 and CAEP 1.0 examples the tests use
// (testdata/README.md says where each comes from).
const vectorsDir = "testdata"

// vectorHTTP reads an SSF spec example (.http) and returns its JSON body.
func vectorHTTP(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir, "ssf", name))
	if err != nil {
		t.Fatalf("SSF vector: %v", err)
	}
	s := string(b)
	if i := strings.Index(s, "\n\n"); i >= 0 {
		return []byte(strings.TrimSpace(s[i+2:]))
	}
	return nil
}

func vectorJSON(t *testing.T, dir, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir, dir, name))
	if err != nil {
		t.Fatalf("vector: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s/%s: %v", dir, name, err)
	}
	return m
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestDiscovery(t *testing.T) {
	in := start(t)
	r := call(t, in, http.MethodGet, "/.well-known/ssf-configuration", "", nil)
	wantStatus(t, "discovery", r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	got := r.json(t)
	want := map[string]any{
		"spec_version": "1_0", "issuer": in.URL, "jwks_uri": in.URL + "/jwks",
		"configuration_endpoint": in.URL + "/ssf/stream", "status_endpoint": in.URL + "/ssf/status",
		"add_subject_endpoint": in.URL + "/ssf/subjects:add", "remove_subject_endpoint": in.URL + "/ssf/subjects:remove",
		"verification_endpoint": in.URL + "/ssf/verify", "default_subjects": "ALL",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if dm, _ := got["delivery_methods_supported"].([]any); !reflect.DeepEqual(dm, []any{"urn:ietf:rfc:8935", "urn:ietf:rfc:8936"}) {
		t.Errorf("delivery_methods_supported = %v", got["delivery_methods_supported"])
	}
	if as, _ := got["authorization_schemes"].([]any); len(as) != 1 || as[0].(map[string]any)["spec_urn"] != "urn:ietf:rfc:6749" {
		t.Errorf("authorization_schemes = %v", got["authorization_schemes"])
	}
	// Every member of the SSF 1.0 example response (vector 19) but the
	// optional critical_subject_members is present.
	var example map[string]any
	if err := json.Unmarshal(vectorHTTP(t, "19-figdiscoveryresponse.http"), &example); err != nil {
		t.Fatal(err)
	}
	for _, k := range keysOf(example) {
		if _, ok := got[k]; !ok && k != "critical_subject_members" {
			t.Errorf("discovery lacks %s (present in the SSF example)", k)
		}
	}
	// The jwks_uri serves the key that signs SETs.
	jr := call(t, in, http.MethodGet, "/jwks", "", nil)
	if !strings.Contains(string(jr.body), in.App.Keys.ActiveKID()) {
		t.Errorf("jwks_uri does not list the signing key %s", in.App.Keys.ActiveKID())
	}
}

// TestStreamLifecycle walks the SSF 1.0 §8 management API with the
// request bodies of the spec's examples (vectors 21-51).
func TestStreamLifecycle(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)

	// No streams yet: an empty list (vector 28).
	r := call(t, in, http.MethodGet, "/ssf/stream", tok, nil)
	wantStatus(t, "list empty", r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("empty list = %s, want []", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.header.Get("Cache-Control"))
	}

	// Create (vector 21) with Ward's event types and a loopback push URL.
	var create map[string]any
	json.Unmarshal(vectorHTTP(t, "21-figcreatestreamreq.http"), &create)
	create["delivery"] = map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": "https://receiver.example.com/events",
		"authorization_header": "Bearer push-token-1"}
	create["events_requested"] = []string{cae.EventSessionRevoked, cae.EventCredentialChange, "urn:example:secevent:events:type_4"}
	r = call(t, in, http.MethodPost, "/ssf/stream", tok, create)
	wantStatus(t, "create", r, http.StatusCreated)
	st := r.json(t)
	var example map[string]any
	json.Unmarshal(vectorHTTP(t, "22-figcreatestreamresp.http"), &example)
	for _, k := range keysOf(example) {
		if _, ok := st[k]; !ok {
			t.Errorf("stream configuration lacks %s (present in the SSF example)", k)
		}
	}
	id, _ := st["stream_id"].(string)
	if id == "" || st["iss"] != in.URL || st["aud"] != receiverID || st["description"] != create["description"] {
		t.Fatalf("created stream = %v", st)
	}
	if strings.Contains(string(r.body), "push-token-1") {
		t.Error("the authorization_header was returned")
	}
	if got := st["events_delivered"].([]any); !reflect.DeepEqual(got, []any{cae.EventSessionRevoked, cae.EventCredentialChange}) {
		t.Errorf("events_delivered = %v: want the supported requested events, unknown ones ignored", got)
	}
	if d := st["delivery"].(map[string]any); d["method"] != model.DeliveryPush || d["endpoint_url"] != "https://receiver.example.com/events" {
		t.Errorf("delivery = %v", d)
	}
	if loc := r.header.Get("Location"); !strings.Contains(loc, id) {
		t.Errorf("Location = %q", loc)
	}

	// Read by id (vector 23) and as a list (vector 27).
	r = call(t, in, http.MethodGet, "/ssf/stream?stream_id="+id, tok, nil)
	wantStatus(t, "read", r, http.StatusOK)
	if got := r.json(t); got["stream_id"] != id || !reflect.DeepEqual(got["events_delivered"], st["events_delivered"]) {
		t.Errorf("read = %v", got)
	}
	r = call(t, in, http.MethodGet, "/ssf/stream", tok, nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 || list[0]["stream_id"] != id {
		t.Fatalf("list = %s", r.body)
	}

	// Update (PATCH, vector 29): only the given properties change; the
	// push header is kept for the same endpoint.
	var patch map[string]any
	json.Unmarshal(vectorHTTP(t, "29-figupdateconfigreq.http"), &patch)
	patch["stream_id"] = id
	patch["events_requested"] = []string{cae.EventSessionRevoked}
	r = call(t, in, http.MethodPatch, "/ssf/stream", tok, patch)
	wantStatus(t, "update", r, http.StatusOK)
	up := r.json(t)
	if up["description"] != patch["description"] || !reflect.DeepEqual(up["events_delivered"], []any{cae.EventSessionRevoked}) ||
		up["delivery"].(map[string]any)["endpoint_url"] != "https://receiver.example.com/events" {
		t.Errorf("after PATCH: %v", up)
	}
	stored, err := in.App.Store.GetSSFStream(context.Background(), id)
	if err != nil || len(stored.AuthHeaderEnc) == 0 {
		t.Errorf("PATCH without authorization_header dropped the stored header (err %v)", err)
	}
	// Transmitter-supplied properties echoed back must match.
	r = call(t, in, http.MethodPatch, "/ssf/stream", tok, map[string]any{"stream_id": id, "iss": "https://evil.example"})
	wantError(t, "PATCH with another iss", r, http.StatusBadRequest, "invalid_request")
	r = call(t, in, http.MethodPatch, "/ssf/stream", tok, map[string]any{"stream_id": id, "aud": "someone-else"})
	wantError(t, "PATCH with another aud", r, http.StatusBadRequest, "invalid_request")
	r = call(t, in, http.MethodPatch, "/ssf/stream", tok, map[string]any{"stream_id": id, "aud": receiverID, "iss": in.URL,
		"events_supported": cae.EventsSupported, "description": "echo"})
	wantStatus(t, "PATCH echoing transmitter-supplied values", r, http.StatusOK)

	// Replace (PUT, vector 31): absent receiver-supplied properties are
	// reset; here it switches to poll.
	var put map[string]any
	json.Unmarshal(vectorHTTP(t, "31-figreplaceconfigreq.http"), &put)
	put["stream_id"] = id
	put["delivery"] = map[string]any{"method": model.DeliveryPoll}
	delete(put, "events_requested")
	r = call(t, in, http.MethodPut, "/ssf/stream", tok, put)
	wantStatus(t, "replace", r, http.StatusOK)
	rep := r.json(t)
	if d := rep["delivery"].(map[string]any); d["method"] != model.DeliveryPoll || d["endpoint_url"] != in.URL+"/ssf/poll/"+id {
		t.Errorf("after PUT delivery = %v", d)
	}
	if got := rep["events_delivered"].([]any); len(got) != len(cae.EventsSupported) {
		t.Errorf("after PUT without events_requested: events_delivered = %v, want all supported", got)
	}
	if rep["description"] != "Stream for Receiver C" {
		t.Errorf("after PUT description = %v", rep["description"])
	}
	if stored, _ := in.App.Store.GetSSFStream(context.Background(), id); len(stored.AuthHeaderEnc) != 0 {
		t.Error("PUT to poll kept the push authorization header")
	}

	// Status (vectors 35-39).
	r = call(t, in, http.MethodGet, "/ssf/status?stream_id="+id, tok, nil)
	wantStatus(t, "status", r, http.StatusOK)
	if s := r.json(t); s["status"] != "enabled" || s["stream_id"] != id {
		t.Errorf("status = %v", s)
	}
	var upd map[string]any
	json.Unmarshal(vectorHTTP(t, "38-figupdatestatuswithreasonreq.http"), &upd)
	upd["stream_id"] = id
	r = call(t, in, http.MethodPost, "/ssf/status", tok, upd)
	wantStatus(t, "update status", r, http.StatusOK)
	var statusResp map[string]any
	json.Unmarshal(vectorHTTP(t, "39-figupdatestatusresp.http"), &statusResp)
	statusResp["stream_id"] = id
	if got := r.json(t); !reflect.DeepEqual(got, statusResp) {
		t.Errorf("status update = %v, want %v (vector 39)", got, statusResp)
	}
	r = call(t, in, http.MethodGet, "/ssf/status?stream_id="+id, tok, nil)
	if s := r.json(t); s["status"] != "paused" || s["reason"] != "Disabled by administrator action." {
		t.Errorf("status after update = %v", s)
	}
	r = call(t, in, http.MethodPost, "/ssf/status", tok, map[string]any{"stream_id": id, "status": "enabled"})
	wantStatus(t, "enable", r, http.StatusOK)

	// Subjects (vectors 46-49): 200 on add, 204 on remove.
	var add map[string]any
	json.Unmarshal(vectorHTTP(t, "46-figaddreq.http"), &add)
	add["stream_id"] = id
	r = call(t, in, http.MethodPost, "/ssf/subjects:add", tok, add)
	wantStatus(t, "add subject", r, http.StatusOK)
	var rem map[string]any
	json.Unmarshal(vectorHTTP(t, "48-figremovereq.http"), &rem)
	rem["stream_id"] = id
	// The example's "phone" format is not an RFC 9493 format; Ward keeps
	// it as a proprietary format (SSF 1.0 §3.5).
	r = call(t, in, http.MethodPost, "/ssf/subjects:remove", tok, rem)
	wantStatus(t, "remove subject", r, http.StatusNoContent)
	stored, _ = in.App.Store.GetSSFStream(context.Background(), id)
	if len(stored.Excluded) != 1 || !strings.Contains(stored.Excluded[0], "+12065550123") {
		t.Errorf("excluded subjects = %v", stored.Excluded)
	}

	// Verification (vectors 50, 51): 204, and a verification SET queued.
	var verify map[string]any
	json.Unmarshal(vectorHTTP(t, "50-figverifyreq.http"), &verify)
	verify["stream_id"] = id
	r = call(t, in, http.MethodPost, "/ssf/verify", tok, verify)
	wantStatus(t, "verify", r, http.StatusNoContent)
	r = call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"returnImmediately": true})
	wantStatus(t, "poll", r, http.StatusOK)
	sets := r.json(t)["sets"].(map[string]any)
	var verification map[string]any
	for _, v := range sets {
		c := claimsOf(t, v.(string))
		if ev, ok := c["events"].(map[string]any)[cae.EventVerification]; ok {
			verification = c
			if ev.(map[string]any)["state"] != verify["state"] {
				t.Errorf("verification state = %v, want %v", ev, verify["state"])
			}
		}
	}
	if verification == nil {
		t.Fatalf("no verification SET among %d polled", len(sets))
	}
	// Shape of vector 52: sub_id is the opaque stream id.
	if sub := verification["sub_id"].(map[string]any); sub["format"] != "opaque" || sub["id"] != id {
		t.Errorf("verification sub_id = %v", sub)
	}

	// Delete (vectors 33, 34), then everything about the stream is 404.
	r = call(t, in, http.MethodDelete, "/ssf/stream?stream_id="+id, tok, nil)
	wantStatus(t, "delete", r, http.StatusNoContent)
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/ssf/stream?stream_id=" + id},
		{http.MethodDelete, "/ssf/stream?stream_id=" + id},
		{http.MethodGet, "/ssf/status?stream_id=" + id},
	} {
		wantError(t, c.method+" deleted", call(t, in, c.method, c.path, tok, nil), http.StatusNotFound, "not_found")
	}
	wantError(t, "verify deleted", call(t, in, http.MethodPost, "/ssf/verify", tok, map[string]any{"stream_id": id}), http.StatusNotFound, "not_found")

	// The audit log holds each change once, by the receiver, from the
	// request (the refused PATCHes and the second DELETE record nothing),
	// and nothing of the push authorization header or endpoint path.
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{
		model.EventSSFStreamCreated, model.EventSSFStreamUpdated, model.EventSSFStreamDeleted}})
	if err != nil {
		t.Fatal(err)
	}
	var got []model.EventType
	for _, e := range evs {
		got = append(got, e.Type)
		if e.Actor != receiverID || e.ClientID != receiverID || e.Data["stream_id"] != id || e.CorrelationID == "" {
			t.Errorf("%s: actor %q, client %q, data %v, correlation id %q; want the receiver's request", e.Type, e.Actor, e.ClientID, e.Data, e.CorrelationID)
		}
		if j, _ := json.Marshal(e); strings.Contains(string(j), "push-token-1") || strings.Contains(string(j), "/events") {
			t.Errorf("stored %s holds the push header or endpoint path: %s", e.Type, j)
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	want := []model.EventType{model.EventSSFStreamCreated, model.EventSSFStreamDeleted,
		model.EventSSFStreamUpdated, model.EventSSFStreamUpdated, model.EventSSFStreamUpdated}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("recorded %v, want %v (sorted)", got, want)
	}
}

// TestAuthFailures: requests without a valid token, with the wrong scope,
// or for another receiver's stream are refused and change nothing.
func TestAuthFailures(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	st := createStream(t, in, tok, map[string]any{"description": "mine"})
	id := st["stream_id"].(string)
	otherTok := token(t, in, otherID, otherSecret, "ssf.manage ssf.poll")
	weakTok := token(t, in, weakID, weakSecret, "ssf.read docs.read")
	docsTok := token(t, in, weakID, weakSecret, "docs.read")

	t.Run("no token", func(t *testing.T) {
		r := call(t, in, http.MethodPost, "/ssf/stream", "", map[string]any{})
		wantStatus(t, "no token", r, http.StatusUnauthorized)
		if ch := strings.Join(r.header.Values("WWW-Authenticate"), "; "); !strings.Contains(ch, "Bearer") {
			t.Errorf("WWW-Authenticate = %q", ch)
		}
	})
	t.Run("garbage token", func(t *testing.T) {
		r := call(t, in, http.MethodGet, "/ssf/stream", "not-a-token", nil)
		wantError(t, "garbage", r, http.StatusUnauthorized, "invalid_token")
		if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) {
			t.Errorf("WWW-Authenticate = %q", ch)
		}
	})
	t.Run("tampered token", func(t *testing.T) {
		bad := tok[:len(tok)-4] + "AAAA"
		if bad == tok {
			bad = tok[:len(tok)-4] + "BBBB"
		}
		wantError(t, "tampered", call(t, in, http.MethodGet, "/ssf/stream", bad, nil), http.StatusUnauthorized, "invalid_token")
	})
	t.Run("wrong scope", func(t *testing.T) {
		r := call(t, in, http.MethodPost, "/ssf/stream", weakTok, map[string]any{})
		wantError(t, "create with ssf.read", r, http.StatusForbidden, "insufficient_scope")
		if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `scope="ssf.manage"`) {
			t.Errorf("WWW-Authenticate = %q", ch)
		}
		wantError(t, "list with docs.read", call(t, in, http.MethodGet, "/ssf/stream", docsTok, nil), http.StatusForbidden, "insufficient_scope")
		// The poll endpoint answers RFC 8935's body with the registry's
		// code; the OAuth code is in the challenge.
		r = call(t, in, http.MethodPost, "/ssf/poll/"+id, weakTok, map[string]any{})
		wantPollError(t, "poll with ssf.read", r, http.StatusForbidden, "access_denied", weakTok)
		if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="ssf.poll"`) {
			t.Errorf("poll with ssf.read: WWW-Authenticate = %q", ch)
		}
		// ssf.read may read (its own, empty, list).
		r = call(t, in, http.MethodGet, "/ssf/stream", weakTok, nil)
		wantStatus(t, "list with ssf.read", r, http.StatusOK)
		// A management token without ssf.poll cannot poll.
		mTok := token(t, in, receiverID, receiverSecret, "ssf.manage")
		r = call(t, in, http.MethodPost, "/ssf/poll/"+id, mTok, map[string]any{"returnImmediately": true})
		wantPollError(t, "poll without ssf.poll", r, http.StatusForbidden, "access_denied", mTok)
	})
	t.Run("token in the query", func(t *testing.T) {
		r := call(t, in, http.MethodGet, "/ssf/stream?access_token="+tok, "", nil)
		wantStatus(t, "query token", r, http.StatusBadRequest)
	})
	t.Run("user token", func(t *testing.T) {
		utok := userToken(t, in, "bob", wardtest.BobPassword)
		r := call(t, in, http.MethodGet, "/ssf/stream", utok, nil)
		if r.status != http.StatusForbidden {
			t.Fatalf("user token: status %d, want 403: %s", r.status, r.body)
		}
	})
	t.Run("another receiver's stream", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, "/ssf/stream?stream_id=" + id, nil},
			{http.MethodPatch, "/ssf/stream", map[string]any{"stream_id": id, "description": "stolen"}},
			{http.MethodPut, "/ssf/stream", map[string]any{"stream_id": id, "description": "stolen"}},
			{http.MethodDelete, "/ssf/stream?stream_id=" + id, nil},
			{http.MethodGet, "/ssf/status?stream_id=" + id, nil},
			{http.MethodPost, "/ssf/status", map[string]any{"stream_id": id, "status": "disabled"}},
			{http.MethodPost, "/ssf/subjects:remove", map[string]any{"stream_id": id, "subject": map[string]string{"format": "opaque", "id": "x"}}},
			{http.MethodPost, "/ssf/verify", map[string]any{"stream_id": id}},
		} {
			wantError(t, c.method+" "+c.path, call(t, in, c.method, c.path, otherTok, c.body), http.StatusNotFound, "not_found")
		}
		r := call(t, in, http.MethodPost, "/ssf/poll/"+id, otherTok, map[string]any{"returnImmediately": true})
		wantPollError(t, "poll another's stream", r, http.StatusNotFound, "invalid_request", otherTok)
		r = call(t, in, http.MethodGet, "/ssf/stream", otherTok, nil)
		if strings.Contains(string(r.body), id) {
			t.Error("another receiver's list shows the stream")
		}
	})
	// Nothing changed.
	cur, err := in.App.Store.GetSSFStream(context.Background(), id)
	if err != nil || cur.Description != "mine" || cur.Status != model.StreamEnabled || len(cur.Excluded) != 0 {
		t.Errorf("the stream changed: %+v, %v", cur, err)
	}
}

// TestBadInput: malformed or unacceptable management requests get 400
// (or 415, 409) with a description and change nothing.
func TestBadInput(t *testing.T) {
	in := start(t, func(c *config.Config) { c.SSF.MaxStreamsPerClient = 3 })
	tok := receiverToken(t, in)
	st := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPoll}})
	id := st["stream_id"].(string)
	push := func(u string) map[string]any {
		return map[string]any{"delivery": map[string]any{"method": model.DeliveryPush, "endpoint_url": u}}
	}
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		ctype  string
		status int
	}{
		{"malformed JSON", http.MethodPost, "/ssf/stream", `{"delivery": `, "", 400},
		{"not an object", http.MethodPost, "/ssf/stream", `["a"]`, "", 400},
		{"two objects", http.MethodPost, "/ssf/stream", `{} {}`, "", 400},
		{"empty body", http.MethodPost, "/ssf/stream", ``, "", 400},
		{"wrong media type", http.MethodPost, "/ssf/stream", `{}`, "text/plain", 415},
		{"delivery not an object", http.MethodPost, "/ssf/stream", map[string]any{"delivery": "push"}, "", 400},
		{"unknown delivery method", http.MethodPost, "/ssf/stream", map[string]any{"delivery": map[string]any{"method": "urn:example:carrier-pigeon"}}, "", 400},
		{"no delivery method", http.MethodPost, "/ssf/stream", map[string]any{"delivery": map[string]any{"endpoint_url": "https://rs.example/e"}}, "", 400},
		{"push without endpoint", http.MethodPost, "/ssf/stream", push(""), "", 400},
		{"push over http", http.MethodPost, "/ssf/stream", push("http://receiver.example.com/events"), "", 400},
		{"push over http to a private address", http.MethodPost, "/ssf/stream", push("http://10.0.0.1/events"), "", 400},
		{"push over ftp", http.MethodPost, "/ssf/stream", push("ftp://receiver.example.com/events"), "", 400},
		{"push relative URL", http.MethodPost, "/ssf/stream", push("/events"), "", 400},
		{"push URL with credentials", http.MethodPost, "/ssf/stream", push("https://user:pw@receiver.example.com/events"), "", 400},
		{"header injection", http.MethodPost, "/ssf/stream", map[string]any{"delivery": map[string]any{"method": model.DeliveryPush,
			"endpoint_url": "https://rs.example/e", "authorization_header": "Bearer x\r\nX-Evil: 1"}}, "", 400},
		{"poll with endpoint_url", http.MethodPost, "/ssf/stream", map[string]any{"delivery": map[string]any{"method": model.DeliveryPoll, "endpoint_url": "https://rs.example/e"}}, "", 400},
		{"only unknown events", http.MethodPost, "/ssf/stream", map[string]any{"events_requested": []string{"urn:example:secevent:events:type_9"}}, "", 400},
		{"empty events_requested", http.MethodPost, "/ssf/stream", map[string]any{"events_requested": []string{}}, "", 400},
		{"events_requested not strings", http.MethodPost, "/ssf/stream", map[string]any{"events_requested": []any{1, 2}}, "", 400},
		{"description not a string", http.MethodPost, "/ssf/stream", map[string]any{"description": 42}, "", 400},
		{"PATCH without stream_id", http.MethodPatch, "/ssf/stream", map[string]any{"description": "x"}, "", 400},
		{"PATCH events_delivered mismatch", http.MethodPatch, "/ssf/stream", map[string]any{"stream_id": id, "events_delivered": []string{"urn:x"}}, "", 400},
		{"read with two stream_ids", http.MethodGet, "/ssf/stream?stream_id=" + id + "&stream_id=x", nil, "", 400},
		{"DELETE without stream_id", http.MethodDelete, "/ssf/stream", nil, "", 400},
		{"status without stream_id", http.MethodGet, "/ssf/status", nil, "", 400},
		{"unknown status", http.MethodPost, "/ssf/status", map[string]any{"stream_id": id, "status": "frozen"}, "", 400},
		{"status not a string", http.MethodPost, "/ssf/status", map[string]any{"stream_id": id, "status": true}, "", 400},
		{"subject missing", http.MethodPost, "/ssf/subjects:add", map[string]any{"stream_id": id}, "", 400},
		{"subject without format", http.MethodPost, "/ssf/subjects:remove", map[string]any{"stream_id": id, "subject": map[string]string{"id": "x"}}, "", 400},
		{"iss_sub without sub", http.MethodPost, "/ssf/subjects:remove", map[string]any{"stream_id": id, "subject": map[string]string{"format": "iss_sub", "iss": "x"}}, "", 400},
		{"nested complex", http.MethodPost, "/ssf/subjects:remove", map[string]any{"stream_id": id, "subject": map[string]any{"format": "complex",
			"user": map[string]any{"format": "complex", "user": map[string]string{"format": "opaque", "id": "x"}}}}, "", 400},
		{"the stream's own subject", http.MethodPost, "/ssf/subjects:remove", map[string]any{"stream_id": id, "subject": map[string]string{"format": "opaque", "id": id}}, "", 400},
		{"verified not a boolean", http.MethodPost, "/ssf/subjects:add", map[string]any{"stream_id": id, "verified": "yes", "subject": map[string]string{"format": "opaque", "id": "x"}}, "", 400},
		{"verify without stream_id", http.MethodPost, "/ssf/verify", map[string]any{"state": "x"}, "", 400},
		{"verify state too long", http.MethodPost, "/ssf/verify", map[string]any{"stream_id": id, "state": strings.Repeat("s", 2000)}, "", 400},
		{"poll negative maxEvents", http.MethodPost, "/ssf/poll/" + id, map[string]any{"maxEvents": -1}, "", 400},
		{"poll ack not strings", http.MethodPost, "/ssf/poll/" + id, map[string]any{"ack": []int{1}}, "", 400},
		{"poll setErrs not an object", http.MethodPost, "/ssf/poll/" + id, map[string]any{"setErrs": []string{"x"}}, "", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any = c.body
			r := callType(t, in, c.method, c.path, tok, body, c.ctype)
			if r.status != c.status {
				t.Fatalf("status %d, want %d; body %s", r.status, c.status, r.body)
			}
			m := r.json(t)
			desc, _ := m["error_description"].(string)
			if strings.HasPrefix(c.path, "/ssf/poll/") {
				desc, _ = m["description"].(string)
			}
			if desc == "" {
				t.Errorf("no description: %s", r.body)
			}
		})
	}
	// Nothing was created or changed by the refused requests.
	l, _ := in.App.Store.ListSSFStreams(context.Background(), receiverID)
	if len(l) != 1 || l[0].Status != model.StreamEnabled || len(l[0].Excluded) != 0 {
		t.Errorf("refused requests changed state: %d streams %+v", len(l), l)
	}
	// A loopback http endpoint is allowed (a receiver on the same host),
	// and so is https anywhere; then the per-receiver limit answers 409.
	createStream(t, in, tok, push("http://127.0.0.1:9/events"))
	createStream(t, in, tok, push("https://receiver.example.com/events"))
	r := call(t, in, http.MethodPost, "/ssf/stream", tok, map[string]any{})
	wantError(t, "fourth stream", r, http.StatusConflict, "conflict")
}

// callType is call with an explicit Content-Type ("" keeps call's).
func callType(t testing.TB, in *wardtest.Instance, method, path, tok string, body any, ctype string) response {
	if ctype == "" {
		return call(t, in, method, path, tok, body)
	}
	t.Helper()
	req, _ := http.NewRequest(method, in.URL+path, strings.NewReader(body.(string)))
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return response{resp.StatusCode, resp.Header, []byte(b.String())}
}

// TestTokenExpiry: a token accepted once (and remembered) is refused when
// it expires.
func TestTokenExpiry(t *testing.T) {
	in := startFake(t)
	tok := receiverToken(t, in)
	wantStatus(t, "list", call(t, in, http.MethodGet, "/ssf/stream", tok, nil), http.StatusOK)
	wantStatus(t, "list again", call(t, in, http.MethodGet, "/ssf/stream", tok, nil), http.StatusOK)
	in.Clock.Advance(in.Config.Tokens.AccessTokenTTL + time.Minute)
	wantError(t, "expired token", call(t, in, http.MethodGet, "/ssf/stream", tok, nil), http.StatusUnauthorized, "invalid_token")
	// A remembered token still needs the scope of each call.
	in.Clock.Advance(-in.Config.Tokens.AccessTokenTTL - time.Minute)
	rtok := token(t, in, weakID, weakSecret, "ssf.read")
	wantStatus(t, "read", call(t, in, http.MethodGet, "/ssf/stream", rtok, nil), http.StatusOK)
	wantError(t, "create with a remembered ssf.read token", call(t, in, http.MethodPost, "/ssf/stream", rtok, map[string]any{}), http.StatusForbidden, "insufficient_scope")
}

// The SSF endpoints remember verified bearer client tokens to spare long
// polls a signature check; a retired signing key (leaked) must end that:
// its tokens are refused at once, from memory too.
func TestRetiredKeyEndsCachedTokens(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	if r := call(t, in, http.MethodGet, "/ssf/stream", tok, nil); r.status != http.StatusOK {
		t.Fatalf("stream list with the token: %d %s", r.status, r.body)
	}
	ctx := context.Background()
	old := in.App.Keys.ActiveKID()
	if _, err := in.App.Keys.Rotate(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	if r := call(t, in, http.MethodGet, "/ssf/stream", tok, nil); r.status != http.StatusOK {
		t.Fatalf("after a rotation (the old key still verifies): %d %s", r.status, r.body)
	}
	if err := in.App.Keys.Retire(ctx, "admin", old); err != nil {
		t.Fatal(err)
	}
	if r := call(t, in, http.MethodGet, "/ssf/stream", tok, nil); r.status != http.StatusUnauthorized {
		t.Errorf("a token of the retired key: %d, want 401", r.status)
	}
	if r := call(t, in, http.MethodGet, "/ssf/stream", receiverToken(t, in), nil); r.status != http.StatusOK {
		t.Errorf("a token of the new key: %d %s", r.status, r.body)
	}
}
