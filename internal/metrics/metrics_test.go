package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/metrics"
	"github.com/ward-idp/ward/internal/metrics/metricstest"
)

func scrape(t *testing.T, r *metrics.Registry) (string, *metricstest.Page) {
	t.Helper()
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != metrics.ContentType {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p, err := metricstest.Parse(string(b))
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return string(b), p
}

func TestExposition(t *testing.T) {
	r := metrics.NewRegistry()
	c := r.CounterVec("t_requests_total", "Requests.\nSecond line with a \\ backslash.", metrics.Closed("code", "ok", "bad"), metrics.Open("route", 2))
	g := r.Gauge("t_depth", "Depth.")
	h := r.HistogramVec("t_seconds", "Latency.", []float64{0.1, 1}, metrics.Closed("class", "2xx", "5xx"))
	r.CollectFunc("t_lag", "gauge", "Lag.", []*metrics.Label{metrics.Open("sink", 8)}, func(e metrics.Emit) {
		e(3, `we"ird\sink`+"\n")
		e(4, `we"ird\sink`+"\n") // the same series: dropped
	})
	metrics.RegisterProcess(r, "t", "v1.2.3")

	c.With("ok", "/a").Inc()
	c.With("ok", "/a").Add(2)
	c.With("SECRET-token", "/b").Inc() // not an allowed code: other
	c.With("ok", "/c").Inc()           // third route: over the limit, other
	g.Set(7)
	h.With("2xx").Observe(0.05)
	h.With("2xx").Observe(0.5)
	h.With("2xx").Observe(5)
	h.With("9xx").Observe(1)

	text, p := scrape(t, r)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"t_requests_total", []string{"code", "ok", "route", "/a"}, 3},
		{"t_requests_total", []string{"code", "other", "route", "/b"}, 1},
		{"t_requests_total", []string{"code", "ok", "route", "other"}, 1},
		{"t_depth", nil, 7},
		{"t_seconds_bucket", []string{"class", "2xx", "le", "0.1"}, 1},
		{"t_seconds_bucket", []string{"class", "2xx", "le", "1"}, 2},
		{"t_seconds_bucket", []string{"class", "2xx", "le", "+Inf"}, 3},
		{"t_seconds_count", []string{"class", "2xx"}, 3},
		{"t_seconds_sum", []string{"class", "2xx"}, 5.55},
		{"t_seconds_count", []string{"class", "other"}, 1},
		{"t_lag", []string{"sink", `we"ird\sink` + "\n"}, 3},
		{"t_build_info", []string{"version", "v1.2.3", "go_version", strings.TrimSpace(p.Values("t_build_info", "go_version")[0])}, 1},
	} {
		if v, ok := p.Get(c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v, %v; want %v\n%s", c.name, c.labels, v, ok, c.want, text)
		}
	}
	if f := p.Families["t_requests_total"]; f.Type != "counter" || f.Help != "Requests.\nSecond line with a \\ backslash." {
		t.Errorf("family: %+v", f)
	}
	for _, n := range []string{"go_goroutines", "process_start_time_seconds", "process_cpu_seconds_total"} {
		if v, ok := p.Get(n); !ok || v <= 0 {
			t.Errorf("%s = %v %v", n, v, ok)
		}
	}
	if strings.Contains(text, "SECRET") {
		t.Error("a refused label value reached the output")
	}
	if !strings.Contains(text, `sink="we\"ird\\sink\n"`) {
		t.Errorf("label value not escaped:\n%s", text)
	}
}

func TestLongAndInvalidValues(t *testing.T) {
	r := metrics.NewRegistry()
	c := r.CounterVec("t_total", "T.", metrics.Open("v", 4))
	c.With(strings.Repeat("x", 1000)).Inc()
	c.With("\xff\xfe").Inc()
	_, p := scrape(t, r)
	for _, v := range p.Values("t_total", "v") {
		if len(v) > metrics.MaxValueLen {
			t.Errorf("value of %d bytes", len(v))
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	r := metrics.NewRegistry()
	c := r.CounterVec("t_total", "T.", metrics.Closed("k", "a", "b"))
	h := r.HistogramVec("t_seconds", "T.", metrics.DurationBuckets, metrics.Closed("k", "a"))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.With([]string{"a", "b"}[i%2]).Inc()
				h.With("a").Observe(0.01)
			}
		}()
	}
	for range 5 {
		scrape(t, r) // while writing: always a valid page
	}
	wg.Wait()
	_, p := scrape(t, r)
	if v, _ := p.Get("t_total", "k", "a"); v != 4000 {
		t.Errorf("a = %v", v)
	}
	if v, _ := p.Get("t_seconds_count", "k", "a"); v != 8000 {
		t.Errorf("count = %v", v)
	}
}

func TestRegistrationMistakesPanic(t *testing.T) {
	for name, f := range map[string]func(r *metrics.Registry){
		"twice":      func(r *metrics.Registry) { r.Counter("a", "x"); r.Counter("a", "x") },
		"bad name":   func(r *metrics.Registry) { r.Counter("a-b", "x") },
		"le label":   func(r *metrics.Registry) { r.CounterVec("a", "x", metrics.Closed("le")) },
		"no buckets": func(r *metrics.Registry) { r.HistogramVec("a", "x", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f(metrics.NewRegistry())
		}()
	}
}

func TestParserIsStrict(t *testing.T) {
	for name, page := range map[string]string{
		"no type":        "a 1\n",
		"bad escape":     "# HELP a x\n# TYPE a counter\na{l=\"\\t\"} 1\n",
		"duplicate":      "# HELP a x\n# TYPE a counter\na 1\na 1\n",
		"negative":       "# HELP a x\n# TYPE a counter\na -1\n",
		"split family":   "# HELP a x\n# TYPE a counter\na 1\n# HELP b x\n# TYPE b gauge\nb 1\n# HELP a x\n",
		"not cumulative": "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"no newline":     "# HELP a x\n# TYPE a counter\na 1",
		"unquoted":       "# HELP a x\n# TYPE a counter\na{l=x} 1\n",
	} {
		if _, err := metricstest.Parse(page); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
