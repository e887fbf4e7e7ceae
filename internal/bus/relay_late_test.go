package bus

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A sequence number the holder skipped at a gap survives a crash of the
// holder: holder a skips seq N (its insert is held open while N+1
// commits) and crashes without releasing the lease; b takes over with
// the lease the numbers a watched, so when N commits b publishes it,
// once. a, stale, cannot overwrite b's copy of the watched set.
func TestRelayLeaseLateAcrossHandover(t *testing.T) {
	const ttl = 3 * time.Second
	base := externalBackend.base(t)
	base.RelayLeaseTTL, base.PollInterval, base.GapWait = ttl, 50*time.Millisecond, 200*time.Millisecond
	st, schema := pgStoreSchema(t)
	g := &leaseGroup{t: t, st: st, base: base}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("WARD_TEST_POSTGRES_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	a := g.open("a", nil)
	waitFor(t, 10*time.Second, "a holding the lease", func() bool { return a.relay.holding.Load() })
	b := g.open("b", nil)
	publishN(t, a, 2)
	g.checkStream(a.NATS)

	sink := a.relay.leaseName()
	storedState := func() string {
		var s string
		if err := conn.QueryRow(ctx, `SELECT state FROM `+schema+`.export_cursors WHERE sink = $1`, sink).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	watches := func(state string, seq int64) bool {
		_, ok := decodeLate(state, a.relay.log)[seq]
		return ok
	}

	// A slow writer takes seq N and holds it; N+1 commits; a waits at
	// the gap, then publishes N+1 and watches N.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var slow int64
	if err := tx.QueryRow(ctx, `INSERT INTO `+schema+`.events (id, type) VALUES ('slow-across-handover', 'user.disabled') RETURNING seq`).Scan(&slow); err != nil {
		t.Fatal(err)
	}
	publishN(t, a, 1)
	waitFor(t, 10*time.Second, "a publishing past the gap", func() bool { return streamMsgs(t, a.NATS) == 3 })
	if s := storedState(); !watches(s, slow) {
		t.Fatalf("state stored with the lease %q does not watch seq %d, skipped before a published past it", s, slow)
	}

	// a crashes; b takes over.
	a.relay.abandon.Store(true)
	a.Close()
	waitFor(t, 3*ttl, "b holding the lease", func() bool { return b.relay.holding.Load() })

	// a, stale (it did not notice it lost the lease), tries to store an
	// empty set: refused, b's copy keeps N.
	if ok, err := g.st.SetExportCursorState(ctx, sink, "a", "", time.Now()); err != nil || ok {
		t.Fatalf("a stale holder stored the relay's state: ok %v err %v", ok, err)
	}
	if ok, err := g.st.SetExportCursorState(ctx, sink, "a", `{"late":[]}`, time.Now().Add(-time.Second)); err != nil || ok {
		t.Fatalf("a stale holder stored the relay's state: ok %v err %v", ok, err)
	}
	if s := storedState(); !watches(s, slow) {
		t.Fatalf("state %q after the stale writes does not watch seq %d", s, slow)
	}

	// N commits: b publishes it (late, out of order), once.
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	publishN(t, b, 1) // and the relay goes on in order
	want := g.storedSeqs()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d events in the stream", len(want)), func() bool { return streamMsgs(t, b.NATS) >= uint64(len(want)) })
	time.Sleep(300 * time.Millisecond) // a copy would come now
	got := streamSeqs(t, b.NATS)
	sorted := slices.Clone(got)
	slices.SortFunc(sorted, func(x, y string) int { return cmpSeq(x, y) })
	if !slices.Equal(sorted, want) {
		t.Fatalf("stream has Ward-Seq %v, want each stored event once: %v", got, want)
	}
	if slices.Index(got, fmt.Sprint(slow)) < slices.Index(got, fmt.Sprint(slow+1)) {
		t.Fatalf("stream %v: want seq %d published late, after %d", got, slow, slow+1)
	}
	if b.relay.Published() == 0 {
		t.Fatal("b published nothing")
	}
	// Published: no longer watched, in the lease's copy too.
	waitFor(t, 5*time.Second, "the published number dropped from the stored set", func() bool { return !watches(storedState(), slow) })
	if r := b.RelayRefused(); r != 0 {
		t.Errorf("the stream refused %d of b's messages", r)
	}
}

func cmpSeq(x, y string) int {
	if len(x) != len(y) {
		return len(x) - len(y)
	}
	return strings.Compare(x, y)
}

// The holder publishes past a gap only once the skipped numbers are
// stored with its lease: while that write fails it keeps waiting at the
// gap (a crash then loses nothing), and goes on once it succeeds.
func TestRelayLeaseLateStoredBeforeSkipping(t *testing.T) {
	base := externalBackend.base(t)
	base.RelayLeaseTTL, base.PollInterval, base.GapWait = 3*time.Second, 50*time.Millisecond, 200*time.Millisecond
	st, schema := pgStoreSchema(t)
	g := &leaseGroup{t: t, st: st, base: base}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("WARD_TEST_POSTGRES_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	flaky := &flakyLease{Store: st}
	a := g.open("a", flaky)
	waitFor(t, 10*time.Second, "a holding the lease", func() bool { return a.relay.holding.Load() })
	publishN(t, a, 2)
	g.checkStream(a.NATS)

	flaky.stateDown.Store(true)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var slow int64
	if err := tx.QueryRow(ctx, `INSERT INTO `+schema+`.events (id, type) VALUES ('slow-unsaved', 'user.disabled') RETURNING seq`).Scan(&slow); err != nil {
		t.Fatal(err)
	}
	publishN(t, a, 1)
	time.Sleep(5 * base.GapWait)
	if got := streamMsgs(t, a.NATS); got != 2 {
		t.Fatalf("stream has %d messages: the relay published past seq %d without storing it with the lease", got, slow)
	}
	flaky.stateDown.Store(false)
	waitFor(t, 10*time.Second, "a publishing past the gap", func() bool { return streamMsgs(t, a.NATS) == 3 })
	var state string
	if err := conn.QueryRow(ctx, `SELECT state FROM `+schema+`.export_cursors WHERE sink = $1`, a.relay.leaseName()).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if _, ok := decodeLate(state, a.relay.log)[slow]; !ok {
		t.Fatalf("state %q does not watch seq %d", state, slow)
	}
}

// Numbers the previous holder watched above where the stream ends are
// ordinary gaps for the new holder: it relays them once, in order, and
// removes them from the lease's copy, so that no later holder publishes
// them again as late.
func TestRelayLeaseInheritedAboveStream(t *testing.T) {
	base := externalBackend.base(t)
	base.RelayLeaseTTL, base.PollInterval, base.GapWait = 3*time.Second, 50*time.Millisecond, 200*time.Millisecond
	st, schema := pgStoreSchema(t)
	g := &leaseGroup{t: t, st: st, base: base}
	ctx := context.Background()
	sink := "relay:" + base.Stream
	// A previous holder skipped 3 and crashed before publishing past it.
	now := time.Now()
	if _, held, err := st.ClaimExportCursor(ctx, sink, "gone", 0, now, now.Add(200*time.Millisecond)); err != nil || !held {
		t.Fatalf("claim: %v %v", held, err)
	}
	if ok, err := st.SetExportCursorState(ctx, sink, "gone", encodeLate(map[int64]time.Time{3: now}), now); err != nil || !ok {
		t.Fatalf("set state: %v %v", ok, err)
	}
	b := g.open("b", nil)
	publishN(t, b, 5)
	g.checkStream(b.NATS)
	conn, err := pgx.Connect(ctx, os.Getenv("WARD_TEST_POSTGRES_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor(t, 5*time.Second, "the inherited number dropped from the stored set", func() bool {
		var s string
		if err := conn.QueryRow(ctx, `SELECT state FROM `+schema+`.export_cursors WHERE sink = $1`, sink).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s == ""
	})
}
