package ocsf_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/ocsf"
	"github.com/ward-idp/ward/internal/audit/ocsf/ocsftest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

var (
	schemaOnce sync.Once
	schema     *ocsftest.Schema
	schemaErr  error
)

func loadSchema(t *testing.T) *ocsftest.Schema {
	t.Helper()
	schemaOnce.Do(func() { schema, schemaErr = ocsftest.Load(ocsftest.Dir()) })
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schema
}

var t0 = time.Date(2026, 4, 1, 12, 30, 45, 123456000, time.UTC)

// rich is an event with every field Ward records set.
func rich(typ model.EventType, seq int64) *store.StoredEvent {
	return &store.StoredEvent{Seq: seq, Event: model.Event{
		ID: "0b7f1c2e-5d4a-4e8b-9a61-3f2d7c9e8b10", Type: typ, Time: t0, Actor: "user-1", UserID: "user-1",
		SessionID: "sess-1", ClientID: "demo-spa", DeviceID: "dev-1", TokenID: "jti-1", IP: "2001:db8::7",
		UserAgent: "Mozilla/5.0 (X11; Linux x86_64) – ü", Outcome: model.OutcomeSuccess, Reason: "refresh_reuse",
		Binding: model.BindingDPoP, CorrelationID: "corr-1",
		Data: map[string]string{"amr": "pwd otp", "change": "enabled", "group_id": "g-1", "name": "admins",
			"level": "high", "previous": "none", "version": "3", "platform": "linux", "stream_id": "s-1", "kid": "k-1"},
	}}
}

// sparse is an event with only what every event has.
func sparse(typ model.EventType, seq int64) *store.StoredEvent {
	return &store.StoredEvent{Seq: seq, Event: model.Event{ID: "e-" + string(typ), Type: typ, Time: t0}}
}

func TestEveryEventTypeHasAMapping(t *testing.T) {
	for _, typ := range audit.EventTypes() {
		if ocsf.Class(typ) == 0 {
			t.Errorf("%s (%s) has no OCSF mapping", typ, audit.Code(typ))
		}
	}
}

// Every event type, with every field and with none, maps to a record the
// vendored OCSF 1.8.0 schema accepts.
func TestRecordsValidateAgainstSchema(t *testing.T) {
	s := loadSchema(t)
	m := ocsf.NewMapper("1.2.3")
	variants := map[string]func(model.EventType, int64) *store.StoredEvent{
		"rich": rich, "sparse": sparse,
		"failure": func(typ model.EventType, seq int64) *store.StoredEvent {
			ev := rich(typ, seq)
			ev.Outcome, ev.Actor, ev.UserID, ev.IP, ev.Data = model.OutcomeFailure, "anonymous", "", "198.51.100.7", nil
			return ev
		},
		"system": func(typ model.EventType, seq int64) *store.StoredEvent {
			ev := sparse(typ, seq)
			ev.Actor, ev.UserID = "system", "user-2"
			return ev
		},
		"client": func(typ model.EventType, seq int64) *store.StoredEvent {
			ev := sparse(typ, seq)
			ev.Actor, ev.ClientID, ev.IP = "demo-service", "demo-service", "192.0.2.10"
			return ev
		},
	}
	for name, mk := range variants {
		for i, typ := range audit.EventTypes() {
			ev := mk(typ, int64(i+1))
			b, err := ocsf.MarshalRecord(m.Map(ev))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(b); err != nil {
				t.Errorf("%s %s: %v\n%s", name, typ, err, b)
			}
		}
	}
}

