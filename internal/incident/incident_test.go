package incident_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// Detections about the same user, session, device or address within the
// window make one incident; others make their own. The incident has the
// highest severity, the techniques with their tactics, the entities, the
// triggering events and a timeline, and each change is an event committed
// with it.
func TestCorrelation(t *testing.T) {
	forBackends(t, func(t *testing.T, in *instance, clk *clock.Fake) {
		in.mustPublish(
			det{id: "d1", user: "u1", session: "s1", ip: "198.51.100.9", severity: model.RiskMedium, technique: "T1550.001", at: time.Minute},
			det{id: "d2", typ: "sso_cookie_anomaly", session: "s1", ip: "203.0.113.7", severity: model.RiskHigh, at: 2 * time.Minute}, // by session; technique by type
			det{id: "d3", device: "dev1", ip: "203.0.113.7", severity: model.RiskLow, at: 3 * time.Minute},                            // by address
			det{id: "d4", user: "u2", ip: "192.0.2.1", severity: model.RiskLow, at: 4 * time.Minute},                                  // unrelated
			det{id: "d5", user: "u1", severity: model.RiskLow, at: 7 * time.Hour},                                                     // u1, beyond the window
		)
		l := in.list()
		if len(l) != 3 {
			t.Fatalf("incidents %d, want 3: %+v", len(l), l)
		}
		first := in.get("INC-1")
		if first.Detections != 3 || first.Severity != model.RiskHigh || first.Status != model.IncidentNew {
			t.Fatalf("INC-1: %+v", first.Incident)
		}
		if want := []string{"T1550.001", "T1550.004"}; !reflect.DeepEqual(first.Techniques, want) {
			t.Errorf("techniques %v, want %v", first.Techniques, want)
		}
		if want := []string{"TA0005", "TA0008"}; !reflect.DeepEqual(first.Tactics, want) {
			t.Errorf("tactics %v, want %v", first.Tactics, want)
		}
		if first.Attack[0].Name != "Use Alternate Authentication Material: Application Access Token" ||
			first.TacticNames[0].Name != "Defense Evasion" {
			t.Errorf("attack %+v / %+v", first.Attack, first.TacticNames)
		}
		want := incident.Entities{Users: []string{"u1"}, Sessions: []string{"s1"}, Devices: []string{"dev1"}, Clients: []string{},
			IPs: []string{"198.51.100.9", "203.0.113.7"}}
		if !reflect.DeepEqual(first.Entities, want) {
			t.Errorf("entities %+v, want %+v", first.Entities, want)
		}
		if !reflect.DeepEqual(first.TriggeringEvents, []string{"ev-d1", "ev-d2", "ev-d3"}) {
			t.Errorf("triggering events %v", first.TriggeringEvents)
		}
		if !first.FirstSeen.Equal(t0.Add(time.Minute)) || !first.LastSeen.Equal(t0.Add(3*time.Minute)) {
			t.Errorf("seen %v .. %v", first.FirstSeen, first.LastSeen)
		}
		var kinds []string
		for _, e := range first.Timeline {
			kinds = append(kinds, e.Kind)
		}
		if want := []string{"created", "detection", "detection"}; !reflect.DeepEqual(kinds, want) {
			t.Errorf("timeline %v, want %v", kinds, want)
		}
		if d5, _ := in.st.IncidentOfDetection(ctx, "d5"); d5 == first.ID {
			t.Error("a detection beyond the window joined the old incident")
		}
		created, updated := in.events(model.EventIncidentCreated), in.events(model.EventIncidentUpdated)
		if len(created) != 3 || len(updated) != 2 {
			t.Fatalf("events: %d created, %d updated", len(created), len(updated))
		}
		c := created[0]
		if c.Code() != "W9300W" || c.Data[model.DataIncidentID] != first.ID || c.Data[model.DataIncidentNumber] != "1" ||
			c.Data[model.DataIncidentSeverity] != model.RiskMedium || c.Data[model.DataDetectionID] != "d1" || c.UserID != "u1" ||
			c.Data[model.DataIncidentTactics] != "TA0005 TA0008" || !in.withTx[c.ID] {
			t.Errorf("incident.created %+v (committed with the change: %v)", c, in.withTx[c.ID])
		}
		if u := updated[0]; u.Data["previous_severity"] != model.RiskMedium || u.Data[model.DataIncidentSeverity] != model.RiskHigh ||
			u.Data[model.DataIncidentDetections] != "2" || !in.withTx[u.ID] {
			t.Errorf("incident.updated %+v", u)
		}
	})
}

