package incident

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/ward-idp/ward/internal/mitre"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/textclean"
)

// Bounds of what a risk.detected event may carry into an incident.
const (
	maxIDLen       = textclean.MaxID
	maxIPLen       = 64
	maxDetailBytes = 512
	// maxTechniques bounds the techniques an incident lists.
	maxTechniques = 32
	// maxFuture is how far in the future a detection's time may be; a
	// later time is taken as now (a detector's clock, or a hostile event,
	// must not keep an incident "recent" for ever).
	maxFuture = 5 * time.Minute
)

var typePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)

// errRefused marks an event the consumer refuses (and acknowledges).
var errRefused = errors.New("incident: refused risk.detected")

func refused(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errRefused, fmt.Sprintf(format, a...))
}

// parseDetection makes the detection a risk.detected event describes, or
// says why it refuses the event. The detection id is the risk service's
// (data.detection_id, else "event:" and the event id), so an incident's
// detections and the risk service's are the same ones. Free text is cut,
// an unusable technique is replaced by the one assumed for the type.
func parseDetection(e *model.Event, now time.Time) (*model.IncidentDetection, error) {
	g := func(k string) string { return e.Data[k] }
	d := &model.IncidentDetection{
		DetectionID: g(model.DataDetectionID), EventID: e.ID, Type: e.Reason, Severity: g(model.DataDetectionSeverity),
		UserID: e.UserID, SessionID: e.SessionID, DeviceID: e.DeviceID, ClientID: e.ClientID, IP: e.IP,
		Source: g(model.DataDetectionSource), DetectedAt: e.Time, AddedAt: now,
	}
	if d.DetectionID == "" {
		if !textclean.PrintableID(e.ID) {
			return nil, refused("no detection id and no usable event id")
		}
		d.DetectionID = "event:" + e.ID
	}
	if !textclean.PrintableID(d.DetectionID) || !textclean.PrintableID(d.EventID) {
		return nil, refused("detection or event id: not an id of at most %d printable characters", maxIDLen)
	}
	if !typePattern.MatchString(d.Type) {
		return nil, refused("detection type (reason) %q", textclean.Clip(d.Type, 64))
	}
	switch d.Severity {
	case model.RiskLow, model.RiskMedium, model.RiskHigh:
	default:
		return nil, refused("severity %q: want low, medium or high", textclean.Clip(d.Severity, 16))
	}
	for _, id := range []string{d.UserID, d.SessionID, d.ClientID, d.DeviceID} {
		if id != "" && !textclean.PrintableID(id) {
			return nil, refused("a subject id is not an id of at most %d printable characters", maxIDLen)
		}
	}
	if d.IP != "" && (len(d.IP) > maxIPLen || !textclean.PrintableID(d.IP)) {
		d.IP = ""
	}
	if d.UserID == "" && d.SessionID == "" && d.DeviceID == "" && d.IP == "" {
		return nil, refused("the detection names no user, session, device or address")
	}
	if c, err := strconv.ParseFloat(g(model.DataDetectionConfidence), 64); err == nil && c >= 0 && c <= 1 {
		d.Confidence = c
	}
	if len(d.Source) > 16 || !textclean.PrintableID(d.Source) {
		d.Source = ""
	}
	if t := g(model.DataDetectionTechnique); mitre.ValidID(t) {
		d.Technique = t
	} else {
		d.Technique = mitre.ByType[d.Type]
	}
	d.Detail = textclean.Clean(g(model.DataDetectionDetail), maxDetailBytes)
	if d.DetectedAt.IsZero() {
		return nil, refused("no time")
	}
	if d.DetectedAt.After(now.Add(maxFuture)) {
		d.DetectedAt = now
	}
	return d, nil
}

