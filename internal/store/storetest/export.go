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

// testExportCursorState checks the state a lease holder keeps with its
// lease: written only by the holder of a live lease, returned by every
// claim (so a new holder takes it over), never overwritten by a holder
// that lost the lease, even one that does not know it yet.
func testExportCursorState(t *testing.T, s store.Store) {
	now := at(0).Truncate(time.Microsecond)
	const sink = "relay:STATE"
	c, held, err := s.ClaimExportCursor(ctx, sink, "a", 0, now, now.Add(10*time.Second))
	must(t, "ClaimExportCursor", err)
	if !held || c.State != "" {
		t.Fatalf("new lease: held %v state %q, want held and empty", held, c.State)
	}
	if ok, err := s.SetExportCursorState(ctx, sink, "b", "by-b", now.Add(time.Second)); err != nil || ok {
		t.Fatalf("a non-holder stored state: ok %v err %v", ok, err)
	}
	if ok, err := s.SetExportCursorState(ctx, sink, "a", "a-1", now.Add(time.Second)); err != nil || !ok {
		t.Fatalf("the holder could not store state: ok %v err %v", ok, err)
	}
	// Renewal returns it, a refused claim does not change it.
	c, held, err = s.ClaimExportCursor(ctx, sink, "a", 0, now.Add(2*time.Second), now.Add(12*time.Second))
	if err != nil || !held || c.State != "a-1" {
		t.Fatalf("renewal: held %v state %q err %v, want a-1", held, c.State, err)
	}
	if _, held, _ := s.ClaimExportCursor(ctx, sink, "b", 0, now.Add(3*time.Second), now.Add(13*time.Second)); held {
		t.Fatal("b took a live lease")
	}
	// Past its end, the holder cannot write (on its own clock) ...
	if ok, err := s.SetExportCursorState(ctx, sink, "a", "a-late", now.Add(13*time.Second)); err != nil || ok {
		t.Fatalf("state stored after the lease ended: ok %v err %v", ok, err)
	}
	// ... and the next holder gets the last state with the lease.
	c, held, err = s.ClaimExportCursor(ctx, sink, "b", 0, now.Add(14*time.Second), now.Add(24*time.Second))
	if err != nil || !held || c.State != "a-1" {
		t.Fatalf("takeover: held %v state %q err %v, want a-1", held, c.State, err)
	}
	// The old holder, its clock behind, believes its lease still runs:
	// its write is refused, b's state stays.
	if ok, err := s.SetExportCursorState(ctx, sink, "a", "a-stale", now.Add(5*time.Second)); err != nil || ok {
		t.Fatalf("a stale holder overwrote the state: ok %v err %v", ok, err)
	}
	if ok, err := s.SetExportCursorState(ctx, sink, "b", "b-1", now.Add(15*time.Second)); err != nil || !ok {
		t.Fatalf("b could not store state: ok %v err %v", ok, err)
	}
	// Released: the state stays for the next holder.
	must(t, "ReleaseExportCursor", s.ReleaseExportCursor(ctx, sink, "b"))
	if ok, _ := s.SetExportCursorState(ctx, sink, "b", "b-released", now.Add(16*time.Second)); ok {
		t.Fatal("state stored after the release")
	}
	c, held, err = s.ClaimExportCursor(ctx, sink, "a", 0, now.Add(16*time.Second), now.Add(26*time.Second))
	if err != nil || !held || c.State != "b-1" {
		t.Fatalf("claim after release: held %v state %q err %v, want b-1", held, c.State, err)
	}
}
