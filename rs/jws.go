package rs

import (
	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/jws"
)

// Access tokens and SETs are compact JWSs read with package jws: ES256
// only (never "none", never HMAC: the key comes from a JWKS of EC keys),
// the expected typ compared as a media type (RFC 7515 §4.1.9: "at+jwt"
// and "application/at+jwt" are the same type, RFC 9068 §2.1), and no
// header that would change how the JWS must be processed. Key-reference
// headers (jku, jwk, x5u, x5c) are ignored: the key always comes from the
// configured key set, looked up by kid.

// jwsHeader is the part of a protected JOSE header this package acts on.
type jwsHeader struct {
	kid    string
	hasKID bool
}

// jwsError is why a compact JWS was refused before its claims were read.
// The values double as stable reason codes.
type jwsError string

const (
	jwsMalformed jwsError = "malformed"     // not one compact JWS with a JSON object header
	jwsTooLarge  jwsError = "too_large"     // longer than the limit
	jwsAlg       jwsError = "bad_alg"       // alg is not ES256
	jwsTyp       jwsError = "bad_typ"       // wrong typ
	jwsHeaderErr jwsError = "bad_header"    // crit, b64, zip or a JWE header
	jwsSignature jwsError = "bad_signature" // signature does not verify
)

func (e jwsError) Error() string { return "rs: " + string(e) }

var es256 = []jws.Algorithm{jws.ES256}

// parseJWSHeader decodes and checks a protected header for typ.
func parseJWSHeader(seg string, typ string) (jwsHeader, error) {
	var buf [8]jsonobj.Member
	h, err := jws.ParseHeader(seg, buf[:0])
	if err != nil {
		return jwsHeader{}, jwsMalformed
	}
	r := jws.Rules{Algs: es256, Typ: typ, MediaType: true}
	switch _, err := r.Check(&h); err {
	case nil:
		return jwsHeader{kid: h.Kid, hasKID: h.Has(jws.ParamKid)}, nil
	case jws.ErrAlg:
		return jwsHeader{}, jwsAlg
	case jws.ErrTyp:
		return jwsHeader{}, jwsTyp
	case jws.ErrUnsupported:
		return jwsHeader{}, jwsHeaderErr
	}
	return jwsHeader{}, jwsMalformed
}