// HandleDetection correlates the detection of a risk.detected event into
// an incident (the durable consumer's handler). Events it refuses
// (malformed, hostile) are logged, counted and acknowledged: they never
// stop the consumer. A repeat (same detection id) changes nothing. An
// error means the event is to be delivered again.
func (s *Service) HandleDetection(ctx context.Context, e *model.Event) error {
	if e.Type != model.EventRiskDetected {
		return nil
	}
	now := s.o.Now()
	d, err := parseDetection(e, now)
	if err != nil {
		s.stats.refused.Add(1)
		s.log.WarnContext(ctx, "risk.detected refused", "event_id", textclean.Clip(e.ID, maxIDLen), "err", err)
		return nil
	}
	_, err = s.Correlate(ctx, d)
	if errors.Is(err, store.ErrAlreadyExists) {
		s.stats.repeats.Add(1)
		return nil
	}
	return err
}

// Correlate records detection d in an incident by the correlation rules
// (docs/secops.md): it joins the open incident seen most recently that
// holds a detection with the same user, session, device or IP within the
// window; else it reopens the incident resolved most recently, within the
// window, that holds one; else it opens a new incident. The decision and
// its write are one transaction under the incidents' lock. It returns the
// incident's id; store.ErrAlreadyExists for a detection recorded before.
func (s *Service) Correlate(ctx context.Context, d *model.IncidentDetection) (string, error) {
	now := s.o.Now()
	if d.AddedAt.IsZero() {
		d.AddedAt = now
	}
	var (
		evs     lazyEvents
		outcome string
	)
	ectx := s.events.PendingEvents(ctx, evs.build)
	newID := uuid.NewString()
	_, err := s.o.Store.CorrelateDetection(ectx, d, d.DetectedAt.Add(-s.o.Window), func(c *store.IncidentChange) error {
		evs.reset()
		outcome = "" // fn may run again: start afresh
		in, reopen := s.choose(c)
		switch {
		case in == nil:
			outcome = "created"
			in = &model.Incident{ID: newID, Title: title(d), Severity: d.Severity, Status: model.IncidentNew,
				FirstSeen: d.DetectedAt, LastSeen: d.DetectedAt, CreatedAt: now, UpdatedAt: now}
			if d.Technique != "" {
				in.Techniques = []string{d.Technique}
			}
			c.New = append(c.New, in)
			c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryCreated,
				Actor: ActorSystem, Text: "opened by detection " + d.Type, Data: detectionData(d)})
			d.IncidentID = in.ID
			in.Detections = 1
			evs.add(func() *model.Event { return incidentEvent(model.EventIncidentCreated, ActorSystem, in, d, nil) })
			return nil
		case reopen:
			outcome = "reopened"
			prev := in.Status
			in.Status, in.StatusReason, in.ClosedAt = model.IncidentActive, "reopened: new detection "+d.Type+" within the window", time.Time{}
			c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryStatus,
				Actor: ActorSystem, Text: in.StatusReason, Data: map[string]string{"status": in.Status, "previous_status": prev}})
			evs.add(func() *model.Event {
				ev := incidentEvent(model.EventIncidentStatusChanged, ActorSystem, in, d, map[string]string{"previous_status": prev})
				ev.Reason = "reopened"
				return ev
			})
		default:
			outcome = "joined"
		}
		prevSeverity := in.Severity
		join(in, d, now)
		d.IncidentID = in.ID
		in.Detections++ // the store counts it too; this is the events' view
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryDetection,
			Actor: ActorSystem, Text: "detection " + d.Type, Data: detectionData(d)})
		evs.add(func() *model.Event {
			return incidentEvent(model.EventIncidentUpdated, ActorSystem, in, d, map[string]string{"previous_severity": prevSeverity})
		})
		return nil
	})
	if err != nil {
		return "", err
	}
	switch outcome {
	case "created":
		s.stats.created.Add(1)
	case "reopened":
		s.stats.reopened.Add(1)
	default:
		s.stats.joined.Add(1)
	}
	return d.IncidentID, s.emitAll(ectx, evs.built)
}

