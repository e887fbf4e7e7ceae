// Package dpop creates and verifies DPoP proofs (OAuth 2.0 Demonstrating
// Proof of Possession, RFC 9449).
//
// A client holds a private key and sends, with every HTTP request, a DPoP
// proof: a compact JWS typed "dpop+jwt" that carries the public key in its
// "jwk" header and binds the request method (htm), target URI without query
// and fragment (htu), a creation time (iat), a unique id (jti) and, at a
// resource server, the hash of the access token (ath). Servers bind issued
// tokens to the key's RFC 7638 thumbprint (cnf.jkt) and check that every
// later request is signed by that key.
//
// Client side: [NewSigner] wraps any [crypto.Signer] (software key, TPM,
// secure enclave) and [Signer.Proof] mints a fresh proof per request.
//
// Server side: [Verifier.Verify] runs every check of RFC 9449 §4.3 strictly:
// exactly one compact JWS, typ "dpop+jwt", an allowed asymmetric alg, an
// inline public jwk that matches the alg (RSA of at least 2048 bits), no
// critical or remote-key headers, a valid signature, the required claims,
// htm and normalised htu, the iat window, the server nonce when required,
// ath and the expected key thumbprint, and single use of each jti through a
// [ReplayCache]. Failures are [*Error] values whose Code is the protocol
// error to send ("invalid_dpop_proof" or "use_dpop_nonce") and whose Reason
// is a stable, loggable code.
//
// The proof is read with Ward's strict compact-JWS codec (package jws:
// case-sensitive member names, duplicate members rejected, size limits, the
// jwk header read strictly) and its claims with the strict JSON object
// reader (package jsonobj); the signature is verified directly with the
// standard library. go-jose types are used for keys so that callers can
// share them with the rest of the JOSE code base. The package holds no global state and takes an injected
// clock everywhere.
package dpop
