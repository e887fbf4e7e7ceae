package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/wardtest"
)

func applyPolicies(t *testing.T, in *wardtest.Instance, comment, doc string) {
	t.Helper()
	d, err := policy.DecodeYAML([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), d, access.ApplyOptions{Actor: userID(t, in, "alice"), Comment: comment, ExpectVersion: access.AnyVersion}); err != nil {
		t.Fatal(err)
	}
}

const policiesV1 = `
locations:
  - id: office
    name: Head office
    trusted: true
    ip_ranges: [192.0.2.0/24]
policies:
  - id: block-native
    name: Block the native app
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [native]}
    grant: {block: true}
  - id: ro-mfa-web
    name: MFA for the web app (trial)
    state: report_only
    assignments:
      users: {include: [all]}
      applications: {include: [web]}
    grant: {controls: [mfa]}
`

const policiesV2 = `
locations:
  - id: office
    name: Head office
    trusted: true
    ip_ranges: [192.0.2.0/24, 198.51.100.0/24]
policies:
  - id: block-native
    name: Block the native app
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [native]}
    grant: {block: true}
  - id: ro-mfa-web
    name: MFA for the web app (trial)
    state: report_only
    assignments:
      users: {include: [all]}
      applications: {include: [web]}
    conditions:
      locations: {include: [all], exclude: [office]}
    grant: {controls: [mfa]}
`

// TestAccessPages: every console role reads the policies, versions,
// diff, What-If and report-only results; nothing there changes anything.
func TestAccessPages(t *testing.T) { backends(t, testAccessPages) }

func testAccessPages(t *testing.T, in *wardtest.Instance) {
	applyPolicies(t, in, "first policies", policiesV1)
	// bob signs in to web: the report-only policy would have required MFA.
	userSession(t, in, "bob", wardtest.BobPassword)
	applyPolicies(t, in, "office excluded from the MFA trial", policiesV2)
	bob := userID(t, in, "bob")
	for name, role := range map[string]string{"alice": model.RoleAdmin, "sofia": model.RoleSecurityOperator, "hank": model.RoleHelpdesk, "rita": model.RoleReader} {
		op := signIn(t, in, name)
		for _, p := range []string{"/console/access", "/console/access/diff", "/console/access/whatif", "/console/access/whatif?user=bob&app=web", "/console/access/report-only"} {
			if resp, body := op.get(p); resp.StatusCode != http.StatusOK {
				t.Errorf("%s as %s: %d %.200s", p, role, resp.StatusCode, body)
			}
		}
		if role != model.RoleReader {
			continue
		}
		// No change is possible here: POST is no route.
		if resp, _ := op.post("/console/access/whatif", op.csrf(), nil); resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
			t.Errorf("POST what-if: %d", resp.StatusCode)
		}
	}
	op := signIn(t, in, "sofia")
	// Policies, locations and versions.
	_, body := op.get("/console/access")
	for _, want := range []string{"block-native", "ro-mfa-web", "report only", "Head office", "192.0.2.0/24, 198.51.100.0/24", "version 2", "office excluded from the MFA trial", "first policies", ">alice<", `/console/access/diff?from=1&amp;to=2`} {
		if !strings.Contains(body, want) {
			t.Errorf("policies page lacks %q", want)
		}
	}
	if !strings.Contains(body, `<a href="/console/access" aria-current="page">Policies</a>`) {
		t.Error("the policies tab is not marked current")
	}
	// The diff of the two versions: the added range and condition.
	_, body = op.get("/console/access/diff?from=1&to=2")
	for _, want := range []string{`<tr class="add">`, `&#34;198.51.100.0/24&#34;`, `&#34;office&#34;`, "lines removed"} {
		if !strings.Contains(body, want) {
			t.Errorf("diff lacks %q", want)
		}
	}
	if strings.Contains(body, `<tr class="del"><td class="ln">`) && !strings.Contains(body, `&#34;192.0.2.0/24&#34;`) {
		t.Error("diff: a removed line but not the old range")
	}
	if _, body := op.get("/console/access/diff?from=2&to=2"); !strings.Contains(body, "identical documents") {
		t.Error("a version against itself is not identical")
	}
	if resp, _ := op.get("/console/access/diff?from=1&to=99"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("diff with an unknown version: %d", resp.StatusCode)
	}
	if resp, body := op.get("/console/access/diff?from=1%20OR%201&to=%3Cscript%3E"); resp.StatusCode != http.StatusOK || strings.Contains(body, "<script>") {
		t.Errorf("diff with hostile versions: %d", resp.StatusCode)
	}
	// What-If: the per-policy explanation.
	_, body = op.get("/console/access/whatif?" + url.Values{"user": {"bob"}, "app": {"native"}}.Encode())
	if !strings.Contains(body, `<span class="badge bad">block</span>`) || !strings.Contains(body, "Blocked by block-native") {
		t.Errorf("what-if native: no block by block-native: %.2000s", body)
	}
	_, body = op.get("/console/access/whatif?" + url.Values{"user": {bob}, "app": {"web"}, "ip": {"192.0.2.10"}}.Encode())
	if !strings.Contains(body, `<span class="badge ok">allow</span>`) || !strings.Contains(body, "location") {
		t.Errorf("what-if from the office: %.3000s", body)
	}
	resp, body := op.get("/console/access/whatif?" + url.Values{"user": {"bob"}, "app": {"web"}, "ip": {"not-an-ip"}, "sign_in_risk": {"extreme"}}.Encode())
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not an IP address") || !strings.Contains(body, "sign_in_risk") {
		t.Errorf("what-if with bad input: %d %.400s", resp.StatusCode, body)
	}
	if resp, body := op.get("/console/access/whatif?app=no-such-app&user=%3Cscript%3E"); resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "<script>") {
		t.Errorf("what-if with an unknown app and hostile user: %d", resp.StatusCode)
	}
	// Report-only results: bob's sign-in to web would have needed MFA.
	_, body = op.get("/console/access/report-only?days=7")
	if !strings.Contains(body, "ro-mfa-web") || !strings.Contains(body, "would have required more</span> <strong>1</strong>") ||
		!strings.Contains(body, ">bob<") || !strings.Contains(body, "required mfa") {
		t.Errorf("report-only results: %.3000s", body)
	}
}
