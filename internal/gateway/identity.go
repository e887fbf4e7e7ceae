package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/jws"
)

// IdentityType is the "typ" header of the Ward-Identity JWS (RFC 8725
// §3.11: explicit typing, so that it cannot pass as another kind of JWT).
const IdentityType = "ward-identity+jwt"

// IdentityLifetime is how long a Ward-Identity assertion is valid.
const IdentityLifetime = 60 * time.Second

// IdentityClaims are the claims of the Ward-Identity header.
type IdentityClaims struct {
	Issuer    string `json:"iss"`           // the gateway's external_url
	Audience  string `json:"aud"`           // the route's upstream URL
	Subject   string `json:"sub"`           // the token's sub
	ClientID  string `json:"client_id"`     // the token's client_id
	SessionID string `json:"sid,omitempty"` // the token's sid (user sessions)
	DeviceID  string `json:"did,omitempty"` // the registered device of the DPoP key
	Scope     string `json:"scope"`         // granted scopes, space-separated
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
	JTI       string `json:"jti"`
}

// identitySigner signs Ward-Identity assertions with the gateway's key.
type identitySigner struct {
	key    *ecdsa.PrivateKey
	kid    string
	header string // base64url of the protected header, with the dot
	jwks   []byte
}

func newIdentitySigner(key *ecdsa.PrivateKey) (*identitySigner, error) {
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey}
	kid, err := dpop.Thumbprint(&pub)
	if err != nil {
		return nil, err
	}
	pub.KeyID, pub.Algorithm, pub.Use = kid, string(jose.ES256), "sig"
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, err
	}
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": IdentityType, "kid": kid})
	return &identitySigner{key: key, kid: kid, header: base64.RawURLEncoding.EncodeToString(h) + ".", jwks: jwks}, nil
}

// sign returns the compact JWS of c.
func (s *identitySigner) sign(c *IdentityClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	n := len(s.header) + base64.RawURLEncoding.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+86)
	buf = append(buf, s.header...)
	buf = jws.AppendSegment(buf, payload)
	if buf, err = jws.AppendSign(buf, jws.ES256, s.key, rand.Reader); err != nil {
		return "", fmt.Errorf("gateway: sign identity: %w", err)
	}
	return string(buf), nil
}

// newJTI returns 128 random bits, base64url.
func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
