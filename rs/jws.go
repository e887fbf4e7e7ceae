package rs

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
)

var b64 = base64.RawURLEncoding.Strict()

// jwsHeader is the part of a protected JOSE header this package acts on.
type jwsHeader struct {
	alg, typ, kid string
	hasKID        bool
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

// splitCompact splits a compact JWS into its three non-empty segments.
func splitCompact(tok string) (hdr, payload, sig string, ok bool) {
	d1 := strings.IndexByte(tok, '.')
	if d1 <= 0 {
		return "", "", "", false
	}
	rest := tok[d1+1:]
	d2 := strings.IndexByte(rest, '.')
	if d2 <= 0 || d2 == len(rest)-1 || strings.IndexByte(rest[d2+1:], '.') >= 0 {
		return "", "", "", false
	}
	return tok[:d1], rest[:d2], rest[d2+1:], true
}

// parseJWSHeader decodes and checks a protected header: alg ES256 only
// (never "none", never HMAC: the key comes from a JWKS of EC keys), the
// expected typ, and no header that would change how the JWS must be
// processed. Key-reference headers (jku, jwk, x5u, x5c) are ignored: the
// key always comes from the configured key set, looked up by kid.
func parseJWSHeader(seg string, typ string) (jwsHeader, error) {
	var h jwsHeader
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return h, jwsMalformed
	}
	obj, err := parseObject(raw)
	if err != nil {
		return h, jwsMalformed
	}
	var hasAlg bool
	for _, m := range obj {
		var ok bool
		switch m.Name {
		case "alg":
			h.alg, ok = unquote(m.Raw)
			hasAlg = true
		case "typ":
			h.typ, ok = unquote(m.Raw)
		case "kid":
			h.kid, ok = unquote(m.Raw)
			h.hasKID = true
		case "crit", "b64", "zip", "enc":
			// No extension is understood, so a critical one cannot be
			// honoured; enc means JWE, which is not accepted.
			return h, jwsHeaderErr
		default:
			ok = true
		}
		if !ok {
			return h, jwsMalformed
		}
	}
	if !hasAlg || h.alg != "ES256" {
		return h, jwsAlg
	}
	if !typEqual(h.typ, typ) {
		return h, jwsTyp
	}
	return h, nil
}

// typEqual compares media types per RFC 7515 §4.1.9: case-insensitively,
// with the "application/" prefix optional when no other '/' appears (so
// "at+jwt" and "application/at+jwt" are the same type, RFC 9068 §2.1).
func typEqual(got, want string) bool {
	return strings.EqualFold(stripApplication(got), stripApplication(want))
}

func stripApplication(t string) string {
	const p = "application/"
	if len(t) > len(p) && strings.EqualFold(t[:len(p)], p) && !strings.Contains(t[len(p):], "/") {
		return t[len(p):]
	}
	return t
}

// verifyES256 checks a JWS ES256 signature (64 bytes R||S, RFC 7518 §3.4)
// over signingInput.
func verifyES256(pub *ecdsa.PublicKey, signingInput, sigSeg string) bool {
	var sig [64]byte
	if b64.DecodedLen(len(sigSeg)) != len(sig) {
		return false
	}
	if n, err := b64.Decode(sig[:], []byte(sigSeg)); err != nil || n != len(sig) {
		return false
	}
	digest := sha256.Sum256([]byte(signingInput))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest[:], r, s)
}
