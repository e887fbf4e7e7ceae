// Package agent is the Ward device agent, the library behind
// `ward device enroll | posture | curl | status`.
//
//   - [Enroll] registers the machine: it creates the device key, signs the
//     user in through the device authorization grant (RFC 8628) with
//     DPoP proofs of that key, registers the key with the server and
//     sends a first signed posture report. The session (refresh token) is
//     bound to the device key and saved in a 0600 [Config] file.
//   - [Client] acts for an enrolled device: [Client.Token] keeps the
//     session fresh (rotated refresh tokens are saved before the new
//     access token is used, and several processes never present the same
//     refresh token), [Client.Transport] sends requests with a DPoP-bound
//     access token and a fresh proof, and [Client.ReportPosture] reports
//     the device's health. The transport follows continuous access
//     evaluation claims challenges; when Ward will not refresh the session
//     until the user signs in again, the Client returns a [ReauthError],
//     or — with [Options.Interactive] — signs the user in again through
//     the device authorization grant bound to the device key.
//
// For ordinary golang.org/x/oauth2 applications (no device key, no
// enrolment), [github.com/ward-idp/ward/agent/oauth2x] follows the same
// claims challenges.
//
// The pieces it builds on live in subpackages that the server side and
// the CLI import directly:
//
//   - [github.com/ward-idp/ward/agent/keystore] keeps the device key (the
//     DPoP key tokens are bound to) in a TPM when the machine has one, in
//     a 0600 file otherwise. Every key is a crypto.Signer, so it plugs
//     into [github.com/ward-idp/ward/dpop.NewSigner].
//   - [github.com/ward-idp/ward/agent/posture] collects the device's
//     health (disk encryption, admin rights, anti-malware, firewall, …)
//     as tri-state facts with evidence, and signs and verifies the posture
//     report the agent sends to the server.
//
// See docs/agent.md.
package agent
