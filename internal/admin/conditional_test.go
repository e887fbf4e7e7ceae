package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

const caPolicies = "/conditional-access/policies"

// doWith is caller.do with extra request headers (If-Match).
func (c *caller) doWith(t testing.TB, q req, headers map[string]string) result {
	t.Helper()
	var body io.Reader
	if q.body != nil {
		body = strings.NewReader(q.body.(string))
	}
	hr, err := http.NewRequest(q.method, c.in.URL+api+q.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if q.body != nil {
		ct := q.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	hr.Header.Set("Authorization", "DPoP "+c.token)
	hr.Header.Set("DPoP", c.proofFor(t, q.method, q.path))
	for k, v := range headers {
		hr.Header.Set(k, v)
	}
	return send(t, hr)
}

// object returns r.JSON[k] as an object.
func (r result) object(k string) map[string]any { m, _ := r.JSON[k].(map[string]any); return m }

// policyOf returns the what-if result of policy id.
func policyOf(t testing.TB, r result, id string) map[string]any {
	t.Helper()
	for _, p := range r.list("policies") {
		if p["id"] == id {
			return p
		}
	}
	t.Fatalf("no policy %q in %s", id, r.Body)
	return nil
}

const caDocJSON = `{
  "locations": [{"id": "corp", "trusted": true, "ip_ranges": ["203.0.113.0/24"]}],
  "policies": [
    {"id": "block-untrusted", "state": "enabled",
     "assignments": {"users": {"include": ["all"]}, "applications": {"include": ["web"]}},
     "conditions": {"locations": {"include": ["all"], "exclude": ["trusted"]}},
     "grant": {"block": true}}
  ]
}`

// The same document plus a second policy, in YAML.
const caDocYAML = `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24]}
policies:
  - id: block-untrusted
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [web]}}
    conditions: {locations: {include: [all], exclude: [trusted]}}
    grant: {block: true}
  - id: docs-mfa
    state: report_only
    assignments: {users: {include: [all]}, applications: {include: [docs]}}
    grant: {controls: [mfa]}
`

func TestConditionalAccessPolicies(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")

	// Nothing stored: version 0, an empty document.
	r := alice.do(t, req{method: "GET", path: caPolicies})
	wantStatus(t, r, 200, "")
	if r.Header.Get("ETag") != `"0"` || r.JSON["version"] != float64(0) || len(asSlice(r.object("document")["policies"])) != 0 ||
		r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("empty store: %v %s", r.Header, r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/conditional-access/versions"})
	if wantStatus(t, r, 200, ""); len(r.list("versions")) != 0 {
		t.Fatalf("versions of an empty store: %s", r.Body)
	}

	// PUT JSON, conditional on nothing being stored yet.
	r = alice.doWith(t, req{method: "PUT", path: caPolicies + "?comment=first", body: caDocJSON}, map[string]string{"If-Match": `"0"`})
	wantStatus(t, r, 200, "")
	if r.Header.Get("ETag") != `"1"` || r.JSON["version"] != float64(1) || r.JSON["changed"] != true ||
		fmt.Sprint(r.JSON["added"]) != "[block-untrusted]" || r.JSON["locations_changed"] != true {
		t.Fatalf("PUT JSON: %v %s", r.Header, r.Body)
	}
	corr := r.Header.Get("X-Correlation-ID")
	r = alice.do(t, req{method: "GET", path: caPolicies})
	pols := asSlice(r.object("document")["policies"])
	if r.Header.Get("ETag") != `"1"` || r.JSON["version"] != float64(1) || len(pols) != 1 || pols[0].(map[string]any)["id"] != "block-untrusted" {
		t.Fatalf("GET after PUT: %v %s", r.Header, r.Body)
	}

	// The audit log holds the change under the PUT's correlation id,
	// attributed to alice.
	r = alice.do(t, req{method: "GET", path: "/events?correlation_id=" + url.QueryEscape(corr)})
	wantStatus(t, r, 200, "")
	evs := r.list("events")
	if corr == "" || len(evs) != 1 || evs[0]["type"] != string(model.EventAccessPolicyChanged) || evs[0]["actor"] != aliceID ||
		evs[0]["correlation_id"] != corr || evs[0]["ip"] != "127.0.0.1" {
		t.Fatalf("audit events of the PUT (%s): %s", corr, r.Body)
	}
	if d, _ := evs[0]["data"].(map[string]any); d["version"] != "1" || d["added"] != "block-untrusted" || d["comment"] != "first" {
		t.Errorf("event data: %v", evs[0]["data"])
	}

	// PUT YAML (both media types) with the current ETag.
	r = alice.doWith(t, req{method: "PUT", path: caPolicies, body: caDocYAML, contentType: "application/yaml"}, map[string]string{"If-Match": `"1"`})
	wantStatus(t, r, 200, "")
	if r.Header.Get("ETag") != `"2"` || r.JSON["changed"] != true || fmt.Sprint(r.JSON["added"]) != "[docs-mfa]" || r.JSON["updated"] != nil {
		t.Fatalf("PUT YAML: %v %s", r.Header, r.Body)
	}
	// The same document again, as application/x-yaml: unchanged, nothing stored.
	r = alice.do(t, req{method: "PUT", path: caPolicies, body: caDocYAML, contentType: "application/x-yaml; charset=utf-8"})
	wantStatus(t, r, 200, "")
	if r.Header.Get("ETag") != `"2"` || r.JSON["changed"] != false || r.JSON["version"] != float64(2) || r.JSON["added"] != nil || r.JSON["updated"] != nil {
		t.Fatalf("PUT unchanged YAML: %v %s", r.Header, r.Body)
	}

	// A stale ETag: 412 conflict, nothing stored.
	r = alice.doWith(t, req{method: "PUT", path: caPolicies, body: caDocJSON}, map[string]string{"If-Match": `"1"`})
	wantStatus(t, r, 412, "conflict")
	r = alice.doWith(t, req{method: "PUT", path: caPolicies, body: caDocJSON}, map[string]string{"If-Match": "latest"})
	wantStatus(t, r, 400, "invalid_request")

	// Unsupported media types.
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded"} {
		wantStatus(t, alice.do(t, req{method: "PUT", path: caPolicies, body: caDocJSON, contentType: ct}), 415, "unsupported_media_type")
	}
	// Undecodable documents.
	for _, q := range []req{
		{method: "PUT", path: caPolicies, body: `{"policies": [], "extra": 1}`},
		{method: "PUT", path: caPolicies, body: `{"policies": []} {}`},
		{method: "PUT", path: caPolicies, body: "policies: []\nbogus: 1\n", contentType: "application/yaml"},
	} {
		wantStatus(t, alice.do(t, q), 400, "invalid_request")
	}

	// An invalid document: every problem in fields, nothing stored.
	r = alice.do(t, req{method: "PUT", path: caPolicies, contentType: "application/yaml", body: `
locations:
  - {id: lab, ip_ranges: [10.0.0.0/33]}
policies:
  - id: p-bad
    state: enabled
    assignments: {users: {include: [all], exclude: [all]}, applications: {include: [all]}}
    conditions: {locations: {include: [mars]}}
    grant: {block: true}
  - id: p-cel
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions:
      device_filter: {mode: include, rule: "device.platform == "}
    grant: {controls: [mfa]}
`})
	wantStatus(t, r, 400, "invalid_request")
	fields := map[string]string{}
	for _, f := range r.list("fields") {
		fields[fmt.Sprint(f["field"])] = fmt.Sprint(f["message"])
	}
	want := map[string]string{
		"locations[0].ip_ranges[0]":                   `invalid CIDR "10.0.0.0/33"`,
		"policies[0].assignments.users.exclude":       `excluding "all" leaves nobody`,
		"policies[0].conditions.locations.include[0]": `unknown location "mars"`,
		"policies[1].conditions.device_filter.rule":   "invalid CEL",
	}
	if len(r.list("fields")) != len(want) {
		t.Errorf("%d fields, want %d: %s", len(r.list("fields")), len(want), r.Body)
	}
	for f, msg := range want {
		if !strings.Contains(fields[f], msg) {
			t.Errorf("field %s: %q, want %q; body %s", f, fields[f], msg, r.Body)
		}
	}
	// A multi-line message (CEL quotes the rule) stays one problem.
	if msg := fields["policies[1].conditions.device_filter.rule"]; !strings.Contains(msg, "| device.platform ==") {
		t.Errorf("CEL problem lost its excerpt: %q", msg)
	}
	r = alice.do(t, req{method: "GET", path: caPolicies})
	if r.Header.Get("ETag") != `"2"` || len(asSlice(r.object("document")["policies"])) != 2 {
		t.Fatalf("invalid PUT changed the policies: %s", r.Body)
	}

	// Versions: newest first; one with its document.
	r = alice.do(t, req{method: "GET", path: "/conditional-access/versions"})
	wantStatus(t, r, 200, "")
	vs := r.list("versions")
	if len(vs) != 2 || vs[0]["version"] != float64(2) || vs[1]["version"] != float64(1) || vs[1]["comment"] != "first" ||
		vs[0]["created_by"] != aliceID || vs[0]["digest"] == "" || vs[0]["document"] != nil {
		t.Fatalf("versions: %s", r.Body)
	}
	if r = alice.do(t, req{method: "GET", path: "/conditional-access/versions?limit=1"}); len(r.list("versions")) != 1 {
		t.Errorf("versions?limit=1: %s", r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/conditional-access/versions/1"})
	wantStatus(t, r, 200, "")
	if r.JSON["version"] != float64(1) || r.JSON["created_by"] != aliceID || len(asSlice(r.object("document")["policies"])) != 1 {
		t.Fatalf("version 1: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/conditional-access/versions/99"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/conditional-access/versions/abc"}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/conditional-access/versions/0"}), 400, "invalid_request")

	// What-if: outside the trusted range the blocking policy applies; the
	// others say why they do not.
	r = alice.do(t, req{method: "POST", path: "/conditional-access/whatif", body: map[string]any{"user": "bob", "app": "web", "ip": "198.51.100.7"}})
	wantStatus(t, r, 200, "")
	if r.str("outcome") != "block" || fmt.Sprint(r.JSON["blocked_by"]) != "[block-untrusted]" || r.JSON["version"] != float64(2) {
		t.Fatalf("what-if outside: %s", r.Body)
	}
	if p := policyOf(t, r, "docs-mfa"); p["result"] != "not_applied" || p["reason"] != "application not included" {
		t.Errorf("docs-mfa: %v", p)
	}
	if p := policyOf(t, r, "block-untrusted"); p["result"] != "applied" || p["outcome"] != "block" {
		t.Errorf("block-untrusted: %v", p)
	}
	if inp := r.object("input"); inp["ip"] != "198.51.100.7" || inp["flow"] != "interactive" || inp["user"].(map[string]any)["id"] != bobID {
		t.Errorf("what-if input: %v", inp)
	}
	r = alice.do(t, req{method: "POST", path: "/conditional-access/whatif", body: map[string]any{"user": bobID, "app": "web", "ip": "203.0.113.9"}})
	wantStatus(t, r, 200, "")
	if p := policyOf(t, r, "block-untrusted"); r.str("outcome") != "allow" || p["result"] != "not_applied" || p["reason"] != "location excluded" {
		t.Fatalf("what-if inside: %s", r.Body)
	}
	r = alice.do(t, req{method: "POST", path: "/conditional-access/whatif", body: map[string]any{"user": "nobody", "app": "web", "ip": "1.2.3"}})
	wantStatus(t, r, 400, "invalid_request")
	if d := r.str("error_description"); !strings.Contains(d, `user "nobody"`) || !strings.Contains(d, `ip "1.2.3"`) {
		t.Errorf("what-if for an unknown user: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/conditional-access/whatif", body: `{"user": "bob", "app": "web", "colour": "red"}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/conditional-access/whatif", body: `{}`}), 400, "invalid_request")

	// User risk.
	r = alice.do(t, req{method: "PUT", path: "/users/" + bobID + "/risk", body: map[string]string{"level": "high", "reason": "credentials leaked"}})
	wantStatus(t, r, 200, "")
	if r.str("risk_level") != "high" || r.JSON["risk_updated_at"] == nil {
		t.Fatalf("set risk: %s", r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/users/" + bobID})
	if r.str("risk_level") != "high" {
		t.Fatalf("risk not visible: %s", r.Body)
	}
	r = alice.do(t, req{method: "POST", path: "/conditional-access/whatif", body: map[string]any{"user": "bob", "app": "spa"}})
	if u, _ := r.object("input")["user"].(map[string]any); u["risk"] != "high" {
		t.Errorf("what-if after the risk change: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "PUT", path: "/users/" + bobID + "/risk", body: map[string]string{"level": "extreme"}}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PUT", path: "/users/" + bobID + "/risk", body: `{}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PUT", path: "/users/nobody/risk", body: map[string]string{"level": "low"}}), 404, "not_found")
	if r = alice.do(t, req{method: "GET", path: "/users/" + bobID}); r.str("risk_level") != "high" {
		t.Errorf("risk changed by refused requests: %s", r.Body)
	}
	r = alice.do(t, req{method: "PUT", path: "/users/" + bobID + "/risk", body: map[string]string{"level": "none"}})
	if wantStatus(t, r, 200, ""); r.str("risk_level") != "none" {
		t.Errorf("clear risk: %s", r.Body)
	}
	riskEvs := events(t, in, model.EventUserRiskChanged)
	if len(riskEvs) != 2 {
		t.Fatalf("%d user.risk_changed events, want 2", len(riskEvs))
	}
	for _, e := range riskEvs {
		if e.Actor != aliceID || e.UserID != bobID || e.CorrelationID == "" {
			t.Errorf("user.risk_changed %+v", e.Event)
		}
	}
	if e := riskEvs[1]; e.Reason != "credentials leaked" || e.Data["level"] != "high" || e.Data["previous"] != "none" {
		t.Errorf("first user.risk_changed %+v", e.Event)
	}

	// Exactly the two accepted changes were stored and audited.
	if evs := events(t, in, model.EventAccessPolicyChanged); len(evs) != 2 {
		t.Errorf("%d access.policy_changed events, want 2", len(evs))
	}
	if vs, err := in.App.Store.ListPolicyVersions(context.Background(), 0); err != nil || len(vs) != 2 {
		t.Errorf("%d stored versions, want 2 (%v)", len(vs), err)
	}
}

// The Conditional Access routes follow the admin access rule.
func TestConditionalAccessNeedsAdmin(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	bobID := userID(t, in, "bob")
	bob := signIn(t, in, "bob", "openid ward:admin").caller
	aliceNoScope := signIn(t, in, "alice", "openid profile").caller
	routes := []req{
		{method: "GET", path: caPolicies},
		{method: "PUT", path: caPolicies, body: caDocJSON},
		{method: "PUT", path: caPolicies, body: caDocYAML, contentType: "application/yaml"},
		{method: "GET", path: "/conditional-access/versions"},
		{method: "GET", path: "/conditional-access/versions/1"},
		{method: "POST", path: "/conditional-access/whatif", body: `{"user": "bob", "app": "web"}`},
		{method: "PUT", path: "/users/" + bobID + "/risk", body: `{"level": "none"}`},
	}
	for _, q := range routes {
		wantStatus(t, bob.do(t, q), 403, "access_denied")
		r := aliceNoScope.do(t, q)
		wantStatus(t, r, 403, "insufficient_scope")
		if ch := strings.Join(r.Header.Values("WWW-Authenticate"), "\n"); !strings.Contains(ch, `scope="ward:admin"`) {
			t.Errorf("%s %s: WWW-Authenticate %q", q.method, q.path, ch)
		}
	}
	anon := &caller{in: in}
	wantStatus(t, anon.do(t, routes[0]), 401, "invalid_token")

	// Nothing was changed.
	ctx := context.Background()
	if vs, err := in.App.Store.ListPolicyVersions(ctx, 0); err != nil || len(vs) != 0 {
		t.Errorf("a refused call stored a version: %d %v", len(vs), err)
	}
	if u, err := in.App.Store.GetUser(ctx, bobID); err != nil || u.RiskLevel != "" {
		t.Errorf("a refused call set bob's risk: %q %v", u.RiskLevel, err)
	}
	if n := len(events(t, in, model.EventAdminAccessDenied)); n != 2*len(routes)+1 {
		t.Errorf("%d access denials recorded, want %d", n, 2*len(routes)+1)
	}
}
