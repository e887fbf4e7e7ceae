package jws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// VerifyES256 checks an ES256 signature segment (base64url of the 64-byte
// R || S, RFC 7518 §3.4) over signingInput with a P-256 key. It is the
// hot path of token and SET verification: the signature is decoded on the
// stack and handed to crypto/ecdsa as DER without big.Int arithmetic.
func VerifyES256(pub *ecdsa.PublicKey, signingInput, sigSegment string) bool {
	var sig [64]byte
	if len(sigSegment) != 86 || hasNewline(sigSegment) {
		return false
	}
	if n, err := b64.Decode(sig[:], []byte(sigSegment)); err != nil || n != len(sig) {
		return false
	}
	d := sha256.Sum256([]byte(signingInput))
	return verifyECDSA(pub, &algs[0], d[:], sig[:])
}

// Verify reports whether sig (decoded) is a valid alg signature by key
// over signingInput. key must be of the algorithm's type: *ecdsa.PublicKey
// on the algorithm's curve, *rsa.PublicKey or ed25519.PublicKey; ECDSA
// signatures must be the fixed-length R || S of RFC 7518 §3.4 (DER is
// refused), RSASSA-PSS salts as long as the hash (RFC 7518 §3.5).
func Verify(alg Algorithm, key crypto.PublicKey, signingInput string, sig []byte) bool {
	ai := lookup(string(alg))
	if ai == nil {
		return false
	}
	switch ai.kty {
	case "EC":
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		if ai.hash == crypto.SHA256 {
			d := sha256.Sum256([]byte(signingInput))
			return verifyECDSA(k, ai, d[:], sig)
		}
		h := ai.hash.New()
		h.Write([]byte(signingInput))
		return verifyECDSA(k, ai, h.Sum(nil), sig)
	case "OKP":
		k, ok := key.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
			return false
		}
		return ed25519.Verify(k, []byte(signingInput), sig)
	case "RSA":
		k, ok := key.(*rsa.PublicKey)
		if !ok || k.N == nil || len(sig) != k.Size() {
			return false
		}
		h := ai.hash.New()
		h.Write([]byte(signingInput))
		if ai.pss {
			return rsa.VerifyPSS(k, ai.hash, h.Sum(nil), sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(k, ai.hash, h.Sum(nil), sig) == nil
	}
	return false
}

// verifyECDSA checks a fixed-length R || S signature. The DER form
// ecdsa.VerifyASN1 wants is built in a buffer of the curve's size, which
// is cheaper than ecdsa.Verify's big.Int round trip.
func verifyECDSA(pub *ecdsa.PublicKey, ai *algInfo, digest, sig []byte) bool {
	if pub == nil || pub.Curve != ai.curve || len(sig) != 2*ai.size {
		return false
	}
	if ai.size == 32 {
		var der [maxDER256]byte
		n := rawToDER(der[:], sig[:32], sig[32:])
		return ecdsa.VerifyASN1(pub, digest, der[:n])
	}
	var der [maxDER]byte
	n := rawToDER(der[:], sig[:ai.size], sig[ai.size:])
	return ecdsa.VerifyASN1(pub, digest, der[:n])
}

// Longest ECDSA-Sig-Values: P-256 (SEQUENCE around two INTEGERs of up to
// 33 bytes) and P-521 (two-byte SEQUENCE length, INTEGERs of up to 67).
const (
	maxDER256 = 2 + 2*(2+33)
	maxDER    = 3 + 2*(2+67)
)

// rawToDER writes the ASN.1 ECDSA-Sig-Value of the unsigned big-endian
// integers r and s to der, which must be large enough, and returns its
// length. A zero r or s encodes as INTEGER 0, which ecdsa.VerifyASN1
// refuses.
func rawToDER(der []byte, r, s []byte) int {
	r, s = trimInt(r), trimInt(s)
	lr, ls := intLen(r), intLen(s)
	body := 2 + lr + 2 + ls
	i := 0
	der[i] = 0x30
	if body < 0x80 {
		der[i+1] = byte(body)
		i += 2
	} else {
		der[i+1], der[i+2] = 0x81, byte(body)
		i += 3
	}
	i = putInt(der, i, r, lr)
	return putInt(der, i, s, ls)
}

func trimInt(v []byte) []byte {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	return v
}

// intLen is the length of v as a DER INTEGER body (a leading zero keeps
// a high bit from making it negative).
func intLen(v []byte) int {
	if v[0]&0x80 != 0 {
		return len(v) + 1
	}
	return len(v)
}

func putInt(der []byte, i int, v []byte, l int) int {
	der[i], der[i+1] = 0x02, byte(l)
	i += 2
	if l > len(v) {
		der[i] = 0
		i++
	}
	return i + copy(der[i:], v)
}

// errSigner: a crypto.Signer returned something that is not a DER
// ECDSA-Sig-Value for the algorithm's curve.
var errSigner = errors.New("jws: signer returned a malformed ECDSA signature")

// derToRaw writes the ECDSA-Sig-Value der as fixed-length R || S into out
// (2*size bytes). It accepts only what a correct signer produces: DER
// with minimal, positive, non-zero integers of at most size bytes.
func derToRaw(der, out []byte, size int) bool {
	if len(der) < 2 || der[0] != 0x30 {
		return false
	}
	rest := der[2:]
	switch l := int(der[1]); {
	case l < 0x80:
		if l != len(rest) {
			return false
		}
	case l == 0x81 && len(der) >= 3 && der[2] >= 0x80:
		if rest = der[3:]; int(der[2]) != len(rest) {
			return false
		}
	default:
		return false
	}
	for i := range 2 {
		if len(rest) < 2 || rest[0] != 0x02 {
			return false
		}
		l := int(rest[1])
		if l == 0 || l >= 0x80 || len(rest) < 2+l {
			return false
		}
		v := rest[2 : 2+l]
		if v[0]&0x80 != 0 || (v[0] == 0 && (l == 1 || v[1]&0x80 == 0)) {
			return false // negative, zero or not minimal
		}
		if v[0] == 0 {
			v = v[1:]
		}
		if len(v) > size {
			return false
		}
		dst := out[i*size : (i+1)*size]
		clear(dst)
		copy(dst[size-len(v):], v)
		rest = rest[2+l:]
	}
	return len(rest) == 0
}

// AppendSign signs dst, which holds the signing input header.payload,
// with key for alg, and appends "." and the base64url signature: dst
// becomes the compact JWS. key may be any crypto.Signer of the
// algorithm's type, software or hardware-backed; an ECDSA signer's DER
// result becomes R || S (RFC 7518 §3.4). rand is passed to the signer.
func AppendSign(dst []byte, alg Algorithm, key crypto.Signer, rand io.Reader) ([]byte, error) {
	ai := lookup(string(alg))
	if ai == nil {
		return nil, fmt.Errorf("jws: unsupported algorithm %q", alg)
	}
	if key == nil {
		return nil, errors.New("jws: nil key")
	}
	var sig []byte
	var err error
	switch {
	case ai.kty == "OKP":
		sig, err = key.Sign(rand, dst, crypto.Hash(0))
	case ai.hash == crypto.SHA256 && ai.kty == "EC":
		if k, ok := key.(*ecdsa.PrivateKey); ok {
			// What k.Sign does, without the digest escaping through the
			// interface call: token minting signs on every request.
			d := sha256.Sum256(dst)
			sig, err = ecdsa.SignASN1(rand, k, d[:])
		} else {
			d := sha256.Sum256(dst)
			sig, err = key.Sign(rand, d[:], crypto.SHA256)
		}
	default:
		h := ai.hash.New()
		h.Write(dst)
		var opts crypto.SignerOpts = ai.hash
		if ai.pss {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: ai.hash}
		}
		sig, err = key.Sign(rand, h.Sum(nil), opts)
	}
	if err != nil {
		return nil, fmt.Errorf("jws: sign: %w", err)
	}
	dst = append(dst, '.')
	if ai.kty == "EC" {
		var raw [2 * 66]byte
		if !derToRaw(sig, raw[:2*ai.size], ai.size) {
			return nil, errSigner
		}
		return b64.AppendEncode(dst, raw[:2*ai.size]), nil
	}
	return b64.AppendEncode(dst, sig), nil
}
