package ocsf

// The record types below are the part of OCSF 1.8.0 that Ward fills. One
// Record type serves every class: each field is omitted when empty, and
// the mapping fills only the attributes its class defines (the tests
// validate every mapped event against the vendored schema, which refuses
// an attribute the class does not have).

// Record is one OCSF event.
type Record struct {
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name,omitempty"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name,omitempty"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name,omitempty"`
	TypeUID      int    `json:"type_uid"`
	TypeName     string `json:"type_name,omitempty"`
	// Time is milliseconds since the epoch (timestamp_t).
	Time         int64  `json:"time"`
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity,omitempty"`
	StatusID     int    `json:"status_id"`
	Status       string `json:"status,omitempty"`
	StatusCode   string `json:"status_code,omitempty"`
	StatusDetail string `json:"status_detail,omitempty"`
	Message      string `json:"message,omitempty"`

	Metadata Metadata `json:"metadata"`

	Actor       *Actor       `json:"actor,omitempty"`
	User        *User        `json:"user,omitempty"`
	SrcEndpoint *Endpoint    `json:"src_endpoint,omitempty"`
	HTTPRequest *HTTPRequest `json:"http_request,omitempty"`
	Device      *Device      `json:"device,omitempty"`

	// Authentication.
	Session        *Session `json:"session,omitempty"`
	Service        *Entity  `json:"service,omitempty"`
	AuthProtocolID int      `json:"auth_protocol_id,omitempty"`
	AuthProtocol   string   `json:"auth_protocol,omitempty"`
	IsMFA          *bool    `json:"is_mfa,omitempty"`
	IsNewLogon     *bool    `json:"is_new_logon,omitempty"`

	// API Activity.
	API       *API       `json:"api,omitempty"`
	Resources []Resource `json:"resources,omitempty"`

	// Detection Finding.
	FindingInfo  *FindingInfo `json:"finding_info,omitempty"`
	Evidences    []Evidence   `json:"evidences,omitempty"`
	IsAlert      *bool        `json:"is_alert,omitempty"`
	ConfidenceID int          `json:"confidence_id,omitempty"`
	Confidence   string       `json:"confidence,omitempty"`
	// ConfidenceScore is a detection's own confidence, 0-100.
	ConfidenceScore *int `json:"confidence_score,omitempty"`

	// Incident Finding.
	FindingInfoList []FindingInfo `json:"finding_info_list,omitempty"`
	Assignee        *User         `json:"assignee,omitempty"`
	AssigneeGroup   *Entity       `json:"assignee_group,omitempty"`
	Desc            string        `json:"desc,omitempty"`
	PriorityID      int           `json:"priority_id,omitempty"`
	Priority        string        `json:"priority,omitempty"`
	ImpactID        int           `json:"impact_id,omitempty"`
	Impact          string        `json:"impact,omitempty"`
	Attacks         []Attack      `json:"attacks,omitempty"`
	Comment         string        `json:"comment,omitempty"`
	VerdictID       int           `json:"verdict_id,omitempty"`
	Verdict         string        `json:"verdict,omitempty"`
	// StartTime and EndTime are the times of the oldest and newest
	// detections of an incident (milliseconds since the epoch).
	StartTime int64 `json:"start_time,omitempty"`
	EndTime   int64 `json:"end_time,omitempty"`

	// Unmapped carries what OCSF has no attribute for: Ward's reason,
	// outcome, binding and event data.
	Unmapped map[string]any `json:"unmapped,omitempty"`
}

// Metadata is the OCSF metadata object.
type Metadata struct {
	Version string  `json:"version"`
	Product Product `json:"product"`
	// UID and OriginalEventUID are Ward's event id: receivers drop
	// repeats by it (export is at least once).
	UID              string `json:"uid,omitempty"`
	OriginalEventUID string `json:"original_event_uid,omitempty"`
	// EventCode is Ward's stable event code (W2005E).
	EventCode      string `json:"event_code,omitempty"`
	CorrelationUID string `json:"correlation_uid,omitempty"`
	// Sequence is the event's position in Ward's audit log.
	Sequence int64  `json:"sequence,omitempty"`
	LogName  string `json:"log_name,omitempty"`
	// OriginalTime is the event time with Ward's full precision
	// (RFC 3339, microseconds).
	OriginalTime string   `json:"original_time,omitempty"`
	Profiles     []string `json:"profiles,omitempty"`
}

