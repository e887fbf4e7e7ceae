// Package rs protects a Go HTTP service (a resource server) with Ward's
// access tokens and follows Ward's Continuous Access Evaluation stream.
//
// [Validator] checks RFC 9068 JWT access tokens (typ at+jwt, ES256 keys
// from the issuer's JWKS, iss, aud, exp/nbf/iat, scopes) and, for
// DPoP-bound tokens, the RFC 9449 proof (htm, htu, ath, cnf.jkt, jti
// replay, server nonce). By default every token must be DPoP-bound;
// bearer tokens are accepted only with Config.AllowBearer. Use
// [Validator.Middleware] or [Validator.Require] in front of handlers and
// [FromContext] inside them, or [Validator.Authenticate] and
// [Validator.WriteError] directly. Rejections follow RFC 6750 §3 and RFC
// 9449 §7.1 to the letter.
//
// [RevocationState] holds CAE decisions: revocations by session, user,
// device and token, and per-user step-up requirements. A token issued at
// or before a matching revocation is answered with 401
// error="insufficient_claims" and a base64url claims challenge naming the
// time a new token must be issued after; an unmet requirement with RFC
// 9470 error="insufficient_user_authentication", acr_values and max_age.
// Clients read these with [ParseChallenges] or [ParseClaimsChallenge].
//
// [Receiver] verifies Security Event Tokens (RFC 8417) from an OpenID
// Shared Signals transmitter and maps CAEP and RISC events to the state
// at the event's time (event_timestamp, at most iat): a risk-level-change
// to HIGH ends the tokens issued up to it, so those of the sessions the IdP
// spared after a remediation (Ward dates the change to that remediation)
// keep working, and a late or replayed SET never lifts a revocation;
// it serves push delivery ([Receiver.PushHandler], RFC 8935) and polls
// ([Poller], RFC 8936). [UsageReporter] batches token-use records to the
// IdP's risk engine.
//
// The package depends only on the standard library, Ward's public dpop,
// jws (the strict compact-JWS codec) and jsonobj (the strict JSON object
// reader) packages and go-jose (for JWK parsing). Tokens and proofs never appear in
// errors or logs. See docs/rs.md for configuration, the CAEP mapping and
// benchmarks.
package rs
