package model

import "time"

// Risk levels of users, sessions and sign-ins, lowest first. A stored ""
// reads as RiskNone.
const (
	RiskNone   = "none"
	RiskLow    = "low"
	RiskMedium = "medium"
	RiskHigh   = "high"
)

// RiskLevels lists the levels, lowest first.
var RiskLevels = []string{RiskNone, RiskLow, RiskMedium, RiskHigh}

// RiskRank orders levels: 0 for none (and ""), 3 for high, -1 for a value
// that is no level.
func RiskRank(level string) int {
	switch level {
	case RiskNone, "":
		return 0
	case RiskLow:
		return 1
	case RiskMedium:
		return 2
	case RiskHigh:
		return 3
	}
	return -1
}

// RiskLevel returns the level of rank r (clamped to none..high).
func RiskLevel(r int) string {
	if r < 0 {
		r = 0
	}
	if r > 3 {
		r = 3
	}
	return RiskLevels[r]
}

// States of a risk detection: only an active one counts towards a level.
const (
	DetectionActive = "active"
	// DetectionDismissed: an administrator judged it a false positive.
	DetectionDismissed = "dismissed"
	// DetectionRemediated: the user remediated (password change, MFA).
	DetectionRemediated = "remediated"
	// DetectionExpired: a low or medium detection outlived its lifetime.
	DetectionExpired = "expired"
	// DetectionSuperseded: an administrator set the user's level
	// directly, replacing what the detections said.
	DetectionSuperseded = "superseded"
)

// Sources of detections (the "source" of risk.detected).
const (
	DetectionSourceOnline   = "online"
	DetectionSourceSignIn   = "signin"
	DetectionSourceExternal = "external"
	// DetectionSourceAdmin: an administrator set the level or confirmed a
	// compromise.
	DetectionSourceAdmin = "admin"
)

// RiskDetection is one detection as the risk service keeps it: what a
// risk.detected event said, and whether it still counts.
type RiskDetection struct {
	// ID is the detection id (stable across re-runs of the detectors, so
	// a repeat is recognised).
	ID        string
	Type      string
	UserID    string
	SessionID string // "": about the user, not one session
	ClientID  string
	DeviceID  string
	IP        string
	Severity  string // low, medium, high
	// Confidence is 0..1.
	Confidence float64
	Technique  string   // MITRE ATT&CK id
	Evidence   []string // ids of the events it rests on
	Detail     string
	Source     string
	// EventID is the id of the risk.detected event it was recorded from.
	EventID    string
	DetectedAt time.Time
	// ExpiresAt is when it stops counting on its own (zero: never).
	ExpiresAt time.Time
	State     string
	// StateReason, StateActor and StateAt say who took it out of the
	// active state, why and when.
	StateReason string
	StateActor  string
	StateAt     time.Time
	// Handled: the response to it (revocation) was carried out.
	Handled bool
}

// SessionRisk is the risk level of one session.
type SessionRisk struct {
	SessionID string
	UserID    string
	Level     string
	UpdatedAt time.Time
}

// Subjects of risk levels.
const (
	RiskSubjectUser    = "user"
	RiskSubjectSession = "session"
)

// RiskChange is one change of a user's or session's risk level (the
// history).
type RiskChange struct {
	Seq       int64
	Subject   string // RiskSubjectUser or RiskSubjectSession
	SubjectID string
	UserID    string
	Level     string
	Previous  string
	// Reason is what changed it (a detection type, "dismissed",
	// "remediated:password_change", "expired", an admin's reason).
	Reason      string
	Actor       string
	DetectionID string
	At          time.Time
}
