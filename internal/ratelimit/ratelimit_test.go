package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBurstRefillRefund(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := New(3, 10*time.Second, 100)
	for i := 0; i < 3; i++ {
		if !l.Take("a", now) {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	if l.Take("a", now) {
		t.Fatal("4th take allowed past the burst")
	}
	if !l.Take("b", now) {
		t.Fatal("keys are not independent")
	}
	if l.Take("a", now.Add(9*time.Second)) {
		t.Fatal("refilled too early")
	}
	if !l.Take("a", now.Add(10*time.Second)) {
		t.Fatal("not refilled after one period")
	}
	l.Refund("a", now.Add(10*time.Second))
	if !l.Take("a", now.Add(10*time.Second)) {
		t.Fatal("refund not applied")
	}
	if l.Take("a", now.Add(time.Hour)) && l.Take("a", now.Add(time.Hour)) && l.Take("a", now.Add(time.Hour)) && l.Take("a", now.Add(time.Hour)) {
		t.Fatal("refill exceeded the burst")
	}
}

func TestPerMinute(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := PerMinute(30, 10)
	n := 0
	for l.Take("ip", now) {
		n++
	}
	if n != 30 {
		t.Fatalf("burst = %d, want 30", n)
	}
	if !l.Take("ip", now.Add(2*time.Second)) || l.Take("ip", now.Add(2*time.Second)) {
		t.Fatal("want exactly one token back after 2 s at 30/min")
	}
}

func TestParallelTakesRespectBurst(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := New(5, time.Hour, 100)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.Take("x", now) {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 5 {
		t.Fatalf("%d parallel takes allowed, want 5", ok.Load())
	}
}

func TestBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := New(2, time.Minute, 100)
	for i := 0; i < 1000; i++ {
		l.Take(fmt.Sprint("k", i), now)
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("tracks %d keys, bound 100", n)
	}
}
