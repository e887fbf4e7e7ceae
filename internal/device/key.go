package device

import "github.com/ward-idp/ward/jws"

// thumbprint checks that canon ({"crv","kty","x","y"} of a P-256 key) is a
// point on the curve and returns its RFC 7638 thumbprint.
func thumbprint(canon []byte) (string, error) {
	k, err := jws.ParseJWK(canon, jws.ES256)
	if err != nil {
		return "", err
	}
	return k.Thumbprint, nil
}
