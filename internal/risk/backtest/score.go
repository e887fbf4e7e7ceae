package backtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/detect"
)

// KindScore is how the detectors did on one attack kind.
type KindScore struct {
	Kind      string         `json:"kind"`
	Evasive   bool           `json:"evasive,omitempty"`
	Attacks   int            `json:"attacks"`
	Detected  int            `json:"detected"`
	Recall    float64        `json:"recall"`
	TTDMedian time.Duration  `json:"ttd_median_ns"`
	TTDP95    time.Duration  `json:"ttd_p95_ns"`
	By        map[string]int `json:"by"` // detection types that caught it
}

// Report is a scored replay of labelled traffic.
type Report struct {
	Events   int `json:"events"`
	Findings int `json:"findings"`
	Kinds    []KindScore
	// Over the attacks that are not evasive (Evasive: all).
	Attacks, Detected int
	Recall            float64
	TTDMedian, TTDP95 time.Duration
	EvasiveAttacks    int
	EvasiveDetected   int
	// Benign: sessions and users with activity after the history that
	// no attack touched, and how many of them a finding named.
	BenignSessions, BenignSessionsFlagged int
	BenignShare                           float64
	BenignUsers, BenignUsersFlagged       int
	// FalseFindings counts findings citing no attack event, by type.
	FalseFindings map[string]int
}

// ReadLabels reads a labels file (JSON lines).
func ReadLabels(r io.Reader) ([]Label, error) {
	var ls []Label
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l Label
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("labels line %d: %w", n, err)
		}
		ls = append(ls, l)
	}
	return ls, sc.Err()
}

// Score replays events into e (Options as for Replay; its OnFinding and
// OnActivity are wrapped) and scores the findings against labels.
func Score(events io.Reader, labels []Label, e *detect.Engine, o Options) (Report, Summary, error) {
	rep := Report{FalseFindings: map[string]int{}}
	byEvent := map[string]int{}
	attackedSessions, victims := map[string]bool{}, map[string]bool{}
	var scored []int
	for i, l := range labels {
		if l.Start.Before(o.HistoryUntil) {
			continue
		}
		scored = append(scored, i)
		for _, id := range l.Events {
			byEvent[id] = i
		}
		if l.Session != "" {
			attackedSessions[l.Session] = true
		}
		if l.User != "" {
			victims[l.User] = true
		}
	}
	first := make(map[int]time.Time)
	by := make(map[int]map[string]int)
	sessions, users := map[string]bool{}, map[string]bool{}
	flaggedS, flaggedU := map[string]bool{}, map[string]bool{}
	onF, onA := o.OnFinding, o.OnActivity
	o.OnActivity = func(a *activity.Activity) {
		if !a.Time.Before(o.HistoryUntil) {
			rep.Events++
			if a.SessionID != "" && !attackedSessions[a.SessionID] {
				sessions[a.SessionID] = true
			}
			if a.UserID != "" && !victims[a.UserID] {
				users[a.UserID] = true
			}
		}
		if onA != nil {
			onA(a)
		}
	}
	o.OnFinding = func(f detect.Finding) error {
		rep.Findings++
		hit := false
		for _, id := range f.Evidence {
			i, ok := byEvent[id]
			if !ok {
				continue
			}
			hit = true
			if t, seen := first[i]; !seen || f.Time.Before(t) {
				first[i] = f.Time
			}
			if by[i] == nil {
				by[i] = map[string]int{}
			}
			by[i][f.Type]++
		}
		if !hit {
			rep.FalseFindings[f.Type]++
			if f.SessionID != "" && !attackedSessions[f.SessionID] {
				flaggedS[f.SessionID] = true
			}
			if f.UserID != "" && !victims[f.UserID] {
				flaggedU[f.UserID] = true
			}
		}
		if onF != nil {
			return onF(f)
		}
		return nil
	}
	sum, err := Replay(events, e, o)
	if err != nil {
		return rep, sum, err
	}
	kinds := map[string]*KindScore{}
	ttds := map[string][]time.Duration{}
	var all []time.Duration
	for _, i := range scored {
		l := labels[i]
		k := kinds[l.Kind]
		if k == nil {
			k = &KindScore{Kind: l.Kind, Evasive: l.Evasive, By: map[string]int{}}
			kinds[l.Kind] = k
		}
		k.Attacks++
		if l.Evasive {
			rep.EvasiveAttacks++
		} else {
			rep.Attacks++
		}
		t, ok := first[i]
		if !ok {
			continue
		}
		k.Detected++
		for typ := range by[i] {
			k.By[typ]++
		}
		d := max(0, t.Sub(l.Start))
		ttds[l.Kind] = append(ttds[l.Kind], d)
		if l.Evasive {
			rep.EvasiveDetected++
		} else {
			rep.Detected++
			all = append(all, d)
		}
	}
	for _, name := range sortedKinds(kinds) {
		k := kinds[name]
		k.Recall = ratio(k.Detected, k.Attacks)
		k.TTDMedian, k.TTDP95 = quantile(ttds[name], 0.5), quantile(ttds[name], 0.95)
		rep.Kinds = append(rep.Kinds, *k)
	}
	rep.Recall = ratio(rep.Detected, rep.Attacks)
	rep.TTDMedian, rep.TTDP95 = quantile(all, 0.5), quantile(all, 0.95)
	rep.BenignSessions, rep.BenignSessionsFlagged = len(sessions), countIn(flaggedS, sessions)
	rep.BenignShare = ratio(rep.BenignSessionsFlagged, rep.BenignSessions)
	rep.BenignUsers, rep.BenignUsersFlagged = len(users), countIn(flaggedU, users)
	return rep, sum, nil
}

func countIn(flagged, all map[string]bool) int {
	n := 0
	for k := range flagged {
		if all[k] {
			n++
		}
	}
	return n
}

func sortedKinds(m map[string]*KindScore) []string {
	var s []string
	for _, k := range AttackKinds {
		if m[k] != nil {
			s = append(s, k)
		}
	}
	for k := range m {
		if !slices.Contains(s, k) {
			s = append(s, k)
		}
	}
	return s
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// quantile is the nearest-rank quantile (0 for none).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(len(s)-1, i))]
}
