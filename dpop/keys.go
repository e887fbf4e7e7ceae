package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

// Key size limits for RSA proof keys. Below 2048 bits is too weak
// (NIST SP 800-131A); above 8192 bits only costs the server CPU.
const (
	MinRSABits = jws.MinRSABits
	MaxRSABits = jws.MaxRSABits
)

var (
	b64    = base64.RawURLEncoding.Strict()
	b64Enc = base64.RawURLEncoding
)

// Thumbprint returns the RFC 7638 SHA-256 thumbprint (base64url, no
// padding) of a public JWK: the value of cnf.jkt and dpop_jkt. For a
// private asymmetric key the thumbprint of its public half is returned;
// symmetric keys have no thumbprint here and yield an error.
func Thumbprint(jwk *jose.JSONWebKey) (string, error) {
	if jwk == nil || jwk.Key == nil {
		return "", errors.New("dpop: nil JWK")
	}
	k := *jwk
	if !k.IsPublic() {
		switch k.Key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			k = k.Public()
		default:
			return "", fmt.Errorf("dpop: no thumbprint for key type %T", jwk.Key)
		}
	}
	sum, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("dpop: thumbprint: %w", err)
	}
	return b64Enc.EncodeToString(sum), nil
}

// AccessTokenHash returns base64url(SHA-256(token)), the ath claim value
// for an access token (RFC 9449 §4.2).
func AccessTokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return b64Enc.EncodeToString(sum[:])
}

// jwkDescriptions are the client-visible descriptions of the reasons
// jws.ParseJWK refuses a proof key.
var jwkDescriptions = map[error]string{
	jws.ErrJWKNotObject:   "jwk header is not a JSON object",
	jws.ErrJWKPrivate:     "jwk contains private or symmetric key material",
	jws.ErrJWKAlg:         "jwk alg does not match the proof alg",
	jws.ErrJWKUse:         "jwk use is not sig",
	jws.ErrJWKCertificate: "jwk must be a bare public key without certificates",
	jws.ErrJWKMember:      "jwk member is not a string",
	jws.ErrJWKNoKty:       "jwk has no kty",
	jws.ErrJWKSymmetric:   "jwk is a symmetric key",
	jws.ErrJWKKeyType:     "jwk key type does not match the proof alg",
	jws.ErrJWKCurve:       "jwk curve does not match the proof alg",
	jws.ErrJWKECEncoding:  "jwk EC coordinates are malformed",
	jws.ErrJWKECPoint:     "jwk EC point is not on the curve",
	jws.ErrJWKOKPEncoding: "jwk OKP key is malformed",
	jws.ErrJWKRSAEncoding: "jwk RSA key is malformed",
	jws.ErrJWKRSAExponent: "jwk RSA exponent is not acceptable",
	jws.ErrJWKRSAModulus:  "jwk RSA modulus size is not acceptable",
}

// parseJWK reads the jwk header of a proof for alg (jws.ParseJWK: public
// keys of alg's type only, no private, symmetric or certificate member).
func parseJWK(raw []byte, alg jws.Algorithm) (jws.JWK, *Error) {
	k, err := jws.ParseJWK(raw, alg)
	if err != nil {
		desc, ok := jwkDescriptions[err]
		if !ok {
			desc = "jwk key type is not supported"
		}
		return jws.JWK{}, invalid(ReasonKey, desc)
	}
	return k, nil
}
