package tokens

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidToken is wrapped by every verification failure. Messages name
// the reason, never the token.
var ErrInvalidToken = errors.New("tokens: invalid token")

// Verification failures. Each wraps ErrInvalidToken.
var (
	errMalformed    = fmt.Errorf("%w: malformed compact JWS", ErrInvalidToken)
	errTooLarge     = fmt.Errorf("%w: token too large", ErrInvalidToken)
	errHeader       = fmt.Errorf("%w: malformed protected header", ErrInvalidToken)
	errAlg          = fmt.Errorf("%w: algorithm not allowed (want ES256)", ErrInvalidToken)
	errCrit         = fmt.Errorf("%w: unsupported critical header", ErrInvalidToken)
	errTyp          = fmt.Errorf("%w: wrong token type (typ header)", ErrInvalidToken)
	errUnknownKID   = fmt.Errorf("%w: unknown or retired key id", ErrInvalidToken)
	errSignature    = fmt.Errorf("%w: signature verification failed", ErrInvalidToken)
	errPayload      = fmt.Errorf("%w: malformed payload", ErrInvalidToken)
	errClaimMissing = fmt.Errorf("%w: required claim missing", ErrInvalidToken)
)

// maxTokenSize bounds the work done on untrusted input before the
// signature check.
const maxTokenSize = 16 << 10

var b64 = base64.RawURLEncoding.Strict()

// header is the protected JOSE header.
type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid,omitempty"`
	Typ  string          `json:"typ,omitempty"`
	Crit json.RawMessage `json:"crit,omitempty"`
}

func encodeHeader(kid, typ string) (string, error) {
	h, err := json.Marshal(header{Alg: AlgES256, Kid: kid, Typ: typ})
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(h), nil
}

// Sign returns a compact JWS (ES256) of claims marshalled with
// encoding/json, with the protected header {alg, kid, typ}.
func (m *KeyManager) Sign(typ string, claims any) (string, error) {
	s := m.state.Load().signer
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("tokens: marshal claims: %w", err)
	}
	hdr, ok := s.headers[typ]
	if !ok {
		if hdr, err = encodeHeader(s.kid, typ); err != nil {
			return "", fmt.Errorf("tokens: marshal header: %w", err)
		}
	}
	return s.sign(hdr, payload)
}

// sign assembles header.payload.signature in one buffer.
func (s *signer) sign(hdr string, payload []byte) (string, error) {
	n := len(hdr) + 1 + b64.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+b64.EncodedLen(64))
	buf = append(buf, hdr...)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	digest := sha256.Sum256(buf)
	der, err := ecdsa.SignASN1(rand.Reader, s.priv, digest[:])
	if err != nil {
		return "", fmt.Errorf("tokens: sign: %w", err)
	}
	var raw [64]byte
	if !derToRaw(der, raw[:]) {
		return "", errors.New("tokens: sign: unexpected signature encoding")
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, raw[:])
	return string(buf), nil
}

