package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Case is one test case for a policy set (`ward policy test -f
// cases.yaml`): a request and what the set is expected to decide.
type Case struct {
	Name   string      `json:"name" yaml:"name"`
	Input  Input       `json:"input" yaml:"input"`
	Expect Expectation `json:"expect" yaml:"expect"`
}

// Expectation is what a Case expects of the Decision. Only the fields that
// are given are checked: an empty Outcome, a nil list and a nil Session are
// not. A list that is given, even empty (`controls: []`), is checked, and
// compared as a set (order and duplicates do not matter): equal to the
// decision's, except NotApplied, whose policies need only be among those
// that did not apply.
type Expectation struct {
	// Outcome is allow, block or allow_with_controls.
	Outcome Outcome `json:"outcome,omitempty" yaml:"outcome,omitempty"`
	// Controls is Decision.Controls: the unmet control names, such as mfa
	// or authentication_strength:phishing_resistant.
	Controls []string `json:"controls,omitempty" yaml:"controls,omitempty"`
	// BlockedBy is Decision.BlockedBy.
	BlockedBy []string `json:"blocked_by,omitempty" yaml:"blocked_by,omitempty"`
	// Applied and ReportOnly are the ids of the policies with that
	// per-policy result (applied: `applied: []` expects none to apply).
	Applied    []string `json:"applied,omitempty" yaml:"applied,omitempty"`
	ReportOnly []string `json:"report_only,omitempty" yaml:"report_only,omitempty"`
	// NotApplied lists policies that must not apply. Unlike the other
	// lists it is not exhaustive: other policies may not apply either.
	NotApplied []string `json:"not_applied,omitempty" yaml:"not_applied,omitempty"`
	// Session, when given, is compared with Decision.Session as a whole
	// (a field left out expects no such control).
	Session *SessionExpectation `json:"session,omitempty" yaml:"session,omitempty"`
}

// SessionExpectation is an expected Decision.Session, with durations
// written as Go durations ("8h", "10m"; empty or "0" for none).
type SessionExpectation struct {
	SignInEveryTime     bool   `json:"sign_in_every_time,omitempty" yaml:"sign_in_every_time,omitempty"`
	SignInFrequency     string `json:"sign_in_frequency,omitempty" yaml:"sign_in_frequency,omitempty"`
	AccessTokenLifetime string `json:"access_token_lifetime,omitempty" yaml:"access_token_lifetime,omitempty"`
	StrictLocation      bool   `json:"strict_location,omitempty" yaml:"strict_location,omitempty"`
}

// CaseResult is the result of one Case.
type CaseResult struct {
	Name string `json:"name"`
	// Pass reports that every given expectation held.
	Pass bool `json:"pass"`
	// Mismatches describe the expectations that did not hold, one per
	// field, e.g. "outcome: want block, got allow" or "applied: missing
	// p1, unexpected p2".
	Mismatches []string `json:"mismatches,omitempty"`
	// Decision is what Evaluate returned.
	Decision Decision `json:"decision"`
}

// DecodeCases strictly decodes test cases from YAML (or JSON): a sequence
// of cases, or a mapping with the single key "cases". Unknown fields, a
// second document and invalid expectations are errors; every problem with
// the expectations is reported at once, prefixed by its path (e.g.
// "cases[2].expect.outcome"). Input.IP is written as an address string
// ("203.0.113.7", "2001:db8::1").
func DecodeCases(data []byte) ([]Case, error) {
	var probe yaml.Node
	if err := yaml.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("policy: decode cases: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cases []Case
	var err error
	if len(probe.Content) == 1 && probe.Content[0].Kind == yaml.MappingNode {
		var doc struct {
			Cases []Case `yaml:"cases"`
		}
		err = dec.Decode(&doc)
		cases = doc.Cases
	} else {
		err = dec.Decode(&cases)
	}
	if errors.Is(err, io.EOF) {
		return nil, errors.New("policy: decode cases: no cases")
	}
	if err != nil {
		return nil, fmt.Errorf("policy: decode cases: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy: decode cases: more than one document")
	}
	if err := validateCases(cases); err != nil {
		return nil, err
	}
	return cases, nil
}

var outcomes = []Outcome{OutcomeAllow, OutcomeBlock, OutcomeAllowWithControls}

func validateCases(cases []Case) error {
	var e errs
	if len(cases) == 0 {
		e.add("cases", "no cases")
	}
	names := map[string]bool{}
	for i, c := range cases {
		path := fmt.Sprintf("cases[%d]", i)
		switch {
		case c.Name == "":
			e.add(path+".name", "required")
		case names[c.Name]:
			e.add(path+".name", "duplicate case name %q", c.Name)
		}
		names[c.Name] = true
		x := &c.Expect
		if x.Outcome != "" && !slices.Contains(outcomes, x.Outcome) {
			e.add(path+".expect.outcome", "must be %s, %s or %s, got %q", OutcomeAllow, OutcomeBlock, OutcomeAllowWithControls, x.Outcome)
		}
		for j, v := range x.Controls {
			if !slices.Contains(ctlNames[:], v) {
				e.add(fmt.Sprintf("%s.expect.controls[%d]", path, j), "unknown control %q (want one of %s)", v, strings.Join(ctlNames[:], ", "))
			}
		}
		if ss := x.Session; ss != nil {
			if _, err := expectedDuration(ss.SignInFrequency); err != nil {
				e.add(path+".expect.session.sign_in_frequency", "%v", err)
			}
			if _, err := expectedDuration(ss.AccessTokenLifetime); err != nil {
				e.add(path+".expect.session.access_token_lifetime", "%v", err)
			}
		}
	}
	if len(e) > 0 {
		return fmt.Errorf("policy: decode cases: %w", errors.Join(e...))
	}
	return nil
}

// expectedDuration parses an expected session duration; "" and "0" are
// none.
func expectedDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q (want e.g. \"1h\")", s)
	}
	return d, nil
}

