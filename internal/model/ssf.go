package model

import "time"

// SSF delivery methods (SSF 1.0 §6): RFC 8935 push and RFC 8936 poll.
const (
	DeliveryPush = "urn:ietf:rfc:8935"
	DeliveryPoll = "urn:ietf:rfc:8936"
)

// SSF stream statuses (SSF 1.0 §8.1.2).
const (
	StreamEnabled  = "enabled"  // events are transmitted
	StreamPaused   = "paused"   // events are held and sent when enabled again
	StreamDisabled = "disabled" // events are dropped
)

// SSFStream is an event stream of Ward's Shared Signals transmitter: what
// one receiver (an OAuth client) subscribed to and how SETs reach it.
type SSFStream struct {
	ID       string
	ClientID string // the receiver that created and owns the stream
	// Audience is the "aud" of every SET sent on the stream.
	Audience []string
	// Method is DeliveryPush or DeliveryPoll.
	Method string
	// EndpointURL is the receiver's push endpoint (empty for poll: the
	// transmitter derives its poll URL from ID).
	EndpointURL string
	// AuthHeaderEnc is the push authorization_header the receiver gave,
	// sealed under the KEK with the stream id as associated data. Nil
	// when none was given. The plaintext is never stored or returned.
	AuthHeaderEnc   []byte
	EventsRequested []string
	EventsDelivered []string
	Description     string
	Status          string
	StatusReason    string
	// Excluded holds the subjects the receiver removed (compact JSON
	// subject identifiers); Ward's streams include every subject by
	// default (default_subjects ALL).
	Excluded  []string
	CreatedAt time.Time
	UpdatedAt time.Time
}
