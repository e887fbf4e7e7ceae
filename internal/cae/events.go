package cae

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Event type URIs (CAEP 1.0 §3, RISC 1.0, SSF 1.0 §8.1.4 and §8.1.5).
const (
	EventSessionRevoked         = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	EventTokenClaimsChange      = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"
	EventCredentialChange       = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
	EventDeviceComplianceChange = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"
	EventRiskLevelChange        = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
	EventAccountDisabled        = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
	EventAccountPurged          = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
	// EventCredentialCompromise (RISC 1.0 §2.7): the subject's credential
	// was found to be compromised.
	EventCredentialCompromise = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"

	EventVerification  = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	EventStreamUpdated = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
)

// EventsSupported lists the event types Ward transmits (events_supported
// of every stream). Verification and stream-updated events are sent on
// every stream regardless (SSF 1.0 §8.1.4, §8.1.5).
var EventsSupported = []string{
	EventSessionRevoked,
	EventCredentialChange,
	EventDeviceComplianceChange,
	EventRiskLevelChange,
	EventTokenClaimsChange,
	EventAccountDisabled,
	EventAccountPurged,
	EventCredentialCompromise,
}

func supported(typ string) bool {
	for _, s := range EventsSupported {
		if s == typ {
			return true
		}
	}
	return false
}

// Initiating entities (CAEP 1.0 §2).
const (
	InitiatorAdmin  = "admin"
	InitiatorUser   = "user"
	InitiatorPolicy = "policy"
	InitiatorSystem = "system"
)

