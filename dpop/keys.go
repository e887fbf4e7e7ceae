package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha512" // SHA-384 and SHA-512 for ES384/512, PS384/512, RS384/512
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// Key size limits for RSA proof keys. Below 2048 bits is too weak
// (NIST SP 800-131A); above 8192 bits only costs the server CPU.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
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

// algInfo describes one supported JWS signature algorithm.
type algInfo struct {
	alg   jose.SignatureAlgorithm
	kty   string
	curve elliptic.Curve // ES*
	crv   string         // ES*, EdDSA
	size  int            // ECDSA coordinate size in bytes
	hash  crypto.Hash    // 0 for EdDSA
	pss   bool           // PS*
}

// supported lists every asymmetric algorithm this package can verify.
// Symmetric (HS*) and "none" are deliberately absent: even if configured
// in Verifier.Algs they are never accepted.
var supported = [...]algInfo{
	{alg: jose.ES256, kty: "EC", curve: elliptic.P256(), crv: "P-256", size: 32, hash: crypto.SHA256},
	{alg: jose.ES384, kty: "EC", curve: elliptic.P384(), crv: "P-384", size: 48, hash: crypto.SHA384},
	{alg: jose.ES512, kty: "EC", curve: elliptic.P521(), crv: "P-521", size: 66, hash: crypto.SHA512},
	{alg: jose.PS256, kty: "RSA", hash: crypto.SHA256, pss: true},
	{alg: jose.PS384, kty: "RSA", hash: crypto.SHA384, pss: true},
	{alg: jose.PS512, kty: "RSA", hash: crypto.SHA512, pss: true},
	{alg: jose.RS256, kty: "RSA", hash: crypto.SHA256},
	{alg: jose.RS384, kty: "RSA", hash: crypto.SHA384},
	{alg: jose.RS512, kty: "RSA", hash: crypto.SHA512},
	{alg: jose.EdDSA, kty: "OKP", crv: "Ed25519"},
}

func lookupAlg(alg string) *algInfo {
	for i := range supported {
		if string(supported[i].alg) == alg {
			return &supported[i]
		}
	}
	return nil
}

// privateMembers are JWK members that carry private or symmetric key
// material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 9964 "priv").
var privateMembers = [...]string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

// parsedKey is a proof key decoded from the jwk header.
type parsedKey struct {
	pub crypto.PublicKey
	jkt string
}