// RunCases evaluates every case against the set and checks its
// expectations. It never stops early: each case gets a result, in order.
func (s *Set) RunCases(cases []Case) []CaseResult {
	known := make(map[string]bool, len(s.policies)) // policy ids
	for i := range s.policies {
		known[s.policies[i].id] = true
	}
	out := make([]CaseResult, len(cases))
	for i, c := range cases {
		d := s.Evaluate(c.Input)
		m := checkExpectation(&c.Expect, &d, known)
		out[i] = CaseResult{Name: c.Name, Pass: len(m) == 0, Mismatches: m, Decision: d}
	}
	return out
}

func checkExpectation(x *Expectation, d *Decision, known map[string]bool) []string {
	var m []string
	if x.Outcome != "" && x.Outcome != d.Outcome {
		m = append(m, fmt.Sprintf("outcome: want %s, got %s", x.Outcome, d.Outcome))
	}
	byResult := func(r Result) []string {
		var ids []string
		for i := range d.Policies {
			if d.Policies[i].Result == r {
				ids = append(ids, d.Policies[i].ID)
			}
		}
		return ids
	}
	// note marks a wanted policy id that is not in the set (a typo).
	note := func(id string) string {
		if !known[id] {
			return id + " (no such policy)"
		}
		return id
	}
	for _, l := range []struct {
		field  string
		want   []string
		got    func() []string
		note   func(string) string
		subset bool // only the wanted values are checked
	}{
		{"controls", x.Controls, func() []string { return d.Controls }, nil, false},
		{"blocked_by", x.BlockedBy, func() []string { return d.BlockedBy }, note, false},
		{"applied", x.Applied, func() []string { return byResult(ResultApplied) }, note, false},
		{"not_applied", x.NotApplied, func() []string { return byResult(ResultNotApplied) }, note, true},
		{"report_only", x.ReportOnly, func() []string { return byResult(ResultReportOnly) }, note, false},
	} {
		if l.want == nil {
			continue
		}
		if msg := setDiff(l.want, l.got(), l.subset, l.note); msg != "" {
			m = append(m, l.field+": "+msg)
		}
	}
	if ss := x.Session; ss != nil {
		m = append(m, sessionDiff(ss, &d.Session)...)
	}
	return m
}

// setDiff compares want and got as sets: "missing a, b, unexpected c", or
// "" when equal. With subset, values of got that are not wanted are not
// reported. note, if set, annotates the missing values.
func setDiff(want, got []string, subset bool, note func(string) string) string {
	var missing, unexpected []string
	for _, w := range want {
		if !slices.Contains(got, w) && !slices.Contains(missing, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !subset && !slices.Contains(want, g) && !slices.Contains(unexpected, g) {
			unexpected = append(unexpected, g)
		}
	}
	slices.Sort(missing)
	slices.Sort(unexpected)
	if note != nil {
		for i, v := range missing {
			missing[i] = note(v)
		}
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(missing, ", "))
	}
	if len(unexpected) > 0 {
		parts = append(parts, "unexpected "+strings.Join(unexpected, ", "))
	}
	return strings.Join(parts, ", ")
}

func sessionDiff(x *SessionExpectation, got *Session) []string {
	var m []string
	if x.SignInEveryTime != got.SignInEveryTime {
		m = append(m, fmt.Sprintf("session.sign_in_every_time: want %t, got %t", x.SignInEveryTime, got.SignInEveryTime))
	}
	for _, f := range []struct {
		field string
		want  string
		got   time.Duration
	}{
		{"sign_in_frequency", x.SignInFrequency, got.SignInFrequency},
		{"access_token_lifetime", x.AccessTokenLifetime, got.AccessTokenLifetime},
	} {
		w, err := expectedDuration(f.want)
		switch {
		case err != nil:
			m = append(m, fmt.Sprintf("session.%s: %v", f.field, err))
		case w != f.got:
			m = append(m, fmt.Sprintf("session.%s: want %s, got %s", f.field, durationText(w), durationText(f.got)))
		}
	}
	if x.StrictLocation != got.StrictLocation {
		m = append(m, fmt.Sprintf("session.strict_location: want %t, got %t", x.StrictLocation, got.StrictLocation))
	}
	return m
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}
