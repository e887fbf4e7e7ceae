package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/metrics"
	"github.com/ward-idp/ward/internal/metrics/metricstest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// scraper serves the instance's metrics on a listener of their own, as
// `ward serve` does on metrics.listen, and scrapes it.
type scraper struct {
	t   *testing.T
	url string
}

func newScraper(t *testing.T, in *wardtest.Instance) *scraper {
	t.Helper()
	if in.Server.Metrics == nil {
		t.Fatal("the server has no metrics handler")
	}
	ts := httptest.NewServer(in.Server.Metrics)
	t.Cleanup(ts.Close)
	return &scraper{t: t, url: ts.URL}
}

func (s *scraper) scrape() (string, *metricstest.Page) {
	s.t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != metrics.ContentType {
		s.t.Fatalf("metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p, err := metricstest.Parse(string(b))
	if err != nil {
		s.t.Fatalf("invalid exposition: %v\n%s", err, b)
	}
	return string(b), p
}

func value(p *metricstest.Page, name string, labels ...string) float64 {
	v, _ := p.Get(name, labels...)
	return v
}

func TestMetrics(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	testMetrics(t, in, false)
}

func TestMetricsPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
	testMetrics(t, in, true)
}

func testMetrics(t *testing.T, in *wardtest.Instance, pg bool) {
	sc := newScraper(t, in)
	_, before := sc.scrape()

	// Metrics are never on the issuer's listener.
	if r := do(t, in, call{method: http.MethodGet, path: "/metrics"}); r.Status != http.StatusNotFound {
		t.Errorf("issuer /metrics: %d", r.Status)
	}

	// A token, then the same proof replayed, and a wrong secret.
	s := newSigner(t)
	proof, err := s.ProofAt(http.MethodPost, in.URL+"/token", "", "", in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	cc := call{path: "/token", proof: proof, basic: [2]string{"service", wardtest.ServiceSecret},
		form: url.Values{"grant_type": {"client_credentials"}, "scope": {"docs.read"}}}
	ok := do(t, in, cc)
	if ok.Status != 200 {
		t.Fatalf("token: %d %s", ok.Status, ok.Body)
	}
	accessToken := ok.str("access_token")
	wantError(t, do(t, in, cc), 400, "invalid_dpop_proof")
	wantError(t, do(t, in, call{path: "/token", signer: s, basic: [2]string{"service", "wrong-secret-0123456789"},
		form: url.Values{"grant_type": {"client_credentials"}}}), 401, "invalid_client")

	// A sign-in, and a wrong password.
	_, challenge := wardtest.PKCE()
	if loc := in.Login(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, ""); loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: %s", loc)
	}
	in.TryLogin(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "bob", "not-bobs-password-SECRETMARK", "")

	// The attacker's requests: tokens and secrets in query strings and
	// paths, odd paths. None may reach a label.
	markers := []string{accessToken, wardtest.ServiceSecret, wardtest.BobPassword, "SECRETMARK", "evil-path-marker", "etc/passwd"}
	for _, p := range []string{
		"/token?access_token=" + url.QueryEscape(accessToken) + "&client_secret=" + wardtest.ServiceSecret,
		"/userinfo?access_token=" + url.QueryEscape(accessToken),
		"/admin/api/v1/users/" + url.PathEscape(accessToken),
		"/evil-path-marker/" + strings.Repeat("A", 3000),
		"/%2e%2e/%2e%2e/etc/passwd",
		"/evil-path-marker%0a%22%7D%20injected%201",
		"/static/evil-path-marker\"}",
	} {
		req, err := http.NewRequest(http.MethodGet, in.URL+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+accessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// A detection, recorded as the detectors do.
	det := &model.Event{Type: model.EventRiskDetected, Actor: "system", Reason: "token_replay_wrong_key",
		Data: map[string]string{model.DataDetectionID: "metrics-test", model.DataDetectionSeverity: model.RiskHigh,
			model.DataDetectionSource: model.DetectionSourceOnline}}
	if err := bus.NewEmitter(in.App.Bus, in.Clock.Now).Emit(context.Background(), det); err != nil {
		t.Fatal(err)
	}

	text, after := sc.scrape()
	for _, m := range markers {
		if strings.Contains(text, m) {
			t.Errorf("the metrics page contains %.40q", m)
		}
	}

	// Types.
	for name, typ := range map[string]string{
		"ward_http_requests_total": "counter", "ward_http_request_duration_seconds": "histogram", "ward_http_requests_in_flight": "gauge",
		"ward_token_requests_total": "counter", "ward_dpop_proof_refusals_total": "counter", "ward_signins_total": "counter",
		"ward_risk_detections_total": "counter", "ward_incidents_opened_total": "counter", "ward_ssf_outbox_depth": "gauge",
		"ward_ssf_sets_queued_total": "counter", "ward_audit_seal_errors_total": "counter", "ward_audit_verify_problems_total": "counter",
		"ward_bus_emit_failures_total": "counter", "go_goroutines": "gauge", "process_start_time_seconds": "gauge", "ward_build_info": "gauge",
	} {
		if f := after.Families[name]; f == nil || f.Type != typ {
			t.Errorf("%s: %+v, want type %s", name, f, typ)
		}
	}
	if pg {
		if v, ok := after.Get("ward_db_pool_max_connections"); !ok || v < 1 {
			t.Errorf("pool size %v %v", v, ok)
		}
		if _, ok := after.Get("ward_db_pool_connections", "state", "idle"); !ok {
			t.Error("no pool connection gauge")
		}
	}

	// Counters moved by exactly what was done.
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"ward_token_requests_total", []string{"grant_type", "client_credentials", "result", "issued"}, 1},
		{"ward_token_requests_total", []string{"grant_type", "client_credentials", "result", "invalid_dpop_proof"}, 1},
		{"ward_token_requests_total", []string{"grant_type", "none", "result", "invalid_client"}, 1}, // client authentication comes first
		{"ward_dpop_proof_refusals_total", []string{"reason", "replay"}, 1},
		{"ward_risk_detections_total", []string{"type", "token_replay_wrong_key", "severity", "high"}, 1},
		{"ward_signins_total", []string{"result", "success", "method", "password"}, 1},
		{"ward_signins_total", []string{"result", "failure", "method", "password"}, 1},
		{"ward_http_requests_total", []string{"route", "POST /token", "code", "2xx"}, 1},
		{"ward_http_requests_total", []string{"route", "POST /token", "code", "4xx"}, 2},
	} {
		if d := value(after, c.name, c.labels...) - value(before, c.name, c.labels...); d != c.delta {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, d, c.delta)
		}
	}
	if value(after, "ward_http_request_duration_seconds_count", "route", "POST /token") < 3 {
		t.Error("the token requests are not in the latency histogram")
	}
	if value(after, "ward_http_requests_total", "route", "unmatched", "code", "4xx") < 2 {
		t.Errorf("unmatched requests not counted:\n%s", text)
	}

	// Every route label is a registered pattern (METHOD /path or /path)
	// or "unmatched", and they are few.
	routes := after.Values("ward_http_requests_total", "route")
	for _, r := range routes {
		if r != "unmatched" && !strings.HasPrefix(r, "/") && !slices.ContainsFunc([]string{"GET ", "POST ", "PUT ", "PATCH ", "DELETE ", "HEAD ", "OPTIONS "}, func(m string) bool { return strings.HasPrefix(r, m+"/") }) {
			t.Errorf("route label %q is not a pattern", r)
		}
	}
	if len(routes) > 20 {
		t.Errorf("%d route values after a dozen requests: %v", len(routes), routes)
	}
	for _, v := range after.Values("ward_token_requests_total", "result") {
		if !slices.Contains([]string{"issued", "invalid_dpop_proof", "invalid_client", "invalid_request", "invalid_grant", "other"}, v) {
			t.Errorf("token result %q", v)
		}
	}
}

