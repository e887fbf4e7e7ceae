package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/metrics"
)

// Metric names of the HTTP series.
const (
	MetricHTTPRequests = "ward_http_requests_total"
	MetricHTTPDuration = "ward_http_request_duration_seconds"
	MetricHTTPInFlight = "ward_http_requests_in_flight"
)

// routeUnmatched labels requests no route pattern matched (404s, 405s of
// unknown paths): what a scanner sends is counted, never named.
const routeUnmatched = "unmatched"

// httpMetrics counts requests by the pattern of the route that served
// them (as registered on the mux, e.g. "POST /token" or
// "GET /admin/v1/users/{id}"), never by the path as sent: the label
// values are the program's patterns, whatever the client puts in a path
// or query string.
type httpMetrics struct {
	requests *metrics.CounterVec
	duration *metrics.HistogramVec
	inFlight *metrics.Gauge
}

func newHTTPMetrics(r *metrics.Registry) *httpMetrics {
	// The mux has about two hundred patterns; the limit only guards
	// against a mistake.
	route := metrics.Open("route", 512)
	return &httpMetrics{
		requests: r.CounterVec(MetricHTTPRequests, "HTTP requests by route pattern and status class (2xx, 3xx, 4xx, 5xx).",
			route, metrics.Closed("code", "1xx", "2xx", "3xx", "4xx", "5xx")),
		duration: r.HistogramVec(MetricHTTPDuration, "Time to serve an HTTP request (until the handler returned), by route pattern.",
			metrics.DurationBuckets, route),
		inFlight: r.Gauge(MetricHTTPInFlight, "HTTP requests being served."),
	}
}

// wrap instruments mux. It must wrap the ServeMux itself: the mux sets
// the matched pattern on the request it is given.
func (m *httpMetrics) wrap(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Add(1)
		sw := metrics.NewStatusWriter(w)
		defer func() {
			m.inFlight.Add(-1)
			route := r.Pattern
			if route == "" {
				route = routeUnmatched
			}
			code := sw.Code()
			m.requests.With(route, strconv.Itoa(code/100)+"xx").Inc()
			m.duration.With(route).Observe(time.Since(start).Seconds())
		}()
		mux.ServeHTTP(sw, r)
	})
}