// A detection for a resolved incident within the window reopens it; one
// after the window, or for a false positive, opens a new incident.
func TestReopen(t *testing.T) {
	in, clk := newEnv(t)
	in.mustPublish(det{id: "d1", user: "u1", at: time.Minute})
	clk.Set(t0.Add(time.Hour))
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentResolved, "tokens rotated"); err != nil {
		t.Fatal(err)
	}
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentResolved, "again"); err != nil {
		t.Fatal(err)
	}
	in.mustPublish(det{id: "d2", user: "u1", at: 2 * time.Hour})
	got := in.get("INC-1")
	if got.Status != model.IncidentActive || got.Detections != 2 || !got.ClosedAt.IsZero() || !strings.HasPrefix(got.StatusReason, "reopened") {
		t.Fatalf("after a detection within the window: %+v", got.Incident)
	}
	sc := in.events(model.EventIncidentStatusChanged)
	if len(sc) != 2 || sc[1].Reason != "reopened" || sc[1].Data["previous_status"] != model.IncidentResolved || sc[1].Actor != "system" {
		t.Errorf("status events %+v", sc)
	}
	// Resolved again; the next detection comes after the window.
	clk.Set(t0.Add(3 * time.Hour))
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentResolved, "done"); err != nil {
		t.Fatal(err)
	}
	in.mustPublish(det{id: "d3", user: "u1", at: 10 * time.Hour})
	if got := in.get("INC-1"); got.Status != model.IncidentResolved || got.Detections != 2 {
		t.Errorf("a detection after the window changed INC-1: %+v", got.Incident)
	}
	if id, _ := in.st.IncidentOfDetection(ctx, "d3"); id != in.get("INC-2").ID {
		t.Error("the late detection did not open INC-2")
	}
	// A false positive is not reopened.
	clk.Set(t0.Add(11 * time.Hour))
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-2", model.IncidentFalsePositive, "the user travelled"); err != nil {
		t.Fatal(err)
	}
	in.mustPublish(det{id: "d4", user: "u1", at: 11*time.Hour + time.Minute})
	if got := in.get("INC-2"); got.Status != model.IncidentFalsePositive || got.Detections != 1 {
		t.Errorf("a false positive was reopened: %+v", got.Incident)
	}
	if len(in.list()) != 3 {
		t.Errorf("incidents: %d, want 3", len(in.list()))
	}
}

