package model

import "time"

// EventType is a dotted, stable event name. It doubles as the audit
// vocabulary; never rename one, only add.
type EventType string

// Domain events. Each has a short stable code (EventCodes) for SIEMs.
const (
	EventSignInSucceeded      EventType = "signin.succeeded"
	EventSignInFailed         EventType = "signin.failed"
	EventMFAEnrolled          EventType = "mfa.enrolled"
	EventTokenIssued          EventType = "token.issued"
	EventTokenRefreshed       EventType = "token.refreshed"
	EventTokenRevoked         EventType = "token.revoked"
	EventTokenRequestFailed   EventType = "token.request_failed"
	EventDPoPProofRejected    EventType = "dpop.proof_rejected"
	EventRefreshReuseDetected EventType = "session.refresh_reuse_detected"
	EventCodeReuseDetected    EventType = "code.reuse_detected"
	EventDeviceCodeApproved   EventType = "device_code.approved"
	EventDeviceCodeDenied     EventType = "device_code.denied"
	EventSessionCreated       EventType = "session.created"
	EventSessionRevoked       EventType = "session.revoked"
	EventSessionLoggedOut     EventType = "session.logged_out"
	// EventSessionDBSCRegistered: the browser bound the SSO session to its
	// key (Device Bound Session Credentials).
	EventSessionDBSCRegistered EventType = "session.dbsc_registered"
	EventUserCreated           EventType = "user.created"
	EventUserUpdated           EventType = "user.updated"
	EventUserDisabled          EventType = "user.disabled"
	EventUserDeleted           EventType = "user.deleted"
	EventUserLocked            EventType = "user.locked"
	EventPasswordChanged       EventType = "user.password_changed"
	EventGroupCreated          EventType = "group.created"
	EventGroupUpdated          EventType = "group.updated"
	EventGroupDeleted          EventType = "group.deleted"
	EventClientCreated         EventType = "client.created"
	EventClientUpdated         EventType = "client.updated"
	EventClientDeleted         EventType = "client.deleted"
	EventClientSecretRotated   EventType = "client.secret_rotated"
	EventKeyCreated            EventType = "key.created"
	EventKeyRotated            EventType = "key.rotated"
	EventKeyRetired            EventType = "key.retired"
	EventAdminAccessDenied     EventType = "admin.access_denied"
)

// EventSSOSignIn: /authorize (or a device approval) reused the SSO
// session of the browser's cookie instead of asking for credentials: a
// sign-in without a password, evaluated by Conditional Access with this
// request's address, device and sign-in risk. Outcome failure when it was
// blocked or sent to a step-up (Reason: ca_block, ca_mfa_required, ...).
// Data: amr, acr, proof, bound_jkt (the session's DBSC key), jkt (the
// client's dpop_jkt), session_binding, sign_in_risk, the CA decision.
const EventSSOSignIn EventType = "signin.sso"

// EventTokenUsed: a resource server reported uses of an access token
// (POST /usage): Count uses (Data count, absent: one) of token TokenID
// from one client address and user agent with one result, allowed
// (Outcome success) or rejected (failure, Reason: the resource's reason).
// Data: jkt (the proof's key), bound_jkt (the token's), proof, resource
// (the audience), reporter (the reporting client).
const EventTokenUsed EventType = "token.used"

// EventKEKRotated: every value sealed under the key-encryption key was
// re-sealed under a new one (Data: signing_keys, totp_seeds,
// ssf_authorization_headers: how many of each).
const EventKEKRotated EventType = "kek.rotated"

// EventMFARemoved: a second factor was removed (Data: method).
const EventMFARemoved EventType = "mfa.removed"

