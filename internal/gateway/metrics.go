package gateway

import (
	"bufio"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/rs"
)

// Metric names (Prometheus text exposition format 0.0.4).
const (
	MetricRequests        = "ward_gateway_requests_total"
	MetricDuration        = "ward_gateway_request_duration_seconds"
	MetricUpstreamErrors  = "ward_gateway_upstream_errors_total"
	MetricUnrouted        = "ward_gateway_unrouted_requests_total"
	MetricInFlight        = "ward_gateway_requests_in_flight"
	MetricCAEEvents       = "ward_gateway_cae_events_total"
	MetricCAEActions      = "ward_gateway_cae_actions_total"
	MetricSSFPush         = "ward_gateway_ssf_push_requests_total"
	MetricRevocations     = "ward_gateway_revocation_entries"
	MetricReloads         = "ward_gateway_config_reloads_total"
	MetricReloadTime      = "ward_gateway_config_last_reload_success_timestamp_seconds"
	MetricReady           = "ward_gateway_ready"
	MetricUsageSent       = "ward_gateway_usage_records_sent_total"
	MetricUsageDropped    = "ward_gateway_usage_records_dropped_total"
	MetricUsageBuffered   = "ward_gateway_usage_records_buffered"
	MetricUsageFailures   = "ward_gateway_usage_post_failures_total"
	MetricNATSSETs        = "ward_gateway_cae_nats_sets_total"
	MetricNATSRetries     = "ward_gateway_cae_nats_retries_total"
	MetricNATSConnected   = "ward_gateway_cae_nats_connected"
	MetricNATSReplayed    = "ward_gateway_cae_nats_replayed"
	resultAllowed         = "allowed"
	resultRejected        = "rejected"
	reasonAllowed         = "ok"
	reasonCAEReplay       = "cae_replaying"
	unroutedNoRoute       = "no_route"
	unroutedBadPath       = "bad_path"
	reloadSuccess         = "success"
	reloadFailure         = "failure"
	caeEventOther         = "other"
	contentTypePrometheus = "text/plain; version=0.0.4; charset=utf-8"
)

// durationBuckets are the upper bounds (seconds) of the duration
// histogram.
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// counterMap is a set of counters by one label value, created on first use.
type counterMap struct {
	mu sync.RWMutex
	m  map[string]*atomic.Uint64
}

func (c *counterMap) inc(k string) {
	c.mu.RLock()
	n := c.m[k]
	c.mu.RUnlock()
	if n == nil {
		c.mu.Lock()
		if c.m == nil {
			c.m = make(map[string]*atomic.Uint64)
		}
		if n = c.m[k]; n == nil {
			n = new(atomic.Uint64)
			c.m[k] = n
		}
		c.mu.Unlock()
	}
	n.Add(1)
}

func (c *counterMap) get(k string) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if n := c.m[k]; n != nil {
		return n.Load()
	}
	return 0
}

// snapshot returns the keys (sorted) and values.
func (c *counterMap) snapshot() ([]string, map[string]uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	keys := make([]string, 0, len(c.m))
	vals := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		keys = append(keys, k)
		vals[k] = v.Load()
	}
	slices.Sort(keys)
	return keys, vals
}

// histogram is a fixed-bucket histogram, safe for concurrent use.
type histogram struct {
	counts []atomic.Uint64 // per bucket, not cumulative; last is +Inf
	sum    atomic.Uint64   // float64 bits
	count  atomic.Uint64
}

func newHistogram() *histogram {
	return &histogram{counts: make([]atomic.Uint64, len(durationBuckets)+1)}
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(durationBuckets, v)
	h.counts[i].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
	h.count.Add(1)
}

// routeMetrics are the series of one route (by name); they survive
// reloads, so counters never go backwards.
type routeMetrics struct {
	name           string
	results        counterMap // "allowed ok", "rejected <reason>"
	duration       *histogram
	upstreamErrors atomic.Uint64
}