// parseJWK decodes the jwk header of a proof for algorithm ai. It accepts
// only public EC (P-256/384/521), OKP Ed25519 and RSA (MinRSABits to
// MaxRSABits) keys whose type matches ai, rejects any private or symmetric
// member and any certificate or URL member, and computes the RFC 7638
// thumbprint from the canonical encoding of the key.
func parseJWK(raw []byte, ai *algInfo) (parsedKey, *Error) {
	var buf [12]member
	ms, err := parseObject(raw, buf[:0])
	if err != nil {
		return parsedKey{}, invalid(ReasonKey, "jwk header is not a JSON object")
	}
	var kty, crv, x, y, n, e string
	var has uint8
	const hasKty, hasCrv, hasX, hasY, hasN, hasE = 1, 2, 4, 8, 16, 32
	for _, m := range ms {
		for _, p := range privateMembers {
			if m.Name == p {
				return parsedKey{}, invalid(ReasonKey, "jwk contains private or symmetric key material")
			}
		}
		var dst *string
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
			if s, ok := unquote(m.Raw); !ok || s != string(ai.alg) {
				return parsedKey{}, invalid(ReasonKey, "jwk alg does not match the proof alg")
			}
			continue
		case "use":
			if s, ok := unquote(m.Raw); !ok || s != "sig" {
				return parsedKey{}, invalid(ReasonKey, "jwk use is not sig")
			}
			continue
		case "x5c", "x5u", "x5t", "x5t#S256":
			return parsedKey{}, invalid(ReasonKey, "jwk must be a bare public key without certificates")
		default:
			continue
		}
		s, ok := unquote(m.Raw)
		if !ok {
			return parsedKey{}, invalid(ReasonKey, "jwk member is not a string")
		}
		*dst = s
		has |= bit
	}
	if has&hasKty == 0 {
		return parsedKey{}, invalid(ReasonKey, "jwk has no kty")
	}
	if kty == "oct" {
		return parsedKey{}, invalid(ReasonKey, "jwk is a symmetric key")
	}
	if kty != ai.kty {
		return parsedKey{}, invalid(ReasonKey, "jwk key type does not match the proof alg")
	}
	var canon []byte
	var pub crypto.PublicKey
	switch kty {
	case "EC":
		if crv != ai.crv || has&(hasX|hasY) != hasX|hasY {
			return parsedKey{}, invalid(ReasonKey, "jwk curve does not match the proof alg")
		}
		xb, err1 := b64.DecodeString(x)
		yb, err2 := b64.DecodeString(y)
		if err1 != nil || err2 != nil || len(xb) != ai.size || len(yb) != ai.size {
			return parsedKey{}, invalid(ReasonKey, "jwk EC coordinates are malformed")
		}
		pt := make([]byte, 1+2*ai.size)
		pt[0] = 4
		copy(pt[1:], xb)
		copy(pt[1+ai.size:], yb)
		k, err := ecdsa.ParseUncompressedPublicKey(ai.curve, pt)
		if err != nil {
			return parsedKey{}, invalid(ReasonKey, "jwk EC point is not on the curve")
		}
		pub = k
		canon = ecCanon(crv, x, y)
	case "OKP":
		if crv != ai.crv || has&hasX == 0 {
			return parsedKey{}, invalid(ReasonKey, "jwk curve does not match the proof alg")
		}
		xb, err := b64.DecodeString(x)
		if err != nil || len(xb) != ed25519.PublicKeySize {
			return parsedKey{}, invalid(ReasonKey, "jwk OKP key is malformed")
		}
		pub = ed25519.PublicKey(xb)
		canon = okpCanon(crv, x)
	case "RSA":
		if has&(hasN|hasE) != hasN|hasE {
			return parsedKey{}, invalid(ReasonKey, "jwk RSA key is malformed")
		}
		nb, err1 := b64.DecodeString(n)
		eb, err2 := b64.DecodeString(e)
		// RFC 7518 §6.3.1: minimal big-endian encodings, no leading zero.
		if err1 != nil || err2 != nil || len(nb) == 0 || nb[0] == 0 || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
			return parsedKey{}, invalid(ReasonKey, "jwk RSA key is malformed")
		}
		var ev uint64
		for _, c := range eb {
			ev = ev<<8 | uint64(c)
		}
		if ev < 3 || ev > 1<<31-1 || ev&1 == 0 {
			return parsedKey{}, invalid(ReasonKey, "jwk RSA exponent is not acceptable")
		}
		nv := new(big.Int).SetBytes(nb)
		if bits := nv.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return parsedKey{}, invalid(ReasonKey, "jwk RSA modulus size is not acceptable")
		}
		pub = &rsa.PublicKey{N: nv, E: int(ev)}
		canon = rsaCanon(e, n)
	default:
		return parsedKey{}, invalid(ReasonKey, "jwk key type is not supported")
	}
	sum := sha256.Sum256(canon)
	return parsedKey{pub: pub, jkt: b64Enc.EncodeToString(sum[:])}, nil
}

// Canonical RFC 7638 inputs. The member values come from strictly decoded
// base64url of the exact expected length (EC, OKP) or minimal encoding
// (RSA), so they are already canonical and contain no characters that
// need JSON escaping.
func ecCanon(crv, x, y string) []byte {
	b := make([]byte, 0, 40+len(crv)+len(x)+len(y))
	b = append(b, `{"crv":"`...)
	b = append(b, crv...)
	b = append(b, `","kty":"EC","x":"`...)
	b = append(b, x...)
	b = append(b, `","y":"`...)
	b = append(b, y...)
	return append(b, `"}`...)
}

func okpCanon(crv, x string) []byte {
	b := make([]byte, 0, 32+len(crv)+len(x))
	b = append(b, `{"crv":"`...)
	b = append(b, crv...)
	b = append(b, `","kty":"OKP","x":"`...)
	b = append(b, x...)
	return append(b, `"}`...)
}

func rsaCanon(e, n string) []byte {
	b := make([]byte, 0, 32+len(e)+len(n))
	b = append(b, `{"e":"`...)
	b = append(b, e...)
	b = append(b, `","kty":"RSA","n":"`...)
	b = append(b, n...)
	return append(b, `"}`...)
}
