// Package ocsf maps Ward's audit events to the Open Cybersecurity Schema
// Framework (OCSF 1.8.0), the JSON records Ward's SIEM exporters send.
//
// Every event type has one mapping (a test keeps the table complete):
// sign-ins, sessions and tokens are Authentication (3002), changes to an
// account Account Change (3001), administrative and device changes API
// Activity (6003), and what Ward detects (refresh-token and code reuse,
// rejected DPoP proofs and posture reports, denied admin calls) Detection
// Finding (2004), and every change of an incident (incident.*) Incident
// Finding (2005), with its MITRE ATT&CK techniques and tactics.
// docs/secops.md has the table. Every record carries Ward's
// event id (metadata.uid and original_event_uid), its stable event code
// (metadata.event_code) and its position in the audit log
// (metadata.sequence), so a receiver can drop the repeats that
// at-least-once delivery allows and notice a gap.
package ocsf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/mitre"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// SchemaVersion is the OCSF version of every record (metadata.version).
const SchemaVersion = "1.8.0"

// Categories.
const (
	CategoryFindings    = 2
	CategoryIAM         = 3
	CategoryApplication = 6
)

// Classes.
const (
	ClassDetectionFinding = 2004
	ClassIncidentFinding  = 2005
	ClassAccountChange    = 3001
	ClassAuthentication   = 3002
	ClassAPIActivity      = 6003
)

var categoryNames = map[int]string{
	CategoryFindings:    "Findings",
	CategoryIAM:         "Identity & Access Management",
	CategoryApplication: "Application Activity",
}

var classNames = map[int]string{
	ClassDetectionFinding: "Detection Finding",
	ClassIncidentFinding:  "Incident Finding",
	ClassAccountChange:    "Account Change",
	ClassAuthentication:   "Authentication",
	ClassAPIActivity:      "API Activity",
}

// Activities used by the mappings (per class in OCSF).
const (
	activityOther = 99

	authLogon        = 1
	authLogoff       = 2
	authServiceTkt   = 4 // Service Ticket Request: a token for a client
	authServiceRenew = 5 // Service Ticket Renew: a refresh

	acctCreate         = 1
	acctEnable         = 2
	acctPasswordChange = 3
	acctPasswordReset  = 4
	acctDisable        = 5
	acctDelete         = 6
	acctLock           = 9
	acctMFAEnable      = 10
	acctMFADisable     = 11
	acctUnlock         = 12

	apiCreate = 1
	apiRead   = 2
	apiUpdate = 3
	apiDelete = 4

	findingCreate = 1
)

var activityNames = map[int]map[int]string{
	ClassAuthentication: {authLogon: "Logon", authLogoff: "Logoff", authServiceTkt: "Service Ticket Request", authServiceRenew: "Service Ticket Renew"},
	ClassAccountChange: {acctCreate: "Create", acctEnable: "Enable", acctPasswordChange: "Password Change", acctPasswordReset: "Password Reset",
		acctDisable: "Disable", acctDelete: "Delete", acctLock: "Lock", acctMFAEnable: "MFA Factor Enable", acctMFADisable: "MFA Factor Disable", acctUnlock: "Unlock"},
	ClassAPIActivity:      {apiCreate: "Create", apiRead: "Read", apiUpdate: "Update", apiDelete: "Delete"},
	ClassDetectionFinding: {findingCreate: "Create"},
	ClassIncidentFinding:  {incidentCreate: "Create", incidentUpdate: "Update", incidentClose: "Close"},
}

// Severities (severity_id).
const (
	SeverityInformational = 1
	SeverityLow           = 2
	SeverityMedium        = 3
	SeverityHigh          = 4
	SeverityCritical      = 5
)