// Recovery codes of the TOTP second factor.
const (
	// EventMFARecoveryCodesCreated: a user was given a new set of
	// one-time recovery codes, which replaced any earlier set (Data:
	// count).
	EventMFARecoveryCodesCreated EventType = "mfa.recovery_codes_created"
	// EventMFARecoveryCodeUsed: a user signed in with a recovery code
	// instead of a TOTP code, so the authenticator may be lost (Data:
	// codes_left).
	EventMFARecoveryCodeUsed EventType = "mfa.recovery_code_used"
)

// EventUserSessionsRevoked: an administrator revoked all sessions of a
// user. It is published once, after the session.revoked of each session
// (which carry Data["all_sessions"]="true"); Data: sessions_revoked.
const EventUserSessionsRevoked EventType = "user.sessions_revoked"

// DataAllSessions is the Data key ("true") of a session.revoked that is
// part of revoking all of a user's sessions: the user-level
// user.sessions_revoked speaks for all of them.
const DataAllSessions = "all_sessions"

// DataCreatedUntil is the Data key of a user.sessions_revoked that ended
// only the sessions created at or before a time (RFC 3339): sessions
// created later live on, so its session.revoked events speak for each
// session and no user-level signal is sent.
const DataCreatedUntil = "created_until"

// Device trust events (registered devices, posture, compliance).
const (
	EventDeviceRegistered        EventType = "device.registered"
	EventDeviceDisabled          EventType = "device.disabled"
	EventDeviceLost              EventType = "device.lost"
	EventDeviceDeleted           EventType = "device.deleted"
	EventDevicePostureReported   EventType = "device.posture_reported"
	EventDevicePostureRejected   EventType = "device.posture_rejected"
	EventDeviceComplianceChanged EventType = "device.compliance_changed"
	// EventDeviceKeyAttested: the device proved that its key lives in a
	// TPM (Data: method, ek_sha256, ek_certified, ek_issuer).
	EventDeviceKeyAttested EventType = "device.key_attested"
	// EventDeviceKeyAttestationRejected: key attestation evidence or a
	// challenge answer was refused (Reason says why).
	EventDeviceKeyAttestationRejected EventType = "device.key_attestation_rejected"
	EventCompliancePolicyChanged      EventType = "compliance.policy_changed"
)

// EventDeviceEnabled: a disabled device was enabled again (Data:
// previous_status, compliance).
const EventDeviceEnabled EventType = "device.enabled"

// Conditional Access and risk events.
const (
	// EventAccessPolicyChanged: a new Conditional Access policy version
	// was stored (Data: version, digest, added, changed, removed).
	EventAccessPolicyChanged EventType = "access.policy_changed"
	// EventUserRiskChanged: a user's risk level was set (Data: level,
	// previous, reason; DataActivityAt when a detection raised it).
	EventUserRiskChanged EventType = "user.risk_changed"
)

// DataActivityAt is the Data key of a user.risk_changed raised by a
// detection: the time (RFC 3339) of the activity the detection is about,
// which bounds the automatic response (sessions created after the user's
// first remediation since are spared) and, through the CAEP
// risk-level-change's event_timestamp, what resources revoke.
const DataActivityAt = "activity_at"

// Passkeys and security keys (WebAuthn). Enrolment and removal are
// mfa.enrolled and mfa.removed (Data: method passkey or security_key,
// credential, name), which carry the CAEP credential-change.
const (
	// EventPasskeyCloneSuspected: an assertion's signature counter did not
	// grow past the stored one: two copies of the credential's private key
	// may be in use (the sign-in is refused). Data: credential,
	// stored_count, presented_count.
	EventPasskeyCloneSuspected EventType = "passkey.clone_suspected"
	// EventPasskeyRejected: a passkey registration was refused (Reason:
	// why, e.g. attestation_not_allowed, invalid_response,
	// no_user_verification; Data: aaguid when known).
	EventPasskeyRejected EventType = "passkey.rejected"
	// EventPasskeyRecovery: a user who lost every passkey was let back in
	// another way (Reason: admin_reset or fallback; Data: removed, the
	// number of credentials removed, and fallback). It also raises the
	// user's risk (risk.detected, source admin or signin).
	EventPasskeyRecovery EventType = "passkey.recovery"
	// EventPasskeyRenamed: a user or an administrator (Actor) renamed one
	// of the user's passkeys or security keys. Data: credential (Ward's
	// id), name, previous.
	EventPasskeyRenamed EventType = "passkey.renamed"
)

