package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func incDetection(id, user, session, device, ip string, d time.Duration) *model.IncidentDetection {
	return &model.IncidentDetection{
		DetectionID: id, EventID: "ev-" + id, Type: "token_replay_wrong_key", Severity: model.RiskHigh, Confidence: 0.9,
		Technique: "T1550.001", UserID: user, SessionID: session, DeviceID: device, ClientID: "c1", IP: ip,
		Detail: "refresh token presented with another key", Source: model.DetectionSourceOnline, DetectedAt: at(d), AddedAt: at(d + time.Second),
	}
}

func newIncident(id string, d time.Duration) *model.Incident {
	return &model.Incident{ID: id, Title: "Token replay", Severity: model.RiskHigh, Status: model.IncidentNew,
		Techniques: []string{"T1550.001"}, FirstSeen: at(d), LastSeen: at(d), CreatedAt: at(d), UpdatedAt: at(d)}
}

// joinOrCreate is the simplest correlation: the first candidate, else a
// new incident named id.
func joinOrCreate(id string, saw *[]string) func(c *store.IncidentChange) error {
	return func(c *store.IncidentChange) error {
		if saw != nil {
			*saw = append([]string(nil), c.Candidates...)
		}
		if len(c.Candidates) > 0 {
			in := c.Incidents[c.Candidates[0]]
			in.LastSeen = c.Detection.DetectedAt
			c.Detection.IncidentID = in.ID
			c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: c.Detection.AddedAt, Kind: model.IncidentEntryDetection,
				Actor: "system", Data: map[string]string{"detection_id": c.Detection.DetectionID}})
			return nil
		}
		in := newIncident(id, 0)
		in.FirstSeen, in.LastSeen = c.Detection.DetectedAt, c.Detection.DetectedAt
		c.New = append(c.New, in)
		c.Detection.IncidentID = id
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: id, At: c.Detection.AddedAt, Kind: model.IncidentEntryCreated, Actor: "system"})
		return nil
	}
}

func normIncident(in model.Incident) model.Incident {
	in.Techniques = nl(in.Techniques)
	in.FirstSeen, in.LastSeen, in.CreatedAt, in.UpdatedAt, in.ClosedAt = nt(in.FirstSeen), nt(in.LastSeen), nt(in.CreatedAt), nt(in.UpdatedAt), nt(in.ClosedAt)
	return in
}

// testIncidentRoundTrip: a detection creates an incident; every field of
// the incident, the detection and the timeline round-trips; a repeat of
// the detection id is ErrAlreadyExists and changes nothing; GetIncident,
// GetIncidentByNumber and IncidentOfDetection find it.
func testIncidentRoundTrip(t *testing.T, s store.Store) {
	d := incDetection("det-1", "u1", "s1", "dev1", "198.51.100.9", time.Minute)
	c, err := s.CorrelateDetection(ctx, d, at(-time.Hour), joinOrCreate("inc-1", nil))
	must(t, "CorrelateDetection", err)
	if len(c.New) != 1 || c.New[0].Number != 1 {
		t.Fatalf("new incidents %+v, want one numbered 1", c.New)
	}
	got, err := s.GetIncident(ctx, "inc-1")
	must(t, "GetIncident", err)
	want := *newIncident("inc-1", 0)
	want.Number, want.Detections, want.FirstSeen, want.LastSeen = 1, 1, d.DetectedAt, d.DetectedAt
	if g, w := normIncident(*got), normIncident(want); !reflect.DeepEqual(g, w) {
		t.Errorf("incident\n got %+v\nwant %+v", g, w)
	}
	byNum, err := s.GetIncidentByNumber(ctx, 1)
	must(t, "GetIncidentByNumber", err)
	if byNum.ID != "inc-1" {
		t.Errorf("GetIncidentByNumber(1) = %s", byNum.ID)
	}
	dets, err := s.IncidentDetections(ctx, "inc-1", 0)
	must(t, "IncidentDetections", err)
	wd := *d
	wd.IncidentID = "inc-1"
	wd.DetectedAt, wd.AddedAt = nt(wd.DetectedAt), nt(wd.AddedAt)
	if len(dets) != 1 {
		t.Fatalf("detections: %d", len(dets))
	}
	gd := *dets[0]
	gd.DetectedAt, gd.AddedAt = nt(gd.DetectedAt), nt(gd.AddedAt)
	if !reflect.DeepEqual(gd, wd) {
		t.Errorf("detection\n got %+v\nwant %+v", gd, wd)
	}
	if id, err := s.IncidentOfDetection(ctx, "det-1"); err != nil || id != "inc-1" {
		t.Errorf("IncidentOfDetection = %q, %v", id, err)
	}
	if _, err := s.IncidentOfDetection(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("IncidentOfDetection(missing): %v, want ErrNotFound", err)
	}
	// A repeat: refused, fn not called, nothing changes.
	called := false
	_, err = s.CorrelateDetection(ctx, incDetection("det-1", "u1", "s1", "dev1", "198.51.100.9", time.Minute), at(-time.Hour),
		func(*store.IncidentChange) error { called = true; return nil })
	if !errors.Is(err, store.ErrAlreadyExists) || called {
		t.Errorf("repeat: err %v, fn called %v; want ErrAlreadyExists before fn", err, called)
	}
	tl, err := s.IncidentTimeline(ctx, "inc-1", 0)
	must(t, "IncidentTimeline", err)
	if len(tl) != 1 || tl[0].Kind != model.IncidentEntryCreated || tl[0].Actor != "system" || tl[0].Seq == 0 ||
		!nt(tl[0].At).Equal(nt(d.AddedAt)) {
		t.Errorf("timeline %+v", tl)
	}
	for _, f := range []func() error{
		func() error { _, err := s.GetIncident(ctx, "missing"); return err },
		func() error { _, err := s.GetIncidentByNumber(ctx, 99); return err },
		func() error {
			_, err := s.UpdateIncidents(ctx, []string{"inc-1", "missing"}, false, func(*store.IncidentChange) error { return nil })
			return err
		},
	} {
		if err := f(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing incident: %v, want ErrNotFound", err)
		}
	}
}

