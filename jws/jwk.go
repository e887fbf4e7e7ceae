package jws

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"

	"github.com/ward-idp/ward/jsonobj"
)

// Errors of ParseJWK, one per reason a key is refused. Their texts are
// fixed and contain nothing of the input.
var (
	ErrJWKNotObject   = errors.New("jws: jwk is not a JSON object")
	ErrJWKPrivate     = errors.New("jws: jwk contains private or symmetric key material")
	ErrJWKAlg         = errors.New("jws: jwk alg does not match the JWS alg")
	ErrJWKUse         = errors.New("jws: jwk use is not sig")
	ErrJWKCertificate = errors.New("jws: jwk must be a bare public key without certificates")
	ErrJWKMember      = errors.New("jws: jwk member is not a string")
	ErrJWKNoKty       = errors.New("jws: jwk has no kty")
	ErrJWKSymmetric   = errors.New("jws: jwk is a symmetric key")
	ErrJWKKeyType     = errors.New("jws: jwk key type does not match the JWS alg")
	ErrJWKCurve       = errors.New("jws: jwk curve does not match the JWS alg")
	ErrJWKECEncoding  = errors.New("jws: jwk EC coordinates are malformed")
	ErrJWKECPoint     = errors.New("jws: jwk EC point is not on the curve")
	ErrJWKOKPEncoding = errors.New("jws: jwk OKP key is malformed")
	ErrJWKRSAEncoding = errors.New("jws: jwk RSA key is malformed")
	ErrJWKRSAExponent = errors.New("jws: jwk RSA exponent is not acceptable")
	ErrJWKRSAModulus  = errors.New("jws: jwk RSA modulus size is not acceptable")
)

// privateMembers are JWK members that carry private or symmetric key
// material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 9964 "priv").
var privateMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

// JWK is a public key read by ParseJWK.
type JWK struct {
	// Key is *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey.
	Key crypto.PublicKey
	// Thumbprint is the RFC 7638 SHA-256 thumbprint, base64url.
	Thumbprint string
	// Members is the number of members of the JWK object.
	Members int
}

// ParseJWK reads raw, a JWK (RFC 7517) such as the "jwk" header, as the
// public key of a JWS signed with alg. It accepts only public EC
// (P-256/384/521 on the curve of alg), OKP Ed25519 and RSA (MinRSABits to
// MaxRSABits, minimal encodings, odd exponent) keys whose type matches
// alg; it refuses any private or symmetric member, any certificate or URL
// member, an alg other than alg and a use other than "sig". The
// thumbprint is computed from the canonical encoding of the key, so
// that equal keys have equal thumbprints whatever their members' order
// or escaping.
func ParseJWK(raw []byte, alg Algorithm) (JWK, error) {
	ai := lookup(string(alg))
	if ai == nil {
		return JWK{}, fmt.Errorf("jws: unsupported algorithm %q", alg)
	}
	var buf [12]jsonobj.Member
	ms, err := jsonobj.ParseDeep(raw, buf[:0])
	if err != nil {
		return JWK{}, ErrJWKNotObject
	}
	// Values stay raw bytes (subslices of raw when they need no
	// unescaping): a proof key is read on every DPoP request.
	var kty, crv, x, y, n, e []byte
	var has uint8
	const hasKty, hasCrv, hasX, hasY, hasN, hasE = 1, 2, 4, 8, 16, 32
	for _, m := range ms {
		for _, p := range privateMembers {
			if m.Name == p {
				return JWK{}, ErrJWKPrivate
			}
		}
		var dst *[]byte
		var bit uint8
		switch m.Name {
		case "kty":
			dst, bit = &kty, hasKty
		case "crv":
			dst, bit = &crv, hasCrv
		case "x":
			dst, bit = &x, hasX
		case "y":
			dst, bit = &y, hasY
		case "n":
			dst, bit = &n, hasN
		case "e":
			dst, bit = &e, hasE
		case "alg":
			if s, ok := jsonobj.Unquote(m.Raw); !ok || s != string(alg) {
				return JWK{}, ErrJWKAlg
			}
			continue
		case "use":
			if s, ok := jsonobj.Unquote(m.Raw); !ok || s != "sig" {
				return JWK{}, ErrJWKUse
			}
			continue
		case "kid":
			// Not used here, but a string (RFC 7517 §4.5) as for any
			// other JOSE implementation.
			if _, ok := jsonobj.Unquote(m.Raw); !ok {
				return JWK{}, ErrJWKMember
			}
			continue
		case "x5c", "x5u", "x5t", "x5t#S256":
			return JWK{}, ErrJWKCertificate
		default:
			continue
		}
		s, ok := stringBytes(m.Raw)
		if !ok {
			return JWK{}, ErrJWKMember
		}
		*dst = s
		has |= bit
	}
	if has&hasKty == 0 {
		return JWK{}, ErrJWKNoKty
	}
	if string(kty) == "oct" {
		return JWK{}, ErrJWKSymmetric
	}
	if string(kty) != ai.kty {
		return JWK{}, ErrJWKKeyType
	}
	var canon []byte
	var pub crypto.PublicKey
	switch ai.kty {
	case "EC":
		if string(crv) != ai.crv || has&(hasX|hasY) != hasX|hasY {
			return JWK{}, ErrJWKCurve
		}
		var pt [1 + 2*66]byte
		pt[0] = 4
		nx, err1 := decodeExact(pt[1:1+ai.size], x)
		ny, err2 := decodeExact(pt[1+ai.size:1+2*ai.size], y)
		if err1 != nil || err2 != nil || nx != ai.size || ny != ai.size {
			return JWK{}, ErrJWKECEncoding
		}
		k, err := ecdsa.ParseUncompressedPublicKey(ai.curve, pt[:1+2*ai.size])
		if err != nil {
			return JWK{}, ErrJWKECPoint
		}
		pub = k
		canon = ecCanon(ai.crv, x, y)
	case "OKP":
		if string(crv) != ai.crv || has&hasX == 0 {
			return JWK{}, ErrJWKCurve
		}
		xb, err := decodeBytes(x)
		if err != nil || len(xb) != ed25519.PublicKeySize {
			return JWK{}, ErrJWKOKPEncoding
		}
		pub = ed25519.PublicKey(xb)
		canon = okpCanon(ai.crv, x)
	case "RSA":
		if has&(hasN|hasE) != hasN|hasE {
			return JWK{}, ErrJWKRSAEncoding
		}
		nb, err1 := decodeBytes(n)
		eb, err2 := decodeBytes(e)
		// RFC 7518 §6.3.1: minimal big-endian encodings, no leading zero.
		if err1 != nil || err2 != nil || len(nb) == 0 || nb[0] == 0 || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
			return JWK{}, ErrJWKRSAEncoding
		}
		var ev uint64
		for _, c := range eb {
			ev = ev<<8 | uint64(c)
		}
		if ev < 3 || ev > 1<<31-1 || ev&1 == 0 {
			return JWK{}, ErrJWKRSAExponent
		}
		nv := new(big.Int).SetBytes(nb)
		if bits := nv.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return JWK{}, ErrJWKRSAModulus
		}
		pub = &rsa.PublicKey{N: nv, E: int(ev)}
		canon = rsaCanon(e, n)
	}
	return JWK{Key: pub, Thumbprint: thumbprint(canon), Members: len(ms)}, nil
}

