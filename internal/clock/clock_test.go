package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestFake(t *testing.T) {
	c := clock.NewFake(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want %v", got, t0)
	}
	// Reading does not move it.
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("second Now = %v, want %v", got, t0)
	}
	if got := c.Advance(90 * time.Second); !got.Equal(t0.Add(90*time.Second)) || !c.Now().Equal(got) {
		t.Fatalf("Advance returned %v, Now %v, want %v", got, c.Now(), t0.Add(90*time.Second))
	}
	if got := c.Advance(-30 * time.Second); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Advance(-30s) = %v, want %v", got, t0.Add(time.Minute))
	}
	c.Set(t0.Add(-time.Hour))
	if got := c.Now(); !got.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("after Set: Now = %v, want %v", got, t0.Add(-time.Hour))
	}
	// The method value is the time source handed to code under test.
	var now func() time.Time = c.Now
	c.Set(t0)
	if !now().Equal(t0) {
		t.Fatalf("method value reads %v, want %v", now(), t0)
	}
	var zero clock.Fake
	if !zero.Now().IsZero() {
		t.Fatalf("zero Fake reads %v", zero.Now())
	}
}

// TestFakeConcurrent: readers on other goroutines see every advance and
// never a torn or lost update (run with -race).
func TestFakeConcurrent(t *testing.T) {
	c := clock.NewFake(t0)
	const writers, steps = 4, 1000
	var wg sync.WaitGroup
	for range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range steps {
				c.Advance(time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			prev := t0
			for range steps {
				now := c.Now()
				if now.Before(prev) {
					t.Errorf("clock went back from %v to %v", prev, now)
					return
				}
				prev = now
			}
		}()
	}
	wg.Wait()
	if want := t0.Add(writers * steps * time.Millisecond); !c.Now().Equal(want) {
		t.Fatalf("after %d advances: %v, want %v", writers*steps, c.Now(), want)
	}
}
