package signin

import (
	"encoding/json"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/explain"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/web"
)

// problems explains each unmet control and how to fix it; a non-compliant
// device's failing compliance rules are named one by one.
func problems(controls []string, dev *model.Device, hasTOTP bool) []web.Problem {
	var out []web.Problem
	for _, ctl := range controls {
		switch ctl {
		case policy.ControlMFA, policy.ControlAuthStrengthPrefix + policy.StrengthPasswordTOTP:
			if !hasTOTP {
				out = append(out, web.Problem{What: "Multi-factor authentication is required, and your account has no second factor.",
					Fix: "Ask your administrator to enrol an authenticator app (TOTP) for your account."})
			}
		case policy.ControlAuthStrengthPrefix + policy.StrengthPhishingResistant:
			out = append(out, web.Problem{What: "This application requires a phishing-resistant sign-in: a passkey or a security key, and your account has none.",
				Fix: "Add a passkey in My account (" + PathAccount + ") after signing in, or ask your administrator."})
		case policy.ControlRegisteredDevice, policy.ControlTokenProtection:
			switch {
			case dev == nil:
				out = append(out, web.Problem{What: "This application accepts only sign-ins from a registered device whose key protects the session.",
					Fix: "Sign in through the Ward device agent on a registered device (ward device enroll, then ward device run)."})
			case dev.Status != model.DeviceActive:
				out = append(out, web.Problem{What: "This device is " + dev.Status + ".", Fix: "Contact your administrator."})
			}
		case policy.ControlCompliantDevice:
			switch {
			case dev == nil:
				out = append(out, web.Problem{What: "A compliant, registered device is required.",
					Fix: "Sign in through the Ward device agent on a registered device (ward device enroll, then ward device run)."})
			case dev.Status != model.DeviceActive:
				out = append(out, web.Problem{What: "This device is " + dev.Status + ".", Fix: "Contact your administrator."})
			case dev.Compliance != model.Compliant:
				out = append(out, complianceProblems(dev)...)
			}
		case policy.ControlPasswordChange:
			out = append(out, web.Problem{What: "Your account is at high risk: the password must be changed.",
				Fix: "Change your password (ask your administrator to reset it), then sign in again."})
		default:
			out = append(out, web.Problem{What: "Required: " + explain.Controls([]string{ctl}) + "."})
		}
	}
	return out
}

// complianceProblems lists a device's failing compliance rules.
func complianceProblems(dev *model.Device) []web.Problem {
	var fs []struct{ Rule, Detail, Fix string }
	if len(dev.ComplianceFailures) > 0 {
		_ = json.Unmarshal(dev.ComplianceFailures, &fs)
	}
	if len(fs) == 0 {
		return []web.Problem{{What: "This device is not compliant (" + dev.Compliance + ").",
			Fix: "Report the device's posture again (ward device posture) and check with your administrator."}}
	}
	out := make([]web.Problem, 0, len(fs))
	for _, f := range fs {
		out = append(out, web.Problem{What: "Compliance rule " + f.Rule + " failed: " + f.Detail, Fix: f.Fix})
	}
	return out
}
