package detect

import (
	"math/rand/v2"
	"testing"
)

// TestIDSetMatchesMap runs the Engine's ring of adds and removes against a
// map, with hashes crowded into few home slots so that removals shift
// long probe runs, wrapping around the table's end.
func TestIDSetMatchesMap(t *testing.T) {
	for _, n := range []int{1, 7, 100, 5000} {
		s := newIDSet(n)
		want := map[uint64]bool{}
		ring := make([]uint64, n)
		next := 0
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		for i := 0; i < 40*n+1000; i++ {
			var h uint64
			switch rng.IntN(4) {
			case 0: // a small value: clustered homes
				h = uint64(rng.IntN(3 * n))
			case 1: // seen before, maybe still in the set
				h = ring[rng.IntN(n)]
			default:
				h = rng.Uint64()
			}
			if got := s.has(h); got != want[h] {
				t.Fatalf("n=%d step %d: has(%#x) = %v, want %v", n, i, h, got, want[h])
			}
			if want[h] {
				continue
			}
			if old := ring[next]; old != 0 {
				s.remove(old)
				delete(want, old)
			}
			ring[next] = h
			next = (next + 1) % n
			s.add(h)
			want[h] = true
		}
		// Every slot in use is reachable from its home slot.
		count := 0
		for _, v := range s.slots {
			if v != 0 {
				count++
				if !s.has(v) || !want[v] {
					t.Fatalf("n=%d: %#x in a slot but not found", n, v)
				}
			}
		}
		zero := 0
		if want[0] {
			zero = 1
		}
		if count+zero != len(want) {
			t.Fatalf("n=%d: %d entries, want %d", n, count+zero, len(want))
		}
	}
}
