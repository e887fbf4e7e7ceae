package risk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/textclean"
)

// Detection types of what administrators record.
const (
	// TypeAdminSetLevel: an administrator set the user's level (ward user
	// risk, PUT /users/{id}/risk).
	TypeAdminSetLevel = "admin_set_level"
	// TypeCompromiseConfirmed: an administrator confirmed the account is
	// compromised.
	TypeCompromiseConfirmed = "admin_confirmed_compromised"
)

// Remediation methods (the reason of risk.remediated).
const (
	RemediatedPasswordChange = "password_change"
	RemediatedMFA            = "mfa"
)

// maxReason bounds an administrator's reason.
const maxReason = 256

func notFound(what string) error { return fmt.Errorf("%w: %s", ErrNotFound, what) }

// userChange is change for an administrator's operation: a user that does
// not exist is ErrNotFound.
func (s *Service) userChange(ctx context.Context, userID string, add *model.RiskDetection, cause store.RiskCause,
	mutate func(*store.RiskState) ([]*model.Event, error), after func(*store.RiskState)) (*store.RiskState, error) {
	st, err := s.change(ctx, userID, add, cause, mutate, after)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("user " + userID)
	}
	return st, err
}

// adminDetection is the detection recording an administrator's decision
// (its Detail names the administrator).
func (s *Service) adminDetection(typ, userID, level, actor, reason string) *model.RiskDetection {
	detail := "by " + actor
	if reason != "" {
		detail += ": " + reason
	}
	return &model.RiskDetection{
		ID: "admin:" + uuid.NewString(), Type: typ, UserID: userID, Severity: level, Confidence: 1,
		Technique: "T1078", Detail: textclean.Clean(detail, maxDetailBytes), Source: model.DetectionSourceAdmin,
		DetectedAt: s.o.Now(), State: model.DetectionActive, Handled: true,
	}
}

// SetUserLevel sets a user's level as an administrator decides (ward user
// risk): every active detection is superseded and, for a level other than
// none, a detection of the administrator's at that level takes their
// place (recorded with source admin, so explain shows who decided). The
// automatic response applies as to any level. Setting the level the user
// has, with no other detection active, changes nothing.
func (s *Service) SetUserLevel(ctx context.Context, actor, userID, level, reason string) error {
	if !ValidLevel(level) {
		return ErrInvalidLevel
	}
	reason = textclean.Clean(reason, maxReason)
	// The administrator's reason is the reason of user.risk_changed, as
	// it always was.
	why := reason
	// Nothing to record when the administrator confirms what is there.
	u, err := s.o.Store.GetUser(ctx, userID)
	if err != nil {
		return s.wrapUser(err, userID)
	}
	cur, err := s.o.Store.ListRiskDetections(ctx, store.RiskDetectionFilter{UserID: userID, ActiveOnly: true, Limit: 2})
	if err != nil {
		return err
	}
	if orNone(u.RiskLevel) == level && (level == model.RiskNone && len(cur) == 0 ||
		len(cur) == 1 && cur[0].Type == TypeAdminSetLevel && cur[0].Severity == level) {
		return nil
	}
	var add *model.RiskDetection
	if level != model.RiskNone {
		add = s.adminDetection(TypeAdminSetLevel, userID, level, actor, reason)
	}
	now := s.o.Now()
	cause := store.RiskCause{Reason: why, Actor: actor, At: now}
	if add != nil {
		cause.DetectionID = add.ID
	}
	_, err = s.userChange(ctx, userID, add, cause,
		func(st *store.RiskState) ([]*model.Event, error) {
			for _, d := range st.Active {
				if add != nil && d.ID == add.ID {
					continue
				}
				d.State, d.StateReason, d.StateActor, d.StateAt = model.DetectionSuperseded, orDefault(why, "level set by an administrator"), actor, now
			}
			return nil, nil
		}, func(st *store.RiskState) {
			// The response commits with the level: the decision is the
			// activity, so every session until now ends.
			s.respond(st, actor, now, "")
		})
	return err
}

// Target names what Dismiss dismisses: exactly one of a user (every
// active detection), a session (its active detections) or a detection.
type Target struct {
	UserID      string
	SessionID   string
	DetectionID string
}

// Dismissal is what a dismissal did.
type Dismissal struct {
	UserID     string   `json:"user_id"`
	Detections []string `json:"detections"`
	Level      string   `json:"level"`
	Previous   string   `json:"previous"`
}