var severityNames = map[int]string{0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal"}

// mapping says how one event type becomes a record.
type mapping struct {
	class    int
	activity int
	// other names the activity when it is 99 (Other).
	other string
	// severity overrides the one the event code implies (0: none).
	severity int
	// resource is the API Activity's resource type.
	resource string
	// title is a Detection Finding's title.
	title string
}

// Mappings of every event type. A test fails when an event type with a
// code has none.
var mappings = map[model.EventType]mapping{
	model.EventSignInSucceeded:       {class: ClassAuthentication, activity: authLogon},
	model.EventSignInFailed:          {class: ClassAuthentication, activity: authLogon},
	model.EventSessionCreated:        {class: ClassAuthentication, activity: authLogon},
	model.EventSessionLoggedOut:      {class: ClassAuthentication, activity: authLogoff},
	model.EventSessionRevoked:        {class: ClassAuthentication, activity: authLogoff},
	model.EventUserSessionsRevoked:   {class: ClassAuthentication, activity: authLogoff},
	model.EventSessionDBSCRegistered: {class: ClassAuthentication, activity: activityOther, other: "Session Bound to Browser Key"},
	model.EventSessionRiskChanged:    {class: ClassAuthentication, activity: activityOther, other: "Session Risk Level Change"},
	model.EventTokenIssued:           {class: ClassAuthentication, activity: authServiceTkt},
	model.EventTokenRequestFailed:    {class: ClassAuthentication, activity: authServiceTkt},
	model.EventTokenRefreshed:        {class: ClassAuthentication, activity: authServiceRenew},
	model.EventTokenRevoked:          {class: ClassAuthentication, activity: activityOther, other: "Token Revoked"},
	model.EventDeviceCodeApproved:    {class: ClassAuthentication, activity: activityOther, other: "Device Code Approved"},
	model.EventDeviceCodeDenied:      {class: ClassAuthentication, activity: activityOther, other: "Device Code Denied"},

	// Activity of sessions and tokens: a sign-in by the SSO cookie of an
	// existing session.
	model.EventSSOSignIn: {class: ClassAuthentication, activity: authLogon},
	// Uses of an access token reported by a resource server.
	model.EventTokenUsed: {class: ClassAuthentication, activity: activityOther, other: "Token Used"},

	model.EventUserCreated:     {class: ClassAccountChange, activity: acctCreate},
	model.EventUserUpdated:     {class: ClassAccountChange, activity: activityOther, other: "Update"}, // refined by Data["change"]
	model.EventUserDisabled:    {class: ClassAccountChange, activity: acctDisable},
	model.EventUserDeleted:     {class: ClassAccountChange, activity: acctDelete},
	model.EventUserLocked:      {class: ClassAccountChange, activity: acctLock},
	model.EventPasswordChanged: {class: ClassAccountChange, activity: acctPasswordChange}, // Reset when another actor
	model.EventMFAEnrolled:     {class: ClassAccountChange, activity: acctMFAEnable},
	model.EventMFARemoved:      {class: ClassAccountChange, activity: acctMFADisable},
	model.EventUserRiskChanged: {class: ClassAccountChange, activity: activityOther, other: "Risk Level Change"},
	model.EventRiskDismissed:   {class: ClassAccountChange, activity: activityOther, other: "Risk Dismissed"},
	model.EventRiskRemediated:  {class: ClassAccountChange, activity: activityOther, other: "Risk Remediated"},

	model.EventMFARecoveryCodesCreated: {class: ClassAccountChange, activity: activityOther, other: "Recovery Codes Created"},
	model.EventMFARecoveryCodeUsed:     {class: ClassAccountChange, activity: activityOther, other: "Recovery Code Used"},

	model.EventGroupCreated:            {class: ClassAPIActivity, activity: apiCreate, resource: "group"},
	model.EventGroupUpdated:            {class: ClassAPIActivity, activity: apiUpdate, resource: "group"},
	model.EventGroupDeleted:            {class: ClassAPIActivity, activity: apiDelete, resource: "group"},
	model.EventClientCreated:           {class: ClassAPIActivity, activity: apiCreate, resource: "client"},
	model.EventClientUpdated:           {class: ClassAPIActivity, activity: apiUpdate, resource: "client"},
	model.EventClientDeleted:           {class: ClassAPIActivity, activity: apiDelete, resource: "client"},
	model.EventClientSecretRotated:     {class: ClassAPIActivity, activity: apiUpdate, resource: "client"},
	model.EventKeyCreated:              {class: ClassAPIActivity, activity: apiCreate, resource: "signing_key"},
	model.EventKeyRotated:              {class: ClassAPIActivity, activity: apiUpdate, resource: "signing_key"},
	model.EventKeyRetired:              {class: ClassAPIActivity, activity: apiDelete, resource: "signing_key"},
	model.EventKEKRotated:              {class: ClassAPIActivity, activity: apiUpdate, resource: "key_encryption_key"},
	model.EventAccessPolicyChanged:     {class: ClassAPIActivity, activity: apiCreate, resource: "conditional_access_policy_version"},
	model.EventCompliancePolicyChanged: {class: ClassAPIActivity, activity: apiUpdate, resource: "compliance_policy"},
	model.EventSSFStreamStatusChanged:  {class: ClassAPIActivity, activity: apiUpdate, resource: "ssf_stream"},
	// A receiver managing its own stream (the client as actor).
	model.EventSSFStreamCreated: {class: ClassAPIActivity, activity: apiCreate, resource: "ssf_stream"},
	model.EventSSFStreamUpdated: {class: ClassAPIActivity, activity: apiUpdate, resource: "ssf_stream"},
	model.EventSSFStreamDeleted: {class: ClassAPIActivity, activity: apiDelete, resource: "ssf_stream"},
	// The stream's subjects: a removal stops events about one subject.
	model.EventSSFSubjectRemoved: {class: ClassAPIActivity, activity: apiUpdate, resource: "ssf_stream_subjects"},
	model.EventSSFSubjectAdded:   {class: ClassAPIActivity, activity: apiUpdate, resource: "ssf_stream_subjects"},
	// The sealer accounted for a sequence number no event committed under.
	model.EventAuditSequenceSkipped:    {class: ClassAPIActivity, activity: apiCreate, resource: "audit_log"},
	model.EventDeviceRegistered:        {class: ClassAPIActivity, activity: apiCreate, resource: "device"},
	model.EventDeviceDisabled:          {class: ClassAPIActivity, activity: apiUpdate, resource: "device"},
	model.EventDeviceLost:              {class: ClassAPIActivity, activity: apiUpdate, resource: "device"},
	model.EventDeviceEnabled:           {class: ClassAPIActivity, activity: apiUpdate, resource: "device"},
	model.EventDeviceDeleted:           {class: ClassAPIActivity, activity: apiDelete, resource: "device"},
	model.EventDevicePostureReported:   {class: ClassAPIActivity, activity: apiCreate, resource: "device_posture"},
	model.EventDeviceComplianceChanged: {class: ClassAPIActivity, activity: apiUpdate, resource: "device"},
	model.EventDeviceKeyAttested:       {class: ClassAPIActivity, activity: apiUpdate, resource: "device"},

	model.EventRefreshReuseDetected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityHigh,
		title: "Refresh token reuse detected: the session was revoked"},
	model.EventCodeReuseDetected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityHigh,
		title: "Authorization code reuse detected: the session was revoked"},
	model.EventDPoPProofRejected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityMedium,
		title: "DPoP proof rejected"},
	model.EventDevicePostureRejected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityMedium,
		title: "Device posture report rejected"},
	model.EventDeviceKeyAttestationRejected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityMedium,
		title: "Device key attestation rejected"},
	model.EventSSFSignalReceived: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityLow,
		title: "Security event received from a Shared Signals transmitter"},
	model.EventRiskDetected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityMedium,
		title: "Risk detected"},
	model.EventRiskCompromiseConfirmed: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityCritical,
		title: "Account compromise confirmed by an administrator: every session was revoked"},
	model.EventAdminAccessDenied: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityMedium,
		title: "Admin API access denied"},

	// Incidents: the state of the incident after each change (incident.go).
	model.EventIncidentCreated:       {class: ClassIncidentFinding, activity: incidentCreate},
	model.EventIncidentUpdated:       {class: ClassIncidentFinding, activity: incidentUpdate},
	model.EventIncidentStatusChanged: {class: ClassIncidentFinding, activity: incidentUpdate}, // Close when it closes
	model.EventIncidentAssigned:      {class: ClassIncidentFinding, activity: incidentUpdate},
	model.EventIncidentCommented:     {class: ClassIncidentFinding, activity: incidentUpdate},
	model.EventIncidentMerged:        {class: ClassIncidentFinding, activity: incidentUpdate},
	model.EventIncidentSplit:         {class: ClassIncidentFinding, activity: incidentUpdate},
	model.EventIncidentActionTaken:   {class: ClassIncidentFinding, activity: incidentUpdate},
	model.EventConsoleAccessDenied: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityMedium,
		title: "Web console access denied"},
	model.EventConsoleLogsExported: {class: ClassAPIActivity, activity: apiRead, resource: "audit_log"},
	model.EventConsoleSignedIn:     {class: ClassAPIActivity, activity: apiCreate, resource: "console_session"},
	model.EventPasskeyCloneSuspected: {class: ClassDetectionFinding, activity: findingCreate, severity: SeverityHigh,
		title: "Passkey signature counter went back: possible cloned authenticator"},
	model.EventPasskeyRejected: {class: ClassAccountChange, activity: activityOther, other: "Passkey Registration Rejected"},
	model.EventPasskeyRecovery: {class: ClassAccountChange, activity: activityOther, other: "Passkey Recovery"},
	model.EventPasskeyRenamed:  {class: ClassAccountChange, activity: activityOther, other: "Passkey Renamed"},
}

