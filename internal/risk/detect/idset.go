package detect

import "math/bits"

// idSet is a set of 64-bit hashes for the ids the Engine remembers. It
// replaces a Go map, which a ring of adds and removes (one of each per
// activity) fills with tombstones and long probe sequences: here probing
// is linear, a removal shifts the entries after it back (no tombstones),
// and the table stays at most half full, so a lookup is usually one
// cache line.
type idSet struct {
	slots []uint64 // 0: empty
	shift uint     // 64 - log2(len(slots))
	zero  bool     // 0 itself is in the set
}

func newIDSet(n int) idSet {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	return idSet{slots: make([]uint64, size), shift: uint(64 - bits.TrailingZeros(uint(size)))}
}

// home is h's first slot (Fibonacci hashing: the FNV hash's high bits,
// mixed).
func (s *idSet) home(h uint64) int { return int((h * 0x9E3779B97F4A7C15) >> s.shift) }

func (s *idSet) has(h uint64) bool {
	if h == 0 {
		return s.zero
	}
	mask := len(s.slots) - 1
	for i := s.home(h); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

// add inserts h. The caller keeps the set at most half full (it holds at
// most the n it was made for).
func (s *idSet) add(h uint64) {
	if h == 0 {
		s.zero = true
		return
	}
	mask := len(s.slots) - 1
	for i := s.home(h); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case h:
			return
		case 0:
			s.slots[i] = h
			return
		}
	}
}

// remove deletes h (h != 0), moving back the entries of the probe run
// after it that may then sit closer to their home slot.
func (s *idSet) remove(h uint64) {
	mask := len(s.slots) - 1
	i := s.home(h)
	for {
		switch s.slots[i] {
		case 0:
			return
		case h:
			for j := (i + 1) & mask; ; j = (j + 1) & mask {
				v := s.slots[j]
				if v == 0 {
					s.slots[i] = 0
					return
				}
				// v may move to i if its home is not in (i, j] cyclically.
				k := s.home(v)
				if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
					s.slots[i] = v
					i = j
				}
			}
		}
		i = (i + 1) & mask
	}
}
