// Package cae holds what the agent and agent/oauth2x share to follow
// Continuous Access Evaluation: reading a resource's claims challenge,
// declaring the client capability in the claims request parameter, and the
// rule for where an access token may be sent.
package cae

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/ward-idp/ward/rs"
)

// Capability is the client capability "handles claims challenges" (the
// xms_cc value Entra's clients send, which Ward honours for clients marked
// cae_capable with long-lived access tokens).
const Capability = "cp1"

// MaxClaims bounds the claims JSON a challenge may ask the client to send
// (Ward refuses a longer claims parameter anyway).
const MaxClaims = 4 << 10

// Challenge returns the claims challenge of a resource's answer: a 401
// whose WWW-Authenticate carries a CAE challenge (insufficient_claims, or
// RFC 9470 insufficient_user_authentication, with a claims parameter) whose
// claims decode to a JSON object of at most MaxClaims bytes. Anything else
// — another status, no challenge, claims that are not base64 or not a JSON
// object — is not a challenge to follow.
func Challenge(resp *http.Response) (*rs.Challenge, bool) {
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		return nil, false
	}
	ch, ok := rs.ParseClaimsChallenge(resp.Header)
	if !ok || ch.ClaimsErr != nil || len(ch.Claims) == 0 || len(ch.Claims) > MaxClaims {
		return nil, false
	}
	return ch, true
}

// WithCapability returns the claims request to send: the members of
// claims (a resource's challenge, or "") that are JSON objects, with the
// CAE capability added to access_token (xms_cc values ["cp1"]). Members
// that are not objects, and claims that are not a JSON object at all, are
// dropped.
func WithCapability(claims string) string {
	doc := map[string]map[string]any{}
	if claims != "" {
		var in map[string]json.RawMessage
		if json.Unmarshal([]byte(claims), &in) == nil {
			for k, v := range in {
				var m map[string]any
				if json.Unmarshal(v, &m) == nil && m != nil {
					doc[k] = m
				}
			}
		}
	}
	if doc["access_token"] == nil {
		doc["access_token"] = map[string]any{}
	}
	doc["access_token"]["xms_cc"] = map[string]any{"values": []string{Capability}}
	b, _ := json.Marshal(doc)
	return string(b)
}

// SecureURL reports whether an access token may be sent to u: over https,
// or over plain http to a loopback host only (local development).
func SecureURL(u *url.URL) bool {
	switch strings.ToLower(u.Scheme) {
	case "https":
		return true
	case "http":
		return LoopbackHost(u.Hostname())
	}
	return false
}

// LoopbackHost reports whether host (without port or brackets) is
// "localhost" or a loopback IP address (127.0.0.0/8, ::1). A DNS name that
// merely starts with "127." is not.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// CheckRequest refuses a request an access token must not be sent with:
// one without a URL, or to a URL SecureURL refuses. It closes the body of
// a refused request, as a RoundTripper must; who names the sender in the
// error ("agent", "oauth2x").
func CheckRequest(req *http.Request, who string) error {
	var err error
	switch {
	case req.URL == nil:
		err = fmt.Errorf("%s: request without URL", who)
	case !SecureURL(req.URL):
		err = fmt.Errorf("%s: refusing to send an access token to %s over plain http", who, req.URL.Host)
	default:
		return nil
	}
	CloseBody(req)
	return err
}

// CloseBody closes a request's body, if any.
func CloseBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