// Class returns the OCSF class_uid event type t maps to (0: unknown
// type).
func Class(t model.EventType) int { return mappings[t].class }

// Mapper turns stored events into OCSF records.
type Mapper struct {
	product Product
}

// NewMapper returns a mapper that names Ward at version (the binary's).
func NewMapper(version string) *Mapper {
	if version == "" {
		version = "unknown"
	}
	return &Mapper{product: Product{Name: "Ward", VendorName: "Ward", Version: version}}
}

// Map returns the OCSF record of ev.
func (m *Mapper) Map(ev *store.StoredEvent) *Record {
	mp, ok := mappings[ev.Type]
	if !ok {
		// An event type newer than this mapping (a mixed-version
		// deployment): still exported, as an API Activity of Ward's.
		mp = mapping{class: ClassAPIActivity, activity: activityOther, other: string(ev.Type), resource: "ward"}
	}
	code := ev.Code()
	r := &Record{
		ClassUID: mp.class,
		Time:     ev.Time.UnixMilli(),
		Metadata: Metadata{
			Version: SchemaVersion, Product: m.product,
			UID: ev.ID, OriginalEventUID: ev.ID, EventCode: code, CorrelationUID: ev.CorrelationID,
			Sequence: ev.Seq, LogName: "audit", OriginalTime: ev.Time.UTC().Format(time.RFC3339Nano),
		},
		Message: string(ev.Type),
	}
	r.SeverityID = severityOf(code)
	if mp.severity != 0 {
		r.SeverityID = mp.severity
	}
	r.StatusID, r.Status = outcomeStatus(ev.Outcome)
	r.StatusDetail = ev.Reason
	activity, other := mp.activity, mp.other

	switch mp.class {
	case ClassAuthentication:
		m.authentication(r, ev)
	case ClassAccountChange:
		activity, other = accountActivity(ev, activity, other)
		m.accountChange(r, ev)
	case ClassAPIActivity:
		m.apiActivity(r, ev, mp.resource)
	case ClassDetectionFinding:
		m.detection(r, ev, mp.title)
	case ClassIncidentFinding:
		activity = incidentActivity(ev)
		m.incident(r, ev)
	}
	if ev.DeviceID != "" && r.Device == nil && mp.class != ClassIncidentFinding {
		// The device attribute of the other classes is the host
		// profile's.
		r.Device = &Device{UID: ev.DeviceID, Type: "Unknown"}
		r.Metadata.Profiles = []string{"host"}
	}
	r.setClass(mp.class, activity, other)
	r.Unmapped = unmapped(ev)
	return r
}

