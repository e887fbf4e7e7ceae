package risk

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// UserLevel is a user at risk.
type UserLevel struct {
	UserID    string    `json:"user_id"`
	Username  string    `json:"username"`
	Level     string    `json:"level"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SessionLevel is a session at risk.
type SessionLevel struct {
	SessionID string    `json:"session_id"`
	UserID    string    `json:"user_id"`
	Level     string    `json:"level"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Listing is what List returns.
type Listing struct {
	Users    []UserLevel    `json:"users"`
	Sessions []SessionLevel `json:"sessions"`
}

// List returns the users and the sessions in use whose level is one of
// levels (empty: low, medium, high), highest first.
func (s *Service) List(ctx context.Context, levels []string, limit int) (*Listing, error) {
	for _, l := range levels {
		if !ValidLevel(l) {
			return nil, ErrInvalidLevel
		}
	}
	f := store.RiskLevelFilter{Levels: levels, Limit: limit}
	us, err := s.o.Store.ListRiskyUsers(ctx, f)
	if err != nil {
		return nil, err
	}
	ss, err := s.o.Store.ListRiskySessions(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &Listing{Users: []UserLevel{}, Sessions: []SessionLevel{}}
	for _, u := range us {
		out.Users = append(out.Users, UserLevel{UserID: u.ID, Username: u.Username, Level: orNone(u.RiskLevel), UpdatedAt: u.RiskUpdatedAt})
	}
	now := s.o.Now()
	for _, sr := range ss {
		// A revoked or ended session is no longer at risk of anything.
		se, err := s.o.Sessions.Get(ctx, sr.SessionID)
		if err != nil || !se.Active(now) {
			continue
		}
		out.Sessions = append(out.Sessions, SessionLevel{SessionID: sr.SessionID, UserID: sr.UserID, Level: sr.Level, UpdatedAt: sr.UpdatedAt})
	}
	return out, nil
}

// Explanation is why a user or a session has its level: the detections
// (the active ones count), the history of the level and the events of the
// audit log the detections rest on.
type Explanation struct {
	UserID    string `json:"user_id"`
	Username  string `json:"username"`
	SessionID string `json:"session_id,omitempty"`
	// Level is the session's for a session, else the user's.
	Level     string     `json:"level"`
	UserLevel string     `json:"user_level"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	// Sessions are the user's sessions with a level (user only).
	Sessions []SessionLevel `json:"sessions,omitempty"`
	// Detections, newest first.
	Detections []Detection `json:"detections"`
	// History of the level, newest first.
	History []Change `json:"history"`
	// Events are the risk.detected events and the evidence they cite, in
	// the audit log's order; Missing the ids no longer in it.
	Events  []*store.StoredEvent `json:"events"`
	Missing []string             `json:"missing_events,omitempty"`
}

// Detection is a detection as explain, the admin API and the command line
// show it.
type Detection struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"`
	UserID      string     `json:"user_id"`
	SessionID   string     `json:"session_id,omitempty"`
	ClientID    string     `json:"client_id,omitempty"`
	DeviceID    string     `json:"device_id,omitempty"`
	IP          string     `json:"ip,omitempty"`
	Severity    string     `json:"severity"`
	Confidence  float64    `json:"confidence"`
	Technique   string     `json:"technique,omitempty"`
	Evidence    []string   `json:"evidence"`
	Detail      string     `json:"detail,omitempty"`
	Source      string     `json:"source"`
	EventID     string     `json:"event_id,omitempty"`
	DetectedAt  time.Time  `json:"detected_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	State       string     `json:"state"`
	StateReason string     `json:"state_reason,omitempty"`
	StateActor  string     `json:"state_actor,omitempty"`
	StateAt     *time.Time `json:"state_at,omitempty"`
	// Weight is the level it contributes while active.
	Weight string `json:"weight"`
}

// Change is one change of a level.
type Change struct {
	Subject     string    `json:"subject"`
	SubjectID   string    `json:"subject_id"`
	Level       string    `json:"level"`
	Previous    string    `json:"previous"`
	Reason      string    `json:"reason,omitempty"`
	Actor       string    `json:"actor,omitempty"`
	DetectionID string    `json:"detection_id,omitempty"`
	At          time.Time `json:"at"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// View returns the detection as shown.
func (s *Service) View(d *model.RiskDetection) Detection {
	ev := d.Evidence
	if ev == nil {
		ev = []string{}
	}
	return Detection{ID: d.ID, Type: d.Type, UserID: d.UserID, SessionID: d.SessionID, ClientID: d.ClientID, DeviceID: d.DeviceID,
		IP: d.IP, Severity: d.Severity, Confidence: d.Confidence, Technique: d.Technique, Evidence: ev, Detail: d.Detail,
		Source: d.Source, EventID: d.EventID, DetectedAt: d.DetectedAt, ExpiresAt: optTime(d.ExpiresAt), State: d.State,
		StateReason: d.StateReason, StateActor: d.StateActor, StateAt: optTime(d.StateAt),
		Weight: model.RiskLevel(s.o.Rules.Weight(d))}
}

// maxExplainEvents bounds the audit log read for the evidence.
const maxExplainEvents = 1000

// Explain explains a user's level (sessionID "") or a session's.
// ErrNotFound when the user or session does not exist.
func (s *Service) Explain(ctx context.Context, userID, sessionID string) (*Explanation, error) {
	if sessionID != "" {
		se, err := s.o.Sessions.Get(ctx, sessionID)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, notFound("session " + sessionID)
			}
			return nil, err
		}
		userID = se.UserID
	}
	u, err := s.o.Store.GetUser(ctx, userID)
	if err != nil {
		return nil, s.wrapUser(err, userID)
	}
	x := &Explanation{UserID: u.ID, Username: u.Username, SessionID: sessionID, UserLevel: orNone(u.RiskLevel)}
	x.Level = x.UserLevel
	if !u.RiskUpdatedAt.IsZero() {
		t := u.RiskUpdatedAt
		x.UpdatedAt = &t
	}
	if sessionID != "" {
		x.Level, x.UpdatedAt = model.RiskNone, nil
		if sr, err := s.o.Store.GetSessionRisk(ctx, sessionID); err == nil {
			x.Level, x.UpdatedAt = sr.Level, &sr.UpdatedAt
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	} else {
		ss, err := s.o.Store.ListRiskySessions(ctx, store.RiskLevelFilter{Levels: []string{model.RiskLow, model.RiskMedium, model.RiskHigh}, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, sr := range ss {
			if sr.UserID == u.ID {
				x.Sessions = append(x.Sessions, SessionLevel{SessionID: sr.SessionID, UserID: sr.UserID, Level: sr.Level, UpdatedAt: sr.UpdatedAt})
			}
		}
	}
	ds, err := s.o.Store.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: u.ID, SessionID: sessionID, Limit: 100})
	if err != nil {
		return nil, err
	}
	x.Detections = make([]Detection, 0, len(ds))
	for _, d := range ds {
		x.Detections = append(x.Detections, s.View(d))
	}
	hist, err := s.o.Store.RiskHistory(ctx, u.ID, sessionID, 100)
	if err != nil {
		return nil, err
	}
	x.History = make([]Change, 0, len(hist))
	for _, c := range hist {
		x.History = append(x.History, Change{Subject: c.Subject, SubjectID: c.SubjectID, Level: c.Level, Previous: c.Previous,
			Reason: c.Reason, Actor: c.Actor, DetectionID: c.DetectionID, At: c.At})
	}
	// The events: each detection's own risk.detected and its evidence, as
	// the audit log has them (evidence that aged out is named as missing).
	var want []string
	for _, d := range x.Detections {
		if d.EventID != "" {
			want = append(want, d.EventID)
		}
		want = append(want, d.Evidence...)
	}
	evs, err := s.o.Store.ListEvents(ctx, store.EventFilter{UserID: u.ID, Limit: maxExplainEvents})
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*store.StoredEvent, len(evs))
	for _, e := range evs {
		byID[e.ID] = e
	}
	seen := map[string]bool{}
	x.Events = []*store.StoredEvent{}
	for _, id := range want {
		if seen[id] {
			continue
		}
		seen[id] = true
		if e := byID[id]; e != nil {
			x.Events = append(x.Events, e)
		} else {
			x.Missing = append(x.Missing, id)
		}
	}
	slices.SortFunc(x.Events, func(a, b *store.StoredEvent) int { return int(a.Seq - b.Seq) })
	return x, nil
}
