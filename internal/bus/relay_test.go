package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
)

// fakeOutbox is an events table where the test decides which sequence
// numbers are visible (committed), as concurrent PostgreSQL writers do.
type fakeOutbox struct {
	mu       sync.Mutex
	visible  map[int64]bool
	max      int64
	idPrefix string
}

func newFakeOutbox() *fakeOutbox { return &fakeOutbox{visible: map[int64]bool{}} }

func (f *fakeOutbox) commit(seqs ...int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range seqs {
		f.visible[s] = true
		f.max = max(f.max, s)
	}
}

func (f *fakeOutbox) event(seq int64) *store.StoredEvent {
	return &store.StoredEvent{Seq: seq, Event: model.Event{ID: fmt.Sprintf("%s-ev-%d", f.idPrefix, seq), Type: model.EventSessionRevoked, Time: time.Now()}}
}

func (f *fakeOutbox) EventsAfter(_ context.Context, seq int64, limit int) ([]*store.StoredEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*store.StoredEvent
	for s := seq + 1; s <= f.max && len(out) < limit; s++ {
		if f.visible[s] {
			out = append(out, f.event(s))
		}
	}
	return out, nil
}

func (f *fakeOutbox) ListEvents(_ context.Context, flt store.EventFilter) ([]*store.StoredEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !flt.Until.IsZero() { // every fake event is recent
		return nil, nil
	}
	for s := f.max; s > 0; s-- {
		if f.visible[s] {
			return []*store.StoredEvent{f.event(s)}, nil
		}
	}
	return nil, nil
}

func openRelayOnly(t *testing.T, src Outbox, gapWait time.Duration) *NATS {
	t.Helper()
	o := embeddedBackend.base(t)
	o.Embedded.Listen, o.Token = "", ""
	o.Outbox, o.GapWait, o.PollInterval, o.Log = src, gapWait, 20*time.Millisecond, testLog(t)
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func waitSeqs(t *testing.T, n *NATS, want ...string) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("stream %v", want), func() bool { return streamMsgs(t, n) >= uint64(len(want)) })
	time.Sleep(30 * time.Millisecond)
	if got := streamSeqs(t, n); !reflect.DeepEqual(got, want) {
		t.Fatalf("stream has Ward-Seq %v, want %v", got, want)
	}
}

// A lower sequence number that commits after a higher one: the relay
// waits at the gap and keeps the stream in sequence order.
func TestRelayWaitsForLateCommit(t *testing.T) {
	src := newFakeOutbox()
	src.commit(1, 2, 4)
	n := openRelayOnly(t, src, 5*time.Second)
	waitSeqs(t, n, "1", "2")
	time.Sleep(150 * time.Millisecond) // several polls: 4 must wait for 3
	if got := streamSeqs(t, n); len(got) != 2 {
		t.Fatalf("published %v past the gap before it was given up", got)
	}
	src.commit(3)
	n.relay.wake()
	waitSeqs(t, n, "1", "2", "3", "4")
}

// A gap that stays (a rolled-back insert) is passed after GapWait; if the
// missing event still appears later, it is published then (late, not lost).
func TestRelayPassesPermanentGapAndWatchesIt(t *testing.T) {
	src := newFakeOutbox()
	src.commit(1, 3, 4)
	n := openRelayOnly(t, src, 150*time.Millisecond)
	start := time.Now()
	waitSeqs(t, n, "1", "3", "4")
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("passed the gap after %v, before GapWait", waited)
	}
	src.commit(2, 5)
	n.relay.wake()
	waitSeqs(t, n, "1", "3", "4", "5", "2")
}

// Gaps one behind another (frequent rolled-back inserts under load, or
// the sequence numbers PostgreSQL skips after a crash) are each waited
// for from when the relay first saw them, so together they cost about
// one GapWait, not one each: otherwise the relay falls further behind
// with every gap and CAE signals reach resource servers later and later.
func TestRelayWaitsForGapsTogether(t *testing.T) {
	const gaps, gapWait = 10, 300 * time.Millisecond
	src := newFakeOutbox()
	var want []string
	for i := range gaps + 1 {
		src.commit(int64(1 + 2*i)) // 1, 3, 5, …: every even number missing
		want = append(want, fmt.Sprint(1+2*i))
	}
	start := time.Now()
	n := openRelayOnly(t, src, gapWait)
	waitSeqs(t, n, want...)
	took := time.Since(start)
	if took < gapWait {
		t.Errorf("passed the gaps after %v, before GapWait", took)
	}
	// Waited one after the other they would take gaps × GapWait (3 s).
	if took > gaps*gapWait/2 {
		t.Errorf("relaying past %d gaps seen together took %v: each gap was waited for in turn (GapWait %v)", gaps, took, gapWait)
	}
}

