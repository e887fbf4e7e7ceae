// Package model holds Ward's plain domain types. It does no I/O and imports
// nothing of Ward's own, so every other package may depend on it.
//
// Fields that hold secrets never hold them in plaintext: refresh tokens,
// authorization codes and client secrets are stored as keyed hashes,
// passwords as argon2id PHC strings, and TOTP seeds and private keys as
// AES-GCM ciphertext under the key-encryption key.
package model

import (
	"encoding/json"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Roles a user can hold. What each may do in the web console is in
// docs/console.md; only RoleAdmin may call the admin API.
const (
	// RoleAdmin is the global administrator: the admin API and every
	// page and action of the console.
	RoleAdmin = "admin"
	// RoleSecurityOperator investigates and contains: every page of the
	// console, session revocation, disabling users and devices, risk
	// decisions, log export; no password resets.
	RoleSecurityOperator = "security_operator"
	// RoleHelpdesk supports users: users and devices, session
	// revocation, password resets, unlocking.
	RoleHelpdesk = "helpdesk"
	// RoleReader reads every page of the console and changes nothing.
	RoleReader = "reader"
)

// KnownRoles lists every role Ward gives a meaning to. A role outside it
// is refused (a typo such as "admn", or "superuser", would otherwise be
// stored and silently grant nothing).
var KnownRoles = []string{RoleAdmin, RoleSecurityOperator, RoleHelpdesk, RoleReader}

// KnownRole reports whether r is one of KnownRoles.
func KnownRole(r string) bool {
	for _, k := range KnownRoles {
		if r == k {
			return true
		}
	}
	return false
}

// User is a local account.
type User struct {
	ID           string
	Username     string // unique, case-folded
	Email        string
	DisplayName  string
	PasswordHash string // argon2id PHC string; never the password
	// TOTPSecret is the TOTP seed encrypted under the KEK (nil: no TOTP).
	TOTPSecret []byte
	Roles      []string
	Disabled   bool
	// Lockout state, maintained by the identity service.
	FailedLogins int
	LockedUntil  time.Time
	// RiskLevel is the user risk (none, low, medium, high; "" = none),
	// set by the risk engine or an administrator, with the time it was
	// last set. PasswordChangedAt is the last password change: a change
	// after RiskUpdatedAt satisfies the password_change control.
	RiskLevel         string
	RiskUpdatedAt     time.Time
	PasswordChangedAt time.Time
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// HasRole reports whether the user holds role r.
func (u *User) HasRole(r string) bool {
	for _, x := range u.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Group is a named set of users.
type Group struct {
	ID        string
	Name      string // unique
	Members   []string
	CreatedAt time.Time
}

// Client authentication methods (RFC 7591 token_endpoint_auth_method values).
const (
	AuthNone              = "none"
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// Grant types.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// Client is a registered OAuth client.
type Client struct {
	ID   string
	Name string
	// SecretHash is the keyed hash of the client secret (empty for public
	// and private_key_jwt clients).
	SecretHash              []byte
	TokenEndpointAuthMethod string
	RedirectURIs            []string
	PostLogoutRedirectURIs  []string
	GrantTypes              []string
	Scopes                  []string // scopes the client may request
	Audience                []string // default access-token audience
	// JWKS holds the client's public keys for private_key_jwt (JSON).
	JWKS json.RawMessage
	// DPoPBoundAccessTokens makes DPoP mandatory (RFC 9449 §5.2).
	DPoPBoundAccessTokens bool
	// RequireProtectedSessions makes the client accept only sessions bound
	// to the key of a registered, active device (token protection).
	RequireProtectedSessions bool
	// CAECapable allows the client's access tokens to live up to the
	// server's CAE maximum when a token request declares the capability
	// (it follows claims challenges from resources that apply continuous
	// access evaluation).
	CAECapable     bool
	AccessTokenTTL time.Duration // 0: server default
	// ApplicationType is "web" or "native" (OpenID Connect registration);
	// empty: inferred from the redirect URIs (RFC 8252).
	ApplicationType string
	// ManagedBy is ClientManagedByConfig (or ClientManagedByDev) for a
	// client defined in the configuration file (or by development mode),
	// whose metadata and secret are put back at every start; empty for
	// clients made with the CLI or admin API.
	ManagedBy string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Values of Client.ManagedBy.
const (
	// ClientManagedByConfig marks a client defined in the configuration
	// file (static_clients).
	ClientManagedByConfig = "config"
	// ClientManagedByDev marks a demo client that development mode
	// (serve --dev) puts back at every start.
	ClientManagedByDev = "dev"
)

// Public reports whether the client has no credentials of its own.
func (c *Client) Public() bool { return c.TokenEndpointAuthMethod == AuthNone }

// AllowsGrant reports whether the client may use grant type g.
func (c *Client) AllowsGrant(g string) bool {
	for _, x := range c.GrantTypes {
		if x == g {
			return true
		}
	}
	return false
}

// AllowsRedirect reports whether uri is one of the client's redirect URIs:
// an exact string match, except that a registered http URI on a loopback
// IP literal (127.0.0.0/8, [::1]) matches any port, as RFC 8252 §7.3
// requires (a native app or CLI listens on whatever port it gets). Every
// other part (scheme, host, path, query) must still match exactly;
// "localhost" gets no port freedom (RFC 8252 §8.3: it may not resolve to
// the loopback interface).
func (c *Client) AllowsRedirect(uri string) bool {
	for _, r := range c.RedirectURIs {
		if r == uri || loopbackAnyPort(r, uri) {
			return true
		}
	}
	return false
}

func loopbackAnyPort(registered, presented string) bool {
	reg, err := url.Parse(registered)
	if err != nil || reg.Scheme != "http" || reg.User != nil {
		return false
	}
	ip, err := netip.ParseAddr(reg.Hostname())
	if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
		return false
	}
	got, err := url.Parse(presented)
	if err != nil || got.Scheme != "http" || got.User != nil || got.Hostname() != reg.Hostname() {
		return false
	}
	if p := got.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return false
		}
	}
	// Compare everything but the port, as written.
	reg.Host, got.Host = reg.Hostname(), got.Hostname()
	if strings.Contains(registered, "[") {
		reg.Host, got.Host = "["+reg.Host+"]", "["+got.Host+"]"
	}
	return reg.String() == got.String() && reg.RawQuery == got.RawQuery && !strings.Contains(presented, "#")
}

// Session is a sign-in session (the OIDC `sid`). Refresh tokens belong to a
// session; revoking the session revokes them all.
type Session struct {
	ID        string
	UserID    string
	AuthTime  time.Time
	AMR       []string // e.g. ["pwd","otp"]
	ACR       string
	IP        string
	UserAgent string
	CreatedAt time.Time
	LastSeen  time.Time
	// ExpiresAt is the absolute lifetime; IdleTimeout bounds time since LastSeen.
	ExpiresAt   time.Time
	IdleTimeout time.Duration
	RevokedAt   time.Time // zero: active
	RevokeCause string
	// DBSCKeyJKT is the RFC 7638 thumbprint of the browser key the session
	// is bound to by Device Bound Session Credentials, and DBSCKey that
	// public JWK; empty: the SSO cookie alone is the session credential.
	DBSCKeyJKT string
	DBSCKey    json.RawMessage
}

// Active reports whether the session can still be used at now.
func (s *Session) Active(now time.Time) bool {
	if !s.RevokedAt.IsZero() || !now.Before(s.ExpiresAt) {
		return false
	}
	if s.IdleTimeout > 0 && now.Sub(s.LastSeen) > s.IdleTimeout {
		return false
	}
	return true
}

// RefreshToken is one member of a rotation chain. Only the hash is stored.
type RefreshToken struct {
	Hash      []byte // keyed hash of the token; the primary key
	SessionID string
	ClientID  string
	UserID    string
	Scope     string
	// JKT is the RFC 7638 thumbprint of the DPoP key the token is bound to
	// (empty: unbound, allowed only for confidential clients).
	JKT string
	// DeviceID is the registered device whose key JKT is (empty: the key
	// belongs to no registered device). Such a session is "protected".
	DeviceID  string
	AuthTime  time.Time
	AMR       []string
	ACR       string
	CreatedAt time.Time
	ExpiresAt time.Time
	// RotatedAt is set when the token was exchanged for a successor;
	// presenting it again afterwards is reuse.
	RotatedAt time.Time
	// Generation is the token's place in its rotation chain: 1 for the
	// first refresh token of a grant, +1 at each rotation; 0 for a token
	// stored before generations were recorded (and its successors).
	Generation int
}

// AuthCode is an issued authorization code. Only the hash is stored.
type AuthCode struct {
	Hash                []byte
	ClientID            string
	UserID              string
	SessionID           string
	RedirectURI         string
	Scope               string
	Nonce               string
	CodeChallenge       string
	CodeChallengeMethod string
	DPoPJKT             string // dpop_jkt from the authorization request
	AuthTime            time.Time
	AMR                 []string
	ACR                 string
	CreatedAt           time.Time
	ExpiresAt           time.Time
	UsedAt              time.Time // zero: not redeemed yet
	// Refused: spent by a refused redemption, which issued nothing;
	// RefusedJKT is the DPoP key of that request ("" without one).
	Refused    bool
	RefusedJKT string
}

// PushedRequest is an RFC 9126 pushed authorization request.
type PushedRequest struct {
	RequestURI string // urn:ietf:params:oauth:request_uri:<random>
	ClientID   string
	Params     map[string]string
	ExpiresAt  time.Time
}

// SigningKey is a token-signing key. The private half is encrypted.
type SigningKey struct {
	KID        string
	Alg        string // "ES256"
	PrivateEnc []byte // AES-GCM(KEK, PKCS#8 DER)
	PublicJWK  json.RawMessage
	CreatedAt  time.Time
	// ActiveAt is when the key starts signing; keys are published in JWKS
	// before that (overlap) and until RetireAt.
	ActiveAt time.Time
	RetireAt time.Time // zero: not scheduled
}

// PolicyVersion is one stored version of the Conditional Access
// configuration (policies and named locations). Versions are numbered from
// 1 and never change; the highest is in force.
type PolicyVersion struct {
	Version int64
	// Document is the canonical JSON of the policy document.
	Document []byte
	// Digest is the hex SHA-256 of Document: an unchanged document is
	// not stored again.
	Digest    string
	CreatedAt time.Time
	CreatedBy string
	Comment   string
}