func TestRecordCarriesWardIdentity(t *testing.T) {
	m := ocsf.NewMapper("1.2.3")
	ev := rich(model.EventRefreshReuseDetected, 42)
	b, err := ocsf.MarshalRecord(m.Map(ev))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b {
		if c >= 0x80 {
			t.Fatalf("record is not ASCII: %s", b)
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	md := rec["metadata"].(map[string]any)
	want := map[string]any{"version": "1.8.0", "uid": ev.ID, "original_event_uid": ev.ID, "event_code": "W2005E",
		"sequence": float64(42), "correlation_uid": "corr-1", "original_time": "2026-04-01T12:30:45.123456Z"}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("metadata.%s = %v, want %v", k, md[k], v)
		}
	}
	if p := md["product"].(map[string]any); p["name"] != "Ward" || p["version"] != "1.2.3" {
		t.Errorf("metadata.product = %v", p)
	}
	if rec["class_uid"] != float64(2004) || rec["category_uid"] != float64(2) || rec["type_uid"] != float64(200401) ||
		rec["severity_id"] != float64(4) || rec["time"] != float64(t0.UnixMilli()) {
		t.Errorf("classification: %s", b)
	}
	ua := rec["evidences"].([]any)[0].(map[string]any)["http_request"].(map[string]any)["user_agent"]
	if ua != ev.UserAgent {
		t.Errorf("user agent = %q, want %q (escaped, not lost)", ua, ev.UserAgent)
	}
	if !strings.Contains(string(b), `\u2013`) {
		t.Errorf("non-ASCII not escaped: %s", b)
	}
}

func TestMappingsChooseActivities(t *testing.T) {
	m := ocsf.NewMapper("x")
	cases := []struct {
		ev        *store.StoredEvent
		typeUID   int
		statusID  int
		actorUser string
	}{
		{withOutcome(sparse(model.EventSignInSucceeded, 1), model.OutcomeSuccess), 300201, 1, ""},
		{withOutcome(sparse(model.EventSignInFailed, 1), model.OutcomeFailure), 300201, 2, ""},
		{withOutcome(sparse(model.EventSSOSignIn, 1), model.OutcomeFailure), 300201, 2, ""},
		{withOutcome(sparse(model.EventTokenUsed, 1), model.OutcomeFailure), 300299, 2, ""},
		{sparse(model.EventSessionLoggedOut, 1), 300202, 0, ""},
		{sparse(model.EventTokenIssued, 1), 300204, 0, ""},
		{sparse(model.EventTokenRefreshed, 1), 300205, 0, ""},
		{sparse(model.EventUserCreated, 1), 300101, 0, ""},
		{withData(sparse(model.EventUserUpdated, 1), "change", "enabled"), 300102, 0, ""},
		{withData(sparse(model.EventUserUpdated, 1), "change", "unlocked"), 300112, 0, ""},
		{sparse(model.EventUserDisabled, 1), 300105, 0, ""},
		{withActor(sparse(model.EventPasswordChanged, 1), "u1", "u1"), 300103, 0, "u1"},
		{withActor(sparse(model.EventPasswordChanged, 1), "admin", "u1"), 300104, 0, "admin"},
		{sparse(model.EventMFAEnrolled, 1), 300110, 0, ""},
		{sparse(model.EventMFARemoved, 1), 300111, 0, ""},
		{sparse(model.EventMFARecoveryCodesCreated, 1), 300199, 0, ""},
		{sparse(model.EventMFARecoveryCodeUsed, 1), 300199, 0, ""},
		{sparse(model.EventClientCreated, 1), 600301, 0, ""},
		{sparse(model.EventClientDeleted, 1), 600304, 0, ""},
		{sparse(model.EventSSFStreamCreated, 1), 600301, 0, ""},
		{sparse(model.EventSSFStreamUpdated, 1), 600303, 0, ""},
		{sparse(model.EventSSFStreamDeleted, 1), 600304, 0, ""},
		{sparse(model.EventSSFSubjectRemoved, 1), 600303, 0, ""},
		{sparse(model.EventSSFSubjectAdded, 1), 600303, 0, ""},
		{sparse(model.EventCodeReuseDetected, 1), 200401, 1, ""},
		{sparse(model.EventDPoPProofRejected, 1), 200401, 1, ""},
	}
	for _, c := range cases {
		r := m.Map(c.ev)
		if r.TypeUID != c.typeUID || r.StatusID != c.statusID {
			t.Errorf("%s %v: type_uid %d status_id %d, want %d %d", c.ev.Type, c.ev.Data, r.TypeUID, r.StatusID, c.typeUID, c.statusID)
		}
		if c.actorUser != "" && (r.Actor == nil || r.Actor.User == nil || r.Actor.User.UID != c.actorUser) {
			t.Errorf("%s: actor %+v, want user %s", c.ev.Type, r.Actor, c.actorUser)
		}
	}
}

