package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// testExportCursors checks the audit exporters' cursors: created once at
// the start given, leased to one owner at a time (also when many claim
// at once), moved only forward and only by the lease holder, released.
func testExportCursors(t *testing.T, s store.Store) {
	now := at(0).Truncate(time.Microsecond) // stored in microseconds
	c, held, err := s.ClaimExportCursor(ctx, "siem", "a", 7, now, now.Add(10*time.Second))
	must(t, "ClaimExportCursor new", err)
	if !held || c.Seq != 7 || c.Owner != "a" || !c.LeaseUntil.Equal(now.Add(10*time.Second)) {
		t.Fatalf("new cursor: held %v %+v, want held at seq 7 by a", held, c)
	}
	// Another owner cannot take a live lease; it learns who holds it.
	c, held, err = s.ClaimExportCursor(ctx, "siem", "b", 0, now.Add(time.Second), now.Add(11*time.Second))
	must(t, "ClaimExportCursor held by another", err)
	if held || c.Owner != "a" || c.Seq != 7 {
		t.Fatalf("claim of a live lease: held %v %+v", held, c)
	}
	ok, err := s.AdvanceExportCursor(ctx, "siem", "b", 9, now)
	must(t, "AdvanceExportCursor by another", err)
	if ok {
		t.Fatal("a non-holder advanced the cursor")
	}
	ok, err = s.AdvanceExportCursor(ctx, "siem", "a", 12, now.Add(2*time.Second))
	must(t, "AdvanceExportCursor", err)
	if !ok {
		t.Fatal("the holder could not advance")
	}
	ok, err = s.AdvanceExportCursor(ctx, "siem", "a", 10, now.Add(2*time.Second))
	must(t, "AdvanceExportCursor backwards", err)
	if ok {
		t.Fatal("the cursor moved back")
	}
	// Renewal keeps the position; the start of a claim applies to a new
	// cursor only.
	c, held, err = s.ClaimExportCursor(ctx, "siem", "a", 0, now.Add(3*time.Second), now.Add(13*time.Second))
	must(t, "ClaimExportCursor renew", err)
	if !held || c.Seq != 12 || !c.UpdatedAt.Equal(now.Add(2*time.Second)) {
		t.Fatalf("renewed cursor: held %v %+v, want seq 12", held, c)
	}
	// An expired lease goes to whoever claims it, with the position.
	c, held, err = s.ClaimExportCursor(ctx, "siem", "b", 0, now.Add(14*time.Second), now.Add(24*time.Second))
	must(t, "ClaimExportCursor expired", err)
	if !held || c.Owner != "b" || c.Seq != 12 {
		t.Fatalf("expired lease: held %v %+v, want b at 12", held, c)
	}
	if ok, _ := s.AdvanceExportCursor(ctx, "siem", "a", 20, now.Add(15*time.Second)); ok {
		t.Fatal("the previous holder advanced after losing the lease")
	}
	// Released: free at once.
	must(t, "ReleaseExportCursor", s.ReleaseExportCursor(ctx, "siem", "b"))
	if _, held, err = s.ClaimExportCursor(ctx, "siem", "c", 0, now.Add(15*time.Second), now.Add(25*time.Second)); err != nil || !held {
		t.Fatalf("claim after release: held %v err %v", held, err)
	}
	_, _, err = s.ClaimExportCursor(ctx, "file", "c", 0, now, now.Add(time.Second))
	must(t, "ClaimExportCursor second sink", err)
	cs, err := s.ListExportCursors(ctx)
	must(t, "ListExportCursors", err)
	if len(cs) != 2 || cs[0].Sink != "file" || cs[1].Sink != "siem" || cs[1].Seq != 12 || cs[1].Owner != "c" {
		t.Fatalf("ListExportCursors: %+v", cs)
	}

	// Many instances claiming one free sink at once: exactly one wins.
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []string
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("i%d", i)
			_, held, err := s.ClaimExportCursor(ctx, "race", owner, 0, now, now.Add(time.Minute))
			if err != nil {
				t.Error(err)
				return
			}
			if held {
				mu.Lock()
				wins = append(wins, owner)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("concurrent claims: %v won, want exactly one", wins)
	}
}