// MarshalRecord encodes r as one line of JSON: ASCII only (other
// characters as \u escapes), so that it is the same bytes in a file, an
// HTTP body and a syslog message whatever their character set.
func MarshalRecord(r *Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("ocsf: %w", err)
	}
	return asciiJSON(b), nil
}

// setClass fills the classification attributes.
func (r *Record) setClass(class, activity int, other string) {
	cat := class / 1000
	r.ClassUID, r.ClassName = class, classNames[class]
	r.CategoryUID, r.CategoryName = cat, categoryNames[cat]
	r.ActivityID = activity
	r.ActivityName = activityNames[class][activity]
	if activity == activityOther {
		r.ActivityName = other
	}
	if r.ActivityName == "" {
		r.ActivityName = "Unknown"
	}
	r.TypeUID = class*100 + activity
	r.TypeName = r.ClassName + ": " + r.ActivityName
	r.Severity = severityNames[r.SeverityID]
}

// severityOf derives the severity from the code's last letter
// (Information, Warning, Error).
func severityOf(code string) int {
	switch {
	case strings.HasSuffix(code, "E"):
		return SeverityHigh
	case strings.HasSuffix(code, "W"):
		return SeverityLow
	default:
		return SeverityInformational
	}
}

func outcomeStatus(outcome string) (int, string) {
	switch outcome {
	case model.OutcomeSuccess:
		return 1, "Success"
	case model.OutcomeFailure:
		return 2, "Failure"
	}
	return 0, "Unknown"
}