// testIncidentCandidates: the candidates share a user, session, device or
// IP with the detection and were seen (or closed) since the window's
// start; merged incidents and unrelated ones are not candidates; the most
// recently seen comes first.
func testIncidentCandidates(t *testing.T, s store.Store) {
	mk := func(inc string, d *model.IncidentDetection) {
		t.Helper()
		_, err := s.CorrelateDetection(ctx, d, at(24*time.Hour), func(c *store.IncidentChange) error {
			in := newIncident(inc, 0)
			in.FirstSeen, in.LastSeen = d.DetectedAt, d.DetectedAt
			c.New, c.Detection.IncidentID = append(c.New, in), inc
			return nil
		})
		must(t, "CorrelateDetection "+inc, err)
	}
	mk("by-user", incDetection("a", "u1", "", "", "", time.Minute))
	mk("by-session", incDetection("b", "u9", "s1", "", "", 2*time.Minute))
	mk("by-device", incDetection("c", "u8", "", "dev1", "", 3*time.Minute))
	mk("by-ip", incDetection("d", "", "", "", "203.0.113.5", 4*time.Minute))
	mk("other", incDetection("e", "u2", "s2", "dev2", "203.0.113.6", 5*time.Minute))
	mk("old", incDetection("f", "u1", "", "", "", -48*time.Hour))
	// Created with the others, but seen 48 hours before them.
	mk("merged", incDetection("g", "u1", "", "", "", 6*time.Minute))
	_, err := s.UpdateIncidents(ctx, []string{"merged", "by-user"}, false, func(c *store.IncidentChange) error {
		c.Incidents["merged"].MergedInto = "by-user"
		c.Incidents["merged"].Status = model.IncidentResolved
		c.MoveAll = map[string]string{"merged": "by-user"}
		return nil
	})
	must(t, "UpdateIncidents merge", err)
	// A closed incident counts by its closing time.
	_, err = s.UpdateIncidents(ctx, []string{"old"}, false, func(c *store.IncidentChange) error {
		in := c.Incidents["old"]
		in.Status, in.StatusReason, in.ClosedAt = model.IncidentResolved, "done", at(-30*time.Hour)
		return nil
	})
	must(t, "UpdateIncidents close", err)

	var saw []string
	d := incDetection("x", "u1", "s1", "dev1", "203.0.113.5", 10*time.Minute)
	_, err = s.CorrelateDetection(ctx, d, at(0), joinOrCreate("unused", &saw))
	must(t, "CorrelateDetection", err)
	want := []string{"by-ip", "by-device", "by-session", "by-user"}
	if !reflect.DeepEqual(saw, want) {
		t.Errorf("candidates %v, want %v", saw, want)
	}
	// An earlier window's start takes in the incident closed since then
	// (by-ip now holds x, about u1 too).
	saw = nil
	_, err = s.CorrelateDetection(ctx, incDetection("y", "u1", "", "", "", 11*time.Minute), at(-31*time.Hour), joinOrCreate("y-inc", &saw))
	must(t, "CorrelateDetection", err)
	if want := []string{"by-ip", "by-user", "old"}; !reflect.DeepEqual(saw, want) {
		t.Errorf("candidates with an earlier window %v, want %v", saw, want)
	}
	// A detection naming nothing has no candidates.
	saw = []string{"sentinel"}
	_, err = s.CorrelateDetection(ctx, incDetection("z", "", "", "", "", 12*time.Minute), at(0), joinOrCreate("z-inc", &saw))
	must(t, "CorrelateDetection", err)
	if len(saw) != 0 {
		t.Errorf("candidates of an anonymous detection: %v", saw)
	}
	// Counts followed the merge: by-user holds a, g, x.
	in, err := s.GetIncident(ctx, "by-user")
	must(t, "GetIncident", err)
	if in.Detections != 2 {
		t.Errorf("by-user holds %d detections, want 2 (its own and the merged one's)", in.Detections)
	}
	if m, _ := s.GetIncident(ctx, "merged"); m.Detections != 0 {
		t.Errorf("merged incident still counts %d detections", m.Detections)
	}
}

