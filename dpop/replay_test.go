package dpop

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryReplayCache(t *testing.T) {
	clk := &clock{t: t0}
	c := NewMemoryReplayCache(clk.Now)
	ctx := context.Background()
	exp := t0.Add(time.Minute)
	steps := []struct {
		name    string
		advance time.Duration
		key     string
		exp     time.Time
		want    error
	}{
		{"first", 0, "dpop:k1:a", exp, nil},
		{"replay", 0, "dpop:k1:a", exp, ErrReplay},
		{"other jti", 0, "dpop:k1:b", exp, nil},
		{"same jti other key", 0, "dpop:k2:a", exp, nil},
		{"replay before expiry", 59 * time.Second, "dpop:k1:a", exp, ErrReplay},
		{"after expiry", time.Second, "dpop:k1:a", t0.Add(2 * time.Minute), nil},
		{"replay of renewed", 0, "dpop:k1:a", t0.Add(2 * time.Minute), ErrReplay},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		if err := c.Record(ctx, s.key, s.exp); !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Errorf("%s: Record = %v, want %v", s.name, err, s.want)
		}
	}
}

func TestMemoryReplayCacheSweeps(t *testing.T) {
	clk := &clock{t: t0}
	c := NewMemoryReplayCache(clk.Now)
	ctx := context.Background()
	const n = 10000
	for i := range n {
		if err := c.Record(ctx, fmt.Sprint("dpop:k:", i), t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Len(); got != n {
		t.Fatalf("Len = %d, want %d", got, n)
	}
	// Past expiry and the sweep interval, writes into every shard drop the
	// expired entries: memory is bounded by what is still live.
	clk.Add(time.Minute + replaySweepEvery)
	for i := range n {
		if err := c.Record(ctx, fmt.Sprint("dpop:new:", i), clk.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Len(); got != n {
		t.Errorf("Len after sweep = %d, want %d (old entries not swept)", got, n)
	}
}

func TestMemoryReplayCacheConcurrent(t *testing.T) {
	c := NewMemoryReplayCache(fixed(t0))
	ctx := context.Background()
	const workers, keys = 8, 500
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				err := c.Record(ctx, fmt.Sprint("dpop:k:", i), t0.Add(time.Minute))
				switch {
				case err == nil:
					accepted.Add(1)
				case !errors.Is(err, ErrReplay):
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got := accepted.Load(); got != keys {
		t.Errorf("accepted %d records, want exactly %d (each key once)", got, keys)
	}
}

// Many verifiers racing on one proof: exactly one wins.
func TestVerifyConcurrentReplay(t *testing.T) {
	s := mustSigner(t, getKeys(t).p256)
	v := newVerifier(t0)
	proof, err := s.ProofAt("GET", testURL, "", "", t0)
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(context.Background(), proof, Check{Method: "GET", URL: testURL}); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrReplay) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d verifications succeeded, want 1", ok.Load())
	}
}