// Verify checks the signature of a compact JWS against the published keys
// (looked up by kid), accepts alg ES256 only, requires the typ header to
// equal typ (case-insensitively, "application/" prefix optional, RFC 7515
// §4.1.9, RFC 8725 §3.11) and unmarshals the payload into out (unless out
// is nil). It does not check claims. Failures wrap ErrInvalidToken.
func (m *KeyManager) Verify(token, typ string, out any) error {
	if len(token) > maxTokenSize {
		return errTooLarge
	}
	d1 := strings.IndexByte(token, '.')
	if d1 < 0 {
		return errMalformed
	}
	d2 := d1 + 1 + strings.IndexByte(token[d1+1:], '.')
	if d2 <= d1 || strings.IndexByte(token[d2+1:], '.') >= 0 {
		return errMalformed
	}
	st := m.state.Load()
	var key *publicKey
	if kh, ok := st.byHeader[token[:d1]]; ok {
		// Byte-for-byte a header Ward itself produces: alg is ES256.
		if !typEqual(kh.typ, typ) {
			return errTyp
		}
		key = kh.key
	} else {
		var err error
		if key, err = st.parseHeader(token[:d1], typ); err != nil {
			return err
		}
	}
	if !key.published(m.now()) {
		return errUnknownKID
	}
	var sig [64]byte
	if b64.DecodedLen(len(token)-d2-1) != 64 {
		return errSignature
	}
	if n, err := b64.Decode(sig[:], []byte(token[d2+1:])); err != nil || n != 64 {
		return errSignature
	}
	var der [72]byte
	digest := sha256.Sum256([]byte(token[:d2]))
	if !ecdsa.VerifyASN1(key.pub, digest[:], rawToDER(der[:0], sig[:32], sig[32:])) {
		return errSignature
	}
	if out == nil {
		return nil
	}
	payload, err := b64.DecodeString(token[d1+1 : d2])
	if err != nil {
		return errPayload
	}
	if err := json.Unmarshal(payload, out); err != nil {
		return errPayload
	}
	return nil
}

// parseHeader decodes and checks a protected header that is not one of
// the pre-encoded ones and returns the key it names.
func (st *keyState) parseHeader(seg, typ string) (*publicKey, error) {
	var hbuf [512]byte
	hjson, err := b64.AppendDecode(hbuf[:0], []byte(seg))
	if err != nil {
		return nil, errHeader
	}
	var h header
	if err := json.Unmarshal(hjson, &h); err != nil {
		return nil, errHeader
	}
	if h.Alg != AlgES256 {
		return nil, errAlg
	}
	if h.Crit != nil {
		return nil, errCrit
	}
	if !typEqual(h.Typ, typ) {
		return nil, errTyp
	}
	key, ok := st.byKID[h.Kid]
	if !ok {
		return nil, errUnknownKID
	}
	return key, nil
}

// typEqual compares media types per RFC 7515 §4.1.9: case-insensitive, and
// "application/" may be omitted when no other '/' appears.
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

// derToRaw converts an ASN.1 ECDSA-Sig-Value (r, s) to the 64-byte
// fixed-length JWS form (RFC 7518 §3.4).
func derToRaw(der, out []byte) bool {
	// SEQUENCE, short length (P-256 signatures are at most 72 bytes).
	if len(der) < 2 || der[0] != 0x30 || int(der[1]) != len(der)-2 || der[1] >= 0x80 {
		return false
	}
	rest := der[2:]
	for i := 0; i < 2; i++ {
		if len(rest) < 2 || rest[0] != 0x02 {
			return false
		}
		l := int(rest[1])
		if l == 0 || l >= 0x80 || len(rest) < 2+l {
			return false
		}
		v := rest[2 : 2+l]
		for len(v) > 0 && v[0] == 0 {
			v = v[1:]
		}
		if len(v) > 32 {
			return false
		}
		dst := out[i*32 : (i+1)*32]
		clear(dst)
		copy(dst[32-len(v):], v)
		rest = rest[2+l:]
	}
	return len(rest) == 0
}

// rawToDER appends the ASN.1 ECDSA-Sig-Value of the big-endian integers r
// and s to dst.
func rawToDER(dst, r, s []byte) []byte {
	r, s = trimInt(r), trimInt(s)
	lr, ls := intLen(r), intLen(s)
	dst = append(dst, 0x30, byte(2+lr+2+ls))
	dst = appendInt(dst, r, lr)
	return appendInt(dst, s, ls)
}

func trimInt(v []byte) []byte {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	return v
}

func intLen(v []byte) int {
	if v[0]&0x80 != 0 {
		return len(v) + 1
	}
	return len(v)
}

func appendInt(dst, v []byte, l int) []byte {
	dst = append(dst, 0x02, byte(l))
	if l > len(v) {
		dst = append(dst, 0)
	}
	return append(dst, v...)
}
