package gateway

import (
	"net/http"
	"strings"
	"sync"
	"time"

	prom "github.com/ward-idp/ward/internal/metrics"
	"github.com/ward-idp/ward/rs"
)

// Metric names (Prometheus text exposition format 0.0.4).
const (
	MetricRequests       = "ward_gateway_requests_total"
	MetricDuration       = "ward_gateway_request_duration_seconds"
	MetricUpstreamErrors = "ward_gateway_upstream_errors_total"
	MetricUnrouted       = "ward_gateway_unrouted_requests_total"
	MetricInFlight       = "ward_gateway_requests_in_flight"
	MetricCAEEvents      = "ward_gateway_cae_events_total"
	MetricCAEActions     = "ward_gateway_cae_actions_total"
	MetricSSFPush        = "ward_gateway_ssf_push_requests_total"
	MetricRevocations    = "ward_gateway_revocation_entries"
	MetricReloads        = "ward_gateway_config_reloads_total"
	MetricReloadTime     = "ward_gateway_config_last_reload_success_timestamp_seconds"
	MetricReady          = "ward_gateway_ready"
	MetricUsageSent      = "ward_gateway_usage_records_sent_total"
	MetricUsageDropped   = "ward_gateway_usage_records_dropped_total"
	MetricUsageBuffered  = "ward_gateway_usage_records_buffered"
	MetricUsageFailures  = "ward_gateway_usage_post_failures_total"
	MetricNATSSETs       = "ward_gateway_cae_nats_sets_total"
	MetricNATSRetries    = "ward_gateway_cae_nats_retries_total"
	MetricNATSResumes    = "ward_gateway_cae_nats_resumes_total"
	MetricNATSConnected  = "ward_gateway_cae_nats_connected"
	MetricNATSReplayed   = "ward_gateway_cae_nats_replayed"
	resultAllowed        = "allowed"
	resultRejected       = "rejected"
	reasonAllowed        = "ok"
	reasonCAEReplay      = "cae_replaying"
	unroutedNoRoute      = "no_route"
	unroutedBadPath      = "bad_path"
	reloadSuccess        = "success"
	reloadFailure        = "failure"
	caeEventOther        = "other"
)

// routeMetrics are the series of one route (by name); they survive
// reloads, so counters never go backwards.
type routeMetrics struct {
	name           string
	m              *metrics
	duration       *prom.Histogram
	upstreamErrors *prom.Counter
}

func (r *routeMetrics) allowed() { r.m.requests.With(r.name, resultAllowed, reasonAllowed).Inc() }
func (r *routeMetrics) rejected(reason string) {
	r.m.requests.With(r.name, resultRejected, reason).Inc()
}

// metrics holds every series of a gateway.
type metrics struct {
	reg *prom.Registry
	mu  sync.Mutex

	requests       *prom.CounterVec
	duration       *prom.HistogramVec
	upstreamErrors *prom.CounterVec
	unrouted       counterBy
	inFlight       *prom.Gauge
	caeEvents      counterBy
	caeActions     counterBy
	ssfPush        counterBy // by status code
	reloads        counterBy
	reloadTime     *prom.Gauge // unix seconds of the last successful (re)load

	state *rs.RevocationState
	ready func() bool
}

// counterBy is a counter family with one label.
type counterBy struct{ v *prom.CounterVec }

func (c counterBy) inc(k string) { c.v.With(k).Inc() }

func newMetrics() *metrics {
	// Label values: route names come from the configuration, reasons from
	// rs's fixed list, event types from a fixed list of URIs; the limits
	// only guard against a configuration with thousands of routes. Open
	// labels count their values, so each gateway has its own.
	var (
		labelRoute    = prom.Open("route", 512)
		labelResult   = prom.Closed("result", resultAllowed, resultRejected)
		labelReason   = prom.Open("reason", 64)
		labelUnrouted = prom.Closed("reason", unroutedNoRoute, unroutedBadPath)
		labelCAEType  = prom.Open("type", 32)
		labelCAEKind  = prom.Open("kind", 32)
		labelCode     = prom.Open("code", 32)
		labelReload   = prom.Closed("result", reloadSuccess, reloadFailure)
	)
	r := prom.NewRegistry()
	m := &metrics{reg: r}
	m.requests = r.CounterVec(MetricRequests, "Requests to a route by result (allowed, rejected) and reason (ok, or the rs rejection reason code).",
		labelRoute, labelResult, labelReason)
	m.duration = r.HistogramVec(MetricDuration, "Time from request to the end of the response (rejections included), by route.",
		prom.DurationBuckets, labelRoute)
	m.upstreamErrors = r.CounterVec(MetricUpstreamErrors, "Allowed requests the upstream could not answer (502), by route.", labelRoute)
	m.unrouted = counterBy{r.CounterVec(MetricUnrouted, "Requests that matched no route (no_route: 404) or had a non-canonical path (bad_path: 400).", labelUnrouted)}
	m.inFlight = r.Gauge(MetricInFlight, "Routed requests being served.")
	m.caeEvents = counterBy{r.CounterVec(MetricCAEEvents, "Accepted SSF events (SETs) by event type.", labelCAEType)}
	m.caeActions = counterBy{r.CounterVec(MetricCAEActions, "Revocation state changes made by SSF events, by kind.", labelCAEKind)}
	m.ssfPush = counterBy{r.CounterVec(MetricSSFPush, "Requests to the SSF push endpoint by HTTP status (202 accepted, 400 refused SET, 401/403 authentication, 503 retry).", labelCode)}
	r.GaugeFunc(MetricRevocations, "Entries in the CAE revocation state (not yet expired).", func() float64 {
		if m.state == nil {
			return 0
		}
		return float64(m.state.Len())
	})
	m.reloads = counterBy{r.CounterVec(MetricReloads, "Configuration reloads by result.", labelReload)}
	m.reloadTime = r.Gauge(MetricReloadTime, "Unix time of the last configuration load that was applied.")
	r.GaugeFunc(MetricReady, "1 once the issuer's JWKS has been fetched (and, with ssf.mode nats, the CAE stream replayed).", func() float64 {
		return b2f(m.ready != nil && m.ready())
	})
	// Always present, so that alerts on rate() see a zero first.
	for _, k := range []string{unroutedNoRoute, unroutedBadPath} {
		m.unrouted.v.With(k)
	}
	for _, k := range []string{reloadSuccess, reloadFailure} {
		m.reloads.v.With(k)
	}
	return m
}

