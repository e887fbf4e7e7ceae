package store

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// IncidentChange is what CorrelateDetection and UpdateIncidents hand to
// their function, which decides (it must only compute: it may run more
// than once, and on SQLite it runs on the single writer) and says what to
// write by changing it.
type IncidentChange struct {
	// Detection is CorrelateDetection's detection; fn sets its
	// IncidentID (an incident of Incidents or of New). Nil for
	// UpdateIncidents.
	Detection *model.IncidentDetection
	// Incidents are the incidents loaded, by id: UpdateIncidents's, or
	// CorrelateDetection's candidates. fn may change any field but ID,
	// Number and Detections; every changed incident is saved.
	Incidents map[string]*model.Incident
	// Candidates are CorrelateDetection's candidates in order: open or
	// recently closed incidents (never merged ones) holding a detection
	// with the same user, session, device or IP as Detection, whose
	// newest detection or closing is not older than since; the most
	// recently seen first.
	Candidates []string
	// Members are the detections of each loaded incident (UpdateIncidents
	// with detections true), oldest first.
	Members map[string][]*model.IncidentDetection
	// New are incidents to create; the store gives each its Number.
	New []*model.Incident
	// Move moves detections (detection id -> incident id); MoveAll moves
	// every detection of an incident to another (from -> to).
	Move    map[string]string
	MoveAll map[string]string
	// Entries are appended to the incidents' timelines (in order).
	Entries []*model.IncidentEntry
}

// IncidentFilter selects incidents. Zero fields do not filter.
type IncidentFilter struct {
	Statuses []string
	Severity string
	Assignee string
	// UserID selects the incidents holding a detection about this user.
	UserID string
	// Before selects incidents numbered below it (paging, newest first).
	Before int64
	Limit  int // 0: 100; max 1000
}

// MaxIncidentMembers bounds the detections UpdateIncidents loads for one
// incident (the oldest ones).
const MaxIncidentMembers = 10000

// IncidentStore is the part of the store the incident service uses:
// tables incidents, incident_detections, incident_timeline and the one
// row of incident_counter, whose lock serialises every change of
// incidents across instances.
type IncidentStore interface {
	// CorrelateDetection records detection d in an incident, in one
	// transaction that holds the incidents' lock: it refuses a detection
	// id already recorded (ErrAlreadyExists, nothing happens), loads the
	// candidates (see IncidentChange.Candidates; at most 20), calls fn,
	// which sets d.IncidentID and changes or adds incidents, saves what
	// changed, inserts d, counts it and commits ctx's pending events
	// (WithEvents; the ids are "incident:ID" of every incident created or
	// changed). An error from fn rolls everything back and is returned.
	CorrelateDetection(ctx context.Context, d *model.IncidentDetection, since time.Time, fn func(*IncidentChange) error) (*IncidentChange, error)
	// UpdateIncidents changes incidents ids in one transaction that holds
	// the incidents' lock: it loads them (ErrNotFound naming the first
	// missing one) with their detections when detections is true, calls
	// fn, saves what fn changed (incidents, new incidents, moves, entries;
	// the detection counts follow the moves) and commits ctx's pending
	// events as CorrelateDetection does.
	UpdateIncidents(ctx context.Context, ids []string, detections bool, fn func(*IncidentChange) error) (*IncidentChange, error)
	GetIncident(ctx context.Context, id string) (*model.Incident, error)
	// GetIncidentByNumber returns incident number n.
	GetIncidentByNumber(ctx context.Context, n int64) (*model.Incident, error)
	// ListIncidents returns incidents, newest (highest number) first.
	ListIncidents(ctx context.Context, f IncidentFilter) ([]*model.Incident, error)
	// IncidentDetections returns an incident's detections, oldest first
	// (at most limit; 0: 100, max MaxIncidentMembers).
	IncidentDetections(ctx context.Context, incidentID string, limit int) ([]*model.IncidentDetection, error)
	// IncidentTimeline returns an incident's timeline, oldest first (at
	// most limit; 0: 100, max 1000).
	IncidentTimeline(ctx context.Context, incidentID string, limit int) ([]*model.IncidentEntry, error)
	// IncidentOfDetection returns the id of the incident holding
	// detection id (ErrNotFound: none).
	IncidentOfDetection(ctx context.Context, detectionID string) (string, error)
	// PurgeIncidents deletes the incidents closed (resolved, false
	// positive, merged) before `before`, with their detections, entities
	// and timelines, under the incidents' lock, and returns how many
	// incidents it deleted. Open incidents are kept however old.
	PurgeIncidents(ctx context.Context, before time.Time) (int64, error)
}