// The same detection delivered again (a redelivery, a restart, the
// consumer of another instance) is recorded once.
func TestRepeatsAndRestart(t *testing.T) {
	forBackends(t, func(t *testing.T, in *instance, clk *clock.Fake) {
		e := det{id: "d1", user: "u1", at: time.Minute}.event()
		for range 3 {
			if err := in.svc.HandleDetection(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		// A restarted instance on the same database.
		again := newInstance(t, in.st, clk)
		if err := again.svc.HandleDetection(ctx, e); err != nil {
			t.Fatal(err)
		}
		// Without a detection id the event id is the key.
		e2 := det{id: "", user: "u1", at: 2 * time.Minute}.event()
		e2.ID = "ev-anon"
		delete(e2.Data, model.DataDetectionID)
		for range 2 {
			if err := again.svc.HandleDetection(ctx, e2); err != nil {
				t.Fatal(err)
			}
		}
		if got := in.get("INC-1"); got.Detections != 2 || len(in.list()) != 1 {
			t.Errorf("after repeats: %+v, incidents %d", got.Incident, len(in.list()))
		}
		if s := in.svc.Stats(); s.Repeats != 2 || s.Created != 1 {
			t.Errorf("stats %+v", s)
		}
		if s := again.svc.Stats(); s.Repeats != 2 || s.Joined != 1 {
			t.Errorf("restarted stats %+v", s)
		}
		if n := len(in.events(model.EventIncidentCreated)); n != 1 {
			t.Errorf("incident.created %d times", n)
		}
	})
}

// Two instances on one database, each consuming detections of one user
// at the same time, make one incident holding all of them.
func TestTwoInstancesOneIncident(t *testing.T) {
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			open := be.Opener(t, clk.Now)
			a, b := newInstance(t, open(), clk), newInstance(t, open(), clk)
			const n = 16
			var wg sync.WaitGroup
			errs := make(chan error, 2*n)
			for i := range n {
				for j, in := range []*instance{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						// Each detection is delivered to both instances.
						e := det{id: fmt.Sprintf("d%d", i), user: "u1", ip: fmt.Sprintf("203.0.113.%d", i), at: time.Duration(i+j) * time.Second}.event()
						errs <- in.svc.HandleDetection(ctx, e)
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			l := a.list()
			if len(l) != 1 || l[0].Detections != n {
				t.Fatalf("incidents %+v, want one with %d detections", l, n)
			}
			created := len(a.events(model.EventIncidentCreated)) + len(b.events(model.EventIncidentCreated))
			joined := len(a.events(model.EventIncidentUpdated)) + len(b.events(model.EventIncidentUpdated))
			if created != 1 || joined != n-1 {
				t.Errorf("events: %d created, %d updated; want 1 and %d", created, joined, n-1)
			}
		})
	}
}

// Hostile and malformed risk.detected events are refused and
// acknowledged (the consumer goes on), or cleaned; none is stored as
// given.
func TestHostileDetections(t *testing.T) {
	in, _ := newEnv(t)
	long := strings.Repeat("x", 129)
	mod := func(f func(e *model.Event)) *model.Event {
		e := det{id: "h", user: "u1", at: time.Minute}.event()
		f(e)
		return e
	}
	refused := []*model.Event{
		mod(func(e *model.Event) { e.Data[model.DataDetectionID] = long }),
		mod(func(e *model.Event) { e.Data[model.DataDetectionID] = "has space" }),
		mod(func(e *model.Event) { e.UserID = long }),
		mod(func(e *model.Event) { e.SessionID = "s\x00" }),
		mod(func(e *model.Event) { e.Reason = "Bad Type" }),
		mod(func(e *model.Event) { e.Reason = strings.Repeat("a", 65) }),
		mod(func(e *model.Event) { e.Data[model.DataDetectionSeverity] = "critical" }),
		mod(func(e *model.Event) { e.UserID, e.IP = "", "" }),
		mod(func(e *model.Event) { e.UserID, e.IP = "", strings.Repeat("1", 65) }), // an oversized address is dropped: nothing left
		mod(func(e *model.Event) { e.Time = time.Time{} }),
		mod(func(e *model.Event) { delete(e.Data, model.DataDetectionID); e.ID = long }),
	}
	for i, e := range refused {
		if err := in.svc.HandleDetection(ctx, e); err != nil {
			t.Errorf("refused event %d stopped the consumer: %v", i, err)
		}
	}
	if s := in.svc.Stats(); s.Refused != int64(len(refused)) {
		t.Errorf("refused %d, want %d", s.Refused, len(refused))
	}
	if len(in.list()) != 0 {
		t.Fatalf("a refused event made an incident: %+v", in.list())
	}
	// Cleaned, not refused: an unknown technique is kept without tactics,
	// a malformed one gives way to the type's, oversized detail is cut, a
	// time far in the future is taken as now, a bad confidence is 0.
	in.mustPublish(det{id: "k1", user: "u1", technique: "T9999.123", at: time.Minute})
	e := mod(func(e *model.Event) {
		e.Data[model.DataDetectionID] = "k2"
		e.Data[model.DataDetectionTechnique] = "T1550.001; DROP TABLE"
		e.Data[model.DataDetectionDetail] = strings.Repeat("é\x07", 1000)
		e.Data[model.DataDetectionConfidence] = "NaN"
		e.Time = t0.Add(100 * 365 * 24 * time.Hour)
	})
	if err := in.publish(e); err != nil {
		t.Fatal(err)
	}
	got := in.get("INC-1")
	if !reflect.DeepEqual(got.Techniques, []string{"T9999.123", "T1550.001"}) || !reflect.DeepEqual(got.Tactics, []string{"TA0005", "TA0008"}) {
		t.Errorf("techniques %v tactics %v", got.Techniques, got.Tactics)
	}
	if got.Attack[0].Name != "" || len(got.Attack[0].Tactics) != 0 {
		t.Errorf("unknown technique shown as %+v", got.Attack[0])
	}
	var k2 *incident.Detection
	for _, d := range got.DetectionList {
		if d.ID == "k2" {
			k2 = d
		}
	}
	now := t0.Add(time.Minute) // the clock, at k1's time
	if len(k2.Detail) > 512 || strings.ContainsRune(k2.Detail, '\x07') || k2.Confidence != 0 || !k2.DetectedAt.Equal(now) {
		t.Errorf("cleaned detection %+v", k2)
	}
	if !got.LastSeen.Equal(now) {
		t.Errorf("a future time kept the incident recent: last seen %v", got.LastSeen)
	}
}

// Closing (resolved, false positive) and reopening need a reason; an
// incident cannot go back to new; an unknown status is refused.
func TestStatusRules(t *testing.T) {
	in, _ := newEnv(t)
	in.mustPublish(det{id: "d1", user: "u1", at: time.Minute})
	for _, st := range []string{model.IncidentResolved, model.IncidentFalsePositive} {
		if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", st, "  \n "); !errors.Is(err, incident.ErrReasonRequired) {
			t.Errorf("%s without a reason: %v", st, err)
		}
	}
	for _, st := range []string{model.IncidentNew, "closed", ""} {
		if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", st, "x"); !errors.Is(err, incident.ErrInvalid) {
			t.Errorf("status %q: %v", st, err)
		}
	}
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentResolved, strings.Repeat("r", incident.MaxReason+1)); !errors.Is(err, incident.ErrInvalid) {
		t.Errorf("oversized reason: %v", err)
	}
	if got := in.get("INC-1"); got.Status != model.IncidentNew || len(in.events(model.EventIncidentStatusChanged)) != 0 {
		t.Fatalf("a refused change changed something: %+v", got.Incident)
	}
	// Taking it up needs no reason.
	if got, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentActive, ""); err != nil || got.Status != model.IncidentActive {
		t.Fatalf("active: %v %+v", err, got)
	}
	got, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentResolved, "session revoked, password reset")
	if err != nil || got.Status != model.IncidentResolved || got.ClosedAt.IsZero() || got.StatusReason != "session revoked, password reset" {
		t.Fatalf("resolve: %v %+v", err, got)
	}
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentActive, ""); !errors.Is(err, incident.ErrReasonRequired) {
		t.Errorf("reopening without a reason: %v", err)
	}
	sc := in.events(model.EventIncidentStatusChanged)
	if len(sc) != 2 || sc[1].Actor != "admin" || sc[1].Reason != "session revoked, password reset" || sc[1].Code() != "W9302I" ||
		sc[1].Data["previous_status"] != model.IncidentActive || !in.withTx[sc[1].ID] {
		t.Errorf("status events %+v", sc)
	}
}

