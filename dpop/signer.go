package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

// Signer creates DPoP proofs with one private key (client side). It is
// safe for concurrent use if the underlying crypto.Signer is.
type Signer struct {
	key    crypto.Signer
	alg    jws.Algorithm
	jwk    jose.JSONWebKey
	jkt    string
	prefix string // base64url(header) + "."
	rand   io.Reader
}

// NewSigner returns a Signer for key, which may be a software key or any
// hardware-backed crypto.Signer. The algorithm follows from the public
// key: ECDSA P-256 -> ES256, P-384 -> ES384, P-521 -> ES512,
// Ed25519 -> EdDSA, RSA (at least MinRSABits) -> PS256.
func NewSigner(key crypto.Signer) (*Signer, error) {
	if key == nil {
		return nil, errors.New("dpop: nil key")
	}
	s := &Signer{key: key, rand: rand.Reader}
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			s.alg = jws.ES256
		case elliptic.P384():
			s.alg = jws.ES384
		case elliptic.P521():
			s.alg = jws.ES512
		default:
			return nil, errors.New("dpop: unsupported ECDSA curve")
		}
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, errors.New("dpop: malformed Ed25519 key")
		}
		s.alg = jws.EdDSA
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("dpop: RSA key of %d bits; need %d to %d", bits, MinRSABits, MaxRSABits)
		}
		s.alg = jws.PS256
	default:
		return nil, fmt.Errorf("dpop: unsupported key type %T", pub)
	}
	// The jwk header is the RFC 7638 canonical member set: exactly the
	// public key, nothing else; its hash is the thumbprint.
	canon, err := jws.CanonicalJWK(key.Public())
	if err != nil {
		return nil, fmt.Errorf("dpop: %w", err)
	}
	if s.jkt, err = jws.Thumbprint(key.Public()); err != nil {
		return nil, fmt.Errorf("dpop: %w", err)
	}
	s.jwk = jose.JSONWebKey{Key: key.Public(), Algorithm: string(s.alg), Use: "sig"}
	hdr := `{"typ":"dpop+jwt","alg":"` + string(s.alg) + `","jwk":` + string(canon) + `}`
	s.prefix = jws.EncodeSegment([]byte(hdr)) + "."
	return s, nil
}

// Thumbprint returns the RFC 7638 thumbprint of the signer's public key,
// the value for dpop_jkt and cnf.jkt.
func (s *Signer) Thumbprint() string { return s.jkt }

// PublicJWK returns the signer's public key as a JWK.
func (s *Signer) PublicJWK() jose.JSONWebKey { return s.jwk }

// Algorithm returns the JWS algorithm of the proofs.
func (s *Signer) Algorithm() jose.SignatureAlgorithm { return jose.SignatureAlgorithm(s.alg) }

// Proof makes a fresh proof (new random jti, iat now) for a request with
// the given method and URL. htu is the URL without query and fragment. A
// non-empty accessToken adds its hash as ath (resource requests); a
// non-empty nonce (from the server's DPoP-Nonce header) adds nonce.
func (s *Signer) Proof(method, url, accessToken, nonce string) (string, error) {
	return s.ProofAt(method, url, accessToken, nonce, time.Now())
}

type proofClaims struct {
	JTI   string `json:"jti"`
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	ATH   string `json:"ath,omitempty"`
	Nonce string `json:"nonce,omitempty"`
}

// ProofAt is Proof with an explicit creation time (for tests and for
// clients that correct their clock from the server's Date header).
func (s *Signer) ProofAt(method, url, accessToken, nonce string, iat time.Time) (string, error) {
	if method == "" {
		return "", errors.New("dpop: empty method")
	}
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		url = url[:i]
	}
	if _, err := NormalizeHTU(url); err != nil {
		return "", fmt.Errorf("dpop: proof URL: %w", err)
	}
	var id [16]byte
	if _, err := io.ReadFull(s.rand, id[:]); err != nil {
		return "", fmt.Errorf("dpop: jti: %w", err)
	}
	c := proofClaims{JTI: b64Enc.EncodeToString(id[:]), HTM: method, HTU: url, IAT: iat.Unix(), Nonce: nonce}
	if accessToken != "" {
		c.ATH = AccessTokenHash(accessToken)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, len(s.prefix)+b64Enc.EncodedLen(len(payload))+1+700)
	buf = append(buf, s.prefix...)
	buf = jws.AppendSegment(buf, payload)
	if buf, err = jws.AppendSign(buf, s.alg, s.key, s.rand); err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	return string(buf), nil
}
