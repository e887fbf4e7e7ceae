package caenats

// SetLastSeq makes f forget what it processed after seq, as if messages
// the server delivered after it were lost on the way.
func SetLastSeq(f *Follower, seq uint64) { f.lastSeq.Store(seq) }