// The SIEM export's series: a sink that cannot be reached lags behind
// the events and counts failures; a working one delivers.
func TestMetricsExport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.Export.Sinks = []config.ExportSink{
			{Name: "siem", Type: config.ExportSyslog, Syslog: config.ExportSyslogSink{Address: down}},
			{Name: "archive", Type: config.ExportFile, File: config.ExportFileSink{Path: filepath.Join(t.TempDir(), "ocsf.jsonl")}},
		}
	}})
	const n = 20
	for i := range n {
		if r := do(t, in, call{path: "/token", basic: [2]string{"service", wardtest.ServiceSecret},
			form: url.Values{"grant_type": {"client_credentials"}}}); r.Status != 200 {
			t.Fatalf("token %d: %d", i, r.Status)
		}
	}
	sc := newScraper(t, in)
	var text string
	var p *metricstest.Page
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		text, p = sc.scrape()
		if value(p, "ward_export_failures_total", "sink", "siem") >= 1 && value(p, "ward_export_delivered_records_total", "sink", "archive") >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("export series did not move:\n%s", text)
		}
	}
	if v := value(p, "ward_export_lag_records", "sink", "siem"); v < n {
		t.Errorf("lag of the unreachable sink = %v, want at least %d", v, n)
	}
	if v := value(p, "ward_export_delivered_records_total", "sink", "siem"); v != 0 {
		t.Errorf("the unreachable sink delivered %v", v)
	}
	if got := p.Values("ward_export_failures_total", "sink"); !slices.Equal(got, []string{"archive", "siem"}) {
		t.Errorf("sinks %v", got)
	}
	if v, ok := p.Get("ward_ssf_outbox_depth", "method", "push"); !ok || v != 0 {
		t.Errorf("outbox depth %v %v", v, ok)
	}
}