// stringBytes returns the content of a raw JSON string: a subslice of raw
// when it has no escapes.
func stringBytes(raw []byte) ([]byte, bool) {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], true
	}
	s, ok := jsonobj.Unquote(raw)
	return []byte(s), ok
}

// decodeExact decodes the base64url seg into dst, which must be exactly
// large enough.
func decodeExact(dst, seg []byte) (int, error) {
	if b64.DecodedLen(len(seg)) != len(dst) || hasNewlineBytes(seg) {
		return 0, ErrEncoding
	}
	return b64.Decode(dst, seg)
}

func hasNewlineBytes(seg []byte) bool {
	return bytes.IndexByte(seg, '\n') >= 0 || bytes.IndexByte(seg, '\r') >= 0
}

// decodeBytes is DecodeSegment for a segment held as bytes.
func decodeBytes(seg []byte) ([]byte, error) {
	if hasNewlineBytes(seg) {
		return nil, ErrEncoding
	}
	b, err := b64.AppendDecode(nil, seg)
	if err != nil {
		return nil, ErrEncoding
	}
	return b, nil
}

// CanonicalJWK returns the RFC 7638 canonical JSON of a public key: the
// required members only, in lexicographic order, without whitespace. It
// is both the input of the thumbprint and the smallest "jwk" header.
// Ed25519, P-256/384/521 and RSA keys are supported.
func CanonicalJWK(pub crypto.PublicKey) ([]byte, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		for i := range algs {
			ai := &algs[i]
			if ai.kty == "EC" && ai.curve == k.Curve {
				pt, err := k.Bytes() // 0x04 || X || Y
				if err != nil {
					return nil, fmt.Errorf("jws: ECDSA key: %w", err)
				}
				return ecCanon(ai.crv, AppendSegment(nil, pt[1:1+ai.size]), AppendSegment(nil, pt[1+ai.size:])), nil
			}
		}
		return nil, errors.New("jws: unsupported ECDSA curve")
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, errors.New("jws: malformed Ed25519 key")
		}
		return okpCanon("Ed25519", AppendSegment(nil, k)), nil
	case *rsa.PublicKey:
		if k.N == nil || k.E <= 0 {
			return nil, errors.New("jws: malformed RSA key")
		}
		return rsaCanon(AppendSegment(nil, big.NewInt(int64(k.E)).Bytes()), AppendSegment(nil, k.N.Bytes())), nil
	}
	return nil, fmt.Errorf("jws: unsupported key type %T", pub)
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint (base64url) of a
// public key, as CanonicalJWK supports them.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	canon, err := CanonicalJWK(pub)
	if err != nil {
		return "", err
	}
	return thumbprint(canon), nil
}

func thumbprint(canon []byte) string {
	sum := sha256.Sum256(canon)
	return EncodeSegment(sum[:])
}

// Canonical RFC 7638 inputs. The member values come from strictly decoded
// base64url of the exact expected length (EC, OKP) or minimal encoding
// (RSA), so they are already canonical and need no JSON escaping.
func ecCanon(crv string, x, y []byte) []byte {
	b := make([]byte, 0, 40+len(crv)+len(x)+len(y))
	b = append(b, `{"crv":"`...)
	b = append(b, crv...)
	b = append(b, `","kty":"EC","x":"`...)
	b = append(b, x...)
	b = append(b, `","y":"`...)
	b = append(b, y...)
	return append(b, `"}`...)
}

func okpCanon(crv string, x []byte) []byte {
	b := make([]byte, 0, 32+len(crv)+len(x))
	b = append(b, `{"crv":"`...)
	b = append(b, crv...)
	b = append(b, `","kty":"OKP","x":"`...)
	b = append(b, x...)
	return append(b, `"}`...)
}

func rsaCanon(e, n []byte) []byte {
	b := make([]byte, 0, 32+len(e)+len(n))
	b = append(b, `{"e":"`...)
	b = append(b, e...)
	b = append(b, `","kty":"RSA","n":"`...)
	b = append(b, n...)
	return append(b, `"}`...)
}
