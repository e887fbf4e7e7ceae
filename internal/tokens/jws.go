package tokens

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/jws"
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
	errCrit         = fmt.Errorf("%w: unsupported critical header", ErrInvalidToken) // also b64, zip, enc
	errTyp          = fmt.Errorf("%w: wrong token type (typ header)", ErrInvalidToken)
	errUnknownKID   = fmt.Errorf("%w: unknown or retired key id", ErrInvalidToken)
	errSignature    = fmt.Errorf("%w: signature verification failed", ErrInvalidToken)
	errPayload      = fmt.Errorf("%w: malformed payload", ErrInvalidToken)
	errClaimMissing = fmt.Errorf("%w: required claim missing", ErrInvalidToken)
)

// maxTokenSize bounds the work done on untrusted input before the
// signature check.
const maxTokenSize = 16 << 10

// header is the protected JOSE header Ward writes.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
	Typ string `json:"typ,omitempty"`
}

func encodeHeader(kid, typ string) (string, error) {
	h, err := json.Marshal(header{Alg: AlgES256, Kid: kid, Typ: typ})
	if err != nil {
		return "", err
	}
	return jws.EncodeSegment(h), nil
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

// sign assembles header.payload.signature in one buffer; the header is
// pre-encoded for the token types Ward mints.
func (s *signer) sign(hdr string, payload []byte) (string, error) {
	n := len(hdr) + 1 + base64.RawURLEncoding.EncodedLen(len(payload))
	buf := make([]byte, 0, n+1+base64.RawURLEncoding.EncodedLen(64))
	buf = append(buf, hdr...)
	buf = append(buf, '.')
	buf = jws.AppendSegment(buf, payload)
	buf, err := jws.AppendSign(buf, jws.ES256, s.priv, rand.Reader)
	if err != nil {
		return "", fmt.Errorf("tokens: %w", err)
	}
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
	c, err := jws.Split(token)
	if err != nil {
		return errMalformed
	}
	st := m.state.Load()
	var key *publicKey
	if kh, ok := st.byHeader[c.Header()]; ok {
		// Byte-for-byte a header Ward itself produces: alg is ES256.
		if !jws.MediaTypeEqual(kh.typ, typ) {
			return errTyp
		}
		key = kh.key
	} else if key, err = st.parseHeader(c.Header(), typ); err != nil {
		return err
	}
	if !key.published(m.now()) {
		return errUnknownKID
	}
	if !jws.VerifyES256(key.pub, c.SigningInput(), c.Signature()) {
		return errSignature
	}
	if out == nil {
		return nil
	}
	payload, err := jws.DecodeSegment(c.Payload())
	if err != nil {
		return errPayload
	}
	if err := json.Unmarshal(payload, out); err != nil {
		return errPayload
	}
	return nil
}

// es256 is the one algorithm Ward's tokens use.
var es256 = []jws.Algorithm{jws.ES256}

// parseHeader decodes and checks a protected header that is not one of
// the pre-encoded ones and returns the key it names.
func (st *keyState) parseHeader(seg, typ string) (*publicKey, error) {
	var buf [8]jsonobj.Member
	h, err := jws.ParseHeader(seg, buf[:0])
	if err != nil {
		return nil, errHeader
	}
	r := jws.Rules{Algs: es256, Typ: typ, MediaType: true}
	if _, err := r.Check(&h); err != nil {
		switch err {
		case jws.ErrAlg:
			return nil, errAlg
		case jws.ErrUnsupported:
			return nil, errCrit
		case jws.ErrTyp:
			return nil, errTyp
		}
		return nil, errHeader
	}
	if typ == "" && h.Typ != "" {
		return nil, errTyp // no typ asked for: none given
	}
	key, ok := st.byKID[h.Kid]
	if !ok {
		return nil, errUnknownKID
	}
	return key, nil
}
