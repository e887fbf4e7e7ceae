package incident

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/ward-idp/ward/internal/mitre"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/textclean"
)

// Bounds of what operators write.
const (
	MaxReason  = 200 // an event's reason holds 200 bytes
	MaxComment = 4000
	// MaxMerge bounds the incidents one merge takes in.
	MaxMerge = 50
)

// Incident is an incident as the admin API and the command line show it.
type Incident struct {
	ID           string    `json:"id"`
	Number       int64     `json:"number"`
	Name         string    `json:"name"` // INC-<number>
	Title        string    `json:"title"`
	Severity     string    `json:"severity"`
	Status       string    `json:"status"`
	StatusReason string    `json:"status_reason,omitempty"`
	Assignee     string    `json:"assignee,omitempty"`
	MergedInto   string    `json:"merged_into,omitempty"`
	Detections   int       `json:"detections"`
	Techniques   []string  `json:"techniques"`
	Tactics      []string  `json:"tactics"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	ClosedAt     time.Time `json:"closed_at,omitzero"`
}

// Detail is one incident with everything behind it.
type Detail struct {
	Incident
	// Techniques with their names and tactics (MITRE ATT&CK).
	Attack []mitre.Technique `json:"attack"`
	// TacticNames are the tactics of its techniques.
	TacticNames []mitre.Tactic `json:"tactic_names"`
	Entities    Entities       `json:"entities"`
	// TriggeringEvents are the ids of the risk.detected events of its
	// detections, oldest first.
	TriggeringEvents []string     `json:"triggering_events"`
	DetectionList    []*Detection `json:"detection_list"`
	Timeline         []*Entry     `json:"timeline"`
}

// Entities are the users, sessions, devices, clients and addresses the
// detections of an incident name, each once, in order of appearance.
type Entities struct {
	Users    []string `json:"users"`
	Sessions []string `json:"sessions"`
	Devices  []string `json:"devices"`
	Clients  []string `json:"clients"`
	IPs      []string `json:"ips"`
}

// Detection is one detection of an incident.
type Detection struct {
	ID         string    `json:"id"`
	EventID    string    `json:"event_id"`
	Type       string    `json:"type"`
	Severity   string    `json:"severity"`
	Confidence float64   `json:"confidence"`
	Technique  string    `json:"technique,omitempty"`
	UserID     string    `json:"user_id,omitempty"`
	SessionID  string    `json:"session_id,omitempty"`
	DeviceID   string    `json:"device_id,omitempty"`
	ClientID   string    `json:"client_id,omitempty"`
	IP         string    `json:"ip,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Source     string    `json:"source,omitempty"`
	DetectedAt time.Time `json:"detected_at"`
}

// Entry is one line of the timeline.
type Entry struct {
	Seq   int64             `json:"seq"`
	At    time.Time         `json:"at"`
	Kind  string            `json:"kind"`
	Actor string            `json:"actor,omitempty"`
	Text  string            `json:"text,omitempty"`
	Data  map[string]string `json:"data,omitempty"`
}

// Name is the short name of incident number n (INC-7).
func Name(n int64) string { return "INC-" + strconv.FormatInt(n, 10) }

func view(in *model.Incident) *Incident {
	v := &Incident{ID: in.ID, Number: in.Number, Name: Name(in.Number), Title: in.Title, Severity: in.Severity,
		Status: in.Status, StatusReason: in.StatusReason, Assignee: in.Assignee, MergedInto: in.MergedInto,
		Detections: in.Detections, Techniques: orEmpty(in.Techniques), Tactics: []string{},
		FirstSeen: in.FirstSeen, LastSeen: in.LastSeen, CreatedAt: in.CreatedAt, UpdatedAt: in.UpdatedAt, ClosedAt: in.ClosedAt}
	for _, t := range mitre.TacticsOf(in.Techniques) {
		v.Tactics = append(v.Tactics, t.ID)
	}
	return v
}

