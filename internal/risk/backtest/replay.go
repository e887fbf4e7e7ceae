// Package backtest runs Ward's token-theft detectors (internal/risk/detect)
// over recorded activity — an activity export, or the labelled traffic of
// its own generator — and scores them: what `ward risk backtest`,
// `ward risk generate` and `ward risk score` do.
package backtest

import (
	"errors"
	"io"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/detect"
)

// Options of a replay.
type Options struct {
	// HistoryUntil: activities before it only build the detectors'
	// history; their findings are not reported. Zero: report everything.
	HistoryUntil time.Time
	// Enrich, when set, places an activity's address (geo.DB.Enrich):
	// it fills only the location fields the line left empty.
	Enrich func(*activity.Activity)
	// OnFinding receives each finding reported.
	OnFinding func(detect.Finding) error
	// OnActivity, when set, sees each activity read (after Enrich).
	OnActivity func(*activity.Activity)
	// OnBadLine receives each line the reader refused; reading goes on.
	OnBadLine func(*activity.LineError)
}

// Summary counts what a replay read and found.
type Summary struct {
	Lines    int // activities read
	Bad      int // lines refused
	History  int // activities before HistoryUntil
	Findings int // findings reported
}

// Replay reads activity lines from r into e and reports its findings. A
// malformed line is counted and skipped, never the end of the run; only a
// read error or an OnFinding error stops it.
func Replay(r io.Reader, e *detect.Engine, o Options) (Summary, error) {
	var s Summary
	rd := activity.NewReader(r)
	// One Activity for every line: the callbacks take its address, so a
	// variable per line would be a heap allocation per line.
	var a activity.Activity
	for {
		var err error
		a, err = rd.Next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			var le *activity.LineError
			if errors.As(err, &le) {
				s.Bad++
				if o.OnBadLine != nil {
					o.OnBadLine(le)
				}
				continue
			}
			return s, err
		}
		s.Lines++
		if o.Enrich != nil {
			o.Enrich(&a)
		}
		if o.OnActivity != nil {
			o.OnActivity(&a)
		}
		fs := e.Observe(a)
		if a.Time.Before(o.HistoryUntil) {
			s.History++
			continue
		}
		for _, f := range fs {
			s.Findings++
			if o.OnFinding != nil {
				if err := o.OnFinding(f); err != nil {
					return s, err
				}
			}
		}
	}
}
