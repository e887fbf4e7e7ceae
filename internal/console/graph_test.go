package console_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/geo/geotest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

const (
	theftOffice   = "192.0.2.10"
	theftAttacker = "198.51.100.66"
	// hostileOrg is the attacker network's name in the location
	// database: text from outside Ward, drawn in the graph.
	hostileOrg = `Evil <script>alert(1)</script> Hosting`
)

// startWardWithPlaces is a Ward whose location databases name the
// office's network and the attacker's (with a hostile name).
func startWardWithPlaces(t *testing.T) *wardtest.Instance {
	t.Helper()
	city, asn := geotest.Write(t, t.TempDir(), []geotest.Place{
		{CIDR: "192.0.2.0/24", Country: "FR", ASN: 64500, ASOrg: "Example Office Net"},
		{CIDR: "198.51.100.0/24", Country: "US", ASN: 64501, ASOrg: hostileOrg},
	})
	return startWardOn(t, "", func(c *config.Config) {
		c.ConditionalAccess.GeoIPDatabase, c.ConditionalAccess.ASNDatabase = city, asn
	})
}

// seedTheft records a theft of bob's session: he signs in from the
// office; an hour later his rotated refresh token is presented again
// from the attacker's network; the detector's finding (with that reuse
// as its evidence) is recorded by the risk service and opens an
// incident. It returns the incident's name and the session's id.
func seedTheft(t *testing.T, in *wardtest.Instance, userID string) (string, string) {
	t.Helper()
	ctx := context.Background()
	st := in.App.Store
	now := in.Clock.Now()
	sid := "sess-graph-" + userID
	signedIn := now.Add(-time.Hour)
	if err := st.CreateSession(ctx, &model.Session{ID: sid, UserID: userID, AuthTime: signedIn, AMR: []string{"pwd", "otp"}, ACR: "urn:ward:acr:mfa",
		IP: theftOffice, UserAgent: "Mozilla/5.0", CreatedAt: signedIn, LastSeen: now.Add(-10 * time.Minute),
		ExpiresAt: now.Add(24 * time.Hour), IdleTimeout: 72 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*model.Event{
		{ID: "ev-graph-signin", Type: model.EventSignInSucceeded, Time: signedIn, Actor: userID, UserID: userID, SessionID: sid,
			ClientID: "spa", IP: theftOffice, UserAgent: "Mozilla/5.0", Outcome: model.OutcomeSuccess},
		{ID: "ev-graph-reuse", Type: model.EventRefreshReuseDetected, Time: now.Add(-5 * time.Minute), Actor: "anonymous", UserID: userID,
			SessionID: sid, ClientID: "spa", IP: theftAttacker, UserAgent: "curl/8.5", Outcome: model.OutcomeFailure, Reason: "refresh_reuse"},
	} {
		if _, err := st.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	det := &model.Event{ID: "ev-graph-det", Type: model.EventRiskDetected, Time: now.Add(-4 * time.Minute), Actor: "system", UserID: userID,
		SessionID: sid, IP: theftAttacker, Outcome: model.OutcomeSuccess, Reason: "refresh_token_replay",
		Data: map[string]string{model.DataDetectionID: "det-graph", model.DataDetectionSeverity: model.RiskHigh, model.DataDetectionConfidence: "0.95",
			model.DataDetectionTechnique: "T1550.001", model.DataDetectionEvidence: "ev-graph-reuse", model.DataDetectionSource: "online",
			model.DataDetectionDetail: `a rotated refresh token was presented again <img src=x onerror=alert(2)>`}}
	if _, err := st.AppendEvent(ctx, det); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Risk.HandleDetection(ctx, det); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Incidents.HandleDetection(ctx, det); err != nil {
		t.Fatal(err)
	}
	id, err := st.IncidentOfDetection(ctx, "det-graph")
	if err != nil {
		t.Fatal(err)
	}
	return getIncident(t, in, id).Name, sid
}

// attackerNode matches the attacker's address drawn as a root-cause node.
var attackerNode = regexp.MustCompile(`<g class="g-node g-k-ip g-root[^"]*" data-node="ip:` + regexp.QuoteMeta(theftAttacker) + `">`)

// TestInvestigationGraph: the incident page and the user's page show
// the investigation graph to every console role: the root cause in
// words, an SVG with the attacker's address marked as the root cause,
// the same entities and relations as tables. Text from outside Ward (a
// network's name, a detection's detail) is escaped; an unknown incident
// is 404.
func TestInvestigationGraph(t *testing.T) {
	in := startWardWithPlaces(t)
	bob := userID(t, in, "bob")
	name, sid := seedTheft(t, in, bob)
	ops := map[string]*operator{model.RoleAdmin: signIn(t, in, "alice")}
	for n, role := range operators {
		if role != "" {
			ops[role] = signIn(t, in, n)
		}
	}
	for role, op := range ops {
		for _, path := range []string{"/console/incidents/" + name, "/console/users/" + bob} {
			resp, body := op.get(path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s as %s: %d %.300s", path, role, resp.StatusCode, body)
			}
			checkGraphSection(t, role+" "+path, body, sid)
		}
	}
	// An unknown incident: 404, no graph.
	resp, body := ops[model.RoleReader].get("/console/incidents/INC-99999")
	if resp.StatusCode != http.StatusNotFound || strings.Contains(body, `id="h-graph"`) {
		t.Errorf("unknown incident: %d %.300s", resp.StatusCode, body)
	}
	// A user with no theft: the user alone, no root cause.
	_, body = ops[model.RoleReader].get("/console/users/" + userID(t, in, "nora"))
	if s := section(body); !strings.Contains(s, "No root cause is known") || strings.Contains(s, "g-root") || strings.Count(s, `class="g-node`) != 1 {
		t.Errorf("quiet user's graph: %.2000s", section(body))
	}
}

// section is the graph's section of a page.
func section(body string) string {
	i := strings.Index(body, `aria-labelledby="h-graph"`)
	if i < 0 {
		return ""
	}
	j := strings.Index(body[i:], "</section>")
	if j < 0 {
		return body[i:]
	}
	return body[i : i+j]
}

func checkGraphSection(t *testing.T, what, body, sid string) {
	t.Helper()
	s := section(body)
	if s == "" {
		t.Fatalf("%s: no investigation graph: %.500s", what, body)
	}
	// The root cause in words first, then the SVG, then the tables.
	rc, svg, tables := strings.Index(s, `class="root-cause"`), strings.Index(s, `<svg id="graph-svg"`), strings.Index(s, "<caption>Entities</caption>")
	if rc < 0 || svg < rc || tables < svg {
		t.Fatalf("%s: root cause %d, SVG %d, tables %d: %.3000s", what, rc, svg, tables, s)
	}
	summary := s[rc:svg]
	for _, want := range []string{"Root cause:", "replayed", "from IP " + theftAttacker, "AS 64501 Evil &lt;script&gt;alert(1)&lt;/script&gt; Hosting"} {
		if !strings.Contains(summary, want) {
			t.Errorf("%s: the root cause does not say %q: %s", what, want, summary)
		}
	}
	if !attackerNode.MatchString(s) {
		t.Errorf("%s: the attacker's address is not drawn as the root cause: %.4000s", what, s)
	}
	if !strings.Contains(s, `data-node="session:`+sid+`"`) || !strings.Contains(s, `class="g-edge g-root"`) {
		t.Errorf("%s: the stolen session or a root-cause relation is not drawn: %.4000s", what, s)
	}
	// The tables hold the same: the attacker's address as root cause.
	if !regexp.MustCompile(`<tr class="g-row-root"><td data-label="Kind">ip</td><td data-label="Entity"><code>` + regexp.QuoteMeta(theftAttacker) + `</code>`).MatchString(s) {
		t.Errorf("%s: the table does not mark the attacker's address: %.4000s", what, s)
	}
	// Hostile text is escaped wherever it is drawn.
	for _, raw := range []string{"<script>alert(1)", "<img src=x"} {
		if strings.Contains(body, raw) {
			t.Errorf("%s: %q is not escaped", what, raw)
		}
	}
	if !strings.Contains(s, "&lt;img src&#61;x onerror&#61;alert(2)&gt;") && !strings.Contains(s, "&lt;img src=x onerror=alert(2)&gt;") {
		t.Errorf("%s: the detection's detail is not in the table, escaped: %.4000s", what, s)
	}
}
