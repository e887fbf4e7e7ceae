package chain

// SetSegmentSize makes Verify cut the log into pieces of n sequence
// numbers (tests).
func SetSegmentSize(n int64) (restore func()) {
	old := segmentSize
	segmentSize = n
	return func() { segmentSize = old }
}
