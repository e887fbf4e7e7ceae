package authz

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/oauth/oautherr"
)

// Authentication context classes (acr) of Ward's sign-ins, weakest first.
const (
	ACRPassword = "urn:ward:acr:password"
	ACRMFA      = "urn:ward:acr:mfa"
	// ACRPhishingResistant: a passkey or a security key (WebAuthn with
	// user verification, bound to Ward's origin), alone or after a
	// password. It meets requests for ACRMFA too.
	ACRPhishingResistant = "urn:ward:acr:phishing_resistant"
)

// ACRValues are Ward's acr values, weakest first (discovery's
// acr_values_supported).
var ACRValues = []string{ACRPassword, ACRMFA, ACRPhishingResistant}

// CapabilityCAE is the client capability "the client handles claims
// challenges" (the value Entra's clients send as xms_cc).
const CapabilityCAE = "cp1"

// maxClaimsParam bounds the claims request parameter.
const maxClaimsParam = 4 << 10

// Claims is what Ward takes from the OpenID Connect claims request
// parameter (Core §5.5) for access tokens: the answer to a resource's
// claims challenge (a not-before time after a revocation, an acr) and the
// client capabilities. Claims Ward does not understand are ignored, as
// Core §5.5 says.
type Claims struct {
	// NotBefore is the time the new token's iat must not precede (the
	// revocation time a resource named).
	NotBefore int64 `json:"nbf,omitempty"`
	// ACR lists acceptable acr values (essential: one must be met).
	ACR []string `json:"acr,omitempty"`
	// Capabilities are the xms_cc values.
	Capabilities []string `json:"cc,omitempty"`
}

// ParseClaims validates the claims parameter. Unknown members are
// ignored; malformed known ones are invalid_request.
func ParseClaims(raw string) (*Claims, *oautherr.Error) {
	if raw == "" {
		return nil, nil
	}
	bad := func(why string) (*Claims, *oautherr.Error) {
		return nil, oautherr.New(oautherr.InvalidRequest, "claims parameter: "+why).WithReason("claims_malformed")
	}
	if len(raw) > maxClaimsParam {
		return bad("too long")
	}
	type request struct {
		Essential *bool           `json:"essential"`
		Value     json.RawMessage `json:"value"`
		Values    json.RawMessage `json:"values"`
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&top); err != nil || top == nil || dec.More() {
		return bad("not a JSON object")
	}
	at, ok := top["access_token"]
	if !ok || bytes.Equal(bytes.TrimSpace(at), []byte("null")) {
		return &Claims{}, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(at, &members); err != nil {
		return bad("access_token is not an object")
	}
	out := &Claims{}
	for name, m := range members {
		if bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
			continue
		}
		var rq request
		if err := json.Unmarshal(m, &rq); err != nil {
			return bad(name + " is not a claim request object")
		}
		switch name {
		case "nbf":
			// Entra sends the time as a string; accept a number too.
			var s string
			if err := json.Unmarshal(rq.Value, &s); err != nil {
				s = string(rq.Value)
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return bad("nbf value is not a unix time")
			}
			out.NotBefore = n
		case "acr":
			vals, e := stringValues(rq.Value, rq.Values)
			if e != "" {
				return bad("acr " + e)
			}
			out.ACR = vals
		case "xms_cc":
			vals, e := stringValues(rq.Value, rq.Values)
			if e != "" {
				return bad("xms_cc " + e)
			}
			out.Capabilities = vals
		}
	}
	return out, nil
}

// stringValues reads "value" (one string) or "values" (strings).
func stringValues(value, values json.RawMessage) ([]string, string) {
	var out []string
	if len(value) > 0 {
		var s string
		if err := json.Unmarshal(value, &s); err != nil {
			return nil, "value is not a string"
		}
		out = append(out, s)
	}
	if len(values) > 0 {
		var l []string
		if err := json.Unmarshal(values, &l); err != nil {
			return nil, "values is not a list of strings"
		}
		out = append(out, l...)
	}
	if len(out) > 16 {
		return nil, "has too many values"
	}
	return out, ""
}

// WantsCAE reports a declared CAE capability.
func (c *Claims) WantsCAE() bool {
	return c != nil && slices.Contains(c.Capabilities, CapabilityCAE)
}

// acrRank orders Ward's acr values; -1 for others.
func acrRank(acr string) int {
	switch acr {
	case ACRPassword:
		return 0
	case ACRMFA:
		return 1
	case ACRPhishingResistant:
		return 2
	}
	return -1
}

// ACRAtLeast reports whether acr have is want or stronger, by Ward's
// order (a passkey's phishing-resistant acr meets a multi-factor one).
// Values Ward does not know meet nothing and are met by nothing.
func ACRAtLeast(have, want string) bool {
	w := acrRank(want)
	return w >= 0 && acrRank(have) >= w
}

// ACRMet reports whether the session's acr satisfies the requested ones:
// any requested value the session's acr reaches, by Ward's order. No
// request is met; requested values Ward does not know are not.
func (c *Claims) ACRMet(have string) bool {
	if c == nil || len(c.ACR) == 0 {
		return true
	}
	h := acrRank(have)
	for _, want := range c.ACR {
		if w := acrRank(want); w >= 0 && h >= w {
			return true
		}
	}
	return false
}

// NotBeforeOK reports whether a token issued now satisfies the requested
// not-before time (a time in the future, beyond the allowed skew, cannot be).
func (c *Claims) NotBeforeOK(now time.Time) bool {
	return c == nil || c.NotBefore == 0 || c.NotBefore <= now.Add(time.Minute).Unix()
}

// WantsMFA reports an acr request only a multi-factor sign-in meets.
func (c *Claims) WantsMFA() bool {
	return c != nil && len(c.ACR) > 0 && !c.ACRMet(ACRPassword) && c.ACRMet(ACRMFA)
}

// WantsPhishingResistant reports an acr request only a phishing-resistant
// sign-in (a passkey or security key) meets.
func (c *Claims) WantsPhishingResistant() bool {
	return c != nil && len(c.ACR) > 0 && !c.ACRMet(ACRMFA) && c.ACRMet(ACRPhishingResistant)
}

// WantsStepUp reports an acr request a multi-factor or phishing-resistant
// sign-in meets and a password alone does not.
func (c *Claims) WantsStepUp() bool { return c.WantsMFA() || c.WantsPhishingResistant() }