// EventRiskDetected: a risk detection (Reason: the detection type; Data:
// the DataDetection* keys).
const EventRiskDetected EventType = "risk.detected"

// Data keys of risk.detected events.
const (
	DataDetectionID         = "detection_id"
	DataDetectionSeverity   = "severity"
	DataDetectionConfidence = "confidence"
	DataDetectionTechnique  = "technique"
	DataDetectionEvidence   = "evidence"
	DataDetectionDetail     = "detail"
	DataDetectionSource     = "source"
)

// Risk levels and their administration.
const (
	// EventSessionRiskChanged: a session's risk level changed (Data:
	// level, previous, detection_id).
	EventSessionRiskChanged EventType = "session.risk_changed"
	// EventRiskDismissed: an administrator dismissed detections (Reason:
	// the administrator's reason; Data: scope, detections, count).
	EventRiskDismissed EventType = "risk.dismissed"
	// EventRiskCompromiseConfirmed: an administrator confirmed that a
	// user's account is compromised (Data: detection_id, previous).
	EventRiskCompromiseConfirmed EventType = "risk.compromise_confirmed"
	// EventRiskRemediated: the user remediated their risk (Reason: method
	// password_change or mfa; Data: detections, count, previous).
	EventRiskRemediated EventType = "risk.remediated"
)

// Shared Signals transmitter events.
const (
	// EventSSFStreamStatusChanged: a receiver's stream status changed,
	// by an administrator on the transmitter's side (Reason transmitter)
	// or by the receiver itself (Reason receiver, Actor the client)
	// (Data: stream_id, status, previous, status_reason).
	EventSSFStreamStatusChanged EventType = "ssf.stream_status_changed"
	// EventSSFStreamCreated: a receiver created a stream (Actor and
	// ClientID the client, Reason receiver; Data: the DataSSFStream*
	// keys below).
	EventSSFStreamCreated EventType = "ssf.stream_created"
	// EventSSFStreamUpdated: a receiver changed its stream's delivery,
	// events or description (PATCH or PUT; an update that changes
	// nothing is not recorded). Data: the DataSSFStream* keys as they
	// are after the change, with DataSSFStreamChanged and, when events
	// stopped or started being delivered, DataSSFStreamEventsRemoved and
	// DataSSFStreamEventsAdded. Notable (W): an update can redirect the
	// pushes or drop the events that carry session revocation.
	EventSSFStreamUpdated EventType = "ssf.stream_updated"
	// EventSSFStreamDeleted: a receiver deleted its stream and its queue
	// (Data: the DataSSFStream* keys as they were). Notable (W): it ends
	// Continuous Access Evaluation at that receiver.
	EventSSFStreamDeleted EventType = "ssf.stream_deleted"
	// EventSSFSubjectRemoved: a receiver stopped the events about a
	// subject on its stream (POST /ssf/subjects:remove; Data:
	// stream_id, subject_format, subject_digest; UserID when the subject
	// names a Ward user). Notable (W): removing a victim stops
	// Continuous Access Evaluation for that user at that receiver.
	EventSSFSubjectRemoved EventType = "ssf.subject_removed"
	// EventSSFSubjectAdded: a receiver took back a subject it had
	// removed (POST /ssf/subjects:add; Data and UserID as above).
	EventSSFSubjectAdded EventType = "ssf.subject_added"
)

