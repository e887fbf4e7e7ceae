package graph_test

// What the indexes of migration 00023 cost every event write: appending
// a refresh's event (user, session, device, address, a random id) to a
// log of 20,000 events, with the indexes and with them dropped, on each
// backend, in the same run:
//
//	WARD_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench 'AppendEventIndexes' ./internal/graph/   # repeated

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

var graphIndexes = []string{"events_graph_user", "events_session_nouser", "events_device_time", "events_ip_time", "events_id"}

func BenchmarkAppendEventIndexes(b *testing.B) {
	for _, with := range []bool{true, false} {
		name := map[bool]string{true: "with", false: "without"}[with]
		b.Run("sqlite/"+name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "ward.db")
			s, err := sqlite.Open(ctx, path)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if !with {
				db, err := sql.Open("sqlite", path)
				if err != nil {
					b.Fatal(err)
				}
				for _, ix := range graphIndexes {
					if _, err := db.Exec("DROP INDEX " + ix); err != nil {
						b.Fatal(err)
					}
				}
				db.Close()
			}
			benchAppend(b, s)
		})
		b.Run("postgres/"+name, func(b *testing.B) {
			s := openPostgres(b)
			if !with {
				conn, err := pgx.Connect(ctx, os.Getenv("WARD_TEST_POSTGRES_DSN"))
				if err != nil {
					b.Fatal(err)
				}
				for _, ix := range graphIndexes {
					if _, err := conn.Exec(ctx, "DROP INDEX "+pgx.Identifier{s.Schema(), ix}.Sanitize()); err != nil {
						b.Fatal(err)
					}
				}
				conn.Close(ctx)
			}
			benchAppend(b, s)
		})
	}
}

func refreshEvent(i int) *model.Event {
	return &model.Event{ID: uuid.NewString(), Type: model.EventTokenRefreshed, Time: time.Now(), Actor: "u-1",
		UserID: fmt.Sprintf("user-%d", i%500), SessionID: fmt.Sprintf("session-%d", i%2000), ClientID: "spa",
		DeviceID: fmt.Sprintf("device-%d", i%700), TokenID: uuid.NewString(), IP: fmt.Sprintf("198.51.%d.%d", i%250, i%200),
		UserAgent: "Mozilla/5.0", Outcome: model.OutcomeSuccess, Binding: model.BindingDPoP, CorrelationID: "corr-0123456789",
		Data: map[string]string{"grant_type": "refresh_token", "jkt": "key", "bound_jkt": "key", "proof": "ok",
			"rt_gen_presented": "3", "rt_gen_issued": "4"}}
}

func benchAppend(b *testing.B, s store.Store) {
	for i := range 20_000 {
		if _, err := s.AppendEvent(ctx, refreshEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	cpu0 := processCPU()
	for b.Loop() {
		i++
		if _, err := s.AppendEvent(ctx, refreshEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	// This process's CPU per event (SQLite's work included; not
	// PostgreSQL's server): steadier than wall time on a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
