package model

import "time"

// Incident statuses. An incident is new until an operator works on it
// (assigns, comments, acts) or a detection reopens it; resolved and
// false_positive close it, each with a reason.
const (
	IncidentNew           = "new"
	IncidentActive        = "active"
	IncidentResolved      = "resolved"
	IncidentFalsePositive = "false_positive"
)

// IncidentOpen reports whether status is one of the open statuses (new,
// active).
func IncidentOpen(status string) bool { return status == IncidentNew || status == IncidentActive }

// Incident groups the detections about the same user, session, device or
// network address within a time window (internal/incident).
type Incident struct {
	ID     string
	Number int64 // 1, 2, ...: shown as INC-1
	Title  string
	// Severity is the highest severity of its detections (low, medium,
	// high).
	Severity     string
	Status       string
	StatusReason string // why it was closed or reopened
	Assignee     string // a user id ("": unassigned)
	// MergedInto is the incident this one was merged into ("": none);
	// a merged incident is resolved and has no detections left.
	MergedInto string
	// Techniques are the MITRE ATT&CK technique ids of its detections.
	Techniques []string
	Detections int // how many detections it holds
	// FirstSeen and LastSeen are the times of its oldest and newest
	// detections.
	FirstSeen time.Time
	LastSeen  time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
	ClosedAt  time.Time // zero while open
}

// IncidentDetection is a detection as an incident holds it: what the
// risk.detected event said, bounded.
type IncidentDetection struct {
	DetectionID string
	IncidentID  string
	EventID     string
	Type        string
	Severity    string
	Confidence  float64
	Technique   string
	UserID      string
	SessionID   string
	DeviceID    string
	ClientID    string
	IP          string
	Detail      string
	Source      string
	DetectedAt  time.Time
	AddedAt     time.Time
}

// Kinds of incident timeline entries.
const (
	IncidentEntryCreated   = "created"
	IncidentEntryDetection = "detection"
	IncidentEntryStatus    = "status"
	IncidentEntryAssigned  = "assigned"
	IncidentEntryComment   = "comment"
	IncidentEntryMerged    = "merged"
	IncidentEntrySplit     = "split"
	IncidentEntryAction    = "action"
)

// IncidentEntry is one line of an incident's timeline.
type IncidentEntry struct {
	Seq        int64
	IncidentID string
	At         time.Time
	Kind       string
	Actor      string
	Text       string
	Data       map[string]string
}