// Every operator operation on an incident that does not exist is
// ErrNotFound (404), and changes nothing.
func TestMissingIncident(t *testing.T) {
	in, _ := newEnv(t)
	in.user("u1")
	in.mustPublish(det{id: "d1", user: "u1", at: time.Minute})
	for _, ref := range []string{"INC-99", "99", "no-such-id", "", strings.Repeat("9", 40), "INC-1'--", "\x00\xff", strings.Repeat("a", 10000)} {
		ops := map[string]func() error{
			"get":     func() error { _, err := in.svc.Get(ctx, ref); return err },
			"assign":  func() error { _, err := in.svc.Assign(ctx, "admin", ref, "u1"); return err },
			"comment": func() error { _, err := in.svc.Comment(ctx, "admin", ref, "hello"); return err },
			"status":  func() error { _, err := in.svc.SetStatus(ctx, "admin", ref, model.IncidentResolved, "x"); return err },
			"merge":   func() error { _, err := in.svc.Merge(ctx, "admin", "INC-1", []string{ref}, "x"); return err },
			"merge2":  func() error { _, err := in.svc.Merge(ctx, "admin", ref, []string{"INC-1"}, "x"); return err },
			"split":   func() error { _, err := in.svc.Split(ctx, "admin", ref, []string{"d1"}, "x"); return err },
			"act": func() error {
				_, err := in.svc.Act(ctx, "admin", ref, incident.ActionRequest{Action: incident.ActionRevokeSessions})
				return err
			},
		}
		for name, op := range ops {
			if err := op(); !errors.Is(err, incident.ErrNotFound) {
				t.Errorf("%s %q: %v, want ErrNotFound", name, ref, err)
			}
		}
	}
	if got := in.get("INC-1"); got.Status != model.IncidentNew || len(got.Timeline) != 1 {
		t.Errorf("INC-1 changed: %+v", got)
	}
}

