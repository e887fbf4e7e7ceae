package store

import "time"

// SET queue states (SETEntry.State).
const (
	SETQueued  = 0 // waiting for delivery (or, polled, for its acknowledgement)
	SETRefused = 2 // permanently refused by the receiver; never sent again
)

// SETEntry is one signed Security Event Token in the outbox of an SSF
// stream. Entries of a stream are delivered in Seq order.
type SETEntry struct {
	StreamID string
	// Seq is the position in the stream's queue, assigned by EnqueueSETs.
	Seq int64
	JTI string
	// DedupKey makes enqueueing idempotent per stream: a second entry
	// with the same key is dropped (a domain event delivered twice by the
	// bus yields its SETs once).
	DedupKey   string
	SubjectKey string
	EventType  string
	SET        string // the compact JWS
	CreatedAt  time.Time
	State      int
	Attempts   int
	LastError  string
	// HeldUntil is until when a poll holds the entry back waiting for its
	// acknowledgement (zero: not held). Set on an entry to enqueue, it
	// asks for it to be handed out as it is stored (EnqueueSETs).
	HeldUntil time.Time
}

// SETKey names one queue entry.
type SETKey struct {
	StreamID string
	Seq      int64
}

// SETPoll is one RFC 8936 poll request against a stream's queue.
type SETPoll struct {
	// Ack lists the jtis the receiver acknowledged: they are deleted.
	Ack []string
	// Errs maps jtis the receiver refused to "err: description": they
	// are marked refused and never sent again.
	Errs map[string]string
	// Max is the most SETs to return (0: only process Ack and Errs).
	Max int
	// Now is the current time; Hold is until when returned SETs are held
	// back waiting for their acknowledgement (then they are returned
	// again).
	Now, Hold time.Time
}

// SETCounts summarises a stream's queue.
type SETCounts struct {
	Queued  int
	Refused int
}

// SETPollRequest is one poll of a batch (PollSETsBatch).
type SETPollRequest struct {
	StreamID string
	Poll     SETPoll
}

// SETPollResult is the outcome of one poll of a batch.
type SETPollResult struct {
	Sets []*SETEntry
	More bool
}
