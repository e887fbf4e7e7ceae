package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// testEventsAfter checks the outbox read of the event relay: ascending
// order, the limit rules, complete round-trips, and that a cursor walk
// after concurrent writers finished sees every event exactly once.
func testEventsAfter(t *testing.T, s store.Store) {
	got, err := s.EventsAfter(ctx, 0, 0)
	must(t, "EventsAfter on an empty store", err)
	if len(got) != 0 {
		t.Fatalf("EventsAfter on an empty store: got %d events, want 0", len(got))
	}

	first := fullEvent(model.EventSessionRevoked, "u1", "s1", "c1", at(0))
	firstSeq, err := s.AppendEvent(ctx, first)
	must(t, "AppendEvent", err)
	got, err = s.EventsAfter(ctx, firstSeq-1, 1)
	must(t, "EventsAfter", err)
	if len(got) != 1 || got[0].Seq != firstSeq {
		t.Fatalf("EventsAfter(%d, 1): got %d events, want seq %d", firstSeq-1, len(got), firstSeq)
	}
	same(t, "round-tripped event", &got[0].Event, first, normEvent)

	const n = 1104
	for i := 1; i < n; i++ {
		e := &model.Event{ID: fmt.Sprintf("ev-%d", i), Type: model.EventTokenIssued, Time: at(time.Duration(i) * time.Millisecond)}
		_, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
	}
	count := func(seq int64, limit int) int {
		got, err := s.EventsAfter(ctx, seq, limit)
		must(t, "EventsAfter", err)
		return len(got)
	}
	for _, tc := range []struct {
		name  string
		seq   int64
		limit int
		want  int
	}{
		{"default limit", 0, 0, 100},
		{"negative limit", 0, -1, 100},
		{"max limit", 0, 5000, 1000},
		{"exact limit", 0, 7, 7},
		{"from before the first", firstSeq - 1, 3, 3},
		{"after the last", firstSeq + 1<<40, 0, 0},
	} {
		if got := count(tc.seq, tc.limit); got != tc.want {
			t.Errorf("EventsAfter %s: got %d events, want %d", tc.name, got, tc.want)
		}
	}

	// Follow a cursor: strictly ascending, no gaps in what we wrote, every
	// event once.
	walk := func() []int64 {
		var seqs []int64
		cursor := int64(0)
		for {
			page, err := s.EventsAfter(ctx, cursor, 300)
			must(t, "EventsAfter page", err)
			if len(page) == 0 {
				return seqs
			}
			for _, e := range page {
				if e.Seq <= cursor {
					t.Fatalf("EventsAfter(%d): seq %d, want ascending above the cursor", cursor, e.Seq)
				}
				cursor = e.Seq
				seqs = append(seqs, e.Seq)
			}
		}
	}
	if seqs := walk(); len(seqs) != n || seqs[0] != firstSeq {
		t.Fatalf("cursor walk: got %d events starting at %v, want %d starting at %d", len(seqs), seqs[:1], n, firstSeq)
	}

	// Concurrent writers: once they are done, the walk sees each event of
	// theirs exactly once, in seq order.
	const writers, each = 4, 50
	var wg sync.WaitGroup
	ids := make(chan int64, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				seq, err := s.AppendEvent(ctx, &model.Event{ID: fmt.Sprintf("w%d-%d", w, i), Type: model.EventSignInFailed})
				if err != nil {
					t.Errorf("AppendEvent: %v", err)
					return
				}
				ids <- seq
			}
		}()
	}
	wg.Wait()
	close(ids)
	written := map[int64]bool{}
	for seq := range ids {
		written[seq] = true
	}
	seen := map[int64]bool{}
	for _, seq := range walk() {
		if seen[seq] {
			t.Fatalf("cursor walk: seq %d twice", seq)
		}
		seen[seq] = true
	}
	for seq := range written {
		if !seen[seq] {
			t.Errorf("cursor walk: concurrent writer's seq %d missing", seq)
		}
	}
	if len(seen) != n+writers*each {
		t.Errorf("cursor walk: got %d events, want %d", len(seen), n+writers*each)
	}
}