func orEmpty(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// resolve finds an incident by id, by name (INC-7) or by number (7).
func (s *Service) resolve(ctx context.Context, ref string) (*model.Incident, error) {
	ref = strings.TrimSpace(ref)
	if !textclean.PrintableID(ref) {
		// No incident has such an id (and a NUL or invalid UTF-8 never
		// reaches the database).
		return nil, notFound("incident")
	}
	num := strings.TrimPrefix(strings.TrimPrefix(ref, "INC-"), "inc-")
	if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > 0 && len(num) < 19 {
		in, err := s.o.Store.GetIncidentByNumber(ctx, n)
		if err == nil || !errors.Is(err, store.ErrNotFound) {
			return in, err
		}
	}
	in, err := s.o.Store.GetIncident(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("incident " + ref)
	}
	return in, err
}

// Filter selects incidents for List.
type Filter struct {
	Statuses []string // new, active, resolved, false_positive; "open": new and active
	Severity string
	Assignee string
	UserID   string
	Before   int64 // numbers below this (paging)
	Limit    int   // 0: 100; max 1000
}

// List returns incidents, newest first.
func (s *Service) List(ctx context.Context, f Filter) ([]*Incident, error) {
	var statuses []string
	for _, st := range f.Statuses {
		switch st {
		case "open":
			statuses = append(statuses, model.IncidentNew, model.IncidentActive)
		case model.IncidentNew, model.IncidentActive, model.IncidentResolved, model.IncidentFalsePositive:
			statuses = append(statuses, st)
		default:
			return nil, invalid("status %q: want new, active, resolved, false_positive or open", textclean.Clip(st, 32))
		}
	}
	if f.Severity != "" && f.Severity != model.RiskLow && f.Severity != model.RiskMedium && f.Severity != model.RiskHigh {
		return nil, invalid("severity %q: want low, medium or high", textclean.Clip(f.Severity, 16))
	}
	if f.Limit < 0 || f.Limit > 1000 {
		return nil, invalid("limit must be 1 to 1000")
	}
	list, err := s.o.Store.ListIncidents(ctx, store.IncidentFilter{Statuses: statuses, Severity: f.Severity,
		Assignee: f.Assignee, UserID: f.UserID, Before: f.Before, Limit: f.Limit})
	if err != nil {
		return nil, err
	}
	out := make([]*Incident, len(list))
	for i, in := range list {
		out[i] = view(in)
	}
	return out, nil
}

// Get returns an incident (by id, name or number) with its detections,
// entities, techniques, triggering events and timeline.
func (s *Service) Get(ctx context.Context, ref string) (*Detail, error) {
	in, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	dets, err := s.o.Store.IncidentDetections(ctx, in.ID, store.MaxIncidentMembers)
	if err != nil {
		return nil, err
	}
	tl, err := s.o.Store.IncidentTimeline(ctx, in.ID, 1000)
	if err != nil {
		return nil, err
	}
	d := &Detail{Incident: *view(in), Attack: []mitre.Technique{}, TacticNames: mitre.TacticsOf(in.Techniques),
		Entities: entities(dets), TriggeringEvents: []string{}, DetectionList: []*Detection{}, Timeline: []*Entry{}}
	if d.TacticNames == nil {
		d.TacticNames = []mitre.Tactic{}
	}
	for _, t := range in.Techniques {
		tech, _ := mitre.Lookup(t)
		d.Attack = append(d.Attack, tech)
	}
	for _, x := range dets {
		d.TriggeringEvents = append(d.TriggeringEvents, x.EventID)
		d.DetectionList = append(d.DetectionList, &Detection{ID: x.DetectionID, EventID: x.EventID, Type: x.Type,
			Severity: x.Severity, Confidence: x.Confidence, Technique: x.Technique, UserID: x.UserID, SessionID: x.SessionID,
			DeviceID: x.DeviceID, ClientID: x.ClientID, IP: x.IP, Detail: x.Detail, Source: x.Source, DetectedAt: x.DetectedAt})
	}
	for _, e := range tl {
		d.Timeline = append(d.Timeline, &Entry{Seq: e.Seq, At: e.At, Kind: e.Kind, Actor: e.Actor, Text: e.Text, Data: e.Data})
	}
	return d, nil
}

func entities(dets []*model.IncidentDetection) Entities {
	e := Entities{Users: []string{}, Sessions: []string{}, Devices: []string{}, Clients: []string{}, IPs: []string{}}
	add := func(list *[]string, v string) {
		if v != "" && !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	for _, d := range dets {
		add(&e.Users, d.UserID)
		add(&e.Sessions, d.SessionID)
		add(&e.Devices, d.DeviceID)
		add(&e.Clients, d.ClientID)
		add(&e.IPs, d.IP)
	}
	return e
}

// change runs one UpdateIncidents on the incidents refs name (resolved
// first, outside the transaction: ids are stable) and publishes the
// events fn adds once the change committed.
func (s *Service) change(ctx context.Context, refs []string, members bool,
	fn func(c *store.IncidentChange, ids []string, evs *lazyEvents) error) (*store.IncidentChange, error) {
	ids := make([]string, len(refs))
	for i, r := range refs {
		in, err := s.resolve(ctx, r)
		if err != nil {
			return nil, err
		}
		ids[i] = in.ID
	}
	var evs lazyEvents
	ectx := s.events.PendingEvents(ctx, evs.build)
	c, err := s.o.Store.UpdateIncidents(ectx, ids, members, func(c *store.IncidentChange) error {
		evs.reset() // fn may run again: start afresh
		return fn(c, ids, &evs)
	})
	if errors.Is(err, store.ErrNotFound) && !errors.Is(err, ErrNotFound) {
		return nil, notFound("incident")
	}
	if err != nil {
		return nil, err
	}
	return c, s.emitAll(ectx, evs.built)
}

// activate moves a new incident to active: an operator works on it.
func activate(in *model.Incident) {
	if in.Status == model.IncidentNew {
		in.Status = model.IncidentActive
	}
}

func notMerged(in *model.Incident) error {
	if in.MergedInto != "" {
		return conflict("%s was merged into %s", Name(in.Number), in.MergedInto)
	}
	return nil
}

// Assign assigns an incident to a user (assignee "" unassigns). The
// assignee must be a user Ward knows.
func (s *Service) Assign(ctx context.Context, actor, ref, assignee string) (*Incident, error) {
	assignee = strings.TrimSpace(assignee)
	if assignee != "" {
		if s.o.Users == nil {
			return nil, invalid("assignees cannot be checked: no user directory")
		}
		if !textclean.PrintableID(assignee) {
			return nil, invalid("assignee: not a user id")
		}
		if _, err := s.o.Users.GetUser(ctx, assignee); err != nil {
			if isNotFound(err) {
				return nil, invalid("assignee %s: no such user", assignee)
			}
			return nil, err
		}
	}
	now := s.o.Now()
	var out *model.Incident
	_, err := s.change(ctx, []string{ref}, false, func(c *store.IncidentChange, ids []string, evs *lazyEvents) error {
		in := c.Incidents[ids[0]]
		if err := notMerged(in); err != nil {
			return err
		}
		prev := in.Assignee
		if prev == assignee {
			out = in
			return nil
		}
		in.Assignee, in.UpdatedAt = assignee, now
		activate(in)
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryAssigned, Actor: actor,
			Data: map[string]string{"assignee": assignee, "previous_assignee": prev}})
		evs.add(func() *model.Event {
			return incidentEvent(model.EventIncidentAssigned, actor, in, nil, map[string]string{"previous_assignee": prev})
		})
		out = in
		return nil
	})
	if err != nil {
		return nil, err
	}
	return view(out), nil
}

