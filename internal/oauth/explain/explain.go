// Package explain words unmet Conditional Access controls for people, the
// same in a token error's description (package grant) and on the sign-in
// pages (package signin), which list each with how to fix it.
package explain

import (
	"strings"

	"github.com/ward-idp/ward/internal/policy"
)

var controlText = map[string]string{
	policy.ControlMFA:              "multi-factor authentication",
	policy.ControlRegisteredDevice: "a registered device",
	policy.ControlCompliantDevice:  "a compliant device",
	policy.ControlTokenProtection:  "token protection (a session bound to a registered device's key)",
	policy.ControlPasswordChange:   "a password change",
}

// Controls names unmet controls for a token error or a redirect's
// error_description: "multi-factor authentication, a compliant device".
func Controls(cs []string) string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if t, ok := controlText[c]; ok {
			out = append(out, t)
		} else if s, ok := strings.CutPrefix(c, policy.ControlAuthStrengthPrefix); ok {
			out = append(out, "authentication strength "+s)
		} else {
			out = append(out, c)
		}
	}
	return strings.Join(out, ", ")
}
