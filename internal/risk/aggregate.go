package risk

import (
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Rules are the aggregation's thresholds (docs/risk-response.md).
type Rules struct {
	// HighConfidence: a high-severity detection counts as high only with
	// at least this confidence; below it, as medium.
	HighConfidence float64
	// LowConfidence: a detection with less confidence counts one level
	// below its severity.
	LowConfidence float64
	// Escalate: this many active detections counting as medium make the
	// level high, and this many counting as low make it medium.
	Escalate int
}

// DefaultRules are the rules Ward uses.
var DefaultRules = Rules{HighConfidence: 0.7, LowConfidence: 0.3, Escalate: 3}

// Weight is the level one detection contributes on its own (rank 0..3).
// An administrator's detection counts at its severity.
func (r Rules) Weight(d *model.RiskDetection) int {
	rank := model.RiskRank(d.Severity)
	if rank <= 0 {
		return 0
	}
	if d.Source == model.DetectionSourceAdmin {
		return rank
	}
	if rank == 3 && d.Confidence < r.HighConfidence {
		rank = 2
	}
	if d.Confidence < r.LowConfidence {
		rank--
	}
	return max(rank, 0)
}

// Aggregate is the level the active detections ds make: the highest
// weight, raised to high by Escalate detections of medium weight and to
// medium by Escalate of low weight (several weak signals together are a
// strong one). Only active detections count.
func (r Rules) Aggregate(ds []*model.RiskDetection) string {
	var top, mediums, lows int
	for _, d := range ds {
		if d.State != model.DetectionActive {
			continue
		}
		w := r.Weight(d)
		top = max(top, w)
		switch w {
		case 2:
			mediums++
		case 1:
			lows++
		}
	}
	if r.Escalate > 0 {
		if mediums >= r.Escalate {
			top = max(top, 3)
		}
		if lows >= r.Escalate {
			top = max(top, 2)
		}
	}
	return model.RiskLevel(top)
}

// lifetime is how long a detection of weight w counts (0: until it is
// dismissed or remediated).
func (s *Service) lifetime(w int) time.Duration {
	switch w {
	case 0, 1:
		return s.o.LowLifetime
	case 2:
		return s.o.MediumLifetime
	}
	return 0
}

// levelChange is one level a recomputation changed.
type levelChange struct {
	subject, id, level, previous string
}

// recompute expires what outlived its lifetime at now and sets the
// levels of the user and of its sessions from the active detections. It
// only computes (it runs inside UpdateRisk's transaction) and returns
// the changes.
func (s *Service) recompute(st *store.RiskState, now time.Time) []levelChange {
	var active []*model.RiskDetection
	bySession := map[string][]*model.RiskDetection{}
	for _, d := range st.Active {
		if d.State == model.DetectionActive && !d.ExpiresAt.IsZero() && !d.ExpiresAt.After(now) {
			d.State, d.StateReason, d.StateActor, d.StateAt = model.DetectionExpired, "expired", ActorSystem, now
		}
		if d.State != model.DetectionActive {
			continue
		}
		active = append(active, d)
		if d.SessionID != "" {
			bySession[d.SessionID] = append(bySession[d.SessionID], d)
		}
	}
	var changes []levelChange
	if lvl := s.o.Rules.Aggregate(active); lvl != st.UserLevel {
		changes = append(changes, levelChange{model.RiskSubjectUser, st.UserID, lvl, st.UserLevel})
		st.UserLevel = lvl
	}
	for id := range bySession {
		if st.Sessions[id] == nil {
			st.Sessions[id] = &model.SessionRisk{SessionID: id, UserID: st.UserID, Level: model.RiskNone}
		}
	}
	for id, sr := range st.Sessions {
		prev := sr.Level
		if prev == "" {
			prev = model.RiskNone
		}
		if lvl := s.o.Rules.Aggregate(bySession[id]); lvl != prev {
			changes = append(changes, levelChange{model.RiskSubjectSession, id, lvl, prev})
			sr.Level = lvl
		}
	}
	return changes
}

// changeEvents are the events recording changes, by actor for reason.
// activity (zero if none) is the time of the activity of the detection
// that caused them: a user level it raised records it (DataActivityAt),
// the bound its response and resources' revocations use.
func changeEvents(userID, actor, reason, detectionID string, activity time.Time, changes []levelChange) []*model.Event {
	evs := make([]*model.Event, 0, len(changes))
	for _, c := range changes {
		data := map[string]string{"level": c.level, "previous": c.previous}
		if detectionID != "" {
			data[model.DataDetectionID] = detectionID
		}
		if !activity.IsZero() && c.subject != model.RiskSubjectSession && model.RiskRank(c.level) > model.RiskRank(c.previous) {
			data[model.DataActivityAt] = activity.UTC().Format(time.RFC3339Nano)
		}
		e := &model.Event{Type: model.EventUserRiskChanged, Actor: actor, UserID: userID, Reason: reason, Data: data}
		if c.subject == model.RiskSubjectSession {
			e.Type, e.SessionID = model.EventSessionRiskChanged, c.id
		}
		evs = append(evs, e)
	}
	return evs
}
