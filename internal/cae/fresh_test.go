package cae

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSharedReadSeesLaterRead: a caller that asks while a read is running
// must get a read that began after it asked (a status change committed
// before it asked is seen), and the callers waiting together share one.
func TestSharedReadSeesLaterRead(t *testing.T) {
	var (
		g       sharedRead
		reads   atomic.Int64
		release = make(chan struct{})
		started = make(chan int64, 10)
	)
	fn := func() (int64, error) {
		n := reads.Add(1)
		started <- n
		<-release // each read waits until the test lets it finish
		return n, nil
	}
	var first int64
	done1 := make(chan struct{})
	go func() { first, _ = g.do(context.Background(), fn); close(done1) }()
	if n := <-started; n != 1 {
		t.Fatalf("first read is #%d", n)
	}
	// Five callers arrive while read #1 runs.
	const late = 5
	var wg sync.WaitGroup
	got := make([]int64, late)
	for i := range late {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], _ = g.do(context.Background(), fn) }()
	}
	// Wait until all five have joined the next read.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		joined := g.next != nil
		g.mu.Unlock()
		if joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late callers did not join a next read")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the rest join the same one
	release <- struct{}{}             // read #1 ends
	<-done1
	if first != 1 {
		t.Fatalf("first caller got read #%d", first)
	}
	if n := <-started; n != 2 {
		t.Fatalf("second read is #%d", n)
	}
	release <- struct{}{} // read #2 ends
	wg.Wait()
	for i, v := range got {
		if v != 2 {
			t.Errorf("late caller %d got read #%d, want #2 (one begun after it asked)", i, v)
		}
	}
	if n := reads.Load(); n != 2 {
		t.Errorf("%d reads for 6 callers, want 2", n)
	}
	// Idle again: a new caller runs its own read.
	go func() { <-started; release <- struct{}{} }()
	if v, _ := g.do(context.Background(), fn); v != 3 {
		t.Errorf("after idle: read #%d, want #3", v)
	}
}

// TestSharedReadWaiterLeavesOnCancel: a caller waiting for a shared read
// leaves when its context ends (a shutdown must not wait for a slow
// database), and the read still serves the callers that stay.
func TestSharedReadWaiterLeavesOnCancel(t *testing.T) {
	var g sharedRead
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	fn := func() (int64, error) { started <- struct{}{}; <-release; return 7, nil }
	first := make(chan int64)
	go func() { v, _ := g.do(context.Background(), fn); first <- v }()
	<-started // read #1 is running
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error)
	go func() { _, err := g.do(ctx, fn); left <- err }()
	stay := make(chan int64)
	go func() { v, _ := g.do(context.Background(), fn); stay <- v }()
	time.Sleep(20 * time.Millisecond) // let both join the next read
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	close(release) // read #1 ends, read #2 runs and ends at once
	if v := <-first; v != 7 {
		t.Errorf("first caller got %d", v)
	}
	if v := <-stay; v != 7 {
		t.Errorf("the caller that stayed got %d", v)
	}
}
