// Package jws is Ward's strict codec for JSON Web Signatures in compact
// serialization (RFC 7515 §7.1): the one implementation behind access
// tokens and ID tokens, Security Event Tokens, DPoP proofs, DBSC proofs and
// device posture reports.
//
// It is stricter than general-purpose JOSE libraries, so that no two
// parsers can read a signed document differently (RFC 8725 §3):
//
//   - exactly three segments, each canonical unpadded base64url
//     ([DecodeSegment]);
//   - a protected header that is a JSON object of valid UTF-8 with unique,
//     case-sensitive member names, at most [MaxHeaderSize] bytes and
//     [jsonobj.MaxMembers] members ([ParseHeader]);
//   - "alg" from a list the caller gives, never "none" or a symmetric
//     algorithm; "crit", "b64", "zip" and "enc" refused (no extension is
//     understood, and a JWE is not a JWS); "typ" compared exactly or as an
//     RFC 7515 §4.1.9 media type, as the caller asks ([Rules]);
//   - ECDSA signatures in the fixed-length R || S form of RFC 7518 §3.4
//     only ([Verify], [VerifyES256]); DER is what crypto.Signer returns
//     and is converted when signing ([AppendSign]);
//   - embedded public keys (the "jwk" header) read strictly, with their
//     RFC 7638 thumbprint ([ParseJWK]).
//
// Claims are the caller's: this package hands back the decoded payload and
// never interprets it. It depends on the standard library and [jsonobj]
// only. FuzzCompact checks it against go-jose: whatever it accepts, go-jose
// accepts with the same header and payload, and both agree on every
// signature.
package jws

import (
	"encoding/base64"
	"errors"
	"strings"
)

// Errors of Split, DecodeSegment, ParseHeader and Rules.Check. Callers map
// them to their own protocol errors; none of them contains input.
var (
	// ErrMalformed: not three dot-separated segments.
	ErrMalformed = errors.New("jws: not a compact JWS")
	// ErrEncoding: a segment is not canonical unpadded base64url.
	ErrEncoding = errors.New("jws: segment is not base64url")
	// ErrHeader: the protected header is too large, not a strict JSON
	// object, or (Rules.Check) its alg, typ or kid is not a string.
	ErrHeader = errors.New("jws: malformed protected header")
	// ErrUnsupported: the header has crit, b64, zip or enc.
	ErrUnsupported = errors.New("jws: unsupported header parameter")
	// ErrAlg: alg is missing or not allowed.
	ErrAlg = errors.New("jws: algorithm not allowed")
	// ErrTyp: typ is missing or not the expected type.
	ErrTyp = errors.New("jws: wrong typ")
)

// b64 is the only base64 this package reads: RFC 7515 §2 base64url
// without padding, and Strict, so that the unused bits of the last
// character must be zero. encoding/base64 skips CR and LF even then;
// canonical refuses them (see hasNewline), leaving one encoding per value.
var b64 = base64.RawURLEncoding.Strict()

// hasNewline reports whether seg holds a CR or LF. (Two IndexByte scans
// are vectorised; ContainsAny costs ~2 ns a byte, which shows on tokens.)
func hasNewline(seg string) bool {
	return strings.IndexByte(seg, '\n') >= 0 || strings.IndexByte(seg, '\r') >= 0
}

// Compact is a compact JWS split into its three segments, still encoded.
type Compact struct {
	s      string
	d1, d2 int // indexes of the two dots
}

// Split splits token at its two dots. Any of the three segments may be
// empty (callers that require content check it: an empty signature is a
// signature that does not verify for some, a malformed JWS for others);
// anything but exactly two dots is ErrMalformed, so the JWS JSON
// serialization and five-part JWEs are refused.
func Split(token string) (Compact, error) {
	d1 := strings.IndexByte(token, '.')
	if d1 < 0 {
		return Compact{}, ErrMalformed
	}
	d2 := strings.IndexByte(token[d1+1:], '.')
	if d2 < 0 {
		return Compact{}, ErrMalformed
	}
	d2 += d1 + 1
	if strings.IndexByte(token[d2+1:], '.') >= 0 {
		return Compact{}, ErrMalformed
	}
	return Compact{s: token, d1: d1, d2: d2}, nil
}

// Header is the encoded protected header segment.
func (c Compact) Header() string { return c.s[:c.d1] }

// Payload is the encoded payload segment.
func (c Compact) Payload() string { return c.s[c.d1+1 : c.d2] }

// Signature is the encoded signature segment.
func (c Compact) Signature() string { return c.s[c.d2+1:] }

// SigningInput is header.payload: the exact bytes received, which is what
// the signature covers (RFC 7515 §5.2 step 8).
func (c Compact) SigningInput() string { return c.s[:c.d2] }

// Complete reports whether all three segments are non-empty.
func (c Compact) Complete() bool { return c.d1 > 0 && c.d2 > c.d1+1 && c.d2 < len(c.s)-1 }

// DecodeSegment decodes one segment; anything but canonical unpadded
// base64url is ErrEncoding.
func DecodeSegment(seg string) ([]byte, error) {
	b, err := b64.DecodeString(seg)
	if err != nil || hasNewline(seg) {
		return nil, ErrEncoding
	}
	return b, nil
}

// AppendSegment appends the base64url encoding of data to dst.
func AppendSegment(dst, data []byte) []byte { return b64.AppendEncode(dst, data) }

// EncodeSegment returns the base64url encoding of data.
func EncodeSegment(data []byte) string { return b64.EncodeToString(data) }
