package jws

import (
	"crypto"
	"crypto/elliptic"
	_ "crypto/sha256" // SHA-256 for ES256, PS256, RS256
	_ "crypto/sha512" // SHA-384 and SHA-512 for ES384/512, PS384/512, RS384/512
)

// Algorithm is a JWS "alg" value (RFC 7518 §3.1).
type Algorithm string

// The asymmetric algorithms this package signs and verifies. Symmetric
// (HS*) and "none" are deliberately absent: even when a caller lists them
// as allowed, they are never accepted.
const (
	ES256 Algorithm = "ES256" // ECDSA P-256, SHA-256 (RFC 7518 §3.4)
	ES384 Algorithm = "ES384" // ECDSA P-384, SHA-384
	ES512 Algorithm = "ES512" // ECDSA P-521, SHA-512
	PS256 Algorithm = "PS256" // RSASSA-PSS, SHA-256, salt length 32 (RFC 7518 §3.5)
	PS384 Algorithm = "PS384"
	PS512 Algorithm = "PS512"
	RS256 Algorithm = "RS256" // RSASSA-PKCS1-v1_5, SHA-256 (RFC 7518 §3.3)
	RS384 Algorithm = "RS384"
	RS512 Algorithm = "RS512"
	EdDSA Algorithm = "EdDSA" // Ed25519 (RFC 8037 §3.1)
)

// Key size limits for RSA keys read from a JWK. Below 2048 bits is too
// weak (NIST SP 800-131A); above 8192 bits only costs the verifier CPU.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

// algInfo describes one supported algorithm.
type algInfo struct {
	alg   Algorithm
	kty   string         // JWK key type
	curve elliptic.Curve // ES*
	crv   string         // ES*, EdDSA
	size  int            // ECDSA: bytes per coordinate and per half of the signature
	hash  crypto.Hash    // 0 for EdDSA
	pss   bool           // PS*
}

var algs = [...]algInfo{
	{alg: ES256, kty: "EC", curve: elliptic.P256(), crv: "P-256", size: 32, hash: crypto.SHA256},
	{alg: ES384, kty: "EC", curve: elliptic.P384(), crv: "P-384", size: 48, hash: crypto.SHA384},
	{alg: ES512, kty: "EC", curve: elliptic.P521(), crv: "P-521", size: 66, hash: crypto.SHA512},
	{alg: PS256, kty: "RSA", hash: crypto.SHA256, pss: true},
	{alg: PS384, kty: "RSA", hash: crypto.SHA384, pss: true},
	{alg: PS512, kty: "RSA", hash: crypto.SHA512, pss: true},
	{alg: RS256, kty: "RSA", hash: crypto.SHA256},
	{alg: RS384, kty: "RSA", hash: crypto.SHA384},
	{alg: RS512, kty: "RSA", hash: crypto.SHA512},
	{alg: EdDSA, kty: "OKP", crv: "Ed25519"},
}

// Algorithms returns every algorithm this package supports.
func Algorithms() []Algorithm {
	out := make([]Algorithm, len(algs))
	for i := range algs {
		out[i] = algs[i].alg
	}
	return out
}

// Supported reports whether this package can sign and verify a.
func (a Algorithm) Supported() bool { return lookup(string(a)) != nil }

func lookup(alg string) *algInfo {
	for i := range algs {
		if string(algs[i].alg) == alg {
			return &algs[i]
		}
	}
	return nil
}