func TestAssignAndComment(t *testing.T) {
	in, _ := newEnv(t)
	in.user("analyst")
	in.mustPublish(det{id: "d1", user: "u1", at: time.Minute})
	if _, err := in.svc.Assign(ctx, "admin", "INC-1", "nobody"); !errors.Is(err, incident.ErrInvalid) {
		t.Errorf("assign to an unknown user: %v", err)
	}
	got, err := in.svc.Assign(ctx, "admin", "INC-1", "analyst")
	if err != nil || got.Assignee != "analyst" || got.Status != model.IncidentActive {
		t.Fatalf("assign: %v %+v", err, got)
	}
	as := in.events(model.EventIncidentAssigned)
	if len(as) != 1 || as[0].Data[model.DataIncidentAssignee] != "analyst" || as[0].Actor != "admin" || !in.withTx[as[0].ID] {
		t.Errorf("incident.assigned %+v", as)
	}
	for _, bad := range []string{"", " \n\t ", strings.Repeat("x", incident.MaxComment+1)} {
		if _, err := in.svc.Comment(ctx, "admin", "INC-1", bad); !errors.Is(err, incident.ErrInvalid) {
			t.Errorf("comment of %d bytes: %v", len(bad), err)
		}
	}
	e, err := in.svc.Comment(ctx, "analyst", "INC-1", "called the user:\nnot them \x1b[31m")
	if err != nil || e.Text != "called the user:\nnot them  [31m" {
		t.Fatalf("comment: %v %+v", err, e)
	}
	d := in.get("INC-1")
	last := d.Timeline[len(d.Timeline)-1]
	if last.Kind != model.IncidentEntryComment || last.Actor != "analyst" || last.Text != e.Text {
		t.Errorf("timeline %+v", last)
	}
	if cs := in.events(model.EventIncidentCommented); len(cs) != 1 || cs[0].Data["comment"] != "called the user: not them  [31m" {
		t.Errorf("incident.commented %+v", cs)
	}
}

