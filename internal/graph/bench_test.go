package graph_test

// The investigation graph of a user with 100,000 events in the window, on
// SQLite and on PostgreSQL (WARD_TEST_POSTGRES_DSN), against two
// baselines measured in the same run on the same data: one page of that
// user's audit log (ward logs --user: the 100 newest events, by index)
// and the grouping query alone (store.GroupEvents):
//
//	WARD_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench 'GraphUser100k' -benchtime 20x ./internal/graph/
//
// The user's events are 30 days of 20 sessions on 3 devices from 10
// addresses (access-token uses, refreshes, grants, sign-ins, failures),
// among 50,000 events of 200 other users, and end with a refresh token
// presented from another network with another key and its detection.

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/graph"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

const (
	benchUserEvents  = 100_000
	benchOtherEvents = 50_000
)

var benchStart = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

func BenchmarkGraphUser100k(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "ward.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchGraph(b, s, nil)
	})
	b.Run("postgres", func(b *testing.B) {
		s := openPostgres(b)
		// What autovacuum does on a live database after a bulk of
		// inserts: fresh statistics (without them the planner expects a
		// handful of rows) and the visibility map.
		benchGraph(b, s, func() {
			conn, err := pgx.Connect(ctx, os.Getenv("WARD_TEST_POSTGRES_DSN"))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "VACUUM ANALYZE "+pgx.Identifier{s.Schema(), "events"}.Sanitize()); err != nil {
				b.Fatal(err)
			}
		})
	})
}

func benchGraph(b *testing.B, s store.Store, settle func()) {
	t0 := time.Now()
	seedBench(b, s)
	if settle != nil {
		settle()
	}
	b.Logf("seeded %d events in %s", benchUserEvents+benchOtherEvents+1, time.Since(t0).Round(time.Second))
	from, to := benchStart.Add(-time.Hour), benchStart.Add(31*24*time.Hour)
	q, err := graph.NewQuery([]string{"bench-user"}, nil, nil, nil, from, to, to)
	if err != nil {
		b.Fatal(err)
	}
	svc := graph.New(graph.Options{Store: s})
	b.Run("graph", func(b *testing.B) {
		var g *graph.Graph
		cpu0 := processCPU()
		for b.Loop() {
			if g, err = svc.Graph(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		if g.Events != benchUserEvents+1 || g.RootCause == nil || g.RootCause.Misuse.IP != "203.0.113.66" {
			b.Fatalf("graph of %d events, root cause %+v", g.Events, g.RootCause)
		}
		b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		b.ReportMetric(float64(len(g.Nodes)), "nodes")
		b.ReportMetric(float64(len(g.Edges)), "edges")
	})
	b.Run("baseline-group-events", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.GroupEvents(ctx, store.EventScope{UserIDs: q.Users, Since: q.From, Until: q.To}, 2000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-log-page", func(b *testing.B) {
		for b.Loop() {
			if evs, err := s.ListEvents(ctx, store.EventFilter{UserID: "bench-user", Limit: 100}); err != nil || len(evs) != 100 {
				b.Fatal(len(evs), err)
			}
		}
	})
}

// seedBench appends the events (8 writers, so that they share commits).
func seedBench(b *testing.B, s store.Store) {
	b.Helper()
	if err := s.CreateUser(ctx, &model.User{ID: "bench-user", Username: "bench", CreatedAt: benchStart, UpdatedAt: benchStart}); err != nil {
		b.Fatal(err)
	}
	resources := []string{"https://mail.example.com", "https://files.example.com", "https://crm.example.com", "https://api.example.com"}
	event := func(i int) *model.Event {
		if i >= benchUserEvents {
			j := i - benchUserEvents
			return &model.Event{ID: fmt.Sprintf("bench-o-%d", j), Type: model.EventTokenUsed, Time: benchStart.Add(time.Duration(j) * 50 * time.Second),
				UserID: fmt.Sprintf("other-%d", j%200), SessionID: fmt.Sprintf("other-s-%d", j%400), ClientID: "spa",
				IP: fmt.Sprintf("198.18.%d.%d", j%200, j%7), Outcome: model.OutcomeSuccess,
				Data: map[string]string{"resource": resources[j%4], "proof": "ok", "jkt": fmt.Sprintf("other-key-%d", j%400)}}
		}
		sess := i / (benchUserEvents / 20)
		key := fmt.Sprintf("bench-key-%d", sess%3)
		e := &model.Event{ID: fmt.Sprintf("bench-u-%d", i), Time: benchStart.Add(time.Duration(i) * 25 * time.Second), UserID: "bench-user",
			SessionID: fmt.Sprintf("bench-s-%02d", sess), ClientID: "spa", DeviceID: fmt.Sprintf("bench-dev-%d", sess%3),
			IP: fmt.Sprintf("192.0.2.%d", 10+(sess+i%2)%10), UserAgent: "Mozilla/5.0", Outcome: model.OutcomeSuccess,
			TokenID: fmt.Sprintf("bench-jti-%d", i/10), Binding: model.BindingDPoP}
		switch k := i % 100; {
		case k < 55:
			e.Type = model.EventTokenUsed
			e.Data = map[string]string{"resource": resources[i%4], "jkt": key, "bound_jkt": key, "proof": "ok", "count": "3"}
		case k < 85:
			e.Type = model.EventTokenRefreshed
			e.Data = map[string]string{"grant_type": "refresh_token", "jkt": key, "bound_jkt": key, "proof": "ok",
				"rt_gen_presented": fmt.Sprint(i / 100), "rt_gen_issued": fmt.Sprint(i/100 + 1)}
		case k < 95:
			e.Type = model.EventTokenIssued
			e.Data = map[string]string{"grant_type": "authorization_code", "jkt": key, "proof": "ok"}
		case k < 98:
			e.Type, e.DeviceID, e.TokenID = model.EventSSOSignIn, "", ""
			e.Data = map[string]string{"amr": "pwd otp", "proof": "ok"}
		default:
			e.Type, e.Outcome, e.Reason = model.EventTokenRequestFailed, model.OutcomeFailure, "invalid_grant"
			e.Data = map[string]string{"grant_type": "refresh_token", "error": "invalid_grant"}
		}
		return e
	}
	n := benchUserEvents + benchOtherEvents
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if _, err := s.AppendEvent(ctx, event(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// The theft: the last session's refresh token from another network
	// with another key, and its detection.
	last := benchStart.Add(benchUserEvents * 25 * time.Second)
	stolen := &model.Event{ID: "bench-stolen", Type: model.EventTokenRequestFailed, Time: last, UserID: "bench-user", SessionID: "bench-s-19",
		ClientID: "spa", IP: "203.0.113.66", Outcome: model.OutcomeFailure, Reason: "refresh_key_mismatch",
		Data: map[string]string{"grant_type": "refresh_token", "jkt": "thief-key", "bound_jkt": "bench-key-1", "proof": "wrong_key", "rt_gen_presented": "999"}}
	if _, err := s.AppendEvent(ctx, stolen); err != nil {
		b.Fatal(err)
	}
	if _, err := s.UpdateRisk(ctx, "bench-user", &model.RiskDetection{ID: "bench-det", Type: "refresh_token_wrong_key", UserID: "bench-user",
		SessionID: "bench-s-19", IP: "203.0.113.66", Severity: model.RiskHigh, Confidence: 0.95, Evidence: []string{stolen.ID},
		Source: model.DetectionSourceOnline, DetectedAt: last.Add(time.Second), State: model.DetectionActive},
		func(*store.RiskState) error { return nil }); err != nil {
		b.Fatal(err)
	}
}
