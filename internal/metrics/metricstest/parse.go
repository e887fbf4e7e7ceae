// Package metricstest parses the Prometheus text exposition format 0.0.4
// strictly, for tests of /metrics endpoints: any line a Prometheus server
// would reject, or that breaks the format's rules (a sample without its
// TYPE, a family split in two, a duplicate series, a histogram whose
// buckets are not cumulative or whose +Inf bucket differs from _count),
// is an error.
package metricstest

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Sample is one line of the exposition.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Family is a metric family: its TYPE, HELP and samples.
type Family struct {
	Name, Type, Help string
	Samples          []Sample
}

// Page is a parsed exposition.
type Page struct {
	Families map[string]*Family
	Order    []string
}

// Get returns the value of the sample name with exactly these labels
// (pairs of name, value) and whether it exists.
func (p *Page) Get(name string, labels ...string) (float64, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, f := range p.Families {
		for _, s := range f.Samples {
			if s.Name == name && mapsEqual(s.Labels, want) {
				return s.Value, true
			}
		}
	}
	return 0, false
}

// Values returns the values label takes in the samples of family name.
func (p *Page) Values(name, label string) []string {
	f := p.Families[name]
	if f == nil {
		return nil
	}
	var out []string
	for _, s := range f.Samples {
		if v, ok := s.Labels[label]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Parse parses text strictly.
func Parse(text string) (*Page, error) {
	p := &Page{Families: map[string]*Family{}}
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("the exposition does not end with a newline")
	}
	var cur *Family
	series := map[string]bool{}
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		errf := func(format string, a ...any) error {
			return fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, a...))
		}
		switch {
		case line == "":
			return nil, errf("empty line")
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
			rest := line[len("# HELP "):]
			name, arg, ok := strings.Cut(rest, " ")
			if !ok || !validName(name) {
				return nil, errf("bad metric name")
			}
			f := p.Families[name]
			if f == nil {
				f = &Family{Name: name}
				p.Families[name] = f
				p.Order = append(p.Order, name)
			} else if cur != f || len(f.Samples) > 0 {
				return nil, errf("family %s declared again or after its samples", name)
			}
			cur = f
			if strings.HasPrefix(line, "# HELP ") {
				if f.Help != "" {
					return nil, errf("second HELP")
				}
				h, err := unescape(arg, false)
				if err != nil {
					return nil, errf("%v", err)
				}
				f.Help = h
			} else {
				if f.Type != "" {
					return nil, errf("second TYPE")
				}
				switch arg {
				case "counter", "gauge", "histogram", "summary", "untyped":
					f.Type = arg
				default:
					return nil, errf("unknown type")
				}
			}
		case strings.HasPrefix(line, "#"):
			return nil, errf("comment lines are not expected")
		default:
			s, err := parseSample(line)
			if err != nil {
				return nil, errf("%v", err)
			}
			if cur == nil || cur.Type == "" || !belongs(cur, s.Name) {
				return nil, errf("sample outside its family's TYPE block")
			}
			key := s.Name + "{" + canon(s.Labels) + "}"
			if series[key] {
				return nil, errf("duplicate series")
			}
			series[key] = true
			if cur.Type == "counter" && (s.Value < 0 || math.IsNaN(s.Value)) {
				return nil, errf("negative counter")
			}
			cur.Samples = append(cur.Samples, s)
		}
	}
	for _, f := range p.Families {
		if f.Type == "" || f.Help == "" {
			return nil, fmt.Errorf("family %s lacks TYPE or HELP", f.Name)
		}
		if f.Type == "histogram" {
			if err := checkHistogram(f); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

func belongs(f *Family, name string) bool {
	if f.Type == "histogram" {
		return name == f.Name+"_bucket" || name == f.Name+"_sum" || name == f.Name+"_count"
	}
	return name == f.Name
}

// checkHistogram: per series, buckets ascending by le, cumulative, ending
// with +Inf equal to _count, and a _sum.
func checkHistogram(f *Family) error {
	type series struct {
		les          []float64
		counts       []float64
		count        float64
		hasCount     bool
		hasSum, hasI bool
	}
	all := map[string]*series{}
	get := func(l map[string]string) *series {
		c := map[string]string{}
		for k, v := range l {
			if k != "le" {
				c[k] = v
			}
		}
		k := canon(c)
		if all[k] == nil {
			all[k] = &series{}
		}
		return all[k]
	}
	for _, s := range f.Samples {
		h := get(s.Labels)
		switch s.Name {
		case f.Name + "_bucket":
			le, ok := s.Labels["le"]
			if !ok {
				return fmt.Errorf("%s: bucket without le", f.Name)
			}
			v, err := parseFloat(le)
			if err != nil {
				return fmt.Errorf("%s: le %q", f.Name, le)
			}
			if n := len(h.les); n > 0 && (v <= h.les[n-1] || s.Value < h.counts[n-1]) {
				return fmt.Errorf("%s: buckets not ascending or not cumulative at le=%s", f.Name, le)
			}
			h.les, h.counts = append(h.les, v), append(h.counts, s.Value)
			h.hasI = math.IsInf(v, 1)
		case f.Name + "_count":
			h.count, h.hasCount = s.Value, true
		case f.Name + "_sum":
			h.hasSum = true
		}
	}
	for k, h := range all {
		if !h.hasI || !h.hasCount || !h.hasSum || h.counts[len(h.counts)-1] != h.count {
			return fmt.Errorf("%s{%s}: needs a +Inf bucket equal to _count, and _sum", f.Name, k)
		}
	}
	return nil
}

func canon(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + strconv.Quote(l[k]) + ",")
	}
	return b.String()
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, fmt.Errorf("no value")
	}
	s.Name = line[:i]
	if !validName(s.Name) {
		return s, fmt.Errorf("bad metric name")
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 {
				return s, fmt.Errorf("bad label")
			}
			name := rest[:eq]
			if !validName(name) || strings.Contains(name, ":") {
				return s, fmt.Errorf("bad label name %q", name)
			}
			if _, dup := s.Labels[name]; dup {
				return s, fmt.Errorf("label %s twice", name)
			}
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return s, fmt.Errorf("unquoted label value")
			}
			// Find the closing quote, honouring escapes.
			j := 1
			for ; j < len(rest); j++ {
				if rest[j] == '\\' {
					j++
					continue
				}
				if rest[j] == '"' {
					break
				}
			}
			if j >= len(rest) {
				return s, fmt.Errorf("unterminated label value")
			}
			v, err := unescape(rest[1:j], true)
			if err != nil {
				return s, err
			}
			s.Labels[name] = v
			rest = rest[j+1:]
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return s, fmt.Errorf("expected , or }")
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return s, fmt.Errorf("expected a space before the value")
	}
	fields := strings.Split(rest[1:], " ")
	if len(fields) > 2 || fields[0] == "" {
		return s, fmt.Errorf("bad value")
	}
	v, err := parseFloat(fields[0])
	if err != nil {
		return s, err
	}
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return s, fmt.Errorf("bad timestamp")
		}
	}
	s.Value = v
	return s, nil
}

func parseFloat(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || strings.ContainsAny(s, "_xXpP") || strings.EqualFold(s, "inf") || strings.EqualFold(s, "infinity") {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return v, nil
}

// unescape undoes the format's escapes: \\ and \n, and \" in label values.
func unescape(s string, label bool) (string, error) {
	if !strings.Contains(s, `\`) {
		if label && strings.Contains(s, "\n") {
			return "", fmt.Errorf("raw newline")
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", fmt.Errorf("dangling backslash")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !label {
				return "", fmt.Errorf(`\" in HELP`)
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return b.String(), nil
}
