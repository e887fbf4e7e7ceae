// Package metrics is a small Prometheus instrumentation library: counters,
// gauges and fixed-bucket histograms, optionally by labels, written in the
// Prometheus text exposition format 0.0.4.
//
// Label values are bounded by construction. A label is either closed (a
// fixed list of values; anything else is recorded as "other") or open
// (values accepted until a limit of distinct values, then "other"), and
// every value is cut to MaxValueLen bytes. Callers map request data to a
// value of their own choosing (a route pattern, an error code from a
// fixed list) before it reaches a label: a user name, a token or a path
// as sent must never be one, and even if one were passed by mistake the
// number of series could not grow without bound.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// ContentType is the media type of the exposition.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Other is the value recorded for a label value that is not allowed.
const Other = "other"

// MaxValueLen is the longest label value kept (longer ones are cut).
const MaxValueLen = 128

// DefaultOpenLimit is the number of distinct values an open label takes
// before further ones become Other.
const DefaultOpenLimit = 64

// Label describes one label of a metric and the values it may take. An
// open label remembers the values it has taken: make its Labels with the
// registry that uses them (families of one registry may share one).
type Label struct {
	Name string
	// Values, when set, is the closed list of values; any other value is
	// recorded as Other.
	Values []string
	// Limit, for an open label (Values empty), is the number of distinct
	// values accepted (0: DefaultOpenLimit).
	Limit int

	mu   sync.Mutex
	seen map[string]bool
}

// Closed returns a label with a fixed list of values.
func Closed(name string, values ...string) *Label { return &Label{Name: name, Values: values} }

// Open returns a label that accepts up to limit distinct values (values
// the program chooses, such as route patterns from its configuration).
func Open(name string, limit int) *Label { return &Label{Name: name, Limit: limit} }