func TestMergeAndSplit(t *testing.T) {
	forBackends(t, func(t *testing.T, in *instance, clk *clock.Fake) {
		in.mustPublish(
			det{id: "a1", user: "u1", severity: model.RiskLow, at: time.Minute},
			det{id: "a2", user: "u1", severity: model.RiskLow, technique: "T1078", at: 2 * time.Minute},
			det{id: "b1", user: "u2", severity: model.RiskHigh, technique: "T1539", at: 3 * time.Minute},
			det{id: "c1", user: "u3", at: 4 * time.Minute},
		)
		if _, err := in.svc.Merge(ctx, "admin", "INC-1", []string{"INC-1"}, "x"); !errors.Is(err, incident.ErrConflict) {
			t.Errorf("merge into itself: %v", err)
		}
		got, err := in.svc.Merge(ctx, "admin", "INC-1", []string{"INC-2", "INC-2"}, "same attacker")
		if err != nil {
			t.Fatal(err)
		}
		if got.Detections != 3 || got.Severity != model.RiskHigh || !reflect.DeepEqual(got.Techniques, []string{"T1550.001", "T1078", "T1539"}) {
			t.Errorf("merged: %+v", got)
		}
		src := in.get("INC-2")
		if src.MergedInto != got.ID || src.Status != model.IncidentResolved || src.Detections != 0 {
			t.Errorf("source after merge: %+v", src.Incident)
		}
		if _, err := in.svc.Merge(ctx, "admin", "INC-3", []string{"INC-2"}, "again"); !errors.Is(err, incident.ErrConflict) {
			t.Errorf("merging a merged incident: %v", err)
		}
		if _, err := in.svc.Assign(ctx, "admin", "INC-2", ""); !errors.Is(err, incident.ErrConflict) {
			t.Errorf("assigning a merged incident: %v", err)
		}
		if m := in.events(model.EventIncidentMerged); len(m) != 1 || m[0].Data["merged"] != src.ID || m[0].Reason != "same attacker" {
			t.Errorf("incident.merged %+v", m)
		}
		// The next detection of u2 joins the merged incident.
		in.mustPublish(det{id: "b2", user: "u2", at: 5 * time.Minute})
		if id, _ := in.st.IncidentOfDetection(ctx, "b2"); id != got.ID {
			t.Errorf("u2's next detection went to %s, want the merged incident", id)
		}
		// Split: b1 and b2 go back out.
		if _, err := in.svc.Split(ctx, "admin", "INC-1", []string{"b1", "zz"}, "x"); !errors.Is(err, incident.ErrInvalid) {
			t.Errorf("split of a foreign detection: %v", err)
		}
		if _, err := in.svc.Split(ctx, "admin", "INC-1", []string{"a1", "a2", "b1", "b2"}, "x"); !errors.Is(err, incident.ErrConflict) {
			t.Errorf("split of every detection: %v", err)
		}
		nw, err := in.svc.Split(ctx, "admin", "INC-1", []string{"b1", "b2"}, "different actor")
		if err != nil {
			t.Fatal(err)
		}
		if nw.Number != 4 || nw.Detections != 2 || nw.Severity != model.RiskHigh || nw.Status != model.IncidentNew {
			t.Errorf("split-off incident %+v", nw)
		}
		rest := in.get("INC-1")
		if rest.Detections != 2 || rest.Severity != model.RiskLow || !reflect.DeepEqual(rest.Techniques, []string{"T1550.001", "T1078"}) ||
			!rest.LastSeen.Equal(t0.Add(2*time.Minute)) {
			t.Errorf("after split: %+v", rest.Incident)
		}
		if sp := in.events(model.EventIncidentSplit); len(sp) != 1 || sp[0].Data["split_into"] != nw.ID || sp[0].Data["moved_detections"] != "b1 b2" ||
			sp[0].Data["split_into_number"] != "4" {
			t.Errorf("incident.split %+v", sp)
		}
		if d := in.get("INC-4"); !reflect.DeepEqual(d.TriggeringEvents, []string{"ev-b1", "ev-b2"}) {
			t.Errorf("split-off triggering events %v", d.TriggeringEvents)
		}
	})
}

func TestListFilters(t *testing.T) {
	in, _ := newEnv(t)
	in.mustPublish(det{id: "d1", user: "u1", severity: model.RiskLow, at: time.Minute}, det{id: "d2", user: "u2", at: 2 * time.Minute})
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-2", model.IncidentResolved, "ok"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    incident.Filter
		want []int64
	}{
		{incident.Filter{Statuses: []string{"open"}}, []int64{1}},
		{incident.Filter{Statuses: []string{"resolved"}}, []int64{2}},
		{incident.Filter{Severity: "high"}, []int64{2}},
		{incident.Filter{UserID: "u1"}, []int64{1}},
		{incident.Filter{}, []int64{2, 1}},
	} {
		l, err := in.svc.List(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, x := range l {
			got = append(got, x.Number)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.f, got, c.want)
		}
	}
	for _, f := range []incident.Filter{{Statuses: []string{"closed"}}, {Severity: "critical"}, {Limit: 5000}} {
		if _, err := in.svc.List(ctx, f); !errors.Is(err, incident.ErrInvalid) {
			t.Errorf("%+v: %v", f, err)
		}
	}
}

// Closed incidents go after the retention; open ones stay.
func TestPurge(t *testing.T) {
	in, clk := newEnv(t)
	in.mustPublish(det{id: "d1", user: "u1", at: time.Minute}, det{id: "d2", user: "u2", at: time.Minute})
	if _, err := in.svc.SetStatus(ctx, "admin", "INC-1", model.IncidentResolved, "done"); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(incident.DefaultRetention))
	if n, err := in.svc.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("purge before the retention: %d %v", n, err)
	}
	clk.Set(t0.Add(incident.DefaultRetention + 2*time.Minute))
	if n, err := in.svc.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("purge after the retention: %d %v", n, err)
	}
	if _, err := in.svc.Get(ctx, "INC-1"); !errors.Is(err, incident.ErrNotFound) {
		t.Errorf("INC-1 after the purge: %v", err)
	}
	if got := in.get("INC-2"); got.Status != model.IncidentNew {
		t.Errorf("the open incident: %+v", got.Incident)
	}
}
