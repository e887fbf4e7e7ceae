package incident_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// BenchmarkCorrelate measures one detection correlated into an incident
// on SQLite (lock, repeat check, candidate query, incident update,
// detection and timeline inserts, the event committed with them), against
// the baseline of storing the risk.detected event alone in the same run:
//
//	go test -run '^$' -bench 'Correlate|AppendDetectionEvent' -benchtime 2000x ./internal/incident/
func BenchmarkCorrelate(b *testing.B) {
	for _, c := range []struct {
		name  string
		users int // distinct victims: 1 joins one growing incident
	}{{"join", 1}, {"new", 1 << 30}} {
		b.Run(c.name, func(b *testing.B) {
			st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "ward.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			lb := bus.NewLocal()
			audit.Subscribe(lb, audit.Options{Store: st})
			svc := incident.New(incident.Options{Store: st, Bus: lb, Window: time.Hour})
			now := time.Now()
			b.ResetTimer()
			for i := range b.N {
				d := &model.IncidentDetection{DetectionID: fmt.Sprintf("d-%d", i), EventID: fmt.Sprintf("e-%d", i), Type: "token_replay_wrong_key",
					Severity: model.RiskHigh, Technique: "T1550.001", UserID: fmt.Sprintf("u-%d", i%c.users), IP: "203.0.113.7", DetectedAt: now}
				if c.users > 1 {
					d.IP = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
				}
				if _, err := svc.Correlate(context.Background(), d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendDetectionEvent is the baseline: one risk.detected event
// stored in the audit log.
func BenchmarkAppendDetectionEvent(b *testing.B) {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "ward.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	b.ResetTimer()
	for i := range b.N {
		e := liveDetection(fmt.Sprintf("d-%d", i), "u-1")
		e.ID, e.Time = fmt.Sprintf("ev-%d", i), time.Now()
		if _, err := st.AppendEvent(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
}
