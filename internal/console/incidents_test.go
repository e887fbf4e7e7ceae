package console_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// detection is a risk.detected event as a detector publishes it.
type detection struct {
	id, typ, user, session, device, ip, severity, technique string
}

// raise publishes d on Ward's bus (the audit log records it) and hands it
// to the incident service as its consumer does; it returns the incident's
// name.
func raise(t *testing.T, in *wardtest.Instance, d detection) string {
	t.Helper()
	ctx := context.Background()
	if d.typ == "" {
		d.typ = "token_replay_wrong_key"
	}
	if d.severity == "" {
		d.severity = model.RiskHigh
	}
	data := map[string]string{model.DataDetectionID: d.id, model.DataDetectionSeverity: d.severity, model.DataDetectionConfidence: "0.90",
		model.DataDetectionDetail: "refresh token presented with another DPoP key", model.DataDetectionSource: "online"}
	if d.technique != "" {
		data[model.DataDetectionTechnique] = d.technique
	}
	e := &model.Event{Type: model.EventRiskDetected, Actor: "system", UserID: d.user, SessionID: d.session, DeviceID: d.device,
		IP: d.ip, Reason: d.typ, Data: data}
	if err := bus.NewEmitter(in.App.Bus, in.Clock.Now).Emit(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Incidents.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	id, err := in.App.Store.IncidentOfDetection(ctx, d.id)
	if err != nil {
		t.Fatalf("incident of %s: %v", d.id, err)
	}
	det, err := in.App.Incidents.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return det.Name
}

// postForm sends form (with token as its CSRF token) as a console page
// would.
func (o *operator) postForm(path, token string, form url.Values) (*http.Response, string) {
	o.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if token != "" {
		form.Set("csrf", token)
	}
	req, err := http.NewRequest(http.MethodPost, o.in.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", o.in.URL)
	resp, err := o.b.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func getIncident(t *testing.T, in *wardtest.Instance, ref string) *incident.Detail {
	t.Helper()
	d, err := in.App.Incidents.Get(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestIncidentRoles: security operators and administrators act on
// incidents; helpdesk and readers read them. A refused change changes
// nothing and is recorded.
func TestIncidentRoles(t *testing.T) {
	in := startWard(t)
	bob := userID(t, in, "bob")
	name := raise(t, in, detection{id: "roles-1", user: bob, ip: "203.0.113.7", technique: "T1550.001"})
	other := raise(t, in, detection{id: "roles-2", user: userID(t, in, "nora"), ip: "198.51.100.9", severity: model.RiskLow})
	ops := map[string]*operator{model.RoleAdmin: signIn(t, in, "alice")}
	for n, role := range operators {
		if role != "" {
			ops[role] = signIn(t, in, n)
		}
	}
	all := []string{model.RoleAdmin, model.RoleSecurityOperator, model.RoleHelpdesk, model.RoleReader}
	actors := []string{model.RoleAdmin, model.RoleSecurityOperator}
	type action struct {
		name, method, path string
		form               url.Values
		allowed            []string
	}
	base := "/console/incidents/" + name
	actions := []action{
		{"list", "GET", "/console/incidents", nil, all},
		{"detail", "GET", base, nil, all},
		{"comment", "POST", base + "/comment", url.Values{"comment": {"looking"}}, actors},
		{"assign", "POST", base + "/assign", url.Values{"assignee": {"me"}}, actors},
		{"status", "POST", base + "/status", url.Values{"status": {"active"}}, actors},
		{"act", "POST", base + "/act", url.Values{"action": {"revoke_sessions"}}, actors},
		{"merge", "POST", base + "/merge", url.Values{"sources": {"INC-999"}}, actors},
	}
	for _, a := range actions {
		for _, role := range all {
			op := ops[role]
			var resp *http.Response
			var body string
			if a.method == "GET" {
				resp, body = op.get(a.path)
			} else {
				resp, body = op.postForm(a.path, op.csrf(), a.form)
			}
			if slices.Contains(a.allowed, role) {
				if resp.StatusCode == http.StatusForbidden || resp.StatusCode >= 500 {
					t.Errorf("%s as %s: %d %.200s", a.name, role, resp.StatusCode, body)
				}
				continue
			}
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "roles do not allow") {
				t.Errorf("%s as %s: %d, want 403; %.200s", a.name, role, resp.StatusCode, body)
			}
			if !denied(t, in, op.user.ID, "role_missing", a.path) {
				t.Errorf("%s as %s: no console.access_denied", a.name, role)
			}
		}
	}
	// Helpdesk and reader changed nothing on the other incident, and
	// their pages offer no form for it.
	for _, role := range []string{model.RoleHelpdesk, model.RoleReader} {
		op := ops[role]
		for _, p := range []string{"/comment", "/assign", "/status", "/act", "/merge"} {
			op.postForm("/console/incidents/"+other+p, op.csrf(), url.Values{"comment": {"x"}, "assignee": {"me"}, "status": {"resolved"},
				"reason": {"r"}, "action": {"disable_user"}, "sources": {name}})
		}
		_, body := op.get("/console/incidents/" + other)
		for _, form := range []string{"/act\"", "/assign\"", "/status\"", "/comment\"", "/merge\""} {
			if strings.Contains(body, form) {
				t.Errorf("the %s's incident page offers %s", role, form)
			}
		}
	}
	d := getIncident(t, in, other)
	if d.Status != model.IncidentNew || d.Assignee != "" || len(d.Timeline) != 1 {
		t.Fatalf("refused requests changed %s: %+v, %d timeline entries", other, d.Incident, len(d.Timeline))
	}
	if u, _ := in.App.Identity.GetUser(context.Background(), userID(t, in, "nora")); u.Disabled {
		t.Fatal("a refused action disabled nora")
	}
}

// TestIncidentCSRF: a forged request, from another origin or without the
// session's token, changes no incident.
func TestIncidentCSRF(t *testing.T) {
	in := startWard(t)
	bob := userID(t, in, "bob")
	name := raise(t, in, detection{id: "csrf-1", user: bob, ip: "203.0.113.7"})
	userSession(t, in, "bob", wardtest.BobPassword)
	alice, sofia := signIn(t, in, "alice"), signIn(t, in, "sofia")
	path := "/console/incidents/" + name + "/act"
	form := func() url.Values { return url.Values{"action": {"disable_user"}, "reason": {"forged"}} }
	for _, tc := range []struct {
		name, token, origin, reason string
	}{
		{"no token", "", in.URL, "csrf_invalid"},
		{"wrong token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", in.URL, "csrf_invalid"},
		{"another operator's token", sofia.csrf(), in.URL, "csrf_invalid"},
		{"cross-origin", alice.csrf(), "https://evil.example", "origin_invalid"},
		{"origin null", alice.csrf(), "null", "origin_invalid"},
	} {
		f := form()
		if tc.token != "" {
			f.Set("csrf", tc.token)
		}
		req, _ := http.NewRequest(http.MethodPost, in.URL+path, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", tc.origin)
		resp, err := alice.b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, resp.StatusCode)
		}
		if !denied(t, in, alice.user.ID, tc.reason, path) {
			t.Errorf("%s: no console.access_denied %s", tc.name, tc.reason)
		}
	}
	if u, _ := in.App.Identity.GetUser(context.Background(), bob); u.Disabled {
		t.Fatal("a forged request disabled bob")
	}
	if n := len(events(t, in, model.EventIncidentActionTaken)); n != 0 {
		t.Fatalf("%d incident.action_taken after forged requests", n)
	}
	// Hostile references name no incident.
	for _, ref := range []string{"%00", "INC-0", "INC--1", "INC-99999999999999999999", strings.Repeat("A", 5000), "%FF%FE", "1%27%20OR%201%3D1"} {
		if resp, body := alice.get("/console/incidents/" + ref); resp.StatusCode != http.StatusNotFound {
			t.Errorf("incident %.40s: %d %.200s", ref, resp.StatusCode, body)
		}
		if resp, _ := alice.postForm("/console/incidents/"+ref+"/comment", alice.csrf(), url.Values{"comment": {"x"}}); resp.StatusCode != http.StatusNotFound {
			t.Errorf("comment on incident %.40s: %d", ref, resp.StatusCode)
		}
	}
	// A GET never acts.
	if resp, _ := alice.get(path); resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s: %d", path, resp.StatusCode)
	}
}

// TestIncidentWorkflow: the list and its filters, the dashboard's card,
// the page (techniques, entities, detections with their log links),
// assigning, commenting, closing with a reason, merging and the response
// actions, each through the incident service and recorded with the
// operator as actor.
func TestIncidentWorkflow(t *testing.T) { backends(t, testIncidentWorkflow) }

func testIncidentWorkflow(t *testing.T, in *wardtest.Instance) {
	ctx := context.Background()
	bob, nora := userID(t, in, "bob"), userID(t, in, "nora")
	bobSession := userSession(t, in, "bob", wardtest.BobPassword)
	first := raise(t, in, detection{id: "wf-1", user: bob, session: bobSession, ip: "203.0.113.7", technique: "T1550.001"})
	in.Clock.Advance(time.Minute)
	if again := raise(t, in, detection{id: "wf-2", typ: "impossible_travel", user: bob, session: bobSession, ip: "198.51.100.23", severity: model.RiskMedium, technique: "T1078"}); again != first {
		t.Fatalf("the second detection of bob's session opened %s, not joined %s", again, first)
	}
	second := raise(t, in, detection{id: "wf-3", user: nora, ip: "192.0.2.44", severity: model.RiskLow})
	sofia := signIn(t, in, "sofia")

	// The dashboard counts the open incidents.
	_, body := sofia.get("/console/")
	if !strings.Contains(body, `<span class="n">2</span><span class="l">open incidents</span>`) {
		t.Errorf("dashboard: no count of 2 open incidents")
	}
	if !strings.Contains(body, `/console/incidents/`+first) || !strings.Contains(body, `/console/incidents?status=open&amp;severity=high`) {
		t.Errorf("dashboard: the open-incidents card does not link the incidents")
	}
	// The list and its filters.
	_, body = sofia.get("/console/incidents")
	if !strings.Contains(body, ">"+first+"<") || !strings.Contains(body, ">"+second+"<") {
		t.Fatalf("list: %.600s", body)
	}
	_, body = sofia.get("/console/incidents?user=nora")
	if strings.Contains(body, ">"+first+"<") || !strings.Contains(body, ">"+second+"<") {
		t.Errorf("user filter: bob's incident listed for nora, or nora's not")
	}
	if _, body := sofia.get("/console/users/" + bob); !strings.Contains(body, `/console/incidents/`+first) || strings.Contains(body, `/console/incidents/`+second) {
		t.Errorf("bob's page does not list his incident alone")
	}
	_, body = sofia.get("/console/incidents?severity=high")
	if !strings.Contains(body, ">"+first+"<") || strings.Contains(body, ">"+second+"<") {
		t.Errorf("severity filter: the low incident is listed or the high one is not")
	}
	if resp, body := sofia.get("/console/incidents?status=bogus&severity=%3Cscript%3E"); resp.StatusCode != http.StatusOK || strings.Contains(body, "<script>") {
		t.Errorf("hostile filter: %d", resp.StatusCode)
	}

	// The page: techniques and tactics, entities, detections with their
	// event in the audit log.
	resp, body := sofia.get("/console/incidents/" + first)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("incident page: %d %.300s", resp.StatusCode, body)
	}
	for _, want := range []string{"T1550.001", "https://attack.mitre.org/techniques/T1550/001/", "Defense Evasion", "Lateral Movement",
		"T1078", "203.0.113.7", "198.51.100.23", ">bob<", "token_replay_wrong_key", "impossible_travel",
		"/console/logs?since=", "type=risk.detected"} {
		if !strings.Contains(body, want) {
			t.Errorf("incident page lacks %q", want)
		}
	}
	// The log link finds the triggering event.
	det := getIncident(t, in, first).DetectionList[0]
	link := "/console/logs?tab=audit&type=risk.detected&user=" + bob + "&since=" + det.DetectedAt.UTC().Truncate(time.Minute).Format("2006-01-02T15:04") +
		"&until=" + det.DetectedAt.UTC().Truncate(time.Minute).Add(time.Minute).Format("2006-01-02T15:04")
	if _, logs := sofia.get(link); !strings.Contains(logs, det.Type) {
		t.Errorf("the log link of %s does not show it", det.ID)
	}
	if resp, _ := sofia.get("/console/incidents/INC-9999"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown incident: %d", resp.StatusCode)
	}

	tok := sofia.csrf()
	base := "/console/incidents/" + first
	// Assign: only to someone who may act on incidents.
	if resp, body := sofia.postForm(base+"/assign", tok, url.Values{"assignee": {nora}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not a security operator") {
		t.Errorf("assign to nora: %d %.200s", resp.StatusCode, body)
	}
	if resp, _ := sofia.postForm(base+"/assign", tok, url.Values{"assignee": {"me"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("assign to me: %d", resp.StatusCode)
	}
	if d := getIncident(t, in, first); d.Assignee != sofia.user.ID || d.Status != model.IncidentActive {
		t.Fatalf("after assigning: %+v", d.Incident)
	}
	_, body = sofia.get("/console/incidents?assignee=me")
	if !strings.Contains(body, ">"+first+"<") || strings.Contains(body, ">"+second+"<") {
		t.Errorf("assignee filter")
	}
	// A comment is shown as text, never as markup.
	if resp, _ := sofia.postForm(base+"/comment", tok, url.Values{"comment": {"<script>alert(1)</script> replay from 203.0.113.7"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("comment: %d", resp.StatusCode)
	}
	_, body = sofia.get(base)
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt; replay") {
		t.Errorf("the comment is not escaped on the page")
	}
	if resp, _ := sofia.postForm(base+"/comment", tok, url.Values{"comment": {"   "}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("empty comment: %d", resp.StatusCode)
	}
	if resp, _ := sofia.postForm(base+"/comment", tok, url.Values{"comment": {strings.Repeat("x", incident.MaxComment+1)}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("oversized comment: %d", resp.StatusCode)
	}

	// Response action: revoke the sessions of the incident's users.
	resp, body = sofia.postForm(base+"/act", tok, url.Values{"action": {"revoke_sessions"}, "target": {"all"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "sessions revoked") {
		t.Fatalf("revoke sessions: %d %.400s", resp.StatusCode, body)
	}
	if s, _ := in.App.Sessions.Get(ctx, bobSession); s.Active(in.Clock.Now()) {
		t.Fatal("bob's session is still active")
	}
	taken := events(t, in, model.EventIncidentActionTaken)
	if len(taken) != 1 || taken[0].Actor != sofia.user.ID {
		t.Fatalf("incident.action_taken: %+v", taken)
	}
	var revokedBySofia bool
	for _, e := range events(t, in, model.EventUserSessionsRevoked) {
		revokedBySofia = revokedBySofia || (e.UserID == bob && e.Actor == sofia.user.ID)
	}
	if !revokedBySofia {
		t.Error("no user.sessions_revoked of bob by sofia")
	}
	// An entity of another incident is no target.
	if resp, body := sofia.postForm(base+"/act", tok, url.Values{"action": {"disable_user"}, "target": {nora}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("acting on another incident's user: %d %.200s", resp.StatusCode, body)
	}
	if u, _ := in.App.Identity.GetUser(ctx, nora); u.Disabled {
		t.Fatal("nora was disabled through an incident she is not in")
	}
	// Unknown actions and a dismissal without a reason are refused.
	if resp, _ := sofia.postForm(base+"/act", tok, url.Values{"action": {"drop_tables"}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown action: %d", resp.StatusCode)
	}
	if resp, _ := sofia.postForm(base+"/act", tok, url.Values{"action": {"dismiss"}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("dismiss without a reason: %d", resp.StatusCode)
	}

	// Closing needs a reason.
	if resp, body := sofia.postForm(base+"/status", tok, url.Values{"status": {"resolved"}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Give a reason") {
		t.Errorf("resolve without a reason: %d %.200s", resp.StatusCode, body)
	}
	if d := getIncident(t, in, first); d.Status != model.IncidentActive {
		t.Fatalf("resolved without a reason: %s", d.Status)
	}
	// Merge the other incident into this one.
	if resp, body := sofia.postForm(base+"/merge", tok, url.Values{"sources": {second}, "reason": {"same campaign"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("merge: %d %.300s", resp.StatusCode, body)
	}
	if d := getIncident(t, in, second); d.MergedInto == "" || d.Status != model.IncidentResolved {
		t.Fatalf("merged incident: %+v", d.Incident)
	}
	if resp, _ := sofia.postForm(base+"/merge", tok, url.Values{"sources": {first}}); resp.StatusCode != http.StatusConflict {
		t.Errorf("merging an incident into itself: %d", resp.StatusCode)
	}
	if resp, _ := sofia.postForm(base+"/status", tok, url.Values{"status": {"resolved"}, "reason": {"sessions revoked, password changed"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("resolve: %d", resp.StatusCode)
	}
	d := getIncident(t, in, first)
	if d.Status != model.IncidentResolved || d.StatusReason != "sessions revoked, password changed" {
		t.Fatalf("resolved: %+v", d.Incident)
	}
	var byKind = map[string]int{}
	for _, e := range d.Timeline {
		if e.Actor == sofia.user.ID {
			byKind[e.Kind]++
		}
	}
	for _, k := range []string{model.IncidentEntryAssigned, model.IncidentEntryComment, model.IncidentEntryAction, model.IncidentEntryMerged, model.IncidentEntryStatus} {
		if byKind[k] == 0 {
			t.Errorf("no %s entry by sofia in the timeline: %v", k, byKind)
		}
	}
	for _, typ := range []model.EventType{model.EventIncidentAssigned, model.EventIncidentCommented, model.EventIncidentMerged, model.EventIncidentStatusChanged} {
		var found bool
		for _, e := range events(t, in, typ) {
			found = found || e.Actor == sofia.user.ID
		}
		if !found {
			t.Errorf("no %s by sofia", typ)
		}
	}
	// The dashboard counts none open now.
	if _, body := sofia.get("/console/"); !strings.Contains(body, `<span class="n">0</span><span class="l">open incidents</span>`) {
		t.Errorf("dashboard after closing: not 0 open incidents")
	}
}

// TestIncidentSelf: an operator cannot disable or confirm compromised
// their own account through an incident (as on a user's page).
func TestIncidentSelf(t *testing.T) {
	in := startWard(t)
	// A low-severity detection: a high one would raise sofia's risk and
	// end her sessions before she could try anything.
	name := raise(t, in, detection{id: "self-1", user: userID(t, in, "sofia"), ip: "203.0.113.7", severity: model.RiskLow})
	sofia := signIn(t, in, "sofia")
	for _, action := range []string{"disable_user", "confirm_compromised"} {
		for _, target := range []string{"all", sofia.user.ID} {
			resp, body := sofia.postForm("/console/incidents/"+name+"/act", sofia.csrf(), url.Values{"action": {action}, "target": {target}, "reason": {"x"}})
			if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "your own account") {
				t.Errorf("%s %s on herself: %d %.200s", action, target, resp.StatusCode, body)
			}
		}
	}
	if u, _ := in.App.Identity.GetUser(context.Background(), sofia.user.ID); u.Disabled {
		t.Fatal("sofia disabled herself")
	}
}

// TestIncidentConcurrentClose: operators closing one incident at once
// close it once: one status change recorded, the others told nothing
// changed (the service's check and write are one transaction).
func TestIncidentConcurrentClose(t *testing.T) {
	in := startWard(t)
	name := raise(t, in, detection{id: "race-1", user: userID(t, in, "bob"), ip: "203.0.113.7", severity: model.RiskLow})
	ops := []*operator{signIn(t, in, "alice"), signIn(t, in, "sofia")}
	toks := []string{ops[0].csrf(), ops[1].csrf()}
	const n = 8
	codes := make(chan int, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		go func(i int) {
			<-start
			resp, _ := ops[i%2].postForm("/console/incidents/"+name+"/status", toks[i%2], url.Values{"status": {"resolved"}, "reason": {"closed by " + itoa(i)}})
			codes <- resp.StatusCode
		}(i)
	}
	close(start)
	for i := 0; i < n; i++ {
		if c := <-codes; c != http.StatusSeeOther {
			t.Errorf("close %d: %d", i, c)
		}
	}
	var closes int
	for _, e := range events(t, in, model.EventIncidentStatusChanged) {
		if e.Data["previous_status"] == model.IncidentNew {
			closes++
		}
	}
	if closes != 1 {
		t.Fatalf("%d status changes from new recorded, want 1", closes)
	}
	if d := getIncident(t, in, name); d.Status != model.IncidentResolved {
		t.Fatalf("status %s", d.Status)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
