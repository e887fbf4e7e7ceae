// Package assess is the contract between the sign-in risk assessment
// (internal/risk) and the detectors that judge one sign-in: a Detector
// looks at the sign-in's activity record and returns what it finds. It
// holds only types, so that any detector engine can be plugged in without
// the risk service knowing it.
package assess

import "github.com/ward-idp/ward/internal/activity"

// Detection is what a detector found about one sign-in.
type Detection struct {
	// ID is stable for the same finding (a re-run yields the same id); ""
	// lets the risk service derive one from the sign-in.
	ID string
	// Type is the detection type (for example unfamiliar_sign_in).
	Type string
	// Severity is low, medium or high; Confidence 0..1.
	Severity   string
	Confidence float64
	// Technique is the MITRE ATT&CK id (for example T1539).
	Technique string
	// Evidence are the ids of the events it rests on (at most 20).
	Evidence []string
	// Detail is a short human text, never a secret.
	Detail string
}

// Detector judges one sign-in (interactive or by SSO cookie) before its
// code is issued. It must be fast and safe for concurrent use; it may keep
// state of its own (the user's history).
type Detector interface {
	DetectSignIn(a activity.Activity) []Detection
}

// Func adapts a function to Detector.
type Func func(a activity.Activity) []Detection

// DetectSignIn calls f.
func (f Func) DetectSignIn(a activity.Activity) []Detection { return f(a) }