func (m *routeMetrics) allowed()          { m.results.inc(resultAllowed + " " + reasonAllowed) }
func (m *routeMetrics) rejected(r string) { m.results.inc(resultRejected + " " + r) }

// metrics holds every series of a gateway.
type metrics struct {
	mu     sync.Mutex
	routes map[string]*routeMetrics

	unrouted   counterMap
	inFlight   atomic.Int64
	caeEvents  counterMap
	caeActions counterMap
	ssfPush    counterMap // by status code
	reloads    counterMap
	reloadTime atomic.Int64 // unix seconds of the last successful (re)load

	state *rs.RevocationState
	usage *rs.UsageReporter
	ready func() bool
	nats  func() natsMetrics // ssf.mode nats
}

func newMetrics() *metrics {
	m := &metrics{routes: make(map[string]*routeMetrics)}
	// Always present, so that alerts on rate() see a zero first.
	m.reloads.m = map[string]*atomic.Uint64{reloadSuccess: new(atomic.Uint64), reloadFailure: new(atomic.Uint64)}
	return m
}

// route returns the series of the route with this name.
func (m *metrics) route(name string) *routeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.routes[name]
	if r == nil {
		r = &routeMetrics{name: name, duration: newHistogram()}
		m.routes[name] = r
	}
	return r
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
	w.Header().Set("Content-Type", contentTypePrometheus)
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriter(w)
	m.write(bw)
	_ = bw.Flush()
}

type promWriter struct {
	w *bufio.Writer
}