func withOutcome(ev *store.StoredEvent, o string) *store.StoredEvent { ev.Outcome = o; return ev }
func withData(ev *store.StoredEvent, k, v string) *store.StoredEvent {
	ev.Data = map[string]string{k: v}
	return ev
}
func withActor(ev *store.StoredEvent, actor, user string) *store.StoredEvent {
	ev.Actor, ev.UserID = actor, user
	return ev
}

func TestIncidentFindingValidates(t *testing.T) {
	s := loadSchema(t)
	m := ocsf.NewMapper("x")
	f, ok := ocsf.FindingOf(m.Map(rich(model.EventRefreshReuseDetected, 7)))
	if !ok {
		t.Fatal("a detection finding has finding_info")
	}
	rec := m.Incident(ocsf.Incident{UID: "inc-1", Title: "Stolen refresh token", Time: t0, Severity: ocsf.SeverityHigh,
		Priority: 3, Assignee: "user-9", Findings: []ocsf.FindingInfo{f}})
	b, err := ocsf.MarshalRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if rec.TypeUID != 200501 {
		t.Errorf("type_uid %d", rec.TypeUID)
	}
	// OCSF requires an assignee or an assignee group.
	rec = m.Incident(ocsf.Incident{UID: "inc-2", Title: "x", Time: t0, Findings: []ocsf.FindingInfo{f}})
	b, _ = ocsf.MarshalRecord(rec)
	if err := s.Validate(b); err == nil || !strings.Contains(err.Error(), "assignee") {
		t.Errorf("incident without assignee: %v", err)
	}
}

