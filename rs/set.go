package rs

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event type URIs this package understands (CAEP 1.0, RISC 1.0, SSF 1.0).
const (
	EventSessionRevoked         = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	EventTokenClaimsChange      = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"
	EventCredentialChange       = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
	EventAssuranceLevelChange   = "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change"
	EventDeviceComplianceChange = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"
	EventSessionEstablished     = "https://schemas.openid.net/secevent/caep/event-type/session-established"
	EventSessionPresented       = "https://schemas.openid.net/secevent/caep/event-type/session-presented"
	EventRiskLevelChange        = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"

	EventAccountDisabled      = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
	EventAccountEnabled       = "https://schemas.openid.net/secevent/risc/event-type/account-enabled"
	EventAccountPurged        = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
	EventCredentialCompromise = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"
	EventIdentifierRecycled   = "https://schemas.openid.net/secevent/risc/event-type/identifier-recycled"
	// EventSessionsRevoked is the deprecated RISC event, still sent by
	// some transmitters.
	EventSessionsRevoked = "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked"

	EventVerification  = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	EventStreamUpdated = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
)

// SET error codes (RFC 8935 §2.4, used for push responses and poll
// setErrs alike).
const (
	SETErrInvalidRequest       = "invalid_request"
	SETErrInvalidKey           = "invalid_key"
	SETErrInvalidIssuer        = "invalid_issuer"
	SETErrInvalidAudience      = "invalid_audience"
	SETErrAuthenticationFailed = "authentication_failed"
	SETErrAccessDenied         = "access_denied"
)

// SETError is a refused SET: Code is one of the SETErr values, and
// Description a fixed text safe to return to the transmitter.
type SETError struct {
	Code        string
	Description string
}

func (e *SETError) Error() string { return "rs: SET refused: " + e.Code + ": " + e.Description }

func setErr(code, desc string) *SETError { return &SETError{Code: code, Description: desc} }

func badSET(format string, a ...any) *SETError {
	return setErr(SETErrInvalidRequest, fmt.Sprintf(format, a...))
}

// maxSETSize bounds a SET, in bytes.
const maxSETSize = 64 << 10

// SET is a parsed Security Event Token (RFC 8417) of the Shared Signals
// Framework: one event about one subject.
type SET struct {
	Issuer   string
	JTI      string
	IssuedAt time.Time
	Audience []string
	TXN      string
	// Subject is the top-level sub_id, or the event's own "subject"
	// member that CAEP/RISC events may still use (SSF §3.1.1). It may be
	// nil only for SSF stream events.
	Subject *Subject
	Event   Event
	// Claims is the full payload.
	Claims json.RawMessage
}

// Event is the single event of a SET with the CAEP/RISC/SSF fields this
// package reads; Raw holds every field.
type Event struct {
	Type string
	// Timestamp is event_timestamp, zero if absent.
	Timestamp        time.Time
	InitiatingEntity string
	ReasonAdmin      map[string]string
	ReasonUser       map[string]string

	CredentialType  string          // credential-change
	ChangeType      string          // credential-change
	Namespace       string          // assurance-level-change
	CurrentLevel    string          // assurance-level-change, risk-level-change
	PreviousLevel   string          // assurance-level-change, risk-level-change
	ChangeDirection string          // assurance-level-change
	CurrentStatus   string          // device-compliance-change
	PreviousStatus  string          // device-compliance-change
	Claims          json.RawMessage // token-claims-change
	Principal       string          // risk-level-change
	RiskReason      string          // risk-level-change
	State           string          // verification
	Status          string          // stream-updated
	Reason          string          // stream-updated, RISC account-disabled

	Raw json.RawMessage
}

// Subject is a subject identifier (RFC 9493) or an SSF complex subject.
// The fields used depend on Format.
type Subject struct {
	Format string

	ID          string   // opaque
	Email       string   // email
	PhoneNumber string   // phone_number
	Iss, Sub    string   // iss_sub
	URI         string   // account, uri
	URL         string   // did
	JTI         string   // jwt_id (with Iss)
	Issuer      string   // saml_assertion_id
	AssertionID string   // saml_assertion_id
	IPAddresses []string // ip-addresses
	Identifiers []*Subject

	// Complex subject members (SSF §3.3); Other holds members with other
	// names.
	User, Device, Session, Application, Tenant, OrgUnit, Group *Subject
	Other                                                      map[string]*Subject

	// Raw is the JSON of the identifier (useful for proprietary formats).
	Raw json.RawMessage
}

