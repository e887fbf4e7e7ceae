package admin_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/geo/geotest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

const (
	graphOffice   = "192.0.2.10"
	graphAttacker = "198.51.100.66"
)

// refreshFrom presents a refresh token of "spa" with a proof by s, as a
// request forwarded by the trusted proxy for ip.
func refreshFrom(t *testing.T, in *wardtest.Instance, rt string, s *dpop.Signer, ip string) result {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}}
	hr, err := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hr.Header.Set("X-Forwarded-For", ip)
	p, err := s.ProofAt(http.MethodPost, in.URL+"/token", "", "", in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("DPoP", p)
	return send(t, hr)
}

// TestGraphRoute: a refresh token stolen from bob's session and
// presented from another network with another key, detected; GET /graph
// for bob, or for the attacker's address, shows the theft with its root
// cause. Hostile and invalid queries are refused with 400; unknown ids
// give an empty graph. On SQLite, and on PostgreSQL when
// WARD_TEST_POSTGRES_DSN is set.
func TestGraphRoute(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { graphRoute(t, "") })
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
		if dsn == "" {
			t.Skip("WARD_TEST_POSTGRES_DSN is not set")
		}
		graphRoute(t, dsn)
	})
}

func graphRoute(t *testing.T, dsn string) {
	city, asn := geotest.Write(t, t.TempDir(), []geotest.Place{
		{CIDR: "192.0.2.0/24", Country: "FR", ASN: 64500, ASOrg: "Example Office Net"},
		{CIDR: "198.51.100.0/24", Country: "US", ASN: 64501, ASOrg: "Example Hosting"},
	})
	in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		c.ConditionalAccess.GeoIPDatabase, c.ConditionalAccess.ASNDatabase = city, asn
	}})
	alice := admin(t, in)
	bobID := userID(t, in, "bob")
	bob := signIn(t, in, "bob", "openid offline_access")

	// bob refreshes from the office; the thief presents bob's current
	// refresh token from elsewhere with a key of its own.
	in.Clock.Advance(time.Minute)
	r := refreshFrom(t, in, bob.refresh, bob.signer, graphOffice)
	if r.Status != 200 {
		t.Fatalf("bob's refresh: %d %s", r.Status, r.Body)
	}
	in.Clock.Advance(4 * time.Minute)
	if r := refreshFrom(t, in, r.str("refresh_token"), newSigner(t), graphAttacker); r.Status != 400 || r.str("error") != "invalid_grant" {
		t.Fatalf("thief's refresh: %d %s", r.Status, r.Body)
	}
	failed := events(t, in, model.EventTokenRequestFailed)
	if len(failed) != 1 || failed[0].IP != graphAttacker || failed[0].SessionID == "" {
		t.Fatalf("the thief's refresh is not recorded as expected: %+v", failed)
	}
	stolen := failed[0]
	ctx := context.Background()
	det := &model.Event{ID: "ev-det-graph", Type: model.EventRiskDetected, Time: in.Clock.Now(), UserID: bobID, SessionID: stolen.SessionID,
		IP: graphAttacker, Reason: "refresh_token_wrong_key", Data: map[string]string{model.DataDetectionID: "det-graph",
			model.DataDetectionSeverity: "high", model.DataDetectionConfidence: "0.95", model.DataDetectionTechnique: "T1550.001",
			model.DataDetectionEvidence: stolen.ID}}
	if _, err := in.App.Store.AppendEvent(ctx, det); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Risk.HandleDetection(ctx, det); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{"/graph?user=" + bobID, "/graph?ip=" + graphAttacker, "/graph?session=" + stolen.SessionID} {
		r = alice.do(t, req{method: "GET", path: path})
		wantStatus(t, r, 200, "")
		rc, _ := r.JSON["root_cause"].(map[string]any)
		if rc == nil {
			t.Fatalf("%s: no root cause: %s", path, r.Body)
		}
		misuse, _ := rc["misuse"].(map[string]any)
		origin, _ := rc["origin"].(map[string]any)
		sum, _ := rc["summary"].(string)
		if rc["detection_id"] != "det-graph" || misuse["ip"] != graphAttacker || misuse["other_key"] != true ||
			misuse["credential"] != "refresh_token" || misuse["event_id"] != stolen.ID || origin["session_id"] != stolen.SessionID ||
			!strings.Contains(sum, "replayed from IP "+graphAttacker+" (AS 64501 Example Hosting, US) with another key") {
			t.Errorf("%s: root cause %v", path, rc)
		}
		var attacker map[string]any
		for _, n := range r.list("nodes") {
			if n["id"] == "ip:"+graphAttacker {
				attacker = n
			}
		}
		if attrs, _ := attacker["attrs"].(map[string]any); attrs["asn"] != "64501" || attrs["country"] != "US" || attacker["root_cause"] != true {
			t.Errorf("%s: attacker's address node %v", path, attacker)
		}
		if r.JSON["truncated"] != false || len(r.list("edges")) == 0 {
			t.Errorf("%s: %s", path, r.Body)
		}
	}

	// The incident the detections opened has the same graph.
	var inc map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for inc == nil && time.Now().Before(deadline) {
		if l := alice.do(t, req{method: "GET", path: "/incidents"}).list("incidents"); len(l) > 0 {
			inc = l[0]
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if inc == nil {
		t.Fatal("no incident raised for the theft")
	}
	r = alice.do(t, req{method: "GET", path: "/incidents/" + inc["name"].(string) + "/graph"})
	wantStatus(t, r, 200, "")
	g, _ := r.JSON["graph"].(map[string]any)
	gi, _ := r.JSON["incident"].(map[string]any)
	if rc, _ := g["root_cause"].(map[string]any); gi["name"] != inc["name"] || rc == nil ||
		!strings.Contains(rc["summary"].(string), "replayed from IP "+graphAttacker) {
		t.Errorf("incident graph: %.600s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/incidents/INC-99999/graph"}), 404, "not_found")

	// Unknown ids: an empty graph.
	r = alice.do(t, req{method: "GET", path: "/graph?user=nobody&session=nothing&device=none&ip=203.0.113.250"})
	wantStatus(t, r, 200, "")
	if len(r.list("nodes")) != 0 || r.JSON["root_cause"] != nil || !strings.Contains(r.Body, `"nodes":[]`) {
		t.Errorf("unknown ids: %s", r.Body)
	}
	// Invalid and hostile queries.
	many := make([]string, 21)
	for i := range many {
		many[i] = "user=u" + strings.Repeat("x", i+1)
	}
	for _, q := range []string{
		"",
		"?users=" + bobID,
		"?user=" + bobID + "&limit=5",
		"?ip=999.0.0.1",
		"?ip=" + url.QueryEscape("fe80::1%eth0"),
		"?user=" + strings.Repeat("a", 129),
		"?user=" + url.QueryEscape("a b"),
		"?user=%00",
		"?" + strings.Join(many, "&"),
		"?user=" + bobID + "&from=yesterday",
		"?user=" + bobID + "&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
		"?user=" + bobID + "&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
		"?user=" + bobID + "&from=2026-01-01T00:00:00Z&from=2026-01-02T00:00:00Z",
		"?user=" + strings.Repeat("a,", 5000),
		"?" + strings.Repeat("x", 9000) + "=1",
	} {
		r := alice.do(t, req{method: "GET", path: "/graph" + q})
		if r.Status != 400 || r.str("error") != "invalid_request" || r.str("error_description") == "" {
			t.Errorf("GET /graph%.60s: %d %s", q, r.Status, r.Body)
		}
		if strings.Contains(r.Body, strings.Repeat("a", 40)) || strings.Contains(r.Body, strings.Repeat("x", 40)) {
			t.Errorf("GET /graph%.60s: the error echoes the input: %.200s", q, r.Body)
		}
	}
	// A token without ward:admin; bob's, whose session the high
	// detection revoked.
	wantStatus(t, signIn(t, in, "alice", "openid").do(t, req{method: "GET", path: "/graph?user=" + bobID}), 403, "insufficient_scope")
	wantStatus(t, bob.do(t, req{method: "GET", path: "/graph?user=" + bobID}), 401, "invalid_token")
}