// Data keys of ssf.stream_created, ssf.stream_updated and
// ssf.stream_deleted. Lists are comma separated and bounded like every
// value (bus.Bound). The push authorization header is never recorded,
// only whether it changed, and of the endpoint only its host (a URL's
// path or query may carry a credential).
const (
	DataSSFStreamID              = "stream_id"
	DataSSFStreamMethod          = "method"           // push or poll
	DataSSFStreamEndpointHost    = "endpoint_host"    // push only
	DataSSFStreamEventsRequested = "events_requested" // as the receiver sent them (absent: every supported event)
	DataSSFStreamEventsDelivered = "events_delivered"
	// DataSSFStreamChanged names the properties an update changed:
	// method, endpoint_url, authorization_header, events_requested,
	// description.
	DataSSFStreamChanged          = "changed"
	DataSSFStreamEventsRemoved    = "events_removed" // delivered before, no longer
	DataSSFStreamEventsAdded      = "events_added"
	DataSSFStreamPreviousMethod   = "previous_method"        // when the method changed
	DataSSFStreamPreviousEndpoint = "previous_endpoint_host" // when the push endpoint changed
	// DataSSFSubjectDigest (with DataSSFSubjectFormat) is the subject of
	// ssf.subject_removed and ssf.subject_added: the first 16 bytes of
	// the SHA-256 of its canonical form, in hex. The same subject always
	// gives the same digest, so removals and additions can be matched,
	// without the identifier itself (an e-mail address, a phone number)
	// in the audit log.
	DataSSFSubjectDigest = "subject_digest"
)

// Shared Signals receiver events (Ward receiving SETs from other
// transmitters: another IdP, an EDR, a CASB).
const (
	// EventSSFSignalReceived: a Security Event Token from a configured
	// transmitter was verified and recorded, about the user (and the
	// session, when it names one Ward knows) its subject maps to. Reason
	// is the event type's last path segment (session-revoked); Data:
	// signal (the event type URI, activity.DataSignal), and the
	// DataSSF* keys below.
	EventSSFSignalReceived EventType = "ssf.signal_received"
)

// Data keys of ssf.signal_received. Values are bounded; the SET itself is
// never stored.
const (
	DataSSFTransmitter   = "transmitter"       // the receiver's configured name
	DataSSFIssuer        = "ssf_iss"           // the SET's iss
	DataSSFJTI           = "ssf_jti"           // the SET's jti
	DataSSFSubjectFormat = "subject_format"    // format of the subject (complex: its user member's)
	DataSSFEventTime     = "event_timestamp"   // RFC 3339, when the SET says the event happened
	DataSSFInitiator     = "initiating_entity" // admin, user, policy or system
	DataSSFReasonAdmin   = "reason_admin"      // the reason for administrators (English, else the first language)
	DataSSFReasonUser    = "reason_user"       // the reason for the user
	DataSSFCurrentLevel  = "current_level"     // risk-level-change, assurance-level-change
	DataSSFPreviousLevel = "previous_level"    // risk-level-change, assurance-level-change
	DataSSFDetail        = "signal_detail"     // other event members: credential_type, change_type, current_status, risk_reason
)

// EventAuditSequenceSkipped: the audit log's sealer found no event under a
// sequence number that a transaction took and then rolled back, and
// stored this record there so that the number is accounted for (and no
// event can commit under it any more). Data: skipped_through when it
// stands for a run of numbers (docs/architecture.md, "The tamper-evident
// audit log").
const EventAuditSequenceSkipped EventType = "audit.sequence_skipped"