func (p promWriter) family(name, typ, help string) {
	p.w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

// sample writes name{labels} value; labels alternate name, value.
func (p promWriter) sample(name string, v float64, labels ...string) {
	p.w.WriteString(name)
	if len(labels) > 0 {
		p.w.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.w.WriteByte(',')
			}
			p.w.WriteString(labels[i] + `="` + escapeLabel(labels[i+1]) + `"`)
		}
		p.w.WriteByte('}')
	}
	p.w.WriteByte(' ')
	p.w.WriteString(formatFloat(v))
	p.w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func (m *metrics) write(bw *bufio.Writer) {
	p := promWriter{w: bw}
	m.mu.Lock()
	names := make([]string, 0, len(m.routes))
	for n := range m.routes {
		names = append(names, n)
	}
	routes := make([]*routeMetrics, 0, len(names))
	slices.Sort(names)
	for _, n := range names {
		routes = append(routes, m.routes[n])
	}
	m.mu.Unlock()

	p.family(MetricRequests, "counter", "Requests to a route by result (allowed, rejected) and reason (ok, or the rs rejection reason code).")
	for _, r := range routes {
		keys, vals := r.results.snapshot()
		for _, k := range keys {
			result, reason, _ := strings.Cut(k, " ")
			p.sample(MetricRequests, float64(vals[k]), "route", r.name, "result", result, "reason", reason)
		}
	}
	p.family(MetricDuration, "histogram", "Time from request to the end of the response (rejections included), by route.")
	for _, r := range routes {
		var cum uint64
		for i, ub := range durationBuckets {
			cum += r.duration.counts[i].Load()
			p.sample(MetricDuration+"_bucket", float64(cum), "route", r.name, "le", formatFloat(ub))
		}
		cum += r.duration.counts[len(durationBuckets)].Load()
		p.sample(MetricDuration+"_bucket", float64(cum), "route", r.name, "le", "+Inf")
		p.sample(MetricDuration+"_sum", math.Float64frombits(r.duration.sum.Load()), "route", r.name)
		p.sample(MetricDuration+"_count", float64(r.duration.count.Load()), "route", r.name)
	}
	p.family(MetricUpstreamErrors, "counter", "Allowed requests the upstream could not answer (502), by route.")
	for _, r := range routes {
		p.sample(MetricUpstreamErrors, float64(r.upstreamErrors.Load()), "route", r.name)
	}
	p.family(MetricUnrouted, "counter", "Requests that matched no route (no_route: 404) or had a non-canonical path (bad_path: 400).")
	for _, k := range []string{unroutedNoRoute, unroutedBadPath} {
		p.sample(MetricUnrouted, float64(m.unrouted.get(k)), "reason", k)
	}
	p.family(MetricInFlight, "gauge", "Routed requests being served.")
	p.sample(MetricInFlight, float64(m.inFlight.Load()))

	p.family(MetricCAEEvents, "counter", "Accepted SSF events (SETs) by event type.")
	keys, vals := m.caeEvents.snapshot()
	for _, k := range keys {
		p.sample(MetricCAEEvents, float64(vals[k]), "type", k)
	}
	p.family(MetricCAEActions, "counter", "Revocation state changes made by SSF events, by kind.")
	keys, vals = m.caeActions.snapshot()
	for _, k := range keys {
		p.sample(MetricCAEActions, float64(vals[k]), "kind", k)
	}
	p.family(MetricSSFPush, "counter", "Requests to the SSF push endpoint by HTTP status (202 accepted, 400 refused SET, 401/403 authentication, 503 retry).")
	keys, vals = m.ssfPush.snapshot()
	for _, k := range keys {
		p.sample(MetricSSFPush, float64(vals[k]), "code", k)
	}
	p.family(MetricRevocations, "gauge", "Entries in the CAE revocation state (not yet expired).")
	n := 0
	if m.state != nil {
		n = m.state.Len()
	}
	p.sample(MetricRevocations, float64(n))

	p.family(MetricReloads, "counter", "Configuration reloads by result.")
	keys, vals = m.reloads.snapshot()
	for _, k := range keys {
		p.sample(MetricReloads, float64(vals[k]), "result", k)
	}
	p.family(MetricReloadTime, "gauge", "Unix time of the last configuration load that was applied.")
	p.sample(MetricReloadTime, float64(m.reloadTime.Load()))
	p.family(MetricReady, "gauge", "1 once the issuer's JWKS has been fetched (and, with ssf.mode nats, the CAE stream replayed).")
	ready := 0.0
	if m.ready != nil && m.ready() {
		ready = 1
	}
	p.sample(MetricReady, ready)

	if m.nats != nil {
		n := m.nats()
		p.family(MetricNATSSETs, "counter", "SETs read from the CAE stream in NATS, by result (applied, duplicate, refused).")
		p.sample(MetricNATSSETs, float64(n.stats.Applied), "result", "applied")
		p.sample(MetricNATSSETs, float64(n.stats.Duplicates), "result", "duplicate")
		p.sample(MetricNATSSETs, float64(n.stats.Refused), "result", "refused")
		p.family(MetricNATSRetries, "counter", "SETs from NATS retried after a temporary failure (transmitter keys unavailable).")
		p.sample(MetricNATSRetries, float64(n.stats.Retries))
		p.family(MetricNATSConnected, "gauge", "1 while connected to NATS.")
		p.sample(MetricNATSConnected, b2f(n.connected))
		p.family(MetricNATSReplayed, "gauge", "1 once the replay of the CAE stream has caught up.")
		p.sample(MetricNATSReplayed, b2f(n.replayed))
	}
	if m.usage != nil {
		st := m.usage.Stats()
		p.family(MetricUsageSent, "counter", "Usage records the IdP accepted.")
		p.sample(MetricUsageSent, float64(st.Sent))
		p.family(MetricUsageDropped, "counter", "Usage records dropped because the buffer was full.")
		p.sample(MetricUsageDropped, float64(st.Dropped))
		p.family(MetricUsageFailures, "counter", "Failed usage report POSTs.")
		p.sample(MetricUsageFailures, float64(st.Failures))
		p.family(MetricUsageBuffered, "gauge", "Usage records waiting to be sent.")
		p.sample(MetricUsageBuffered, float64(st.Buffered))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observeSince records a routed request's duration.
func (m *routeMetrics) observeSince(start time.Time) {
	m.duration.observe(time.Since(start).Seconds())
}