// Product names Ward.
type Product struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
}

// Actor is who made the change.
type Actor struct {
	User    *User    `json:"user,omitempty"`
	Session *Session `json:"session,omitempty"`
	AppName string   `json:"app_name,omitempty"`
	AppUID  string   `json:"app_uid,omitempty"`
}

// User is an account, by Ward's user id.
type User struct {
	UID         string `json:"uid,omitempty"`
	Name        string `json:"name,omitempty"`
	TypeID      int    `json:"type_id,omitempty"`
	Type        string `json:"type,omitempty"`
	RiskLevelID *int   `json:"risk_level_id,omitempty"`
	RiskLevel   string `json:"risk_level,omitempty"`
}

// Entity is the name/uid pair several OCSF objects share (service,
// group).
type Entity struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

// Endpoint is a network endpoint.
type Endpoint struct {
	IP   string `json:"ip,omitempty"`
	Name string `json:"name,omitempty"`
}

// HTTPRequest carries the request's user agent.
type HTTPRequest struct {
	UserAgent string `json:"user_agent,omitempty"`
}

// Session is a sign-in session by Ward's session id.
type Session struct {
	UID   string `json:"uid"`
	IsMFA *bool  `json:"is_mfa,omitempty"`
}

// Device is a registered device by Ward's device id.
type Device struct {
	UID    string `json:"uid"`
	TypeID int    `json:"type_id"`
	Type   string `json:"type,omitempty"`
}

// API is the operation of an API Activity.
type API struct {
	Operation string  `json:"operation"`
	Service   *Entity `json:"service,omitempty"`
}

// Resource is the subject of an API Activity.
type Resource struct {
	Type string `json:"type,omitempty"`
	UID  string `json:"uid,omitempty"`
	Name string `json:"name,omitempty"`
}

// FindingInfo describes a finding.
type FindingInfo struct {
	UID          string    `json:"uid"`
	Title        string    `json:"title,omitempty"`
	Desc         string    `json:"desc,omitempty"`
	Types        []string  `json:"types,omitempty"`
	Analytic     *Analytic `json:"analytic,omitempty"`
	CreatedTime  int64     `json:"created_time,omitempty"`
	FirstSeen    int64     `json:"first_seen_time,omitempty"`
	LastSeen     int64     `json:"last_seen_time,omitempty"`
	RelatedCount int       `json:"related_events_count,omitempty"`
	// Attacks are the MITRE ATT&CK technique of a detection, once per
	// tactic.
	Attacks []Attack `json:"attacks,omitempty"`
}

// Analytic is the rule that produced a finding.
type Analytic struct {
	UID    string `json:"uid,omitempty"`
	Name   string `json:"name,omitempty"`
	TypeID int    `json:"type_id"`
	Type   string `json:"type,omitempty"`
}

// Evidence is what a detection finding saw.
type Evidence struct {
	Actor       *Actor       `json:"actor,omitempty"`
	User        *User        `json:"user,omitempty"`
	SrcEndpoint *Endpoint    `json:"src_endpoint,omitempty"`
	HTTPRequest *HTTPRequest `json:"http_request,omitempty"`
	Device      *Device      `json:"device,omitempty"`
}

// Attack is one MITRE ATT&CK technique (or sub-technique) with one of
// its tactics.
type Attack struct {
	Tactic       *AttackRef `json:"tactic,omitempty"`
	Technique    *AttackRef `json:"technique,omitempty"`
	SubTechnique *AttackRef `json:"sub_technique,omitempty"`
	Version      string     `json:"version,omitempty"`
}

// AttackRef names a tactic, technique or sub-technique.
type AttackRef struct {
	UID  string `json:"uid,omitempty"`
	Name string `json:"name,omitempty"`
}
