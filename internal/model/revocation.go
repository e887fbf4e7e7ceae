package model

// RevocationCause is why a session was revoked. Its value is stored as the
// session's revoke cause and is the Reason of the session.revoked event, so
// it appears in audit logs, in the admin API (revoke_cause) and in the
// reason_admin text of SETs: never change a value, only add.
type RevocationCause string

// Revocation causes.
const (
	// CauseAdminRevoked: an administrator revoked the session, or all of
	// its user's sessions.
	CauseAdminRevoked RevocationCause = "admin_revoked"
	// CauseLogout: the user signed out (RP-initiated logout).
	CauseLogout RevocationCause = "logout"
	// CauseAccessTokenRevoked: the client revoked an access token of the
	// session (RFC 7009). Only sessions revoked by earlier versions carry
	// it: a revoked access token now ends its client's grant, not the
	// session (RevokedAccessTokenKey).
	CauseAccessTokenRevoked RevocationCause = "access_token_revoked"
	// CauseCodeReuse: an authorization code of the session was presented
	// again (RFC 6749 §4.1.2).
	CauseCodeReuse RevocationCause = "code_reuse"
	// CauseRefreshReuse: a rotated refresh token of the session was
	// presented again (RFC 9700 §4.14.2).
	CauseRefreshReuse RevocationCause = "refresh_reuse"
	// CauseUserDisabled, CauseUserDeleted, CausePasswordChanged: the
	// account changed so that none of its sessions may go on.
	CauseUserDisabled    RevocationCause = "user_disabled"
	CauseUserDeleted     RevocationCause = "user_deleted"
	CausePasswordChanged RevocationCause = "password_changed"
	// CauseDeviceDisabled, CauseDeviceLost, CauseDeviceDeleted: the
	// registered device the session's refresh tokens are bound to was
	// disabled, reported lost or stolen, or deleted.
	CauseDeviceDisabled RevocationCause = "device_disabled"
	CauseDeviceLost     RevocationCause = "device_lost"
	CauseDeviceDeleted  RevocationCause = "device_deleted"
	// CauseKEKRotated: the key-encryption key was rotated; the keys
	// derived from it, which the session's refresh tokens and cookie
	// depend on, changed with it.
	CauseKEKRotated RevocationCause = "kek_rotated"
	// CauseUserRisk: the user's risk reached risk.auto_revoke_level
	// (every session of the user ends).
	CauseUserRisk RevocationCause = "user_risk"
	// CauseCompromiseConfirmed: an administrator confirmed that the
	// user's account is compromised (every session of the user ends).
	CauseCompromiseConfirmed RevocationCause = "compromise_confirmed"
)

// RevocationCauses lists every cause (a test keeps it complete).
var RevocationCauses = []RevocationCause{
	CauseAdminRevoked,
	CauseLogout,
	CauseAccessTokenRevoked,
	CauseCodeReuse,
	CauseRefreshReuse,
	CauseUserDisabled,
	CauseUserDeleted,
	CausePasswordChanged,
	CauseDeviceDisabled,
	CauseDeviceLost,
	CauseDeviceDeleted,
	CauseKEKRotated,
	CauseUserRisk,
	CauseCompromiseConfirmed,
}

// Event reasons of the events that record a session revocation under a
// type of their own (the session.revoked of the other causes has the
// cause as its reason).
const (
	// ReasonUserLogout is the reason of session.logged_out.
	ReasonUserLogout = "user_logout"
	// ReasonClientRevokedAccessToken is the reason of the token.revoked
	// of an access token revoked by its client: the token and its client's
	// refresh tokens of the session are revoked, the session goes on.
	ReasonClientRevokedAccessToken = "client_revoked_access_token"
	// ReasonClientRevokedRefreshToken is the reason of the token.revoked
	// of a refresh token revoked by its client (its session lives on).
	ReasonClientRevokedRefreshToken = "client_revoked_refresh_token"
)

// RevokedAccessTokenKey is the key under which an access token revoked by
// its client is recorded (store.RevokeClientGrant, store.HasJTI) until it
// expires: Ward's own resources refuse it.
func RevokedAccessTokenKey(jti string) string { return "at-revoked:" + jti }