// choose applies the correlation rules to the candidates (most recently
// seen first): the first open one seen within the window, else the first
// resolved one closed within the window (reopen). A false positive is
// never reopened: a new detection about its entities opens a new
// incident.
func (s *Service) choose(c *store.IncidentChange) (in *model.Incident, reopen bool) {
	d := c.Detection
	start := d.DetectedAt.Add(-s.o.Window)
	for _, id := range c.Candidates {
		if cand := c.Incidents[id]; model.IncidentOpen(cand.Status) && !cand.LastSeen.Before(start) {
			return cand, false
		}
	}
	var best *model.Incident
	for _, id := range c.Candidates {
		cand := c.Incidents[id]
		if cand.Status != model.IncidentResolved || cand.ClosedAt.Before(start) || cand.ClosedAt.IsZero() {
			continue
		}
		if best == nil || cand.ClosedAt.After(best.ClosedAt) {
			best = cand
		}
	}
	return best, best != nil
}

// join adds d's severity, time and technique to in.
func join(in *model.Incident, d *model.IncidentDetection, now time.Time) {
	if model.RiskRank(d.Severity) > model.RiskRank(in.Severity) {
		in.Severity = d.Severity
	}
	if d.DetectedAt.Before(in.FirstSeen) {
		in.FirstSeen = d.DetectedAt
	}
	if d.DetectedAt.After(in.LastSeen) {
		in.LastSeen = d.DetectedAt
	}
	if d.Technique != "" && !slices.Contains(in.Techniques, d.Technique) && len(in.Techniques) < maxTechniques {
		in.Techniques = append(slices.Clone(in.Techniques), d.Technique)
	}
	in.UpdatedAt = now
}

// title names a new incident after its first detection.
func title(d *model.IncidentDetection) string {
	about := ""
	switch {
	case d.UserID != "":
		about = "user " + d.UserID
	case d.SessionID != "":
		about = "session " + d.SessionID
	case d.DeviceID != "":
		about = "device " + d.DeviceID
	default:
		about = "address " + d.IP
	}
	return d.Type + " (" + about + ")"
}

func detectionData(d *model.IncidentDetection) map[string]string {
	m := map[string]string{model.DataDetectionID: d.DetectionID, "event_id": d.EventID, "type": d.Type,
		model.DataDetectionSeverity: d.Severity}
	if d.Technique != "" {
		m[model.DataDetectionTechnique] = d.Technique
	}
	return m
}

// incidentEvent is an incident.* event describing in after a change;
// d (may be nil) is the detection behind it, extra adds data.
func incidentEvent(typ model.EventType, actor string, in *model.Incident, d *model.IncidentDetection, extra map[string]string) *model.Event {
	data := incidentData(in)
	for k, v := range extra {
		data[k] = v
	}
	e := &model.Event{Type: typ, Actor: actor, Outcome: model.OutcomeSuccess, Data: data}
	if d != nil {
		e.UserID, e.SessionID, e.DeviceID, e.ClientID, e.IP = d.UserID, d.SessionID, d.DeviceID, d.ClientID, d.IP
		data[model.DataDetectionID] = d.DetectionID
		data["detection_type"] = d.Type
		data["detection_event_id"] = d.EventID
	}
	return e
}

// incidentData is what every incident event says about the incident.
func incidentData(in *model.Incident) map[string]string {
	m := map[string]string{
		model.DataIncidentID:         in.ID,
		model.DataIncidentNumber:     strconv.FormatInt(in.Number, 10),
		model.DataIncidentTitle:      in.Title,
		model.DataIncidentSeverity:   in.Severity,
		model.DataIncidentStatus:     in.Status,
		model.DataIncidentDetections: strconv.Itoa(in.Detections),
		model.DataIncidentFirstSeen:  in.FirstSeen.UTC().Format(time.RFC3339Nano),
		model.DataIncidentLastSeen:   in.LastSeen.UTC().Format(time.RFC3339Nano),
	}
	if in.Assignee != "" {
		m[model.DataIncidentAssignee] = in.Assignee
	}
	if len(in.Techniques) > 0 {
		m[model.DataIncidentTechniques] = strings.Join(in.Techniques, " ")
		var ta []string
		for _, t := range mitre.TacticsOf(in.Techniques) {
			ta = append(ta, t.ID)
		}
		if len(ta) > 0 {
			m[model.DataIncidentTactics] = strings.Join(ta, " ")
		}
	}
	if in.StatusReason != "" {
		m["status_reason"] = in.StatusReason
	}
	if in.MergedInto != "" {
		m["merged_into"] = in.MergedInto
	}
	return m
}
