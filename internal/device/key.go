package device

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
)

// thumbprint checks that canon ({"crv","kty","x","y"} of a P-256 key) is a
// point on the curve and returns its RFC 7638 thumbprint.
func thumbprint(canon []byte) (string, error) {
	var c struct{ X, Y string }
	if err := json.Unmarshal(canon, &c); err != nil {
		return "", err
	}
	x, err1 := base64.RawURLEncoding.Strict().DecodeString(c.X)
	y, err2 := base64.RawURLEncoding.Strict().DecodeString(c.Y)
	if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
		return "", errors.New("bad coordinates")
	}
	point := append(append([]byte{4}, x...), y...)
	if _, err := ecdh.P256().NewPublicKey(point); err != nil {
		return "", err
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(canon); err != nil {
		return "", err
	}
	return dpop.Thumbprint(&k)
}
