package store

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// RiskSeen is the user's risk as a decision read it: the level and the
// time it was last changed (the level's version: every change of the
// user's level stamps it).
type RiskSeen struct {
	Level     string    // users.risk_level as read ("" = none)
	UpdatedAt time.Time // users.risk_updated_at as read
}

// RiskSeenOf is the risk of u as it was read from the store.
func RiskSeenOf(u *model.User) RiskSeen {
	return RiskSeen{Level: u.RiskLevel, UpdatedAt: u.RiskUpdatedAt}
}

// RiskState is one user's risk as UpdateRisk hands it to its function:
// the user's level, the levels of its sessions that have one, and its
// active detections. The function may change the levels (UserLevel, the
// Level of an entry of Sessions, or add an entry) and the state fields
// (State, StateReason, StateActor, StateAt, Handled) of any detection in
// Active; UpdateRisk saves what changed and records each level change in
// the history with Cause.
type RiskState struct {
	UserID      string
	UserLevel   string // never "": none is RiskNone
	UserLevelAt time.Time
	// Sessions maps a session id to its risk.
	Sessions map[string]*model.SessionRisk
	// Active are the detections of the user in the active state, oldest
	// first (at most MaxActiveDetections), the one added by this call
	// included.
	Active []*model.RiskDetection
	// Added is the detection this call inserted (nil: none).
	Added *model.RiskDetection
	// Cause is recorded with every level change this call makes.
	Cause RiskCause
	// Revoke, when fn sets it, revokes sessions of the user in the same
	// transaction, after the levels are saved and before ctx's pending
	// events are built (their builder reads Revoke.Revoked): the level
	// that calls for a response and the response commit together, so no
	// one reads the new level while the sessions it ends still refresh,
	// and neither commits without the other or without its events.
	Revoke *UserRevocation
}

// UserRevocation is the revocation of a user's sessions that a write of
// another kind carries out in its own transaction (RiskState.Revoke). The
// session service plans it (what ends, and the events recording it); the
// write that carries it out commits it with its own change.
type UserRevocation struct {
	At    time.Time
	Cause string
	// Bound limits the revocation as RevokeUserSessionsUnremediated's
	// does, and gets its Applied; nil: every unrevoked session of the
	// user, as RevokeUserSessions.
	Bound *RemediationBound
	// Revoked are the ids of the sessions revoked, ascending, set by the
	// write inside its transaction (again on each run of it).
	Revoked []string
	// Events, set by the planner, returns the events recording the
	// revocation of ids (nil or none: nothing to record). The write's
	// pending event builder calls it with Revoked.
	Events func(ids []string) []*model.Event
}

// RiskCause says what changed a level, for the history.
type RiskCause struct {
	Reason      string
	Actor       string
	DetectionID string
	At          time.Time
}

// MaxActiveDetections bounds the active detections UpdateRisk loads for
// one user (the newest ones).
const MaxActiveDetections = 1000

// RiskDetectionFilter selects detections. Zero fields do not filter.
type RiskDetectionFilter struct {
	UserID     string
	SessionID  string
	ActiveOnly bool
	Limit      int // 0: 100; max 1000
}

// RiskLevelFilter selects the users and sessions at risk.
type RiskLevelFilter struct {
	// Levels are the levels to list (empty: low, medium and high).
	Levels []string
	Limit  int // 0: 100; max 1000
}

// RiskStore is the part of the store the risk service uses. The user's
// level is the users row's RiskLevel and RiskUpdatedAt (what Conditional
// Access reads); the other tables are risk_detections, session_risk and
// risk_history.
type RiskStore interface {
	// UpdateRisk changes one user's risk in one transaction that holds the
	// user's row locked, so concurrent changes of one user's risk (a
	// dismissal racing a new detection, two instances) are serialised.
	// With add it first inserts that detection (its ID unique across the
	// store: an ID already stored is ErrAlreadyExists and nothing
	// happens). It then loads the state, calls fn (which may run more than
	// once and must only compute: on SQLite it runs on the single writer),
	// saves what fn changed with one history row per changed level,
	// carries out the revocation fn set (RiskState.Revoke: its refresh
	// tokens deleted too, as RevokeUserSessions and
	// RevokeUserSessionsUnremediated do), and commits ctx's pending events
	// (WithEvents: the ids are "user:ID" and "session:ID" of the levels
	// that changed, then "revoked:ID" of each session revoked). ErrNotFound when the user
	// does not exist. An error from fn rolls everything back and is
	// returned.
	UpdateRisk(ctx context.Context, userID string, add *model.RiskDetection, fn func(*RiskState) error) (*RiskState, error)
	GetRiskDetection(ctx context.Context, id string) (*model.RiskDetection, error)
	// ListRiskDetections returns detections, newest first.
	ListRiskDetections(ctx context.Context, f RiskDetectionFilter) ([]*model.RiskDetection, error)
	// GetSessionRisk returns a session's risk (ErrNotFound: it has none).
	GetSessionRisk(ctx context.Context, sessionID string) (*model.SessionRisk, error)
	// ListRiskyUsers returns the users whose level is one of f.Levels,
	// highest level first, then most recently changed.
	ListRiskyUsers(ctx context.Context, f RiskLevelFilter) ([]*model.User, error)
	// ListRiskySessions is ListRiskyUsers for sessions.
	ListRiskySessions(ctx context.Context, f RiskLevelFilter) ([]*model.SessionRisk, error)
	// RiskHistory returns the level changes of a user and of its sessions
	// (sessionID "": all of them), newest first.
	RiskHistory(ctx context.Context, userID, sessionID string, limit int) ([]*model.RiskChange, error)
	// RiskExpiries returns up to limit ids of users that have an active
	// detection whose ExpiresAt is set and not after now.
	RiskExpiries(ctx context.Context, now time.Time, limit int) ([]string, error)
	// PurgeRisk deletes the session risks of sessions that no longer
	// exist, the detections and history of users that no longer exist,
	// and the inactive detections and history recorded before `before`.
	// It returns how many rows it deleted.
	PurgeRisk(ctx context.Context, before time.Time) (int64, error)
}
