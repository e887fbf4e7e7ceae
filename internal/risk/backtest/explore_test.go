package backtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/risk/detect"
)

func TestExplore(t *testing.T) {
	if os.Getenv("EXPLORE") == "" {
		t.Skip()
	}
	users, _ := strconv.Atoi(os.Getenv("EXPLORE"))
	var ev, lb bytes.Buffer
	o := GenOptions{Users: users, Days: 7, Seed: 1, HistoryDays: 2, Attacks: 10}
	if err := Generate(o, &ev, &lb); err != nil {
		t.Fatal(err)
	}
	labels, err := ReadLabels(&lb)
	if err != nil {
		t.Fatal(err)
	}
	cfg := detect.DefaultConfig()
	cfg.MaxTokenLifetime = GenMaxTokenLifetime
	cfg.AnonymousIPs, _ = detect.ParseIPList(strings.NewReader(AnonymousList()))
	cfg.MaliciousIPs, _ = detect.ParseIPList(strings.NewReader(MaliciousList()))
	e := detect.New(cfg)
	hu := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	verbose := os.Getenv("VERBOSE") != ""
	attackEv := map[string]bool{}
	for _, l := range labels {
		for _, id := range l.Events {
			attackEv[id] = true
		}
	}
	rep, sum, err := Score(&ev, labels, e, Options{HistoryUntil: hu, OnFinding: func(f detect.Finding) error {
		hit := false
		for _, id := range f.Evidence {
			hit = hit || attackEv[id]
		}
		if verbose && !hit {
			fmt.Printf("F %s %s %s u=%s s=%s ip=%s ev=%v %s\n", f.Time.Format(time.RFC3339), f.Type, f.Severity, f.UserID, f.SessionID, f.IP, f.Evidence, f.Detail)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("summary %+v\n", sum)
	for _, k := range rep.Kinds {
		fmt.Printf("%-32s %3d/%3d %.2f ttd %v/%v %v\n", k.Kind, k.Detected, k.Attacks, k.Recall, k.TTDMedian, k.TTDP95, k.By)
	}
	fmt.Printf("recall %.4f (%d/%d) evasive %d/%d ttd %v %v\n", rep.Recall, rep.Detected, rep.Attacks, rep.EvasiveDetected, rep.EvasiveAttacks, rep.TTDMedian, rep.TTDP95)
	fmt.Printf("benign sessions %d flagged %d (%.4f%%) users %d flagged %d false %v\n", rep.BenignSessions, rep.BenignSessionsFlagged, 100*rep.BenignShare, rep.BenignUsers, rep.BenignUsersFlagged, rep.FalseFindings)
}
