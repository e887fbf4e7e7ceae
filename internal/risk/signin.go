package risk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/textclean"
)

// AssessSignIn computes the risk of a sign-in (interactive or by SSO
// cookie) before its code is issued: the level Conditional Access's
// sign_in_risk condition sees, and the detections behind it. The
// detector's findings (Options.Detector) make the level as Aggregate
// makes any level, and each is published as a risk.detected with source
// signin, so that it counts towards the user's (and, for an SSO sign-in,
// the session's) risk like any other. An SSO sign-in is never less risky
// than the session whose cookie it presents.
//
// The error is the detector's or the session risk lookup's; the level
// returned with it is what was found until then (the caller fails
// closed).
func (s *Service) AssessSignIn(ctx context.Context, a activity.Activity) (string, []assess.Detection, error) {
	var ds []assess.Detection
	if s.o.Detector != nil {
		var err error
		if ds, err = s.o.Detector.DetectSignIn(ctx, a); err != nil {
			return model.RiskNone, nil, fmt.Errorf("risk: judge the sign-in: %w", err)
		}
	}
	rank := 0
	var counted []*model.RiskDetection
	for i := range ds {
		d := &ds[i]
		if d.ID == "" {
			d.ID = signInDetectionID(a, d)
		}
		e := signInEvent(a, d)
		if e.Time.IsZero() {
			e.Time = s.o.Now()
		}
		md, err := parseDetection(e)
		if err != nil {
			s.log.WarnContext(ctx, "sign-in detection refused", "type", textclean.Clip(d.Type, 64), "err", err)
			continue
		}
		counted = append(counted, md)
		if err := s.events.Emit(ctx, e); err != nil {
			s.log.ErrorContext(ctx, "record sign-in detection", "detection_id", d.ID, "err", err)
		}
	}
	rank = model.RiskRank(s.o.Rules.Aggregate(counted))
	var err error
	if a.Kind == activity.KindSSOSignIn && a.SessionID != "" {
		sr, gerr := s.o.Store.GetSessionRisk(ctx, a.SessionID)
		switch {
		case gerr == nil:
			rank = max(rank, model.RiskRank(sr.Level))
		case !errors.Is(gerr, store.ErrNotFound):
			err = gerr
		}
	}
	return model.RiskLevel(rank), ds, err
}

// signInDetectionID derives a stable id from the sign-in and the finding,
// so that assessing the same sign-in again records it once.
func signInDetectionID(a activity.Activity, d *assess.Detection) string {
	h := sha256.Sum256([]byte(d.Type + "\x00" + a.ID + "\x00" + strings.Join(d.Evidence, " ")))
	return "signin:" + hex.EncodeToString(h[:16])
}

// signInEvent is the risk.detected of a sign-in detection.
func signInEvent(a activity.Activity, d *assess.Detection) *model.Event {
	return assess.Event(a, *d, model.DetectionSourceSignIn, ActorSystem)
}