// ParseSETClaims parses and checks the claims of a SET without verifying
// any signature: the structure the SSF requires (iss, jti, iat, aud,
// exactly one event in events, no sub, no exp), the subject identifiers
// and the required fields of the CAEP events. Use Receiver to verify
// SETs; this is for tests and tools.
func ParseSETClaims(payload []byte) (*SET, error) {
	if len(payload) > maxSETSize {
		return nil, badSET("SET too large")
	}
	obj, err := parseObject(payload)
	if err != nil {
		return nil, badSET("claims are not a JSON object: %v", err)
	}
	s := &SET{Claims: payload}
	var ok bool
	for _, m := range obj {
		switch m.Name {
		case "iss":
			s.Issuer, ok = unquote(m.Raw)
		case "jti":
			s.JTI, ok = unquote(m.Raw)
		case "txn":
			s.TXN, ok = unquote(m.Raw)
		case "aud":
			s.Audience, ok = stringOrArray(m.Raw)
		case "iat":
			var sec int64
			sec, ok = numericDate(m.Raw)
			s.IssuedAt = time.Unix(sec, 0)
		case "sub":
			// SSF §4.1.2: distinguishes SETs from ID and access tokens.
			return nil, badSET("a SET must not carry a sub claim")
		case "exp":
			return nil, badSET("a SET must not carry an exp claim")
		default:
			continue
		}
		if !ok {
			return nil, badSET("claim %s has the wrong type", m.Name)
		}
	}
	switch {
	case s.Issuer == "":
		return nil, badSET("iss missing")
	case s.JTI == "":
		return nil, badSET("jti missing")
	case obj.Get("iat") == nil:
		return nil, badSET("iat missing")
	case len(s.Audience) == 0:
		return nil, badSET("aud missing")
	}
	for _, a := range s.Audience {
		if a == "" {
			return nil, badSET("aud holds an empty value")
		}
	}
	evRaw := obj.Get("events")
	if evRaw == nil {
		return nil, badSET("events missing")
	}
	evs, err := parseObject(evRaw)
	if err != nil {
		return nil, badSET("events is not a JSON object")
	}
	if len(evs) != 1 {
		return nil, badSET("events must hold exactly one event")
	}
	if evs[0].Name == "" {
		return nil, badSET("the event type is empty")
	}
	if s.Event, err = parseEvent(evs[0].Name, evs[0].Raw); err != nil {
		return nil, err
	}
	if raw := obj.Get("sub_id"); raw != nil {
		if s.Subject, err = parseSubject(raw, true); err != nil {
			return nil, err
		}
	} else if raw := objGet(s.Event.Raw, "subject"); raw != nil {
		if s.Subject, err = parseSubject(raw, true); err != nil {
			return nil, err
		}
	}
	if s.Subject == nil && !strings.HasPrefix(s.Event.Type, "https://schemas.openid.net/secevent/ssf/") {
		return nil, badSET("sub_id missing")
	}
	return s, nil
}

func objGet(raw []byte, name string) []byte {
	o, err := parseObject(raw)
	if err != nil {
		return nil
	}
	return o.Get(name)
}

func parseEvent(typ string, raw []byte) (Event, error) {
	ev := Event{Type: typ, Raw: raw}
	obj, err := parseObject(raw)
	if err != nil {
		return ev, badSET("the event is not a JSON object")
	}
	var ok bool
	for _, m := range obj {
		var dst *string
		switch m.Name {
		case "event_timestamp":
			var sec int64
			if sec, ok = numericDate(m.Raw); !ok {
				return ev, badSET("event_timestamp is not a NumericDate")
			}
			ev.Timestamp = time.Unix(sec, 0)
			continue
		case "reason_admin", "reason_user":
			var l map[string]string
			if json.Unmarshal(m.Raw, &l) != nil || m.Raw[0] != '{' || len(l) == 0 {
				return ev, badSET("%s must be an object of language tags to strings", m.Name)
			}
			if m.Name == "reason_admin" {
				ev.ReasonAdmin = l
			} else {
				ev.ReasonUser = l
			}
			continue
		case "claims":
			if m.Raw[0] != '{' {
				return ev, badSET("claims must be a JSON object")
			}
			ev.Claims = m.Raw
			continue
		case "initiating_entity":
			dst = &ev.InitiatingEntity
		case "credential_type":
			dst = &ev.CredentialType
		case "change_type":
			dst = &ev.ChangeType
		case "namespace":
			dst = &ev.Namespace
		case "current_level":
			dst = &ev.CurrentLevel
		case "previous_level":
			dst = &ev.PreviousLevel
		case "change_direction":
			dst = &ev.ChangeDirection
		case "current_status":
			dst = &ev.CurrentStatus
		case "previous_status":
			dst = &ev.PreviousStatus
		case "principal":
			dst = &ev.Principal
		case "risk_reason":
			dst = &ev.RiskReason
		case "state":
			dst = &ev.State
		case "status":
			dst = &ev.Status
		case "reason":
			dst = &ev.Reason
		default:
			continue // SSF §4.2.3: ignore fields we do not understand
		}
		if *dst, ok = unquote(m.Raw); !ok {
			return ev, badSET("%s must be a string", m.Name)
		}
	}
	return ev, checkEvent(&ev)
}