// A relay whose cursor is behind the stream (another instance relayed
// meanwhile) continues where the stream is instead of publishing again.
func TestRelayJumpsToStream(t *testing.T) {
	src := newFakeOutbox()
	src.commit(1, 2, 3)
	n := openRelayOnly(t, src, time.Second)
	waitSeqs(t, n, "1", "2", "3")
	n.relay.hold.Store(true)
	time.Sleep(50 * time.Millisecond)
	// Another relay publishes 4..6 (through the same code path).
	other := &relay{n: n, src: src, log: n.log, late: map[int64]time.Time{}, cursor: 3, ready: true}
	src.commit(4, 5, 6)
	other.step(context.Background(), false)
	n.relay.hold.Store(false)
	time.Sleep(100 * time.Millisecond) // polls: jump to 6
	if n.relay.Published() != 3 {
		t.Errorf("relay published %d messages, want 3 (it should have jumped over 4..6)", n.relay.Published())
	}
	waitSeqs(t, n, "1", "2", "3", "4", "5", "6")
}

// Against a stream that is ahead of the database (a restored backup
// hands out the same sequence numbers again), the relay follows the
// database instead of skipping its new events.
func TestRelayStreamAheadOfDatabase(t *testing.T) {
	src := newFakeOutbox()
	src.commit(1, 2, 3)
	o := embeddedBackend.base(t)
	o.Embedded.Listen, o.Token = "", ""
	o.Outbox, o.PollInterval, o.Log = src, 20*time.Millisecond, testLog(t)
	n, err := OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	waitSeqs(t, n, "1", "2", "3")
	n.Close()

	restored := newFakeOutbox()
	restored.idPrefix = "restored"
	restored.commit(1)
	o.Outbox = restored
	logs := &logRecorder{}
	o.Log = slog.New(logs)
	n, err = OpenNATS(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, 5*time.Second, "the relay to notice", func() bool { return logs.has("relay: the stream is ahead of the database") })
	// A poll tick before the restored database's next events (as on a
	// loaded machine, or whenever they come later than the poll
	// interval): it must not take the stream's old position for another
	// instance's progress.
	polls := n.relay.polls.Load()
	waitFor(t, 5*time.Second, "a poll", func() bool { return n.relay.polls.Load() > polls+1 })
	restored.commit(2, 3, 4)
	n.relay.wake()
	// 1 is the backup's copy of the first event (same seq, new id here,
	// but older than the stream's newest): not sent again; 2..4 are new.
	waitSeqs(t, n, "1", "2", "3", "2", "3", "4")
}

// TestRelayPostgresConcurrentCommits runs the gap handling against real
// PostgreSQL: a transaction holds seq N uncommitted while N+1 commits.
func TestRelayPostgresConcurrentCommits(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("WARD_TEST_POSTGRES_DSN is not set under CI")
		}
		t.Skip("WARD_TEST_POSTGRES_DSN is not set; skipping (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	ctx := context.Background()
	openPG := func(t *testing.T) (*postgres.Store, string) {
		b := make([]byte, 8)
		rand.Read(b)
		schema := "ward_bus_" + hex.EncodeToString(b)
		st, err := postgres.Open(ctx, dsn, postgres.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			st.Close()
			if c, err := pgx.Connect(ctx, dsn); err == nil {
				c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
				c.Close(ctx)
			}
		})
		return st, schema
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	for _, tc := range []struct {
		name     string
		finish   string // COMMIT or ROLLBACK of the slow writer
		wantLate bool   // the slow event is in the stream
	}{
		{"late commit", "COMMIT", true},
		{"rollback", "ROLLBACK", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, schema := openPG(t)
			o := embeddedBackend.base(t)
			o.Embedded.Listen, o.Token = "", ""
			o.PollInterval, o.GapWait = 20*time.Millisecond, 500*time.Millisecond
			in := openInstance(t, st, o)
			publishN(t, in, 2)
			waitFor(t, 5*time.Second, "two events", func() bool { return streamMsgs(t, in.NATS) == 2 })

			// The slow writer takes the next seq and holds it.
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var slow int64
			if err := tx.QueryRow(ctx, `INSERT INTO `+schema+`.events (id, type) VALUES ('slow-`+tc.name+`', 'user.disabled') RETURNING seq`).Scan(&slow); err != nil {
				tx.Rollback(ctx)
				t.Fatal(err)
			}
			publishN(t, in, 1) // seq slow+1, committed
			time.Sleep(200 * time.Millisecond)
			if got := streamMsgs(t, in.NATS); got != 2 {
				tx.Rollback(ctx)
				t.Fatalf("stream has %d messages while seq %d is uncommitted, want 2 (the relay must wait at the gap)", got, slow)
			}
			if _, err := tx.Exec(ctx, tc.finish); err != nil {
				t.Fatal(err)
			}
			in.relay.wake()
			seqs := func() []string { return streamSeqs(t, in.NATS) }
			if tc.wantLate {
				waitFor(t, 5*time.Second, "both events", func() bool { return streamMsgs(t, in.NATS) == 4 })
				got := seqs()
				want := []string{fmt.Sprint(slow), fmt.Sprint(slow + 1)}
				if !reflect.DeepEqual(got[2:], want) {
					t.Fatalf("stream order %v, want ... %v", got, want)
				}
			} else {
				waitFor(t, 5*time.Second, "the event after the gap", func() bool { return streamMsgs(t, in.NATS) == 3 })
				if got := seqs(); got[2] != fmt.Sprint(slow+1) {
					t.Fatalf("stream %v, want seq %d last", got, slow+1)
				}
			}
		})
	}
}

// logRecorder is a slog.Handler that keeps the messages.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }
func (l *logRecorder) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.HasPrefix(m, msg) {
			return true
		}
	}
	return false
}