// The validator can fail: each broken record is refused for its reason.
func TestValidatorRefusesBrokenRecords(t *testing.T) {
	s := loadSchema(t)
	m := ocsf.NewMapper("x")
	good, _ := ocsf.MarshalRecord(m.Map(rich(model.EventSignInSucceeded, 1)))
	if err := s.Validate(good); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		edit func(map[string]any)
		want string
	}{
		"missing required user":  {func(r map[string]any) { delete(r, "user") }, "user: required"},
		"missing metadata":       {func(r map[string]any) { delete(r, "metadata") }, "metadata: required"},
		"unknown attribute":      {func(r map[string]any) { r["colour"] = "red" }, "no attribute \"colour\""},
		"unknown in object":      {func(r map[string]any) { r["user"].(map[string]any)["shoe_size"] = 44 }, "user.shoe_size"},
		"wrong type_uid":         {func(r map[string]any) { r["type_uid"] = 300299 }, "type_uid"},
		"activity not in enum":   {func(r map[string]any) { r["activity_id"] = 42; r["type_uid"] = 300242 }, "activity_id: 42"},
		"bad ip":                 {func(r map[string]any) { r["src_endpoint"] = map[string]any{"ip": "not-an-ip"} }, "src_endpoint.ip"},
		"string for integer":     {func(r map[string]any) { r["severity_id"] = "1" }, "severity_id: must be an integer"},
		"wrong schema version":   {func(r map[string]any) { r["metadata"].(map[string]any)["version"] = "1.0.0" }, "metadata.version"},
		"wrong category":         {func(r map[string]any) { r["category_uid"] = 6 }, "category_uid"},
		"empty user":             {func(r map[string]any) { r["user"] = map[string]any{} }, "at least one of"},
		"profile not declared":   {func(r map[string]any) { r["metadata"].(map[string]any)["profiles"] = []any{} }, "host profile"},
		"unknown class":          {func(r map[string]any) { r["class_uid"] = 9999 }, "class_uid"},
		"product without name":   {func(r map[string]any) { delete(r["metadata"].(map[string]any)["product"].(map[string]any), "name") }, "product needs at least one of name, uid"},
		"risk level not in enum": {func(r map[string]any) { r["user"] = map[string]any{"uid": "u", "risk_level_id": 17} }, "user.risk_level_id: 17"},
	}
	for name, c := range cases {
		var r map[string]any
		if err := json.Unmarshal(good, &r); err != nil {
			t.Fatal(err)
		}
		c.edit(r)
		b, _ := json.Marshal(r)
		err := s.Validate(b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}

// A risk.detected Detection Finding carries the detection's own
// severity, confidence, id, type and ATT&CK technique (with each tactic),
// as the Incident Finding that correlates it does: a high token replay
// is not exported as Medium, and a SIEM sees the technique without the
// incident.
func TestRiskDetectionFinding(t *testing.T) {
	s := loadSchema(t)
	m := ocsf.NewMapper("1.2.3")
	type attack struct {
		Technique    struct{ UID string }  `json:"technique"`
		SubTechnique *struct{ UID string } `json:"sub_technique"`
		Tactic       struct{ UID string }  `json:"tactic"`
	}
	var rec struct {
		SeverityID      int  `json:"severity_id"`
		ConfidenceID    int  `json:"confidence_id"`
		ConfidenceScore *int `json:"confidence_score"`
		FindingInfo     struct {
			UID      string   `json:"uid"`
			Title    string   `json:"title"`
			Types    []string `json:"types"`
			Analytic struct {
				Name string `json:"name"`
			} `json:"analytic"`
			Attacks []attack `json:"attacks"`
		} `json:"finding_info"`
	}
	for _, tc := range []struct {
		name, typ, severity, confidence, technique string
		wantSeverity, wantConfidenceID, wantScore  int
		wantTechnique, wantSub                     string
		wantTactics                                []string
	}{
		{"high replay", "token_replay_wrong_key", "high", "0.95", "T1550.001", 4, 3, 95, "T1550", "T1550.001", []string{"TA0005", "TA0008"}},
		{"low, technique from the type", "unfamiliar_location", "low", "0.4", "", 2, 1, 40, "T1078", "", []string{"TA0005", "TA0003", "TA0004", "TA0001"}},
		{"malformed technique replaced", "brute_force", "medium", "0.6", "T15<script>", 3, 2, 60, "T1110", "", []string{"TA0006"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := rich(model.EventRiskDetected, 7)
			ev.Reason = tc.typ
			ev.Data = map[string]string{model.DataDetectionID: "det:" + tc.typ, model.DataDetectionSeverity: tc.severity,
				model.DataDetectionConfidence: tc.confidence, model.DataDetectionTechnique: tc.technique}
			b, err := ocsf.MarshalRecord(m.Map(ev))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(b); err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			rec.ConfidenceScore = nil
			rec.FindingInfo.Attacks = nil
			if err := json.Unmarshal(b, &rec); err != nil {
				t.Fatal(err)
			}
			fi := rec.FindingInfo
			if rec.SeverityID != tc.wantSeverity || rec.ConfidenceID != tc.wantConfidenceID || rec.ConfidenceScore == nil ||
				*rec.ConfidenceScore != tc.wantScore || fi.UID != "det:"+tc.typ || fi.Analytic.Name != tc.typ ||
				fi.Title != "Risk detected: "+tc.typ || len(fi.Types) != 2 || fi.Types[1] != tc.typ {
				t.Errorf("finding: %s", b)
			}
			var tactics []string
			for _, a := range fi.Attacks {
				sub := ""
				if a.SubTechnique != nil {
					sub = a.SubTechnique.UID
				}
				if a.Technique.UID != tc.wantTechnique || sub != tc.wantSub {
					t.Errorf("attack %+v, want technique %s sub-technique %q", a, tc.wantTechnique, tc.wantSub)
				}
				tactics = append(tactics, a.Tactic.UID)
			}
			if strings.Join(tactics, " ") != strings.Join(tc.wantTactics, " ") {
				t.Errorf("tactics %v, want %v", tactics, tc.wantTactics)
			}
		})
	}
	// Without the risk service's data (an older event), the event type's
	// Medium and a High rule confidence, as before.
	b, _ := ocsf.MarshalRecord(m.Map(sparse(model.EventRiskDetected, 8)))
	if err := s.Validate(b); err != nil || !strings.Contains(string(b), `"severity_id":3`) || strings.Contains(string(b), "attacks") {
		t.Errorf("sparse risk.detected: %v %s", err, b)
	}
}
