package dpop

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

// MaxProofSize is the longest DPoP proof Verify looks at, in bytes. An
// RSA-8192 proof with the usual claims is about 4 KiB.
const MaxProofSize = 8 << 10

// Limits on individual claims; the jti is stored in the replay cache, so a
// hostile client must not be able to make entries large (RFC 9449 §11.1).
const (
	maxJTI = 256
)

// Defaults for Verifier fields left zero.
const (
	DefaultMaxAge = 5 * time.Minute
	DefaultLeeway = 30 * time.Second
)

// DefaultAlgs are the proof algorithms accepted when Verifier.Algs is
// empty: asymmetric only.
var DefaultAlgs = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.RS256, jose.EdDSA,
}

// ReplayCache remembers proof identifiers until they expire.
type ReplayCache interface {
	// Record stores key until exp. It returns ErrReplay if key is already
	// stored and has not expired, and any other error if the cache cannot
	// answer (Verify then fails closed with that error).
	Record(ctx context.Context, key string, exp time.Time) error
}

// NonceSource issues and checks server nonces (RFC 9449 §8, §9).
type NonceSource interface {
	// Nonce returns the nonce to send in the DPoP-Nonce response header.
	Nonce() string
	// Check reports whether nonce was issued by this source and is still
	// fresh.
	Check(nonce string) bool
}

// Verifier checks DPoP proofs on the server side (authorization server or
// resource server). Configure it once; Verify is safe for concurrent use as
// long as the fields are not changed.
type Verifier struct {
	// Algs are the accepted proof algorithms; empty means DefaultAlgs.
	// Only asymmetric algorithms are ever accepted: "none", HS256 and any
	// other algorithm this package does not support are ignored.
	Algs []jose.SignatureAlgorithm
	// MaxAge is how old a proof's iat may be (zero or negative:
	// DefaultMaxAge). Together with Leeway it is how long jti values are
	// kept in the replay cache (until iat + MaxAge + Leeway).
	MaxAge time.Duration
	// Leeway is the accepted clock skew into the future for iat (zero or
	// negative: DefaultLeeway).
	Leeway time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Replay records jti values; required. Verify fails without it.
	Replay ReplayCache
	// Nonces issues and checks server nonces; nil means nonces are not
	// used. When set, a nonce present in a proof must be valid even if
	// the Check does not require one.
	Nonces NonceSource
}

// Check is what one request expects of its proof.
type Check struct {
	// Method is the HTTP method of the request (compared exactly with htm).
	Method string
	// URL is the request's target URI as the client addressed it. Both it
	// and htu are normalised with NormalizeHTU before comparison, so query,
	// fragment, case of scheme and host, default port and similar
	// differences do not matter.
	URL string
	// AccessToken, if set, is the access token presented with the request;
	// the proof must then carry its hash in ath.
	AccessToken string
	// JKT, if set, is the thumbprint the token or code is bound to (cnf.jkt
	// or dpop_jkt); the proof key must have this thumbprint.
	JKT string
	// RequireNonce demands a valid server nonce when Verifier.Nonces is set.
	RequireNonce bool
}

// Proof is a verified DPoP proof.
type Proof struct {
	JTI      string
	HTM      string
	HTU      string // as sent by the client
	Nonce    string
	ATH      string
	IssuedAt time.Time
	// JWK is the proof's public key; JKT is its RFC 7638 thumbprint.
	JWK jose.JSONWebKey
	JKT string
	Alg string
}