// Dismiss takes detections out of the count as false positives, on behalf
// of actor, recomputes the levels and records risk.dismissed.
// ErrNotFound when the target does not exist; ErrNotActive when nothing
// it names is active. Detections recorded after the dismissal count.
func (s *Service) Dismiss(ctx context.Context, actor string, t Target, reason string) (*Dismissal, error) {
	n := 0
	for _, v := range []string{t.UserID, t.SessionID, t.DetectionID} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("risk: dismiss exactly one of a user, a session or a detection")
	}
	userID, scope := t.UserID, "user"
	match := func(*model.RiskDetection) bool { return true }
	switch {
	case t.SessionID != "":
		se, err := s.o.Sessions.Get(ctx, t.SessionID)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, notFound("session " + t.SessionID)
			}
			return nil, err
		}
		userID, scope = se.UserID, "session"
		match = func(d *model.RiskDetection) bool { return d.SessionID == t.SessionID }
	case t.DetectionID != "":
		d, err := s.o.Store.GetRiskDetection(ctx, t.DetectionID)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, notFound("detection " + t.DetectionID)
			}
			return nil, err
		}
		if d.State != model.DetectionActive {
			return nil, fmt.Errorf("%w: detection %s is %s", ErrNotActive, d.ID, d.State)
		}
		userID, scope = d.UserID, "detection"
		match = func(d *model.RiskDetection) bool { return d.ID == t.DetectionID }
	}
	reason = textclean.Clean(reason, maxReason)
	now := s.o.Now()
	out := &Dismissal{UserID: userID}
	_, err := s.userChange(ctx, userID, nil, store.RiskCause{Reason: "dismissed", Actor: actor, At: now},
		func(st *store.RiskState) ([]*model.Event, error) {
			out.Detections, out.Previous = nil, st.UserLevel
			for _, d := range st.Active {
				if d.State == model.DetectionActive && match(d) {
					d.State, d.StateReason, d.StateActor, d.StateAt = model.DetectionDismissed, reason, actor, now
					out.Detections = append(out.Detections, d.ID)
				}
			}
			if len(out.Detections) == 0 {
				return nil, ErrNotActive
			}
			return []*model.Event{{Type: model.EventRiskDismissed, Actor: actor, UserID: userID, SessionID: t.SessionID,
				Reason: reason, Data: map[string]string{"scope": scope, "detections": joinCapped(out.Detections),
					"count": strconv.Itoa(len(out.Detections)), "previous": st.UserLevel}}}, nil
		}, nil)
	if err != nil {
		return nil, err
	}
	u, err := s.o.Store.GetUser(ctx, userID)
	if err == nil {
		out.Level = orNone(u.RiskLevel)
	}
	return out, nil
}

// ConfirmCompromised records an administrator's confirmation that the
// user's account is compromised: the user's level becomes high (a
// detection of the administrator's, which counts until it is dismissed or
// remediated by a password change) and every session of the user is
// revoked, whatever risk.auto_revoke_level says, in the same transaction.
// It returns the ids of the sessions revoked.
func (s *Service) ConfirmCompromised(ctx context.Context, actor, userID, reason string) ([]string, error) {
	reason = textclean.Clean(reason, maxReason)
	add := s.adminDetection(TypeCompromiseConfirmed, userID, model.RiskHigh, actor, reason)
	st, err := s.userChange(ctx, userID, add, store.RiskCause{Reason: TypeCompromiseConfirmed, Actor: actor, DetectionID: add.ID},
		func(st *store.RiskState) ([]*model.Event, error) {
			return []*model.Event{{Type: model.EventRiskCompromiseConfirmed, Actor: actor, UserID: userID, Reason: reason,
				Data: map[string]string{model.DataDetectionID: add.ID, "previous": st.UserLevel, "level": model.RiskHigh}}}, nil
		}, func(st *store.RiskState) {
			// Every session ends in the transaction that makes the
			// level high.
			st.Revoke = s.o.Sessions.PlanRevokeUser(actor, userID, model.CauseCompromiseConfirmed)
		})
	if st == nil {
		return nil, err
	}
	return st.Revoke.Revoked, err
}

// Remediate takes every active detection of the user out of the count
// because the user proved themselves (method: RemediatedPasswordChange or
// RemediatedMFA) and records risk.remediated. A user without active
// detections changes nothing.
func (s *Service) Remediate(ctx context.Context, actor, userID, method string) error {
	now := s.o.Now()
	why := "remediated:" + method
	_, err := s.change(ctx, userID, nil, store.RiskCause{Reason: why, Actor: actor, At: now},
		func(st *store.RiskState) ([]*model.Event, error) {
			var ids []string
			for _, d := range st.Active {
				if d.State == model.DetectionActive {
					d.State, d.StateReason, d.StateActor, d.StateAt = model.DetectionRemediated, why, actor, now
					ids = append(ids, d.ID)
				}
			}
			if len(ids) == 0 && st.UserLevel == model.RiskNone {
				return nil, nil
			}
			return []*model.Event{{Type: model.EventRiskRemediated, Actor: actor, UserID: userID, Reason: method,
				Data: map[string]string{"detections": joinCapped(ids), "count": strconv.Itoa(len(ids)),
					"previous": st.UserLevel, "level": model.RiskNone}}}, nil
		}, nil)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the account is gone
	}
	return err
}

// onAccountEvent remediates: a password change (by the user or an
// administrator's reset) remediates every level; a sign-in with a second
// factor remediates a user level up to MFARemediates. It runs
// synchronously, so the sign-in that follows a password change is
// evaluated with the remediated level.
func (s *Service) onAccountEvent(ctx context.Context, e *model.Event) error {
	if e.UserID == "" {
		return nil
	}
	switch e.Type {
	case model.EventPasswordChanged:
		return s.Remediate(ctx, e.Actor, e.UserID, RemediatedPasswordChange)
	case model.EventSignInSucceeded:
		limit := model.RiskRank(s.o.MFARemediates)
		if s.o.MFARemediates == "off" || limit <= 0 || !mfa(e.Data["amr"]) {
			return nil
		}
		u, err := s.o.Store.GetUser(ctx, e.UserID)
		if err != nil {
			return nil
		}
		if r := model.RiskRank(u.RiskLevel); r > 0 && r <= limit {
			return s.Remediate(ctx, e.UserID, e.UserID, RemediatedMFA)
		}
	}
	return nil
}

// mfa reports whether an amr list (space-separated) includes a second
// factor.
func mfa(amr string) bool {
	f := strings.Fields(amr)
	return slices.Contains(f, "otp") || slices.Contains(f, "mfa") || slices.Contains(f, "hwk")
}

// joinCapped joins ids for an event's Data, at most maxEvidence of them.
func joinCapped(ids []string) string {
	if len(ids) > maxEvidence {
		ids = ids[:maxEvidence]
	}
	return strings.Join(ids, " ")
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func orNone(l string) string {
	if l == "" {
		return model.RiskNone
	}
	return l
}

func (s *Service) wrapUser(err error, userID string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("user " + userID)
	}
	return err
}