// setNATS adds the series of the CAE follower (ssf.mode nats).
func (m *metrics) setNATS(f func() natsMetrics) {
	r := m.reg
	r.CollectFunc(MetricNATSSETs, "counter", "SETs read from the CAE stream in NATS, by result (applied, duplicate, refused).",
		[]*prom.Label{prom.Closed("result", "applied", "duplicate", "refused")}, func(e prom.Emit) {
			n := f()
			e(float64(n.stats.Applied), "applied")
			e(float64(n.stats.Duplicates), "duplicate")
			e(float64(n.stats.Refused), "refused")
		})
	r.CounterFunc(MetricNATSRetries, "SETs from NATS retried after a temporary failure (transmitter keys unavailable).",
		func() float64 { return float64(f().stats.Retries) })
	r.CounterFunc(MetricNATSResumes, "Consumers of the CAE stream replaced after they stopped delivering SETs the stream held.",
		func() float64 { return float64(f().stats.Resumes) })
	r.GaugeFunc(MetricNATSConnected, "1 while connected to NATS.", func() float64 { return b2f(f().connected) })
	r.GaugeFunc(MetricNATSReplayed, "1 once the replay of the CAE stream has caught up.", func() float64 { return b2f(f().replayed) })
}

// setUsage adds the series of the usage reporter.
func (m *metrics) setUsage(u *rs.UsageReporter) {
	r := m.reg
	r.CounterFunc(MetricUsageSent, "Usage records the IdP accepted.", func() float64 { return float64(u.Stats().Sent) })
	r.CounterFunc(MetricUsageDropped, "Usage records dropped because the buffer was full.", func() float64 { return float64(u.Stats().Dropped) })
	r.CounterFunc(MetricUsageFailures, "Failed usage report POSTs.", func() float64 { return float64(u.Stats().Failures) })
	r.GaugeFunc(MetricUsageBuffered, "Usage records waiting to be sent.", func() float64 { return float64(u.Stats().Buffered) })
}

// route returns the series of the route with this name.
func (m *metrics) route(name string) *routeMetrics {
	return &routeMetrics{name: name, m: m, duration: m.duration.With(name), upstreamErrors: m.upstreamErrors.With(name)}
}

// caeEventName is the short name of an event type URI, from a fixed list
// (bounded label values whatever the transmitter sends).
var caeEventNames = func() map[string]string {
	m := map[string]string{}
	for _, t := range []string{rs.EventSessionRevoked, rs.EventTokenClaimsChange, rs.EventCredentialChange,
		rs.EventAssuranceLevelChange, rs.EventDeviceComplianceChange, rs.EventSessionEstablished,
		rs.EventSessionPresented, rs.EventRiskLevelChange, rs.EventAccountDisabled, rs.EventAccountEnabled,
		rs.EventAccountPurged, rs.EventCredentialCompromise, rs.EventIdentifierRecycled, rs.EventSessionsRevoked,
		rs.EventVerification, rs.EventStreamUpdated} {
		m[t] = t[strings.LastIndexByte(t, '/')+1:]
	}
	return m
}()

func caeEventName(uri string) string {
	if n, ok := caeEventNames[uri]; ok {
		return n
	}
	return caeEventOther
}

// ServeHTTP writes every series in the Prometheus text format.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET")
		return
	}
	m.reg.ServeHTTP(w, r)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observeSince records a routed request's duration.
func (r *routeMetrics) observeSince(start time.Time) {
	r.duration.Observe(time.Since(start).Seconds())
}
