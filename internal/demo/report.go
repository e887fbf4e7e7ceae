package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Outcomes of a step.
const (
	OutcomeOK       = "ok"       // what the legitimate user or the admin did worked
	OutcomeStolen   = "stolen"   // the attacker got what they wanted
	OutcomeRefused  = "refused"  // Ward or the gateway refused the attacker
	OutcomeDetected = "detected" // Ward saw it and answered
	OutcomeInfo     = "info"     // a fact shown, nothing decided
	OutcomeSkipped  = "skipped"  // not played here (the reason says why)
	OutcomeFailed   = "failed"   // something the demo expected did not happen
)

// Step is one line of the timeline.
type Step struct {
	ID      string `json:"id"`
	Run     int    `json:"run"`
	Actor   string `json:"actor"`
	Title   string `json:"title"`
	Outcome string `json:"outcome"`
	// By names what refused or answered (token protection, a
	// Conditional Access policy, strict location, CAE, a detection).
	By     string `json:"by,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Shows and DoesNotShow say honestly what the step proves.
	Shows       string  `json:"shows,omitempty"`
	DoesNotShow string  `json:"does_not_show,omitempty"`
	AtMS        float64 `json:"at_ms"`
}

// Detection is a detection Ward recorded, as the admin API shows it.
type Detection struct {
	Type       string  `json:"type"`
	Severity   string  `json:"severity"`
	Confidence float64 `json:"confidence"`
	Technique  string  `json:"technique"`
	Source     string  `json:"source"`
	Detail     string  `json:"detail,omitempty"`
}

// LogCheck is the result of searching one log for the stolen secrets.
type LogCheck struct {
	Source  string `json:"source"`
	Bytes   int    `json:"bytes"`
	Secrets int    `json:"secrets_searched"`
	Found   int    `json:"secrets_found"`
}

// RunSummary is what one run ended with.
type RunSummary struct {
	Run        int         `json:"run"`
	Defences   bool        `json:"defences"`
	Documents  int         `json:"documents"`
	StolenDocs int         `json:"documents_stolen"`
	Refusals   int         `json:"replays_refused"`
	Replays    int         `json:"replays"`
	Detections []Detection `json:"detections,omitempty"`
	UserRisk   string      `json:"user_risk,omitempty"`
	// CAEMillis: from Ward's decision (the user's risk raised) to the
	// gateway's refusal; ReplayToRefusalMillis: from the attacker's
	// replay, the detection included.
	CAEMillis             float64    `json:"cae_revocation_ms,omitempty"`
	ReplayToRefusalMillis float64    `json:"replay_to_refusal_ms,omitempty"`
	Incident              string     `json:"incident,omitempty"`
	UserBackIn            bool       `json:"user_signed_in_again"`
	LogChecks             []LogCheck `json:"log_checks,omitempty"`
	IncidentSkip          string     `json:"incident_skipped,omitempty"`
	IncidentName          string     `json:"incident_name,omitempty"`
	MITRETechnique        []string   `json:"mitre_techniques,omitempty"`
}

// Report is the whole demo: every step and each run's summary.
type Report struct {
	Mode       string       `json:"mode"` // embedded or server
	Issuer     string       `json:"issuer,omitempty"`
	StartedAt  time.Time    `json:"started_at"`
	DurationMS float64      `json:"duration_ms"`
	Steps      []Step       `json:"steps"`
	Runs       []RunSummary `json:"runs"`
	Console    []string     `json:"console_urls,omitempty"`
	// Incomplete says why the demo stopped before its end ("" when it
	// finished): an interruption or an error.
	Incomplete string `json:"incomplete,omitempty"`
}

// Failed returns the steps whose outcome the demo did not expect.
func (r *Report) Failed() []Step {
	var out []Step
	for _, s := range r.Steps {
		if s.Outcome == OutcomeFailed {
			out = append(out, s)
		}
	}
	return out
}

// Run returns the summary of run n (nil if it was not played).
func (r *Report) Run(n int) *RunSummary {
	for i := range r.Runs {
		if r.Runs[i].Run == n {
			return &r.Runs[i]
		}
	}
	return nil
}

// WriteJSON writes the report to path (0644), indented.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Printer writes the timeline as it happens.
type Printer struct {
	W     io.Writer
	Color bool
	// Pause, if set, is called before each new section (--step).
	Pause    func(title string)
	sections int
}

const (
	ansiReset  = "\033[0m"
	ansiBold   = "\033[1m"
	ansiDim    = "\033[2m"
	ansiRed    = "\033[31m"
	ansiGreen  = "\033[32m"
	ansiYellow = "\033[33m"
	ansiCyan   = "\033[36m"
)

func (p *Printer) paint(code, s string) string {
	if !p.Color || s == "" {
		return s
	}
	return code + s + ansiReset
}

// Section starts a part of the story: a heading and its explanation.
func (p *Printer) Section(title, text string) {
	if p.Pause != nil && p.sections > 0 {
		p.Pause(title)
	}
	p.sections++
	fmt.Fprintf(p.W, "\n%s\n", p.paint(ansiBold, "== "+title))
	if text != "" {
		for _, l := range wrap(text, 92) {
			fmt.Fprintf(p.W, "   %s\n", p.paint(ansiDim, l))
		}
	}
}

var outcomeLabel = map[string]string{
	OutcomeOK: "OK", OutcomeStolen: "STOLEN", OutcomeRefused: "REFUSED", OutcomeDetected: "DETECTED",
	OutcomeInfo: "INFO", OutcomeSkipped: "SKIPPED", OutcomeFailed: "UNEXPECTED",
}

func (p *Printer) outcome(o string) string {
	label := fmt.Sprintf("%-10s", outcomeLabel[o])
	switch o {
	case OutcomeStolen, OutcomeFailed:
		return p.paint(ansiRed+ansiBold, label)
	case OutcomeRefused, OutcomeDetected:
		return p.paint(ansiGreen+ansiBold, label)
	case OutcomeOK:
		return p.paint(ansiGreen, label)
	case OutcomeSkipped:
		return p.paint(ansiYellow, label)
	}
	return p.paint(ansiCyan, label)
}

// Step prints one step of the timeline.
func (p *Printer) Step(s Step) {
	fmt.Fprintf(p.W, "%s %-5s %s %-9s %s\n", p.paint(ansiDim, fmt.Sprintf("%7.2fs", s.AtMS/1000)), s.ID, p.outcome(s.Outcome), s.Actor, s.Title)
	if s.By != "" {
		fmt.Fprintf(p.W, "%25s by: %s\n", "", s.By)
	}
	for _, l := range wrap(s.Detail, 80) {
		fmt.Fprintf(p.W, "%25s %s\n", "", l)
	}
	p.labelled("shows: ", s.Shows)
	p.labelled("does not show: ", s.DoesNotShow)
}

// labelled prints text under a label, wrapped, continuation lines
// aligned after the label, dimmed.
func (p *Printer) labelled(label, text string) {
	if text == "" {
		return
	}
	for i, l := range wrap(text, 80-len(label)) {
		prefix := label
		if i > 0 {
			prefix = strings.Repeat(" ", len(label))
		}
		fmt.Fprintf(p.W, "%25s %s\n", "", p.paint(ansiDim, prefix+l))
	}
}

// Summary prints the step table and each run's result.
func (p *Printer) Summary(r *Report) {
	fmt.Fprintf(p.W, "\n%s\n", p.paint(ansiBold, "== Summary"))
	tw := tabwriter.NewWriter(p.W, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\tactor\toutcome\twhat\tby")
	for _, s := range r.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Actor, outcomeLabel[s.Outcome], clip(s.Title, 60), clip(s.By, 48))
	}
	tw.Flush()
	fmt.Fprintln(p.W)
	for _, run := range r.Runs {
		if run.Replays == 0 {
			continue // stopped before the attacker's turn
		}
		if !run.Defences {
			fmt.Fprintf(p.W, "Run %d, defences off: the attacker downloaded %d of %d documents; %d of %d replays refused; nothing detected.\n",
				run.Run, run.StolenDocs, run.Documents, run.Refusals, run.Replays)
			continue
		}
		types := make([]string, 0, len(run.Detections))
		for _, d := range run.Detections {
			types = append(types, d.Type+" ("+d.Severity+", "+d.Technique+")")
		}
		fmt.Fprintf(p.W, "Run %d, defences on: the attacker downloaded %d of %d documents; %d of %d replays refused.\n",
			run.Run, run.StolenDocs, run.Documents, run.Refusals, run.Replays)
		if len(types) > 0 {
			fmt.Fprintf(p.W, "  detections: %s\n", strings.Join(types, "; "))
		}
		fmt.Fprintf(p.W, "  user risk: %s; CAE revocation at the gateway: %.0f ms after Ward's decision (%.0f ms after the replay); user signed in again: %t\n",
			orNone(run.UserRisk), run.CAEMillis, run.ReplayToRefusalMillis, run.UserBackIn)
		switch {
		case run.Incident != "":
			fmt.Fprintf(p.W, "  incident: %s\n", run.Incident)
		case run.IncidentSkip != "":
			fmt.Fprintf(p.W, "  incident: skipped (%s)\n", run.IncidentSkip)
		}
	}
	if f := r.Failed(); len(f) > 0 {
		fmt.Fprintf(p.W, "%s\n", p.paint(ansiRed+ansiBold, fmt.Sprintf("%d step(s) did not go as expected: %s", len(f), stepIDs(f))))
	}
	if r.Incomplete != "" {
		fmt.Fprintf(p.W, "%s\n", p.paint(ansiYellow+ansiBold, "The demo did not finish: "+r.Incomplete))
	}
	fmt.Fprintf(p.W, "Total: %.1f s\n", r.DurationMS/1000)
}

func stepIDs(ss []Step) string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	return strings.Join(ids, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// wrap breaks text into lines of at most width runes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(text) {
		if cur.Len() > 0 && len([]rune(cur.String()))+1+len([]rune(w)) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