// Comment adds an operator's comment to an incident's timeline.
func (s *Service) Comment(ctx context.Context, actor, ref, text string) (*Entry, error) {
	text = cleanComment(text)
	if text == "" {
		return nil, invalid("the comment is empty")
	}
	if len(text) > MaxComment {
		return nil, invalid("the comment is longer than %d bytes", MaxComment)
	}
	now := s.o.Now()
	var entry *model.IncidentEntry
	_, err := s.change(ctx, []string{ref}, false, func(c *store.IncidentChange, ids []string, evs *lazyEvents) error {
		in := c.Incidents[ids[0]]
		in.UpdatedAt = now
		activate(in)
		entry = &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryComment, Actor: actor, Text: text}
		c.Entries = append(c.Entries, entry)
		evs.add(func() *model.Event {
			return incidentEvent(model.EventIncidentCommented, actor, in, nil, map[string]string{"comment": textclean.Clean(text, 1000)})
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Entry{Seq: entry.Seq, At: entry.At, Kind: entry.Kind, Actor: entry.Actor, Text: entry.Text}, nil
}

// cleanComment keeps line breaks and tabs, replaces other control
// characters and invalid UTF-8 with spaces.
func cleanComment(v string) string {
	var b strings.Builder
	for _, r := range v {
		switch {
		case r == '\n' || r == '\t':
		case r == 0xFFFD || r < 0x20 || (r >= 0x7f && r < 0xa0):
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// SetStatus changes an incident's status: active (taking it up, or
// reopening a closed incident), resolved or false_positive. Closing and
// reopening need a reason.
func (s *Service) SetStatus(ctx context.Context, actor, ref, status, reason string) (*Incident, error) {
	reason = textclean.Clean(reason, MaxReason+1)
	if len(reason) > MaxReason {
		return nil, invalid("the reason is longer than %d bytes", MaxReason)
	}
	switch status {
	case model.IncidentActive, model.IncidentResolved, model.IncidentFalsePositive:
	case model.IncidentNew:
		return nil, invalid("an incident cannot be set back to new")
	default:
		return nil, invalid("status %q: want active, resolved or false_positive", textclean.Clip(status, 32))
	}
	now := s.o.Now()
	var out *model.Incident
	_, err := s.change(ctx, []string{ref}, false, func(c *store.IncidentChange, ids []string, evs *lazyEvents) error {
		in := c.Incidents[ids[0]]
		if err := notMerged(in); err != nil {
			return err
		}
		out = in
		prev := in.Status
		closing := status != model.IncidentActive
		if (closing || !model.IncidentOpen(prev)) && reason == "" {
			return ErrReasonRequired
		}
		if prev == status {
			return nil
		}
		in.Status, in.StatusReason, in.UpdatedAt = status, reason, now
		if closing {
			in.ClosedAt = now
		} else {
			in.ClosedAt = time.Time{}
		}
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryStatus, Actor: actor,
			Text: reason, Data: map[string]string{"status": status, "previous_status": prev}})
		evs.add(func() *model.Event {
			ev := incidentEvent(model.EventIncidentStatusChanged, actor, in, nil, map[string]string{"previous_status": prev})
			ev.Reason = reason
			return ev
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return view(out), nil
}

// Merge merges incidents sources into target: their detections move to
// target, which takes their severity, techniques and times; each source
// is resolved with "merged into" and keeps its timeline. The target must
// be open; no incident may be merged already.
func (s *Service) Merge(ctx context.Context, actor, target string, sources []string, reason string) (*Incident, error) {
	reason = textclean.Clean(reason, MaxReason)
	if len(sources) == 0 || len(sources) > MaxMerge {
		return nil, invalid("name 1 to %d incidents to merge", MaxMerge)
	}
	now := s.o.Now()
	var out *model.Incident
	_, err := s.change(ctx, append([]string{target}, sources...), false, func(c *store.IncidentChange, ids []string, evs *lazyEvents) error {
		t := c.Incidents[ids[0]]
		if err := notMerged(t); err != nil {
			return err
		}
		if !model.IncidentOpen(t.Status) {
			return conflict("%s is %s: reopen it before merging into it", Name(t.Number), t.Status)
		}
		c.MoveAll = map[string]string{}
		var merged []string
		total := t.Detections
		for _, id := range ids[1:] {
			src := c.Incidents[id]
			if id == t.ID {
				return conflict("an incident cannot be merged into itself")
			}
			if _, dup := c.MoveAll[id]; dup {
				continue
			}
			if err := notMerged(src); err != nil {
				return err
			}
			c.MoveAll[id] = t.ID
			merged = append(merged, id)
			total += src.Detections
			prev := src.Status
			src.MergedInto, src.Status, src.StatusReason, src.UpdatedAt = t.ID, model.IncidentResolved, "merged into "+Name(t.Number), now
			if src.ClosedAt.IsZero() {
				src.ClosedAt = now
			}
			if model.RiskRank(src.Severity) > model.RiskRank(t.Severity) {
				t.Severity = src.Severity
			}
			if src.FirstSeen.Before(t.FirstSeen) {
				t.FirstSeen = src.FirstSeen
			}
			if src.LastSeen.After(t.LastSeen) {
				t.LastSeen = src.LastSeen
			}
			for _, tech := range src.Techniques {
				if !slices.Contains(t.Techniques, tech) && len(t.Techniques) < maxTechniques {
					t.Techniques = append(slices.Clone(t.Techniques), tech)
				}
			}
			c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: id, At: now, Kind: model.IncidentEntryMerged, Actor: actor,
				Text: reason, Data: map[string]string{"merged_into": t.ID, "previous_status": prev}})
			srcDetections := src.Detections
			evs.add(func() *model.Event {
				src.Detections = 0
				ev := incidentEvent(model.EventIncidentStatusChanged, actor, src, nil,
					map[string]string{"previous_status": prev, "moved_detections": strconv.Itoa(srcDetections)})
				ev.Reason = src.StatusReason
				return ev
			})
		}
		t.UpdatedAt = now
		activate(t)
		t.Detections = total
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: t.ID, At: now, Kind: model.IncidentEntryMerged, Actor: actor,
			Text: reason, Data: map[string]string{"merged": strings.Join(merged, " ")}})
		evs.add(func() *model.Event {
			ev := incidentEvent(model.EventIncidentMerged, actor, t, nil, map[string]string{"merged": strings.Join(merged, " ")})
			ev.Reason = reason
			return ev
		})
		out = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return view(out), nil
}

// Split moves detections of an incident to a new incident (status new,
// the same assignee) and recomputes both: severity, techniques, times. At
// least one detection must stay.
func (s *Service) Split(ctx context.Context, actor, ref string, detections []string, reason string) (*Incident, error) {
	reason = textclean.Clean(reason, MaxReason)
	if len(detections) == 0 || len(detections) > store.MaxIncidentMembers {
		return nil, invalid("name the detections to split off")
	}
	now := s.o.Now()
	newID := uuid.NewString()
	var out *model.Incident
	_, err := s.change(ctx, []string{ref}, true, func(c *store.IncidentChange, ids []string, evs *lazyEvents) error {
		in := c.Incidents[ids[0]]
		if err := notMerged(in); err != nil {
			return err
		}
		members := c.Members[in.ID]
		want := map[string]bool{}
		for _, d := range detections {
			want[d] = true
		}
		var stay, move []*model.IncidentDetection
		for _, d := range members {
			if want[d.DetectionID] {
				move = append(move, d)
				delete(want, d.DetectionID)
			} else {
				stay = append(stay, d)
			}
		}
		if len(want) > 0 {
			missing := make([]string, 0, len(want))
			for d := range want {
				missing = append(missing, textclean.Clip(d, maxIDLen))
			}
			sort.Strings(missing)
			return invalid("not detections of %s: %s", Name(in.Number), strings.Join(missing[:min(len(missing), 5)], " "))
		}
		if len(stay) == 0 {
			return conflict("splitting off every detection leaves %s empty", Name(in.Number))
		}
		nw := &model.Incident{ID: newID, Title: title(move[0]), Status: model.IncidentNew, Assignee: in.Assignee,
			CreatedAt: now, UpdatedAt: now}
		recompute(nw, move)
		recompute(in, stay)
		in.UpdatedAt = now
		activate(in)
		c.New = append(c.New, nw)
		c.Move = map[string]string{}
		var moved []string
		for _, d := range move {
			c.Move[d.DetectionID] = nw.ID
			moved = append(moved, d.DetectionID)
		}
		list := joinCapped(moved)
		c.Entries = append(c.Entries,
			&model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntrySplit, Actor: actor, Text: reason,
				Data: map[string]string{"split_into": nw.ID, "detections": list}},
			&model.IncidentEntry{IncidentID: nw.ID, At: now, Kind: model.IncidentEntryCreated, Actor: actor, Text: reason,
				Data: map[string]string{"split_from": in.ID, "detections": list}})
		evs.add(func() *model.Event {
			ev := incidentEvent(model.EventIncidentSplit, actor, in, nil, map[string]string{"split_into": nw.ID,
				"split_into_number": strconv.FormatInt(nw.Number, 10), "moved_detections": list})
			ev.Reason = reason
			return ev
		})
		evs.add(func() *model.Event {
			ev := incidentEvent(model.EventIncidentCreated, actor, nw, nil, map[string]string{"split_from": in.ID})
			ev.Reason = "split"
			return ev
		})
		out = nw
		return nil
	})
	if err != nil {
		return nil, err
	}
	return view(out), nil
}

// recompute sets in's severity, techniques, times and count from dets
// (not empty).
func recompute(in *model.Incident, dets []*model.IncidentDetection) {
	in.Severity, in.Techniques, in.Detections = model.RiskLow, nil, len(dets)
	in.FirstSeen, in.LastSeen = dets[0].DetectedAt, dets[0].DetectedAt
	for _, d := range dets {
		join(in, d, in.UpdatedAt)
	}
}

// joinCapped joins ids with spaces, at most 50 of them (event data stays
// bounded; the timeline and the store have them all).
func joinCapped(ids []string) string {
	if len(ids) > 50 {
		return strings.Join(ids[:50], " ") + " …"
	}
	return strings.Join(ids, " ")
}

func isNotFound(err error) bool {
	return errors.Is(err, store.ErrNotFound)
}