// Verify checks a DPoP proof against the request described by c, following
// RFC 9449 §4.3, and records its jti so that it cannot be used again.
// Checks that need no cryptography run first; the jti is recorded only
// after the signature has verified, so forged proofs cannot fill the
// replay cache or block a legitimate client's jti.
//
// A rejected proof yields an *Error (Code CodeInvalidProof or CodeUseNonce;
// for the latter, answer with a DPoP-Nonce header carrying Nonces.Nonce()).
// Any other error is an internal failure (replay cache unavailable,
// Verifier misconfigured, Check.URL not an absolute http(s) URL) and
// should become a server error.
func (v *Verifier) Verify(ctx context.Context, proof string, c Check) (*Proof, error) {
	if v.Replay == nil {
		return nil, errors.New("dpop: Verifier.Replay is nil")
	}
	if proof == "" {
		return nil, invalid(ReasonMissing, "DPoP proof missing")
	}
	if len(proof) > MaxProofSize {
		return nil, invalid(ReasonTooLarge, "DPoP proof too large")
	}

	// 1. A single compact JWS: three non-empty base64url parts.
	jw, err := jws.Split(proof)
	if err != nil || !jw.Complete() {
		return nil, invalid(ReasonMalformed, "DPoP proof is not a compact JWS")
	}

	// 2. JOSE header.
	var hbuf [8]member
	h, err := jws.ParseHeader(jw.Header(), hbuf[:0])
	if errors.Is(err, jws.ErrEncoding) {
		return nil, invalid(ReasonMalformed, "DPoP proof header is not base64url")
	} else if err != nil {
		return nil, invalid(ReasonMalformed, "DPoP proof header is not a JSON object")
	}
	switch h.First("crit", "jku", "x5u", "x5c", "x5t", "x5t#S256", "b64", "zip", "enc") {
	case "":
	case "crit":
		// No extension is understood, so no critical one can be honoured.
		return nil, invalid(ReasonHeader, "DPoP proof has critical header parameters")
	case "b64", "zip", "enc":
		return nil, invalid(ReasonHeader, "DPoP proof has unsupported header parameters")
	default:
		return nil, invalid(ReasonHeader, "DPoP proof key must be an inline jwk")
	}
	if !h.IsString(jws.ParamTyp) || h.Typ != "dpop+jwt" {
		return nil, invalid(ReasonType, "DPoP proof typ must be dpop+jwt")
	}
	if !h.IsString(jws.ParamAlg) {
		return nil, invalid(ReasonAlg, "DPoP proof alg missing")
	}
	alg, ok := v.allowed(h.Alg)
	if !ok {
		return nil, invalid(ReasonAlg, "DPoP proof alg not allowed")
	}
	if !h.Has(jws.ParamJWK) {
		return nil, invalid(ReasonKey, "DPoP proof jwk header missing")
	}
	key, e := parseJWK(h.JWK, alg)
	if e != nil {
		return nil, e
	}

	// 3. Claims.
	claimsJSON, err := jws.DecodeSegment(jw.Payload())
	if err != nil {
		return nil, invalid(ReasonMalformed, "DPoP proof payload is not base64url")
	}
	var cbuf [10]member
	cms, err := parseObject(claimsJSON, cbuf[:0])
	if err != nil {
		return nil, invalid(ReasonMalformed, "DPoP proof payload is not a JSON object")
	}
	p := &Proof{Alg: h.Alg, JKT: key.Thumbprint}
	var iatRaw []byte
	for _, m := range cms {
		var dst *string
		switch m.Name {
		case "jti":
			dst = &p.JTI
		case "htm":
			dst = &p.HTM
		case "htu":
			dst = &p.HTU
		case "nonce":
			dst = &p.Nonce
		case "ath":
			dst = &p.ATH
		case "iat":
			iatRaw = m.Raw
			continue
		default:
			continue
		}
		if *dst, ok = unquote(m.Raw); !ok {
			return nil, invalid(ReasonMissingClaim, "DPoP proof claim "+m.Name+" must be a string")
		}
	}
	switch {
	case p.JTI == "":
		return nil, invalid(ReasonMissingClaim, "DPoP proof jti missing")
	case len(p.JTI) > maxJTI:
		return nil, invalid(ReasonMalformed, "DPoP proof jti too long")
	case p.HTM == "":
		return nil, invalid(ReasonMissingClaim, "DPoP proof htm missing")
	case p.HTU == "":
		return nil, invalid(ReasonMissingClaim, "DPoP proof htu missing")
	case iatRaw == nil:
		return nil, invalid(ReasonMissingClaim, "DPoP proof iat missing")
	}
	sec, nsec, ok := numericDate(iatRaw)
	if !ok {
		return nil, invalid(ReasonMissingClaim, "DPoP proof iat must be a NumericDate")
	}
	p.IssuedAt = time.Unix(sec, nsec)

	// 4. Request binding.
	if p.HTM != c.Method {
		return nil, invalid(ReasonMethod, "DPoP proof htm does not match the request method")
	}
	if p.HTU != c.URL {
		want, err := NormalizeHTU(c.URL)
		if err != nil {
			return nil, fmt.Errorf("dpop: Check.URL is not an absolute http(s) URL: %w", err)
		}
		got, err := NormalizeHTU(p.HTU)
		if err != nil || got != want {
			return nil, invalid(ReasonURL, "DPoP proof htu does not match the request URI")
		}
	} else if _, err := NormalizeHTU(p.HTU); err != nil {
		return nil, invalid(ReasonURL, "DPoP proof htu does not match the request URI")
	}

	// 5. Freshness.
	maxAge, leeway := v.MaxAge, v.Leeway
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if leeway <= 0 {
		leeway = DefaultLeeway
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now()
	if p.IssuedAt.Before(t.Add(-maxAge)) {
		return nil, invalid(ReasonTooOld, "DPoP proof is too old")
	}
	if p.IssuedAt.After(t.Add(leeway)) {
		return nil, invalid(ReasonFuture, "DPoP proof iat is in the future")
	}

	// 6. Token and key binding.
	if c.AccessToken != "" {
		if p.ATH == "" {
			return nil, invalid(ReasonATHMissing, "DPoP proof ath missing")
		}
		want := AccessTokenHash(c.AccessToken)
		if subtle.ConstantTimeCompare([]byte(p.ATH), []byte(want)) != 1 {
			return nil, invalid(ReasonATHMismatch, "DPoP proof ath does not match the access token")
		}
	}
	if c.JKT != "" && subtle.ConstantTimeCompare([]byte(c.JKT), []byte(key.Thumbprint)) != 1 {
		return nil, invalid(ReasonKeyMismatch, "DPoP proof key does not match the bound key")
	}

	// 7. Server nonce.
	if v.Nonces != nil {
		if p.Nonce == "" {
			if c.RequireNonce {
				return nil, useNonce(ReasonNonceMissing, "DPoP proof nonce required")
			}
		} else if !v.Nonces.Check(p.Nonce) {
			return nil, useNonce(ReasonNonceInvalid, "DPoP proof nonce is invalid or expired")
		}
	}

	// 8. Signature over the exact bytes received.
	sig, err := jws.DecodeSegment(jw.Signature())
	if err != nil {
		return nil, invalid(ReasonMalformed, "DPoP proof signature is not base64url")
	}
	if !jws.Verify(alg, key.Key, jw.SigningInput(), sig) {
		return nil, invalid(ReasonSignature, "DPoP proof signature is invalid")
	}

	// 9. Single use within the acceptance window.
	exp := p.IssuedAt.Add(maxAge + leeway)
	if err := v.Replay.Record(ctx, "dpop:"+key.Thumbprint+":"+p.JTI, exp); err != nil {
		if errors.Is(err, ErrReplay) {
			e := invalid(ReasonReplay, "DPoP proof has already been used")
			e.err = ErrReplay
			return nil, e
		}
		return nil, fmt.Errorf("dpop: replay cache: %w", err)
	}
	p.JWK = jose.JSONWebKey{Key: key.Key, Algorithm: h.Alg, Use: "sig"}
	return p, nil
}

// allowed returns alg if it is configured and supported (asymmetric).
func (v *Verifier) allowed(alg string) (jws.Algorithm, bool) {
	algs := v.Algs
	if len(algs) == 0 {
		algs = DefaultAlgs
	}
	for _, a := range algs {
		if string(a) == alg {
			return jws.Algorithm(alg), jws.Algorithm(alg).Supported()
		}
	}
	return "", false
}