// actor names who acted: Ward itself, a client (client credentials, a
// client revoking its token) or a user (an administrator, or the user
// acting on their own account).
func actor(ev *store.StoredEvent) *Actor {
	var a *Actor
	switch {
	case ev.Actor == "system":
		a = &Actor{AppName: "Ward"}
	case ev.Actor == "" || ev.Actor == "anonymous":
		if ev.ClientID != "" {
			a = &Actor{AppUID: ev.ClientID, AppName: ev.ClientID}
		}
	case ev.Actor == ev.ClientID && ev.Actor != ev.UserID:
		a = &Actor{AppUID: ev.ClientID, AppName: ev.ClientID}
	default:
		a = &Actor{User: &User{UID: ev.Actor}}
	}
	if a != nil && ev.SessionID != "" && a.User != nil && ev.Actor == ev.UserID {
		a.Session = &Session{UID: ev.SessionID}
	}
	return a
}

// subject is the user an event is about.
func subject(ev *store.StoredEvent) *User {
	u := &User{UID: ev.UserID, Name: ev.Data["username"]}
	if u.UID == "" && u.Name == "" {
		// A failed sign-in with a name that is no account: Ward does not
		// record the typed name (people type passwords into it).
		u.Name = "anonymous"
	}
	return u
}

// source is where the request came from; without an address (a
// command-line tool, or Ward itself) it is named "ward-local".
func source(ev *store.StoredEvent, required bool) *Endpoint {
	if ev.IP != "" {
		return &Endpoint{IP: ev.IP}
	}
	if required {
		return &Endpoint{Name: "ward-local"}
	}
	return nil
}

func httpRequest(ev *store.StoredEvent) *HTTPRequest {
	if ev.UserAgent == "" {
		return nil
	}
	return &HTTPRequest{UserAgent: ev.UserAgent}
}

func (m *Mapper) authentication(r *Record, ev *store.StoredEvent) {
	r.User = subject(ev)
	r.Actor = actor(ev)
	r.SrcEndpoint = source(ev, false)
	r.HTTPRequest = httpRequest(ev)
	// The service authenticated to: the client (relying party), else
	// Ward itself.
	r.Service = &Entity{Name: "Ward"}
	if ev.ClientID != "" {
		r.Service = &Entity{Name: ev.ClientID, UID: ev.ClientID}
	}
	r.AuthProtocolID, r.AuthProtocol = 4, "OpenID"
	if ev.SessionID != "" {
		r.Session = &Session{UID: ev.SessionID}
	}
	if amr := ev.Data["amr"]; amr != "" {
		mfa := strings.Contains(" "+amr+" ", " mfa ") || strings.Contains(" "+amr+" ", " otp ")
		r.IsMFA = &mfa
	}
	if ev.Type == model.EventSessionCreated {
		t := true
		r.IsNewLogon = &t
	}
}

// accountActivity refines the activity from what the event says.
func accountActivity(ev *store.StoredEvent, activity int, other string) (int, string) {
	switch ev.Type {
	case model.EventUserUpdated:
		switch ev.Data["change"] {
		case "enabled":
			return acctEnable, ""
		case "unlocked":
			return acctUnlock, ""
		case "roles":
			return activityOther, "Roles Change"
		}
	case model.EventPasswordChanged:
		if ev.Actor != "" && ev.Actor != ev.UserID {
			return acctPasswordReset, ""
		}
	}
	return activity, other
}

// riskLevels maps Ward's user risk levels to OCSF risk_level_id.
var riskLevels = map[string]struct {
	id   int
	name string
}{"none": {0, "Info"}, "low": {1, "Low"}, "medium": {2, "Medium"}, "high": {3, "High"}}

