package model

import "time"

// SSFReceiverStream is Ward's own event stream at an external Shared
// Signals transmitter (Ward as a receiver): remembered so that a restart
// finds the stream it created instead of creating another.
type SSFReceiverStream struct {
	// Name is the receiver's configured name (ssf_receivers[].name).
	Name string
	// Issuer is the transmitter's issuer; StreamID its id of the stream.
	Issuer   string
	StreamID string
	// Delivery is DeliveryPush or DeliveryPoll; EndpointURL the poll URL
	// the transmitter gave, or Ward's push endpoint it was given.
	Delivery    string
	EndpointURL string
	// Audience is the stream's aud as the transmitter reported it (SETs
	// naming it are for Ward).
	Audience        []string
	EventsDelivered []string
	// Status is the stream's status at the transmitter when last read
	// (enabled, paused, disabled), StatusReason its reason.
	Status       string
	StatusReason string
	// PushTokenHash is the SHA-256 of the bearer token Ward gave the
	// transmitter for its pushes (the token itself is never stored);
	// PrevPushTokenHash the one before, still accepted while a new one is
	// being handed over.
	PushTokenHash     []byte
	PrevPushTokenHash []byte
	// ConfigDigest identifies the configuration the stream was last
	// created or updated for, so a changed configuration updates it.
	ConfigDigest string
	// VerifiedAt is when Ward last received the stream's verification
	// event; LastError the last stream-management failure ("" after a
	// success).
	VerifiedAt time.Time
	LastError  string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}