// testIncidentUpdate: UpdateIncidents loads detections when asked, moves
// single detections to a new incident (split) with counts following,
// saves changed fields and the timeline, and rolls back on fn's error.
func testIncidentUpdate(t *testing.T, s store.Store) {
	for i := range 4 {
		_, err := s.CorrelateDetection(ctx, incDetection(fmt.Sprintf("d%d", i), "u1", "", "", "", time.Duration(i)*time.Minute),
			at(-time.Hour), joinOrCreate("inc-a", nil))
		must(t, "CorrelateDetection", err)
	}
	boom := errors.New("boom")
	_, err := s.UpdateIncidents(ctx, []string{"inc-a"}, true, func(c *store.IncidentChange) error {
		c.Incidents["inc-a"].Assignee = "nobody"
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: "inc-a", Kind: model.IncidentEntryComment, Text: "lost"})
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	c, err := s.UpdateIncidents(ctx, []string{"inc-a"}, true, func(c *store.IncidentChange) error {
		if n := len(c.Members["inc-a"]); n != 4 {
			return fmt.Errorf("members: %d", n)
		}
		if c.Members["inc-a"][0].DetectionID != "d0" {
			return fmt.Errorf("members not oldest first: %s", c.Members["inc-a"][0].DetectionID)
		}
		a := c.Incidents["inc-a"]
		a.Assignee, a.Status, a.UpdatedAt = "admin-1", model.IncidentActive, at(time.Hour)
		b := newIncident("inc-b", time.Hour)
		c.New = append(c.New, b)
		c.Move = map[string]string{"d2": "inc-b", "d3": "inc-b"}
		c.Entries = append(c.Entries,
			&model.IncidentEntry{IncidentID: "inc-a", At: at(time.Hour), Kind: model.IncidentEntrySplit, Actor: "admin-1", Data: map[string]string{"into": "inc-b"}},
			&model.IncidentEntry{IncidentID: "inc-b", At: at(time.Hour), Kind: model.IncidentEntryCreated, Actor: "admin-1", Text: "split ü <&>"})
		return nil
	})
	must(t, "UpdateIncidents", err)
	if c.New[0].Number != 2 {
		t.Errorf("split incident number %d, want 2", c.New[0].Number)
	}
	a, _ := s.GetIncident(ctx, "inc-a")
	b, _ := s.GetIncident(ctx, "inc-b")
	if a.Detections != 2 || b.Detections != 2 || a.Assignee != "admin-1" || a.Status != model.IncidentActive || !nt(a.UpdatedAt).Equal(nt(at(time.Hour))) {
		t.Errorf("after split: a %+v, b %+v", a, b)
	}
	dets, _ := s.IncidentDetections(ctx, "inc-b", 0)
	if len(dets) != 2 || dets[0].DetectionID != "d2" || dets[1].DetectionID != "d3" {
		t.Errorf("inc-b detections %v", dets)
	}
	tl, _ := s.IncidentTimeline(ctx, "inc-b", 0)
	if len(tl) != 1 || tl[0].Text != "split ü <&>" {
		t.Errorf("inc-b timeline %+v", tl)
	}
	tl, _ = s.IncidentTimeline(ctx, "inc-a", 0)
	// created, three detections, the split; not the rolled-back comment.
	if len(tl) != 5 || tl[4].Kind != model.IncidentEntrySplit || tl[4].Data["into"] != "inc-b" || tl[3].Seq >= tl[4].Seq {
		t.Errorf("inc-a timeline %+v (the rolled-back comment must not be there)", tl)
	}
	// Entities follow the detections: a split-off incident is found by
	// the entities of what moved, a merged incident's entities are the
	// target's.
	_, err = s.CorrelateDetection(ctx, incDetection("c1", "u7", "", "dev7", "", 5*time.Minute), at(-time.Hour), joinOrCreate("inc-c", nil))
	must(t, "CorrelateDetection", err)
	var saw []string
	_, err = s.CorrelateDetection(ctx, incDetection("p1", "u1", "", "", "", 6*time.Minute), at(-time.Hour), joinOrCreate("unused", &saw))
	must(t, "CorrelateDetection", err)
	sort.Strings(saw)
	if !reflect.DeepEqual(saw, []string{"inc-a", "inc-b"}) {
		t.Errorf("candidates of u1 after the split: %v", saw)
	}
	_, err = s.UpdateIncidents(ctx, []string{"inc-a", "inc-c"}, false, func(c *store.IncidentChange) error {
		c.Incidents["inc-c"].MergedInto = "inc-a"
		c.MoveAll = map[string]string{"inc-c": "inc-a"}
		return nil
	})
	must(t, "UpdateIncidents merge", err)
	saw = nil
	_, err = s.CorrelateDetection(ctx, incDetection("p2", "", "", "dev7", "", 7*time.Minute), at(-time.Hour), joinOrCreate("unused2", &saw))
	must(t, "CorrelateDetection", err)
	if !reflect.DeepEqual(saw, []string{"inc-a"}) {
		t.Errorf("candidates of dev7 after the merge: %v, want [inc-a]", saw)
	}
	if l, _ := s.ListIncidents(ctx, store.IncidentFilter{UserID: "u7"}); len(l) != 1 || l[0].ID != "inc-a" {
		t.Errorf("incidents of u7 after the merge: %v", l)
	}
	// Moving a detection that does not exist is ErrNotFound, and rolls back.
	_, err = s.UpdateIncidents(ctx, []string{"inc-a"}, false, func(c *store.IncidentChange) error {
		c.Incidents["inc-a"].Assignee = "x"
		c.Move = map[string]string{"missing": "inc-a"}
		return nil
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("move of a missing detection: %v", err)
	}
	if a, _ := s.GetIncident(ctx, "inc-a"); a.Assignee != "admin-1" {
		t.Errorf("rolled back change was saved: assignee %q", a.Assignee)
	}
}

// testIncidentList: filters and order.
func testIncidentList(t *testing.T, s store.Store) {
	for i, u := range []string{"u1", "u2", "u3", "u1"} {
		id := fmt.Sprintf("inc-%d", i)
		_, err := s.CorrelateDetection(ctx, incDetection("d"+id, u+id, "", "", "", time.Duration(i)*time.Minute), at(time.Hour),
			func(c *store.IncidentChange) error {
				in := newIncident(id, 0)
				in.Severity = []string{model.RiskLow, model.RiskHigh, model.RiskHigh, model.RiskMedium}[i]
				if i == 2 {
					in.Status, in.Assignee = model.IncidentResolved, "admin-1"
				}
				c.New, c.Detection.IncidentID = append(c.New, in), id
				c.Detection.UserID = u
				return nil
			})
		must(t, "CorrelateDetection", err)
	}
	ids := func(f store.IncidentFilter) []string {
		t.Helper()
		l, err := s.ListIncidents(ctx, f)
		must(t, "ListIncidents", err)
		var out []string
		for _, in := range l {
			out = append(out, in.ID)
		}
		return out
	}
	for name, c := range map[string]struct {
		f    store.IncidentFilter
		want []string
	}{
		"all":      {store.IncidentFilter{}, []string{"inc-3", "inc-2", "inc-1", "inc-0"}},
		"open":     {store.IncidentFilter{Statuses: []string{model.IncidentNew, model.IncidentActive}}, []string{"inc-3", "inc-1", "inc-0"}},
		"high":     {store.IncidentFilter{Severity: model.RiskHigh}, []string{"inc-2", "inc-1"}},
		"assignee": {store.IncidentFilter{Assignee: "admin-1"}, []string{"inc-2"}},
		"user":     {store.IncidentFilter{UserID: "u1"}, []string{"inc-3", "inc-0"}},
		"page":     {store.IncidentFilter{Before: 3, Limit: 1}, []string{"inc-1"}},
	} {
		if got := ids(c.f); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

// testIncidentConcurrent: concurrent correlations of detections of one
// user (two instances consuming at once) make one incident holding all of
// them: each correlation sees the incident the others created; and of
// concurrent correlations of one detection id exactly one wins.
func testIncidentConcurrent(t *testing.T, s store.Store) {
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CorrelateDetection(ctx, incDetection(fmt.Sprintf("d%d", i), "u1", "", "", "", time.Minute), at(0),
				joinOrCreate(fmt.Sprintf("inc-%d", i), nil))
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent CorrelateDetection: %v", errs)
	}
	l, err := s.ListIncidents(ctx, store.IncidentFilter{})
	must(t, "ListIncidents", err)
	if len(l) != 1 || l[0].Detections != n {
		t.Fatalf("incidents %d (first holding %d), want one holding %d", len(l), l[0].Detections, n)
	}
	var wins, dups int
	var nums []int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.CorrelateDetection(ctx, incDetection("same", "u2", "", "", "", time.Minute), at(0),
				joinOrCreate(fmt.Sprintf("same-%d", i), nil))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
				for _, in := range c.New {
					nums = append(nums, in.Number)
				}
			case errors.Is(err, store.ErrAlreadyExists):
				dups++
			default:
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	if wins != 1 || dups != n-1 || len(errs) > 0 || !reflect.DeepEqual(nums, []int64{2}) {
		t.Errorf("same detection %d times: %d won, %d duplicates, errors %v, numbers %v", n, wins, dups, errs, nums)
	}
}

// testIncidentPurge: incidents closed before the cut go with their
// detections, entities and timelines; open ones stay however old, and so
// do those closed after the cut.
func testIncidentPurge(t *testing.T, s store.Store) {
	for i, id := range []string{"old-closed", "old-open", "new-closed"} {
		_, err := s.CorrelateDetection(ctx, incDetection("d-"+id, "u"+id, "", "", "", time.Duration(i)*time.Minute), at(-time.Hour),
			joinOrCreate(id, nil))
		must(t, "CorrelateDetection", err)
	}
	for id, closed := range map[string]time.Duration{"old-closed": time.Hour, "new-closed": 3 * time.Hour} {
		_, err := s.UpdateIncidents(ctx, []string{id}, false, func(c *store.IncidentChange) error {
			in := c.Incidents[id]
			in.Status, in.StatusReason, in.ClosedAt = model.IncidentFalsePositive, "x", at(closed)
			c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: id, Kind: model.IncidentEntryStatus})
			return nil
		})
		must(t, "UpdateIncidents", err)
	}
	n, err := s.PurgeIncidents(ctx, at(2*time.Hour))
	must(t, "PurgeIncidents", err)
	if n != 1 {
		t.Errorf("purged %d incidents, want 1", n)
	}
	if _, err := s.GetIncident(ctx, "old-closed"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old-closed: %v", err)
	}
	if _, err := s.IncidentOfDetection(ctx, "d-old-closed"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("its detection: %v", err)
	}
	if tl, _ := s.IncidentTimeline(ctx, "old-closed", 0); len(tl) != 0 {
		t.Errorf("its timeline: %d entries", len(tl))
	}
	if l, _ := s.ListIncidents(ctx, store.IncidentFilter{UserID: "uold-closed"}); len(l) != 0 {
		t.Errorf("its entities: %v", l)
	}
	for _, id := range []string{"old-open", "new-closed"} {
		if in, err := s.GetIncident(ctx, id); err != nil || in.Detections != 1 {
			t.Errorf("%s: %+v %v", id, in, err)
		}
	}
	// A detection of the purged incident's entity opens a new incident.
	var saw []string
	_, err = s.CorrelateDetection(ctx, incDetection("again", "uold-closed", "", "", "", 5*time.Hour), at(-48*time.Hour), joinOrCreate("again", &saw))
	must(t, "CorrelateDetection", err)
	if len(saw) != 0 {
		t.Errorf("candidates of a purged incident's user: %v", saw)
	}
}
