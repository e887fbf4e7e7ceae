package export_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit/export"
	"github.com/ward-idp/ward/internal/audit/ocsf"
)

// BenchmarkExport measures export throughput from a SQLite events table
// end to end (read in batches, map to OCSF, deliver, advance the cursor)
// for 20,000 events, and reports events/s (docs/benchmarks.md). Run with
// -benchtime=1x.
func BenchmarkExport(b *testing.B) {
	const n = 20000
	for _, kind := range []string{"file", "webhook"} {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				st := openStore(b)
				appendEvents(b, st, n)
				var (
					sink export.Sink
					err  error
				)
				if kind == "file" {
					sink, err = export.NewFileSink(export.FileOptions{Path: filepath.Join(b.TempDir(), "ward.jsonl"), MaxBytes: 100 << 20})
				} else {
					srv := newWebhookServer(b, []byte("k"))
					sink, err = export.NewWebhookSink(export.WebhookOptions{URL: srv.URL, Secret: []byte("k"), CAFile: caFile(b, srv.Certificate())})
				}
				must(b, err)
				b.StartTimer()
				began := time.Now()
				e, err := export.Start(context.Background(), export.Options{Store: st, Mapper: ocsf.NewMapper("bench"), Owner: "bench",
					PollInterval: 10 * time.Millisecond}, []export.SinkConfig{{Name: kind, Sink: sink, Batch: export.Batching{MaxEvents: 500}}})
				must(b, err)
				waitCursor(b, st, kind, n, time.Minute)
				el := time.Since(began)
				b.StopTimer()
				e.Close()
				b.ReportMetric(float64(n)/el.Seconds(), "events/s")
			}
		})
	}
}