// Incident events (internal/incident). Each carries the incident's id in
// Data (DataIncident* keys) and what a SIEM needs to show it without
// asking Ward: number, title, severity, status, assignee, techniques.
const (
	// EventIncidentCreated: detections were correlated into a new
	// incident (Data: the incident, detection_id of the first one).
	EventIncidentCreated EventType = "incident.created"
	// EventIncidentUpdated: a detection joined an open incident (Data:
	// the incident, detection_id, previous_severity).
	EventIncidentUpdated EventType = "incident.updated"
	// EventIncidentStatusChanged: an operator changed the status, or a
	// detection reopened a resolved incident (Reason: the operator's
	// reason, or reopened; Data: previous_status).
	EventIncidentStatusChanged EventType = "incident.status_changed"
	// EventIncidentAssigned: an operator assigned the incident (Data:
	// assignee, previous_assignee).
	EventIncidentAssigned EventType = "incident.assigned"
	// EventIncidentCommented: an operator commented (Data: comment).
	EventIncidentCommented EventType = "incident.commented"
	// EventIncidentMerged: incidents were merged into this one (Data:
	// merged: their ids).
	EventIncidentMerged EventType = "incident.merged"
	// EventIncidentSplit: detections of this incident were moved to a
	// new one (Data: split_into, detections).
	EventIncidentSplit EventType = "incident.split"
	// EventIncidentActionTaken: an operator took a response action from
	// the incident (Reason: the action; Data: target, result).
	EventIncidentActionTaken EventType = "incident.action_taken"
)

// Data keys of incident events.
const (
	DataIncidentID         = "incident_id"
	DataIncidentNumber     = "incident_number"
	DataIncidentTitle      = "title"
	DataIncidentSeverity   = "severity"
	DataIncidentStatus     = "status"
	DataIncidentAssignee   = "assignee"
	DataIncidentTechniques = "techniques"
	DataIncidentTactics    = "tactics"
	DataIncidentDetections = "detections"
	DataIncidentFirstSeen  = "first_seen"
	DataIncidentLastSeen   = "last_seen"
)

// Web console events (the console's own; what an operator changes is
// recorded by the service that changes it, with the operator as actor).
const (
	// EventConsoleAccessDenied: the console refused a request (Reason:
	// role_missing, csrf_invalid, origin_invalid, mfa_required,
	// session_ended, ...; Data: method, path, permission).
	EventConsoleAccessDenied EventType = "console.access_denied"
	// EventConsoleLogsExported: an operator exported audit records from
	// the console (Data: count and the filter used).
	EventConsoleLogsExported EventType = "console.logs_exported"
	// EventConsoleSignedIn: an operator's console session started (Data:
	// roles, acr, session_binding).
	EventConsoleSignedIn EventType = "console.signed_in"
)

