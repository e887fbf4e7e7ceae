// Package assess is the contract between the risk service
// (internal/risk) and the detectors: a Detector judges one sign-in's
// activity record and returns what it finds, and Event is the
// risk.detected event any detector records a finding as. It holds only
// types and that one constructor, so that any detector engine can be
// plugged in without the risk service knowing it.
package assess

import (
	"context"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
)

// MaxEvidence is the most event ids a detection cites.
const MaxEvidence = 20

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
// code is issued. It must be safe for concurrent use. An error (the
// user's history could not be read) fails the assessment: the sign-in is
// refused rather than judged blind.
type Detector interface {
	DetectSignIn(ctx context.Context, a activity.Activity) ([]Detection, error)
}

// Func adapts a function to Detector.
type Func func(ctx context.Context, a activity.Activity) ([]Detection, error)

// DetectSignIn calls f.
func (f Func) DetectSignIn(ctx context.Context, a activity.Activity) ([]Detection, error) {
	return f(ctx, a)
}

// Event is the risk.detected event that records detection d, found by
// source (model.DetectionSource*) and recorded by actor, about the
// subjects of a (its user, session, client, device, address and user
// agent) at a.Time. The evidence defaults to a's id and is cut to
// MaxEvidence ids; the risk service's consumer checks the rest.
func Event(a activity.Activity, d Detection, source, actor string) *model.Event {
	ev := d.Evidence
	if len(ev) == 0 && a.ID != "" {
		ev = []string{a.ID}
	}
	if len(ev) > MaxEvidence {
		ev = ev[:MaxEvidence]
	}
	return &model.Event{
		Type: model.EventRiskDetected, Time: a.Time, Actor: actor, UserID: a.UserID, SessionID: a.SessionID,
		ClientID: a.ClientID, DeviceID: a.DeviceID, IP: a.IP, UserAgent: a.UserAgent, Reason: d.Type,
		Data: map[string]string{
			model.DataDetectionID: d.ID, model.DataDetectionSeverity: d.Severity,
			model.DataDetectionConfidence: strconv.FormatFloat(d.Confidence, 'f', 2, 64),
			model.DataDetectionTechnique:  d.Technique, model.DataDetectionEvidence: strings.Join(ev, " "),
			model.DataDetectionDetail: d.Detail, model.DataDetectionSource: source,
		},
	}
}