// eventBody is the event object of a SET (the value under its type in
// "events"). Empty members are omitted.
type eventBody struct {
	EventTimestamp   int64             `json:"event_timestamp,omitempty"`
	InitiatingEntity string            `json:"initiating_entity,omitempty"`
	ReasonAdmin      map[string]string `json:"reason_admin,omitempty"`
	// credential-change
	CredentialType string `json:"credential_type,omitempty"`
	ChangeType     string `json:"change_type,omitempty"`
	// device-compliance-change
	PreviousStatus string `json:"previous_status,omitempty"`
	CurrentStatus  string `json:"current_status,omitempty"`
	// risk-level-change
	Principal     string `json:"principal,omitempty"`
	CurrentLevel  string `json:"current_level,omitempty"`
	PreviousLevel string `json:"previous_level,omitempty"`
	RiskReason    string `json:"risk_reason,omitempty"`
	// token-claims-change
	Claims map[string]any `json:"claims,omitempty"`
	// verification
	State string `json:"state,omitempty"`
	// stream-updated
	Status string `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// template is one SET a domain event yields, before it is addressed to a
// stream (aud, jti) and signed.
type template struct {
	typ        string
	subject    *Subject
	subjectKey string
	body       eventBody
}

// revocationReason says why a session-revoked SET revokes a session whose
// session.revoked has cause c (reason_admin), or covered when the change
// behind the cause has another SET already revoking every token the
// session's would (then the session.revoked yields none). known is false
// for a cause this switch does not name; TestEveryRevocationCauseMapped
// keeps it naming every model.RevocationCause.
func revocationReason(c model.RevocationCause) (why string, covered, known bool) {
	switch c {
	case model.CauseUserDisabled: // RISC account-disabled
		return "", true, true
	case model.CauseUserDeleted: // RISC account-purged
		return "", true, true
	case model.CausePasswordChanged: // CAEP credential-change
		return "", true, true
	case model.CauseRefreshReuse: // the session-revoked of session.refresh_reuse_detected
		return "", true, true
	case model.CauseDeviceDisabled, model.CauseDeviceLost: // session-revoked {user, device}
		return "", true, true
	case model.CauseUserRisk: // marked all_sessions: user.sessions_revoked speaks for them
		return "session revoked: the user's risk level reached the automatic revocation level", false, true
	case model.CauseCompromiseConfirmed: // marked all_sessions, as above
		return "session revoked: an administrator confirmed the account is compromised", false, true
	case model.CauseDeviceDeleted:
		return "session revoked: its device was deleted", false, true
	case model.CauseKEKRotated:
		return "session revoked: the server's key-encryption key was rotated", false, true
	case model.CauseAdminRevoked, model.CauseLogout, model.CauseAccessTokenRevoked, model.CauseCodeReuse:
		return "session revoked (" + string(c) + ")", false, true
	}
	if c == "" {
		return "session revoked", false, false
	}
	return "session revoked (" + string(c) + ")", false, false
}

// compliance maps Ward's device compliance to CAEP's two values: only a
// compliant device is "compliant".
func compliance(c string) string {
	if c == model.Compliant {
		return "compliant"
	}
	return "not-compliant"
}

// riskLevel maps a user risk level to CAEP's LOW, MEDIUM, HIGH ("" or none
// is LOW).
func riskLevel(l string) string {
	switch l {
	case "high":
		return "HIGH"
	case "medium":
		return "MEDIUM"
	}
	return "LOW"
}

// credentialType maps an MFA method to a CAEP credential type.
func credentialType(method string) string {
	switch method {
	case "totp":
		return "app"
	case "webauthn", "passkey":
		return "fido2-platform"
	case "security_key":
		return "fido2-roaming"
	case "sms":
		return "phone-sms"
	case "":
		return "app"
	}
	return method
}

func reason(text string) map[string]string { return map[string]string{"en": text} }

// initiator derives the initiating entity from the event's actor: the
// user themself, Ward itself, or someone else (an administrator or an
// administrating client).
func initiator(e *model.Event) string {
	switch {
	case e.Actor == "" || e.Actor == "system":
		return InitiatorSystem
	case e.Actor == e.UserID:
		return InitiatorUser
	}
	return InitiatorAdmin
}

// DataAllSessions marks a session.revoked event that is part of revoking
// all of a user's sessions; the user-level event (EventUserSessionsRevoked)
// carries the SET.
const DataAllSessions = model.DataAllSessions

// templates maps a domain event to the SETs it yields (none for most
// events). See docs/ssf.md for the table.
func (s *Service) templates(ctx context.Context, e *model.Event) []template {
	ts := e.Time.Unix()
	user := func() *Subject {
		if s.o.UserEmailAlias {
			return s.userAliases(ctx, e.UserID)
		}
		return userSubject(s.issuer, e.UserID)
	}
	base := func(who, why string) eventBody {
		return eventBody{EventTimestamp: ts, InitiatingEntity: who, ReasonAdmin: reason(why)}
	}
	userKey := "user:" + e.UserID
	switch e.Type {
	case model.EventUserDisabled:
		if e.UserID == "" {
			return nil
		}
		return []template{{EventAccountDisabled, user(), userKey, base(initiator(e), "user account disabled")}}
	case model.EventUserDeleted:
		if e.UserID == "" {
			return nil
		}
		return []template{{EventAccountPurged, user(), userKey, base(initiator(e), "user account deleted")}}
	case model.EventPasswordChanged:
		if e.UserID == "" {
			return nil
		}
		b := base(initiator(e), "password changed")
		b.CredentialType, b.ChangeType = "password", "update"
		return []template{{EventCredentialChange, user(), userKey, b}}
	case model.EventMFAEnrolled:
		if e.UserID == "" {
			return nil
		}
		method := e.Data["method"]
		b := base(initiator(e), "second factor enrolled ("+orDefault(method, "totp")+")")
		b.CredentialType, b.ChangeType = credentialType(method), "create"
		return []template{{EventCredentialChange, user(), userKey, b}}
	case model.EventMFARemoved:
		if e.UserID == "" {
			return nil
		}
		method := e.Data["method"]
		b := base(initiator(e), "second factor removed ("+orDefault(method, "totp")+")")
		b.CredentialType, b.ChangeType = credentialType(method), "delete"
		return []template{{EventCredentialChange, user(), userKey, b}}
	case model.EventRiskCompromiseConfirmed:
		// RISC credential-compromise: credential_type is required and names
		// a CAEP credential type; an administrator confirming a compromise
		// is judging the account's password (remediation is a password
		// change). RISC defines no initiating_entity for this event.
		if e.UserID == "" {
			return nil
		}
		why := "an administrator confirmed the account is compromised"
		if r := strings.TrimSpace(e.Reason); r != "" {
			why += ": " + r
		}
		b := eventBody{EventTimestamp: ts, ReasonAdmin: reason(why), CredentialType: "password"}
		return []template{{EventCredentialCompromise, user(), userKey, b}}
	case model.EventTokenRevoked:
		// An access token its client revoked (RFC 7009): that token, not
		// its session, which other clients may go on using. A refresh
		// token alone yields nothing: the access tokens it gave live on.
		if e.Reason != model.ReasonClientRevokedAccessToken || e.TokenID == "" || e.UserID == "" {
			return nil
		}
		b := base(InitiatorUser, "the client revoked the access token")
		b.Claims = map[string]any{"active": false}
		return []template{{EventTokenClaimsChange, &Subject{Format: FormatJWTID, Iss: s.issuer, JTI: e.TokenID}, userKey, b}}
	case model.EventSessionRevoked, model.EventSessionLoggedOut:
		if e.UserID == "" || e.SessionID == "" || e.Data[DataAllSessions] == "true" {
			return nil
		}
		var who, why string
		switch e.Type {
		case model.EventSessionLoggedOut:
			who, why = InitiatorUser, "user signed out"
		default:
			var covered bool
			if why, covered, _ = revocationReason(model.RevocationCause(e.Reason)); covered {
				return nil
			}
			who = initiator(e)
		}
		sub := &Subject{Format: FormatComplex, User: user(), Session: opaqueSubject(e.SessionID)}
		if e.DeviceID != "" {
			sub.Device = opaqueSubject(e.DeviceID)
		}
		return []template{{EventSessionRevoked, sub, userKey, base(who, why)}}
	case model.EventUserSessionsRevoked:
		// A revocation bounded by creation time left later sessions
		// alive: its session.revoked events named each one instead.
		if e.UserID == "" || e.Data[model.DataCreatedUntil] != "" {
			return nil
		}
		why := "all sessions of the user revoked"
		switch model.RevocationCause(e.Reason) {
		case model.CauseUserRisk:
			why += ": the user's risk level reached the automatic revocation level"
		case model.CauseCompromiseConfirmed:
			why += ": an administrator confirmed the account is compromised"
		}
		return []template{{EventSessionRevoked, user(), userKey, base(initiator(e), why)}}
	case model.EventRefreshReuseDetected:
		if e.UserID == "" || e.SessionID == "" {
			return nil
		}
		sub := &Subject{Format: FormatComplex, User: user(), Session: opaqueSubject(e.SessionID)}
		return []template{{EventSessionRevoked, sub, userKey,
			base(InitiatorSystem, "refresh token reuse detected: the session's refresh token was stolen or replayed")}}
	case model.EventDeviceDisabled, model.EventDeviceLost:
		if e.DeviceID == "" {
			return nil
		}
		sub := &Subject{Format: FormatComplex, Device: opaqueSubject(e.DeviceID)}
		if e.UserID != "" {
			sub.User = user()
		}
		why := "device disabled"
		if e.Type == model.EventDeviceLost {
			why = "device reported lost or stolen"
		}
		// A disabled or lost device is out of compliance whatever its last
		// posture said; previous_status is that posture's verdict, which
		// the event carries (the device's stored compliance changed with
		// its status; events recorded before carry none).
		var prev string
		if pc, ok := e.Data["previous_compliance"]; ok {
			prev = compliance(pc)
		} else {
			prev = s.deviceCompliance(ctx, e.DeviceID)
		}
		b := base(initiator(e), why)
		b.PreviousStatus, b.CurrentStatus = prev, "not-compliant"
		return []template{
			{EventDeviceComplianceChange, sub, "device:" + e.DeviceID, b},
			{EventSessionRevoked, sub, "device:" + e.DeviceID, base(initiator(e), why)},
		}
	case model.EventDeviceComplianceChanged:
		prev, cur := compliance(e.Data["previous"]), compliance(e.Data["compliance"])
		if e.DeviceID == "" || prev == cur {
			return nil
		}
		sub := &Subject{Format: FormatComplex, Device: opaqueSubject(e.DeviceID)}
		if e.UserID != "" {
			sub.User = user()
		}
		why := "device compliance evaluated: " + orDefault(e.Data["compliance"], "unknown")
		if f := e.Data["failing_rules"]; f != "" {
			why += " (failing: " + f + ")"
		}
		b := base(InitiatorPolicy, why)
		b.PreviousStatus, b.CurrentStatus = prev, cur
		return []template{{EventDeviceComplianceChange, sub, "device:" + e.DeviceID, b}}
	case model.EventUserRiskChanged:
		if e.UserID == "" {
			return nil
		}
		b := base(initiator(e), "user risk set to "+orDefault(e.Data["level"], "none"))
		b.Principal, b.CurrentLevel, b.PreviousLevel, b.RiskReason = "USER", riskLevel(e.Data["level"]), riskLevel(e.Data["previous"]), e.Reason
		b.EventTimestamp = s.riskBound(ctx, e).Unix()
		return []template{{EventRiskLevelChange, user(), userKey, b}}
	case model.EventSessionRiskChanged:
		if e.UserID == "" || e.SessionID == "" {
			return nil
		}
		b := base(initiator(e), "session risk set to "+orDefault(e.Data["level"], "none"))
		b.Principal, b.CurrentLevel, b.PreviousLevel, b.RiskReason = "SESSION", riskLevel(e.Data["level"]), riskLevel(e.Data["previous"]), e.Reason
		sub := &Subject{Format: FormatComplex, User: user(), Session: opaqueSubject(e.SessionID)}
		return []template{{EventRiskLevelChange, sub, userKey, b}}
	case model.EventAccessPolicyChanged:
		if e.Data["locations_changed"] != "true" {
			return nil
		}
		claims := map[string]any{"ward_policy_version": e.Data["version"]}
		if v, err := strconv.ParseInt(e.Data["version"], 10, 64); err == nil {
			claims["ward_policy_version"] = v
		}
		claims["ward_named_locations_changed"] = true
		who := InitiatorAdmin
		if e.Actor == "" || e.Actor == "system" {
			who = InitiatorSystem
		}
		b := base(who, "Conditional Access named locations changed")
		b.Claims = claims
		sub := &Subject{Format: FormatComplex, Tenant: opaqueSubject(s.issuer)}
		return []template{{EventTokenClaimsChange, sub, "tenant", b}}
	}
	return nil
}

func orDefault(v, d string) string {
	if strings.TrimSpace(v) == "" {
		return d
	}
	return v
}

// deviceCompliance returns a device's compliance in CAEP terms
// ("compliant" when unknown: the event then reports the change to
// not-compliant, which is what matters to receivers).
func (s *Service) deviceCompliance(ctx context.Context, id string) string {
	d, err := s.o.Store.GetDevice(ctx, id)
	if err != nil {
		return "compliant"
	}
	return compliance(d.Compliance)
}

// SourceEventTypes are the domain events templates maps to SETs: a
// consumer that only transmits (the CAE stream in NATS) asks the bus for
// these and no others. TestSourceEventTypes keeps it in step with
// templates.
var SourceEventTypes = []model.EventType{
	model.EventUserDisabled,
	model.EventUserDeleted,
	model.EventPasswordChanged,
	model.EventMFAEnrolled,
	model.EventMFARemoved,
	model.EventSessionRevoked,
	model.EventSessionLoggedOut,
	model.EventTokenRevoked,
	model.EventUserSessionsRevoked,
	model.EventRefreshReuseDetected,
	model.EventDeviceDisabled,
	model.EventDeviceLost,
	model.EventDeviceComplianceChanged,
	model.EventUserRiskChanged,
	model.EventSessionRiskChanged,
	model.EventAccessPolicyChanged,
	model.EventRiskCompromiseConfirmed,
}

// maxRemediationLookup bounds the events riskBound reads.
const maxRemediationLookup = 1000

// riskBound is the event_timestamp of a user's risk-level-change: the
// time up to which the assessed level is about the account. That is the
// change, unless the user remediated (store.RemediationEvents) after the
// activity that raised the level (DataActivityAt) and before the change:
// then the first such remediation, the bound of Ward's own response
// (docs/risk-response.md). A resource revoking the user's tokens issued up
// to event_timestamp (rs) so spares the sessions the response spared,
// signed in after the remediation, and still ends every earlier token.
// A remediation committed after this read, stamped before the change,
// is missed: the SET then says the change's time, which revokes more,
// never less.
func (s *Service) riskBound(ctx context.Context, e *model.Event) time.Time {
	activity, err := time.Parse(time.RFC3339Nano, e.Data[model.DataActivityAt])
	if err != nil || !activity.Before(e.Time) {
		return e.Time
	}
	types := make([]model.EventType, len(store.RemediationEvents))
	for i, r := range store.RemediationEvents {
		types[i] = r.Type
	}
	evs, err := s.o.Store.ListEvents(ctx, store.EventFilter{Types: types, UserID: e.UserID,
		Since: activity.Add(time.Microsecond), Until: e.Time.Add(time.Microsecond), Limit: maxRemediationLookup})
	if err != nil {
		s.o.Log.WarnContext(ctx, "cae: remediations of a risk change not read; event_timestamp is the change", "user_id", e.UserID, "err", err)
		return e.Time
	}
	bound := e.Time
	for _, ev := range evs {
		if ev.Time.After(activity) && ev.Time.Before(bound) && isRemediation(&ev.Event) {
			bound = ev.Time
		}
	}
	return bound
}

// isRemediation reports whether e is one of store.RemediationEvents.
func isRemediation(e *model.Event) bool {
	for _, r := range store.RemediationEvents {
		if e.Type == r.Type && (r.Reasons == nil || slices.Contains(r.Reasons, model.RevocationCause(e.Reason))) {
			return true
		}
	}
	return false
}
