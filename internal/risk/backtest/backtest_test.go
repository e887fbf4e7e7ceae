package backtest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/detect"
)

// TestScoreTargets is the small, deterministic version of the scores in
// docs/risk.md: on generated traffic with every attack kind, the
// detectors find at least 99% of the (not evasive) attacks, flag at most
// 0.1% of the benign sessions, and the median time to detect is 0 s.
// A regression in a detector or a new false positive fails it.
func TestScoreTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and scores a few hundred thousand lines")
	}
	var ev, lb bytes.Buffer
	o := GenOptions{Users: 300, Days: 5, Seed: 42, HistoryDays: 2, Attacks: 3, Start: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	if err := Generate(o, &ev, &lb); err != nil {
		t.Fatal(err)
	}
	labels, err := ReadLabels(&lb)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, l := range labels {
		kinds[l.Kind] = true
		if len(l.Events) == 0 || l.Start.IsZero() {
			t.Fatalf("label without events: %+v", l)
		}
	}
	for _, k := range AttackKinds {
		if !kinds[k] {
			t.Errorf("no attack of kind %s generated", k)
		}
	}
	rep, sum, err := Score(&ev, labels, detect.New(benchConfig()), Options{HistoryUntil: o.Start.Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range rep.Kinds {
		t.Logf("%-32s %d/%d ttd %v by %v", k.Kind, k.Detected, k.Attacks, k.TTDMedian, k.By)
		if !k.Evasive && k.Recall < 1 {
			t.Errorf("%s: %d of %d attacks detected", k.Kind, k.Detected, k.Attacks)
		}
	}
	t.Logf("%d lines, %d benign sessions, %d flagged, false findings %v", sum.Lines, rep.BenignSessions, rep.BenignSessionsFlagged, rep.FalseFindings)
	if rep.Recall < 0.99 || rep.Attacks < 60 {
		t.Errorf("recall %.3f over %d attacks", rep.Recall, rep.Attacks)
	}
	if rep.BenignSessions < 500 || rep.BenignShare > 0.001 {
		t.Errorf("%d of %d benign sessions flagged", rep.BenignSessionsFlagged, rep.BenignSessions)
	}
	if rep.TTDMedian != 0 {
		t.Errorf("median time to detect %v", rep.TTDMedian)
	}
}

// The generator is deterministic and keeps its labels out of the lines.
func TestGenerateDeterministic(t *testing.T) {
	o := GenOptions{Users: 40, Days: 3, Seed: 9, HistoryDays: 1, Attacks: 1, Kinds: []string{"sso_cookie_theft", "password_spray"}}
	var a, b, la, lb bytes.Buffer
	if err := Generate(o, &a, &la); err != nil {
		t.Fatal(err)
	}
	if err := Generate(o, &b, &lb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || !bytes.Equal(la.Bytes(), lb.Bytes()) || a.Len() == 0 {
		t.Fatal("the same seed wrote different files")
	}
	if bytes.Contains(a.Bytes(), []byte("sso_cookie_theft")) || bytes.Contains(a.Bytes(), []byte("attack")) {
		t.Error("the activity lines carry a label")
	}
	rd := activity.NewReader(&a)
	var last time.Time
	for {
		x, err := rd.Next()
		if err != nil {
			break
		}
		if x.Time.Before(last.Add(-10 * time.Second)) {
			t.Fatalf("line %s out of order: %v after %v", x.ID, x.Time, last)
		}
		if x.Time.After(last) {
			last = x.Time
		}
	}
	for _, bad := range []GenOptions{{Users: 5, Days: 3}, {Users: 40, Days: 2, HistoryDays: 2}, {Users: 40, Days: 3, Kinds: []string{"nope"}}} {
		if err := Generate(bad, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// Replay: a bad line is counted with its number and skipped; activity
// before HistoryUntil builds history and reports nothing.
func TestReplayBadLinesAndHistory(t *testing.T) {
	in := strings.Join([]string{
		`{"t":"2026-03-02T09:00:00Z","id":"e1","kind":"refresh","user":"u","session_id":"s","client_id":"c","bound_jkt":"K1","jkt":"K2","proof":"wrong_key","result":"failure"}`,
		`not json`,
		`{"t":"2026-03-02T10:00:00Z","id":"e2","kind":"refresh","user":"u","session_id":"s2","client_id":"c","bound_jkt":"K1","jkt":"K2","proof":"wrong_key","result":"failure"}`,
		`{"t":"2026-03-02T10:00:00Z","id":"e3","kind":"warp"}`,
		`{"t":"2026-03-02T11:00:00Z","id":"e4","kind":"token_use","user":"u","session_id":"s3","bound_jkt":"K1","proof":"missing","result":"failure","ip":"999.1.1.1"}`,
		`{"t":"2026-03-02T11:00:00Z","id":"e5","kind":"token_use","user":"u","session_id":"s3","bound_jkt":"K1","proof":"missing","result":"failure"}`,
	}, "\n")
	var bad []int
	var found []detect.Finding
	sum, err := Replay(strings.NewReader(in), detect.New(detect.DefaultConfig()), Options{
		HistoryUntil: time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC),
		OnBadLine:    func(le *activity.LineError) { bad = append(bad, le.Line) },
		OnFinding:    func(f detect.Finding) error { found = append(found, f); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Lines != 3 || sum.Bad != 3 || sum.History != 1 || len(found) != 2 || found[0].Evidence[0] != "e2" || found[1].Evidence[0] != "e5" {
		t.Errorf("summary %+v, findings %v", sum, found)
	}
	if len(bad) != 3 || bad[0] != 2 || bad[1] != 4 || bad[2] != 5 {
		t.Errorf("bad lines %v", bad)
	}
	// An OnFinding error stops the run and is returned.
	stop := errors.New("stop")
	if _, err := Replay(strings.NewReader(in), detect.New(detect.DefaultConfig()), Options{OnFinding: func(detect.Finding) error { return stop }}); !errors.Is(err, stop) {
		t.Errorf("err %v", err)
	}
}
