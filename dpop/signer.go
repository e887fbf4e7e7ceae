package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Signer creates DPoP proofs with one private key (client side). It is
// safe for concurrent use if the underlying crypto.Signer is.
type Signer struct {
	key    crypto.Signer
	ai     *algInfo
	opts   crypto.SignerOpts
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
	var canon []byte
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		var alg jose.SignatureAlgorithm
		switch pub.Curve {
		case elliptic.P256():
			alg = jose.ES256
		case elliptic.P384():
			alg = jose.ES384
		case elliptic.P521():
			alg = jose.ES512
		default:
			return nil, errors.New("dpop: unsupported ECDSA curve")
		}
		s.ai = lookupAlg(string(alg))
		pt, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("dpop: ECDSA key: %w", err)
		}
		n := s.ai.size
		canon = ecCanon(s.ai.crv, b64Enc.EncodeToString(pt[1:1+n]), b64Enc.EncodeToString(pt[1+n:]))
		s.opts = s.ai.hash
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, errors.New("dpop: malformed Ed25519 key")
		}
		s.ai = lookupAlg(string(jose.EdDSA))
		canon = okpCanon(s.ai.crv, b64Enc.EncodeToString(pub))
		s.opts = crypto.Hash(0)
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("dpop: RSA key of %d bits; need %d to %d", bits, MinRSABits, MaxRSABits)
		}
		s.ai = lookupAlg(string(jose.PS256))
		e := big.NewInt(int64(pub.E)).Bytes()
		canon = rsaCanon(b64Enc.EncodeToString(e), b64Enc.EncodeToString(pub.N.Bytes()))
		s.opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	default:
		return nil, fmt.Errorf("dpop: unsupported key type %T", pub)
	}
	s.jwk = jose.JSONWebKey{Key: key.Public(), Algorithm: string(s.ai.alg), Use: "sig"}
	jkt, err := Thumbprint(&jose.JSONWebKey{Key: key.Public()})
	if err != nil {
		return nil, err
	}
	s.jkt = jkt
	// The jwk header is the RFC 7638 canonical member set: exactly the
	// public key, nothing else.
	hdr := `{"typ":"dpop+jwt","alg":"` + string(s.ai.alg) + `","jwk":` + string(canon) + `}`
	s.prefix = b64Enc.EncodeToString([]byte(hdr)) + "."
	return s, nil
}

// Thumbprint returns the RFC 7638 thumbprint of the signer's public key,
// the value for dpop_jkt and cnf.jkt.
func (s *Signer) Thumbprint() string { return s.jkt }

// PublicJWK returns the signer's public key as a JWK.
func (s *Signer) PublicJWK() jose.JSONWebKey { return s.jwk }

// Algorithm returns the JWS algorithm of the proofs.
func (s *Signer) Algorithm() jose.SignatureAlgorithm { return s.ai.alg }

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
	var b strings.Builder
	b.Grow(len(s.prefix) + b64Enc.EncodedLen(len(payload)) + 1 + 700)
	b.WriteString(s.prefix)
	b.WriteString(b64Enc.EncodeToString(payload))
	input := b.String()

	var sig []byte
	if s.ai.kty == "OKP" {
		sig, err = s.key.Sign(s.rand, []byte(input), s.opts)
	} else {
		h := s.ai.hash.New()
		h.Write([]byte(input))
		sig, err = s.key.Sign(s.rand, h.Sum(nil), s.opts)
	}
	if err != nil {
		return "", fmt.Errorf("dpop: sign: %w", err)
	}
	if s.ai.kty == "EC" {
		if sig, err = ecdsaRaw(sig, s.ai.size); err != nil {
			return "", err
		}
	}
	b.WriteByte('.')
	b.WriteString(b64Enc.EncodeToString(sig))
	return b.String(), nil
}

// ecdsaRaw converts an ASN.1 ECDSA signature (what crypto.Signer returns)
// into the fixed-size R || S form of JWS (RFC 7518 §3.4).
func ecdsaRaw(der []byte, size int) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 ||
		rs.R.BitLen() > 8*size || rs.S.BitLen() > 8*size {
		return nil, errors.New("dpop: signer returned a malformed ECDSA signature")
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, nil
}