// EventCodes maps each event type to its stable code.
var EventCodes = map[EventType]string{
	EventSignInSucceeded:       "W1000I",
	EventSignInFailed:          "W1001W",
	EventMFAEnrolled:           "W1002I",
	EventMFARemoved:            "W1003W",
	EventSSOSignIn:             "W1006I",
	EventTokenIssued:           "W2000I",
	EventTokenRefreshed:        "W2001I",
	EventTokenRevoked:          "W2002I",
	EventTokenRequestFailed:    "W2003W",
	EventDPoPProofRejected:     "W2004W",
	EventRefreshReuseDetected:  "W2005E",
	EventCodeReuseDetected:     "W2006E",
	EventDeviceCodeApproved:    "W2007I",
	EventDeviceCodeDenied:      "W2008W",
	EventTokenUsed:             "W2009I",
	EventSessionCreated:        "W3000I",
	EventSessionRevoked:        "W3001I",
	EventSessionLoggedOut:      "W3002I",
	EventSessionDBSCRegistered: "W3003I",
	EventUserSessionsRevoked:   "W3004I",
	EventUserCreated:           "W4000I",
	EventUserUpdated:           "W4001I",
	EventUserDisabled:          "W4002I",
	EventUserDeleted:           "W4003I",
	EventUserLocked:            "W4004W",
	EventPasswordChanged:       "W4005I",
	EventGroupCreated:          "W4100I",
	EventGroupUpdated:          "W4101I",
	EventGroupDeleted:          "W4102I",
	EventClientCreated:         "W5000I",
	EventClientUpdated:         "W5001I",
	EventClientDeleted:         "W5002I",
	EventClientSecretRotated:   "W5003I",
	EventKeyCreated:            "W6000I",
	EventKeyRotated:            "W6001I",
	EventKeyRetired:            "W6002I",
	EventKEKRotated:            "W6003W",
	EventAdminAccessDenied:     "W7000W",

	EventConsoleAccessDenied: "W7100W",
	EventConsoleLogsExported: "W7101I",
	EventConsoleSignedIn:     "W7102I",

	EventMFARecoveryCodesCreated: "W1004I",
	EventMFARecoveryCodeUsed:     "W1005W",

	EventPasskeyCloneSuspected: "W1010E",
	EventPasskeyRejected:       "W1011W",
	EventPasskeyRecovery:       "W1012W",
	EventPasskeyRenamed:        "W9410I",

	EventAccessPolicyChanged:     "W9000I",
	EventUserRiskChanged:         "W9001W",
	EventRiskDetected:            "W9002W",
	EventRiskDismissed:           "W9010I",
	EventRiskCompromiseConfirmed: "W9011E",
	EventSessionRiskChanged:      "W9012W",
	EventRiskRemediated:          "W9013I",

	EventSSFStreamStatusChanged: "W9100I",
	EventSSFSignalReceived:      "W9101W",
	EventSSFStreamCreated:       "W9102I",
	EventSSFStreamUpdated:       "W9103W",
	EventSSFStreamDeleted:       "W9104W",
	EventSSFSubjectRemoved:      "W9105W",
	EventSSFSubjectAdded:        "W9106I",

	EventAuditSequenceSkipped: "W9200I",

	EventIncidentCreated:       "W9300W",
	EventIncidentUpdated:       "W9301W",
	EventIncidentStatusChanged: "W9302I",
	EventIncidentAssigned:      "W9303I",
	EventIncidentCommented:     "W9304I",
	EventIncidentMerged:        "W9305I",
	EventIncidentSplit:         "W9306I",
	EventIncidentActionTaken:   "W9307W",

	EventDeviceRegistered:             "W8000I",
	EventDeviceDisabled:               "W8001I",
	EventDeviceLost:                   "W8002W",
	EventDeviceDeleted:                "W8003I",
	EventDevicePostureReported:        "W8004I",
	EventDevicePostureRejected:        "W8005W",
	EventDeviceComplianceChanged:      "W8006W",
	EventDeviceEnabled:                "W8007I",
	EventDeviceKeyAttested:            "W8010I",
	EventDeviceKeyAttestationRejected: "W8011W",
	EventCompliancePolicyChanged:      "W8100I",
}

// Outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// Token binding status recorded on sign-in and token events.
const (
	BindingDPoP    = "dpop"    // bound to a DPoP key (cnf.jkt)
	BindingUnbound = "unbound" // bearer token
)

// Browser-session binding recorded as event data "session_binding" on
// sign-in and DBSC registration events.
const (
	SessionBindingDBSC   = "dbsc"   // bound to a browser key (DBSC)
	SessionBindingCookie = "cookie" // the SSO cookie alone
)

// Reasons a token was issued unbound.
const (
	UnboundNoProof       = "no_dpop_proof"  // client sent no DPoP header
	UnboundNotApplicable = "not_applicable" // e.g. ID token only
)

// Event is a domain event: the record of one security-relevant change. It
// names subjects by id and never carries a token, secret or password.
type Event struct {
	ID        string
	Type      EventType
	Time      time.Time
	Actor     string // user id, client id or "system"
	UserID    string
	SessionID string
	ClientID  string
	DeviceID  string
	TokenID   string // a jti, never the token
	IP        string
	UserAgent string
	Outcome   string
	Reason    string // machine-readable reason code
	// Binding is the token-binding status (BindingDPoP/BindingUnbound) and
	// BindingReason why a token was not bound.
	Binding       string
	BindingReason string
	CorrelationID string
	Data          map[string]string
}

// Code returns the stable code of the event's type.
func (e *Event) Code() string { return EventCodes[e.Type] }