func (m *Mapper) accountChange(r *Record, ev *store.StoredEvent) {
	r.User = subject(ev)
	if ev.Type == model.EventUserRiskChanged || ev.Type == model.EventRiskDismissed || ev.Type == model.EventRiskRemediated {
		if l, ok := riskLevels[ev.Data["level"]]; ok {
			id := l.id
			r.User.RiskLevelID, r.User.RiskLevel = &id, l.name
		}
	}
	r.Actor = actor(ev)
	r.SrcEndpoint = source(ev, false)
	r.HTTPRequest = httpRequest(ev)
}

func (m *Mapper) apiActivity(r *Record, ev *store.StoredEvent, resource string) {
	r.Actor = actor(ev)
	if r.Actor == nil {
		r.Actor = &Actor{AppName: "Ward"}
	}
	r.SrcEndpoint = source(ev, true)
	r.HTTPRequest = httpRequest(ev)
	r.API = &API{Operation: string(ev.Type), Service: &Entity{Name: "Ward"}}
	res := Resource{Type: resource, UID: resourceUID(ev, resource)}
	if n := ev.Data["name"]; n != "" {
		res.Name = n
	}
	if res.UID == "" && res.Name == "" {
		res.Name = resource
	}
	r.Resources = []Resource{res}
}

// resourceUID is the id of what an API Activity changed.
func resourceUID(ev *store.StoredEvent, resource string) string {
	switch resource {
	case "group":
		return ev.Data["group_id"]
	case "client":
		return ev.ClientID
	case "signing_key":
		return firstNonEmpty(ev.Data["kid"], ev.TokenID)
	case "device", "device_posture":
		return ev.DeviceID
	case "conditional_access_policy_version":
		return ev.Data["version"]
	case "compliance_policy":
		return ev.Data["platform"]
	case "ssf_stream":
		return ev.Data["stream_id"]
	}
	return ""
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (m *Mapper) detection(r *Record, ev *store.StoredEvent, title string) {
	// A finding's status is its own (New); the outcome stays in
	// unmapped.
	r.StatusID, r.Status, r.StatusDetail = 1, "New", ""
	alert := true
	r.IsAlert = &alert
	r.ConfidenceID, r.Confidence = 3, "High"
	desc := title
	if ev.Reason != "" {
		desc += " (" + ev.Reason + ")"
	}
	r.FindingInfo = &FindingInfo{
		UID: ev.ID, Title: title, Desc: desc, Types: []string{string(ev.Type)},
		Analytic:    &Analytic{UID: ev.Code(), Name: string(ev.Type), TypeID: 1, Type: "Rule"},
		CreatedTime: ev.Time.UnixMilli(),
	}
	e := Evidence{Actor: actor(ev), SrcEndpoint: source(ev, false), HTTPRequest: httpRequest(ev)}
	if ev.UserID != "" {
		e.User = &User{UID: ev.UserID}
	}
	if ev.DeviceID != "" {
		e.Device = &Device{UID: ev.DeviceID, Type: "Unknown"}
	}
	if e.Actor == nil && e.User == nil && e.SrcEndpoint == nil && e.Device == nil {
		e.SrcEndpoint = &Endpoint{Name: "ward-local"}
	}
	r.Evidences = []Evidence{e}
	if ev.DeviceID != "" {
		r.Device = &Device{UID: ev.DeviceID, Type: "Unknown"}
	}
	if ev.Type == model.EventRiskDetected {
		riskDetection(r, ev)
	}
}

// riskDetection describes a detection of the risk service by its own
// data, as the Incident Finding that correlates it does: its severity
// (a high token replay is High, not the event type's Medium), its
// confidence, its type as the rule, its id (finding_info_list[1].uid of
// the Incident Finding) and its ATT&CK technique with each tactic. A SIEM
// then triages and correlates the Detection Finding alone.
func riskDetection(r *Record, ev *store.StoredEvent) {
	d := ev.Data
	switch d[model.DataDetectionSeverity] {
	case "low":
		r.SeverityID = SeverityLow
	case "medium":
		r.SeverityID = SeverityMedium
	case "high":
		r.SeverityID = SeverityHigh
	}
	if c, err := strconv.ParseFloat(d[model.DataDetectionConfidence], 64); err == nil && c >= 0 && c <= 1 {
		score := int(math.Round(c * 100))
		r.ConfidenceScore = &score
		switch {
		case c >= 0.8:
			r.ConfidenceID, r.Confidence = 3, "High"
		case c >= 0.5:
			r.ConfidenceID, r.Confidence = 2, "Medium"
		default:
			r.ConfidenceID, r.Confidence = 1, "Low"
		}
	}
	fi := r.FindingInfo
	if id := d[model.DataDetectionID]; id != "" {
		fi.UID = id
	}
	typ := ev.Reason
	if typ != "" {
		fi.Title = "Risk detected: " + typ
		fi.Types = append(fi.Types, typ)
		fi.Analytic = &Analytic{UID: typ, Name: typ, TypeID: 1, Type: "Rule"}
	}
	tech := d[model.DataDetectionTechnique]
	if !mitre.ValidID(tech) {
		tech = mitre.ByType[typ]
	}
	if tech != "" {
		fi.Attacks = attacks([]string{tech})
	}
}

// unmapped keeps what OCSF has no attribute for, under Ward's own names.
func unmapped(ev *store.StoredEvent) map[string]any {
	u := map[string]any{"ward_event_type": string(ev.Type)}
	add := func(k, v string) {
		if v != "" {
			u[k] = v
		}
	}
	add("outcome", ev.Outcome)
	add("reason", ev.Reason)
	add("binding", ev.Binding)
	add("binding_reason", ev.BindingReason)
	add("client_id", ev.ClientID)
	add("device_id", ev.DeviceID)
	add("token_id", ev.TokenID)
	add("session_id", ev.SessionID)
	add("actor", ev.Actor)
	if len(ev.Data) > 0 {
		d := make(map[string]string, len(ev.Data))
		for k, v := range ev.Data {
			d[k] = v
		}
		u["data"] = d
	}
	return u
}

// Incident is an Incident Finding built from its parts (Map builds the
// records of Ward's own incident events): one incident that groups
// findings (each a Detection Finding's finding_info).
type Incident struct {
	UID      string
	Title    string
	Desc     string
	Time     time.Time
	Severity int // severity_id
	Priority int // priority_id: 1 Low … 4 Critical
	// Assignee (a user id) or AssigneeGroup: OCSF requires one.
	Assignee      string
	AssigneeGroup string
	Findings      []FindingInfo
}

var priorityNames = map[int]string{0: "Unknown", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}

// Incident returns the Incident Finding record of in.
func (m *Mapper) Incident(in Incident) *Record {
	r := &Record{
		Time: in.Time.UnixMilli(),
		Metadata: Metadata{
			Version: SchemaVersion, Product: m.product, UID: in.UID, LogName: "incidents",
			OriginalTime: in.Time.UTC().Format(time.RFC3339Nano),
		},
		SeverityID: in.Severity, StatusID: 1, Status: "New",
		Desc: firstNonEmpty(in.Desc, in.Title), Message: in.Title,
		FindingInfoList: in.Findings,
		PriorityID:      in.Priority, Priority: priorityNames[in.Priority],
	}
	if in.Assignee != "" {
		r.Assignee = &User{UID: in.Assignee}
	}
	if in.AssigneeGroup != "" {
		r.AssigneeGroup = &Entity{UID: in.AssigneeGroup, Name: in.AssigneeGroup}
	}
	r.setClass(ClassIncidentFinding, findingCreate, "")
	return r
}

// FindingOf returns the finding_info of a Detection Finding record (for
// an incident's Findings).
func FindingOf(r *Record) (FindingInfo, bool) {
	if r.FindingInfo == nil {
		return FindingInfo{}, false
	}
	return *r.FindingInfo, true
}

// asciiJSON rewrites the non-ASCII characters of a JSON text (which only
// occur inside strings) as \u escapes; a valid text stays valid and
// means the same.
func asciiJSON(b []byte) []byte {
	i := 0
	for i < len(b) && b[i] < utf8.RuneSelf {
		i++
	}
	if i == len(b) {
		return b
	}
	var out bytes.Buffer
	out.Grow(len(b) + 16)
	out.Write(b[:i])
	for _, r := range string(b[i:]) {
		switch {
		case r < utf8.RuneSelf:
			out.WriteByte(byte(r))
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
	}
	return out.Bytes()
}
