package store

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// EventScope selects the events about any of a set of subjects within a
// time window: the events of the users, of the sessions, of the devices
// and from the IP addresses listed. An event about several of them is
// selected once.
type EventScope struct {
	UserIDs    []string
	SessionIDs []string
	DeviceIDs  []string
	IPs        []string
	Since      time.Time // inclusive; required
	Until      time.Time // exclusive; required, after Since
}

// MaxScopeSubjects bounds the subjects of one EventScope (all kinds
// together).
const MaxScopeSubjects = 100

// MaxEventGroups bounds the groups GroupEvents returns, and
// MaxEventLookup the events EventsByID and EventsBySeq read in one call.
const (
	MaxEventGroups = 10000
	MaxEventLookup = 1000
)

// EventGroup stands for the events of a scope that agree on their
// subjects (user, session, client, device, IP), type, outcome and reason:
// how many there are, the first and the last of them.
type EventGroup struct {
	Type      model.EventType
	Outcome   string
	Reason    string
	UserID    string
	SessionID string
	ClientID  string
	DeviceID  string
	IP        string
	Count     int64
	// First and Last are the times of the first and last event, FirstSeq
	// and LastSeq their sequence numbers (EventsBySeq reads them).
	First, Last       time.Time
	FirstSeq, LastSeq int64
}

// EventGraph is the part of the store the investigation graph reads:
// events aggregated by subject over a time window, and single events by
// id or sequence number, on indexes made for them (migration 00023).
type EventGraph interface {
	// GroupEvents returns the groups of the events in scope, ordered by
	// FirstSeq, at most limit of them (0: 1000; max MaxEventGroups), and
	// whether groups were left out: those with the latest first events,
	// as long as each kind of subject has at most MaxEventGroups groups
	// (beyond, which are left out is the backend's choice). Each event is in exactly one group,
	// whichever of its subjects selected it. A scope without subjects
	// selects nothing.
	GroupEvents(ctx context.Context, s EventScope, limit int) ([]*EventGroup, bool, error)
	// EventsByID returns the events with the given ids that exist, in
	// ascending Seq order (at most MaxEventLookup ids; more is an error).
	EventsByID(ctx context.Context, ids []string) ([]*StoredEvent, error)
	// EventsBySeq is EventsByID for sequence numbers.
	EventsBySeq(ctx context.Context, seqs []int64) ([]*StoredEvent, error)
}
