package dpop

import "errors"

// Protocol error codes, sent to the client as the "error" value
// (RFC 9449 §5, §7.1, §8, §9).
const (
	// CodeInvalidProof means the DPoP proof itself is invalid.
	CodeInvalidProof = "invalid_dpop_proof"
	// CodeUseNonce means the server requires a (fresh) nonce from its
	// DPoP-Nonce response header in the proof.
	CodeUseNonce = "use_dpop_nonce"
)

// Reason is a stable, machine-readable code saying why a proof was
// rejected. It is safe to log and to put into audit events; it is more
// specific than the protocol Code. Never rename one, only add.
type Reason string

// Reasons for rejecting a proof.
const (
	ReasonMissing      Reason = "missing"       // no proof presented
	ReasonMultiple     Reason = "multiple"      // more than one DPoP header
	ReasonTooLarge     Reason = "too_large"     // proof longer than MaxProofSize
	ReasonMalformed    Reason = "malformed"     // not a single compact JWS with JSON header and claims
	ReasonType         Reason = "bad_typ"       // typ is not "dpop+jwt"
	ReasonAlg          Reason = "bad_alg"       // alg missing, not allowed, or not asymmetric
	ReasonHeader       Reason = "bad_header"    // crit, jku, x5u, x5c, b64 or JWE header present
	ReasonKey          Reason = "bad_jwk"       // jwk missing, private, symmetric, weak or not matching alg
	ReasonSignature    Reason = "bad_signature" // signature does not verify with the jwk
	ReasonMissingClaim Reason = "missing_claim" // jti, htm, htu or iat missing or of the wrong type
	ReasonMethod       Reason = "htm_mismatch"  // htm differs from the request method
	ReasonURL          Reason = "htu_mismatch"  // htu differs from the request URI
	ReasonTooOld       Reason = "iat_too_old"   // iat older than MaxAge
	ReasonFuture       Reason = "iat_in_future" // iat later than now + Leeway
	ReasonATHMissing   Reason = "ath_missing"   // an access token was presented, the proof has no ath
	ReasonATHMismatch  Reason = "ath_mismatch"  // ath is not the hash of the presented access token
	ReasonKeyMismatch  Reason = "jkt_mismatch"  // the proof key is not the key the token is bound to
	ReasonNonceMissing Reason = "nonce_missing" // a nonce is required and the proof has none
	ReasonNonceInvalid Reason = "nonce_invalid" // the nonce is unknown, forged or expired
	ReasonReplay       Reason = "replay"        // the jti was already used within the window
)

// Error is a rejected DPoP proof. Code is the OAuth error code to return
// (CodeInvalidProof or CodeUseNonce); Description is a fixed, human-readable
// text that is safe to send to the client (it never contains the proof, a
// token, or a value taken from the request); Reason is for logs and events.
type Error struct {
	Code        string
	Description string
	Reason      Reason
	err         error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// Unwrap returns the underlying cause, for example ErrReplay.
func (e *Error) Unwrap() error { return e.err }

// Is reports whether target is one of the code sentinels (ErrInvalidProof,
// ErrUseNonce) with the same Code, so errors.Is(err, ErrUseNonce) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == "" && t.Description == "" && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	// ErrInvalidProof matches every *Error with Code CodeInvalidProof.
	ErrInvalidProof error = &Error{Code: CodeInvalidProof}
	// ErrUseNonce matches every *Error with Code CodeUseNonce: the caller
	// should answer with a DPoP-Nonce header carrying a fresh nonce.
	ErrUseNonce error = &Error{Code: CodeUseNonce}
	// ErrReplay is returned by a ReplayCache when the key was already
	// recorded and has not expired. Verify wraps it in an *Error with
	// Reason ReasonReplay, so errors.Is(err, ErrReplay) also holds there.
	ErrReplay = errors.New("dpop: proof replayed")
	// ErrNoProof is returned by FromRequest when the request has no DPoP
	// header. It is not an *Error: whether a missing proof is an error
	// depends on the token type (a bearer token needs none).
	ErrNoProof = errors.New("dpop: no DPoP header")
)

func invalid(r Reason, desc string) *Error {
	return &Error{Code: CodeInvalidProof, Description: desc, Reason: r}
}

func useNonce(r Reason, desc string) *Error {
	return &Error{Code: CodeUseNonce, Description: desc, Reason: r}
}

// IsUseNonce reports whether err asks the client to retry with a fresh
// server nonce.
func IsUseNonce(err error) bool { return errors.Is(err, ErrUseNonce) }
