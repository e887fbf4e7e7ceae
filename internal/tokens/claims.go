package tokens

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Token types (the JOSE typ header).
const (
	TypeAccessToken = "at+jwt" // RFC 9068 §2.1
	TypeIDToken     = "JWT"
	// TypeSET is the explicit type of Security Event Tokens (RFC 8417
	// §2.3, SSF 1.0 §4.1.1).
	TypeSET = "secevent+jwt"
)

// MaxClockSkew is the tolerance applied to exp, iat and nbf.
const MaxClockSkew = 30 * time.Second

// Confirmation is the cnf claim of a sender-constrained token (RFC 9449
// §6.1: jkt is the JWK thumbprint of the DPoP key).
type Confirmation struct {
	JKT string `json:"jkt"`
}

// AccessClaims are the claims of an RFC 9068 JWT access token.
type AccessClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  Audience `json:"aud"`
	ExpiresAt int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf,omitempty"`
	JTI       string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope,omitempty"`
	SID       string   `json:"sid,omitempty"`
	AuthTime  int64    `json:"auth_time,omitempty"`
	ACR       string   `json:"acr,omitempty"`
	AMR       []string `json:"amr,omitempty"`
	// Cnf binds the token to a DPoP key.
	Cnf *Confirmation `json:"cnf,omitempty"`
	// DeviceID is the registered device the DPoP key belongs to.
	DeviceID string `json:"did,omitempty"`
	// Capabilities are the client capabilities the token was issued for
	// ("cp1": the client handles CAE claims challenges), as Entra's xms_cc.
	Capabilities []string `json:"xms_cc,omitempty"`
	// AllowedIPs are the IP ranges the token may be used from
	// (Conditional Access strict location); resources enforce them.
	AllowedIPs []string `json:"ipr,omitempty"`
}

// IDClaims are the claims of an OpenID Connect ID token (Core §2).
type IDClaims struct {
	Issuer            string   `json:"iss"`
	Subject           string   `json:"sub"`
	Audience          Audience `json:"aud"`
	ExpiresAt         int64    `json:"exp"`
	IssuedAt          int64    `json:"iat"`
	AuthTime          int64    `json:"auth_time,omitempty"`
	Nonce             string   `json:"nonce,omitempty"`
	ACR               string   `json:"acr,omitempty"`
	AMR               []string `json:"amr,omitempty"`
	AZP               string   `json:"azp,omitempty"`
	SID               string   `json:"sid,omitempty"`
	AtHash            string   `json:"at_hash,omitempty"`
	Name              string   `json:"name,omitempty"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
	Email             string   `json:"email,omitempty"`
}

// Audience is the aud claim. It marshals as a single string when it holds
// exactly one value (the common case, RFC 7519 §4.1.3) and as an array
// otherwise; it unmarshals from either.
type Audience []string

// MarshalJSON implements json.Marshaler.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	if a == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON implements json.Unmarshaler.
func (a *Audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New("tokens: aud must be a string or an array of strings")
	}
	*a = l
	return nil
}

// Contains reports whether aud holds v.
func (a Audience) Contains(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// MintAccessToken signs c as an RFC 9068 access token (typ at+jwt).
func (m *KeyManager) MintAccessToken(c *AccessClaims) (string, error) {
	return m.Sign(TypeAccessToken, c)
}

// MintSET signs claims as a Security Event Token (RFC 8417) with the
// current signing key: ES256, header {alg, kid, typ: secevent+jwt}. The
// caller supplies the SSF claims (iss, aud, jti, iat, txn, sub_id,
// events). A json.RawMessage is signed byte for byte, without being
// parsed again: it must be a valid, compact JSON object (the transmitter
// assembles one per receiver from pre-marshalled parts).
func (m *KeyManager) MintSET(claims any) (string, error) {
	if raw, ok := claims.(json.RawMessage); ok {
		if len(raw) < 2 || raw[0] != '{' || raw[len(raw)-1] != '}' {
			return "", errors.New("tokens: SET claims must be a JSON object")
		}
		s := m.state.Load().signer
		return s.sign(s.headers[TypeSET], raw)
	}
	return m.Sign(TypeSET, claims)
}

// MintIDToken signs c as an OpenID Connect ID token (typ JWT).
func (m *KeyManager) MintIDToken(c *IDClaims) (string, error) {
	return m.Sign(TypeIDToken, c)
}

// ParseAccessToken verifies the signature and typ (at+jwt) of an access
// token and checks iss == issuer, exp > now, iat and nbf not in the future
// (each with MaxClockSkew of tolerance) and that iss, sub, aud, exp, iat,
// jti and client_id are present. The caller checks the audience, the
// binding (cnf) and revocation. Failures wrap ErrInvalidToken.
func (m *KeyManager) ParseAccessToken(token, issuer string, now time.Time) (*AccessClaims, error) {
	c := new(AccessClaims)
	if err := m.Verify(token, TypeAccessToken, c); err != nil {
		return nil, err
	}
	if err := c.validate(issuer, now); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *AccessClaims) validate(issuer string, now time.Time) error {
	switch {
	case c.Issuer == "":
		return missing("iss")
	case c.Subject == "":
		return missing("sub")
	case len(c.Audience) == 0:
		return missing("aud")
	case c.ExpiresAt == 0:
		return missing("exp")
	case c.IssuedAt == 0:
		return missing("iat")
	case c.JTI == "":
		return missing("jti")
	case c.ClientID == "":
		return missing("client_id")
	}
	for _, a := range c.Audience {
		if a == "" {
			return fmt.Errorf("%w: empty audience", ErrInvalidToken)
		}
	}
	if c.Issuer != issuer {
		return fmt.Errorf("%w: wrong issuer", ErrInvalidToken)
	}
	skew := int64(MaxClockSkew / time.Second)
	t := now.Unix()
	if t >= c.ExpiresAt+skew {
		return fmt.Errorf("%w: expired", ErrInvalidToken)
	}
	if c.IssuedAt > t+skew {
		return fmt.Errorf("%w: issued in the future", ErrInvalidToken)
	}
	if c.NotBefore != 0 && c.NotBefore > t+skew {
		return fmt.Errorf("%w: not yet valid", ErrInvalidToken)
	}
	return nil
}

func missing(claim string) error {
	return fmt.Errorf("%w: %s", errClaimMissing, claim)
}

// AtHash returns the OIDC at_hash of an access token signed with ES256: the
// base64url-encoded left half of the SHA-256 of its ASCII octets (OpenID
// Connect Core §3.1.3.6).
func AtHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:sha256.Size/2])
}