// bound maps v to the value recorded.
func (l *Label) bound(v string) string {
	if len(v) > MaxValueLen {
		v = v[:MaxValueLen]
	}
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "?")
	}
	if len(l.Values) > 0 {
		if slices.Contains(l.Values, v) {
			return v
		}
		return Other
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[v] {
		return v
	}
	limit := l.Limit
	if limit <= 0 {
		limit = DefaultOpenLimit
	}
	if len(l.seen) >= limit {
		return Other
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	l.seen[v] = true
	return v
}

// Registry holds metric families and writes them in registration order.
type Registry struct {
	mu       sync.Mutex
	families []family
	names    map[string]bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

type family interface {
	write(w *bufio.Writer)
}

var nameOK = func(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

func (r *Registry) add(name string, labels []*Label, f family) {
	if !nameOK(name) {
		panic("metrics: invalid metric name " + strconv.Quote(name))
	}
	for _, l := range labels {
		if !nameOK(l.Name) || strings.HasPrefix(l.Name, "__") || l.Name == "le" {
			panic("metrics: invalid label name " + strconv.Quote(l.Name))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[name] {
		panic("metrics: " + name + " registered twice")
	}
	r.names[name] = true
	r.families = append(r.families, f)
}

// WriteTo writes every family in the text exposition format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := slices.Clone(r.families)
	r.mu.Unlock()
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	for _, f := range fams {
		f.write(bw)
	}
	err := bw.Flush()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ServeHTTP serves the exposition (GET or HEAD).
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	if req.Method == http.MethodHead {
		return
	}
	_, _ = r.WriteTo(w)
}

// --- series keyed by label values ---------------------------------------------

// vec holds the series of one family by their (bounded) label values.
type vec[T any] struct {
	labels []*Label
	newT   func() T
	mu     sync.RWMutex
	series map[string]*entry[T]
}

type entry[T any] struct {
	values []string
	v      T
}

const sep = "\xff"

func (v *vec[T]) with(values []string) T {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %d label values for %d labels", len(values), len(v.labels)))
	}
	b := make([]string, len(values))
	for i, l := range v.labels {
		b[i] = l.bound(values[i])
	}
	k := strings.Join(b, sep)
	v.mu.RLock()
	e := v.series[k]
	v.mu.RUnlock()
	if e != nil {
		return e.v
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if e = v.series[k]; e == nil {
		if v.series == nil {
			v.series = map[string]*entry[T]{}
		}
		e = &entry[T]{values: b, v: v.newT()}
		v.series[k] = e
	}
	return e.v
}

// sorted returns the series ordered by label values.
func (v *vec[T]) sorted() []*entry[T] {
	v.mu.RLock()
	out := make([]*entry[T], 0, len(v.series))
	for _, e := range v.series {
		out = append(out, e)
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b *entry[T]) int { return slices.Compare(a.values, b.values) })
	return out
}

func (v *vec[T]) pairs(values []string) []string {
	p := make([]string, 0, 2*len(values))
	for i, l := range v.labels {
		p = append(p, l.Name, values[i])
	}
	return p
}

// --- counters -------------------------------------------------------------

// Counter is a monotonically increasing count.
type Counter struct{ n atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.n.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.n.Add(n) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.n.Load() }

// CounterVec is a counter by labels.
type CounterVec struct {
	name, help string
	v          vec[*Counter]
}

// CounterVec registers a counter family with labels (none: one series).
func (r *Registry) CounterVec(name, help string, labels ...*Label) *CounterVec {
	c := &CounterVec{name: name, help: help, v: vec[*Counter]{labels: labels, newT: func() *Counter { return new(Counter) }}}
	r.add(name, labels, c)
	return c
}

// Counter registers a counter without labels.
func (r *Registry) Counter(name, help string) *Counter { return r.CounterVec(name, help).With() }

// With returns the counter of these label values (created at zero).
func (c *CounterVec) With(values ...string) *Counter { return c.v.with(values) }

func (c *CounterVec) write(w *bufio.Writer) {
	header(w, c.name, "counter", c.help)
	for _, e := range c.v.sorted() {
		sample(w, c.name, float64(e.v.Value()), c.v.pairs(e.values)...)
	}
}

// --- gauges -------------------------------------------------------------------

// Gauge is a value that goes up and down.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the value.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds d (negative to subtract).
func (g *Gauge) Add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Value returns the value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// GaugeVec is a gauge by labels.
type GaugeVec struct {
	name, help string
	v          vec[*Gauge]
}

// GaugeVec registers a gauge family with labels.
func (r *Registry) GaugeVec(name, help string, labels ...*Label) *GaugeVec {
	g := &GaugeVec{name: name, help: help, v: vec[*Gauge]{labels: labels, newT: func() *Gauge { return new(Gauge) }}}
	r.add(name, labels, g)
	return g
}

// Gauge registers a gauge without labels.
func (r *Registry) Gauge(name, help string) *Gauge { return r.GaugeVec(name, help).With() }

// With returns the gauge of these label values.
func (g *GaugeVec) With(values ...string) *Gauge { return g.v.with(values) }

func (g *GaugeVec) write(w *bufio.Writer) {
	header(w, g.name, "gauge", g.help)
	for _, e := range g.v.sorted() {
		sample(w, g.name, e.v.Value(), g.v.pairs(e.values)...)
	}
}

// --- values read at scrape time ---------------------------------------------------

// Emit records one sample of a function-backed family: its value and
// label values (bounded like any other).
type Emit func(v float64, labelValues ...string)

type funcFamily struct {
	name, typ, help string
	labels          []*Label
	collect         func(Emit)
}

// GaugeFunc registers a gauge read by f at every scrape.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.CollectFunc(name, "gauge", help, nil, func(e Emit) { e(f()) })
}

// CounterFunc registers a counter read by f at every scrape (a count kept
// by its owner, which must never decrease).
func (r *Registry) CounterFunc(name, help string, f func() float64) {
	r.CollectFunc(name, "counter", help, nil, func(e Emit) { e(f()) })
}

// CollectFunc registers a family of type typ ("counter" or "gauge") whose
// samples collect emits at every scrape, in the order it emits them.
func (r *Registry) CollectFunc(name, typ, help string, labels []*Label, collect func(Emit)) {
	if typ != "counter" && typ != "gauge" {
		panic("metrics: CollectFunc type " + typ)
	}
	r.add(name, labels, &funcFamily{name: name, typ: typ, help: help, labels: labels, collect: collect})
}

func (f *funcFamily) write(w *bufio.Writer) {
	header(w, f.name, f.typ, f.help)
	seen := map[string]bool{}
	f.collect(func(v float64, values ...string) {
		if len(values) != len(f.labels) {
			panic(fmt.Sprintf("metrics: %s: %d label values for %d labels", f.name, len(values), len(f.labels)))
		}
		p := make([]string, 0, 2*len(values))
		for i, l := range f.labels {
			p = append(p, l.Name, l.bound(values[i]))
		}
		// Two values bounded to the same series: keep the first, a
		// duplicate series is an invalid exposition.
		k := strings.Join(p, sep)
		if seen[k] {
			return
		}
		seen[k] = true
		sample(w, f.name, v, p...)
	})
}

// --- histograms ------------------------------------------------------------

// DurationBuckets are upper bounds (seconds) for request latencies.
var DurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Histogram counts observations in fixed buckets.
type Histogram struct {
	bounds []float64
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    Gauge
	count  atomic.Uint64
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v)
	h.counts[i].Add(1)
	h.sum.Add(v)
	h.count.Add(1)
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// HistogramVec is a histogram by labels.
type HistogramVec struct {
	name, help string
	v          vec[*Histogram]
}

// HistogramVec registers a histogram family with these bucket upper
// bounds (sorted, finite; +Inf is implied).
func (r *Registry) HistogramVec(name, help string, buckets []float64, labels ...*Label) *HistogramVec {
	if len(buckets) == 0 || !slices.IsSorted(buckets) || math.IsInf(buckets[len(buckets)-1], 1) {
		panic("metrics: " + name + ": buckets must be sorted and finite")
	}
	b := slices.Clone(buckets)
	h := &HistogramVec{name: name, help: help, v: vec[*Histogram]{labels: labels, newT: func() *Histogram {
		return &Histogram{bounds: b, counts: make([]atomic.Uint64, len(b)+1)}
	}}}
	r.add(name, labels, h)
	return h
}

// With returns the histogram of these label values.
func (h *HistogramVec) With(values ...string) *Histogram { return h.v.with(values) }

func (h *HistogramVec) write(w *bufio.Writer) {
	header(w, h.name, "histogram", h.help)
	for _, e := range h.v.sorted() {
		p := h.v.pairs(e.values)
		var cum uint64
		for i, ub := range e.v.bounds {
			cum += e.v.counts[i].Load()
			sample(w, h.name+"_bucket", float64(cum), append(slices.Clip(p), "le", formatFloat(ub))...)
		}
		cum += e.v.counts[len(e.v.bounds)].Load()
		sample(w, h.name+"_bucket", float64(cum), append(slices.Clip(p), "le", "+Inf")...)
		sample(w, h.name+"_sum", e.v.sum.Value(), p...)
		sample(w, h.name+"_count", float64(cum), p...)
	}
}

// --- the text format ----------------------------------------------------------------

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
)

func header(w *bufio.Writer, name, typ, help string) {
	w.WriteString("# HELP " + name + " " + helpEscaper.Replace(help) + "\n# TYPE " + name + " " + typ + "\n")
}

// sample writes name{labels} value; labels alternate name and value.
func sample(w *bufio.Writer, name string, v float64, labels ...string) {
	w.WriteString(name)
	if len(labels) > 0 {
		w.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(labels[i] + `="` + labelEscaper.Replace(labels[i+1]) + `"`)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
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