// checkEvent enforces the required fields of the CAEP events (CAEP 1.0
// §3): an event that does not conform is refused with invalid_request
// rather than half-applied.
func checkEvent(ev *Event) error {
	oneOf := func(v string, allowed ...string) bool {
		for _, a := range allowed {
			if v == a {
				return true
			}
		}
		return false
	}
	switch ev.Type {
	case EventCredentialChange:
		if ev.CredentialType == "" || !oneOf(ev.ChangeType, "create", "revoke", "update", "delete") {
			return badSET("credential-change needs credential_type and change_type create|revoke|update|delete")
		}
	case EventAssuranceLevelChange:
		if ev.Namespace == "" || ev.CurrentLevel == "" {
			return badSET("assurance-level-change needs namespace and current_level")
		}
		if ev.ChangeDirection != "" && !oneOf(ev.ChangeDirection, "increase", "decrease") {
			return badSET("change_direction must be increase or decrease")
		}
	case EventDeviceComplianceChange:
		if !oneOf(ev.CurrentStatus, "compliant", "not-compliant") || !oneOf(ev.PreviousStatus, "compliant", "not-compliant") {
			return badSET("device-compliance-change needs current_status and previous_status compliant|not-compliant")
		}
	case EventTokenClaimsChange:
		if ev.Claims == nil {
			return badSET("token-claims-change needs claims")
		}
	case EventRiskLevelChange:
		if ev.Principal == "" || !oneOf(ev.CurrentLevel, "LOW", "MEDIUM", "HIGH") {
			return badSET("risk-level-change needs principal and current_level LOW|MEDIUM|HIGH")
		}
		if ev.PreviousLevel != "" && !oneOf(ev.PreviousLevel, "LOW", "MEDIUM", "HIGH") {
			return badSET("previous_level must be LOW, MEDIUM or HIGH")
		}
	}
	if ev.InitiatingEntity != "" && !oneOf(ev.InitiatingEntity, "admin", "user", "policy", "system") {
		return badSET("initiating_entity must be admin, user, policy or system")
	}
	return nil
}

// complexMembers maps the SSF complex-subject member names to fields.
func (s *Subject) complexMember(name string) **Subject {
	switch name {
	case "user":
		return &s.User
	case "device":
		return &s.Device
	case "session":
		return &s.Session
	case "application":
		return &s.Application
	case "tenant":
		return &s.Tenant
	case "org_unit":
		return &s.OrgUnit
	case "group":
		return &s.Group
	}
	return nil
}

// parseSubject parses a subject identifier; complexOK allows the SSF
// "complex" format (only at the top: members must be simple).
func parseSubject(raw []byte, complexOK bool) (*Subject, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, badSET("subject is not a JSON object")
	}
	s := &Subject{Raw: raw}
	fr := obj.Get("format")
	if fr == nil {
		return nil, badSET("subject format missing")
	}
	var ok bool
	if s.Format, ok = unquote(fr); !ok || s.Format == "" {
		return nil, badSET("subject format must be a string")
	}
	// str reads a required string member.
	str := func(name string) (string, error) {
		v, ok := unquote(obj.Get(name))
		if !ok || v == "" {
			return "", badSET("subject format %s needs a string %s", s.Format, name)
		}
		return v, nil
	}
	switch s.Format {
	case "complex":
		if !complexOK {
			return nil, badSET("a complex subject cannot be nested")
		}
		n := 0
		for _, m := range obj {
			if m.Name == "format" {
				continue
			}
			sub, err := parseSubject(m.Raw, false)
			if err != nil {
				return nil, err
			}
			if p := s.complexMember(m.Name); p != nil {
				*p = sub
			} else {
				if s.Other == nil {
					s.Other = make(map[string]*Subject)
				}
				s.Other[m.Name] = sub
			}
			n++
		}
		if n == 0 {
			return nil, badSET("a complex subject needs at least one member")
		}
	case "opaque":
		s.ID, err = str("id")
	case "email":
		s.Email, err = str("email")
	case "phone_number":
		s.PhoneNumber, err = str("phone_number")
	case "iss_sub":
		if s.Iss, err = str("iss"); err == nil {
			s.Sub, err = str("sub")
		}
	case "account":
		if s.URI, err = str("uri"); err == nil && !strings.HasPrefix(s.URI, "acct:") {
			err = badSET("an account subject needs an acct: URI")
		}
	case "uri":
		s.URI, err = str("uri")
	case "did":
		s.URL, err = str("url")
	case "jwt_id":
		if s.Iss, err = str("iss"); err == nil {
			s.JTI, err = str("jti")
		}
	case "saml_assertion_id":
		if s.Issuer, err = str("issuer"); err == nil {
			s.AssertionID, err = str("assertion_id")
		}
	case "ip-addresses":
		l, ok := stringArray(obj.Get("ip-addresses"))
		if !ok || len(l) == 0 {
			return nil, badSET("an ip-addresses subject needs a non-empty array of strings")
		}
		s.IPAddresses = l
	case "aliases":
		var l []json.RawMessage
		if r := obj.Get("identifiers"); r == nil || r[0] != '[' || json.Unmarshal(r, &l) != nil || len(l) == 0 {
			return nil, badSET("an aliases subject needs a non-empty identifiers array")
		}
		for _, r := range l {
			id, err := parseSubject(r, false)
			if err != nil {
				return nil, err
			}
			if id.Format == "aliases" {
				return nil, badSET("aliases cannot be nested (RFC 9493 §3.2.8)")
			}
			s.Identifiers = append(s.Identifiers, id)
		}
	default:
		// A proprietary format agreed between the parties (SSF §3.5):
		// kept in Raw.
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}
