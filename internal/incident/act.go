package incident

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/textclean"
)

// Response actions an operator takes from an incident.
const (
	// ActionRevokeSessions revokes every session of the target user (of
	// every user of the incident without a target), or the one target
	// session.
	ActionRevokeSessions = "revoke_sessions"
	// ActionDisableDevice disables the target device (every device of the
	// incident without a target); the device service ends its sessions.
	ActionDisableDevice = "disable_device"
	// ActionDisableUser disables the target user (every user of the
	// incident without a target); every session of the user ends.
	ActionDisableUser = "disable_user"
	// ActionRequirePasswordChange raises the user's risk to high (an
	// administrator's decision): Conditional Access policies requiring
	// password_change at high user risk make the user change it at the
	// next sign-in, which remediates.
	ActionRequirePasswordChange = "require_password_change"
	// ActionConfirmCompromised confirms the compromise of the user's
	// account at the risk service (high risk, every session revoked).
	ActionConfirmCompromised = "confirm_compromised"
	// ActionDismiss dismisses the incident's detections at the risk
	// service as false positives and closes the incident as
	// false_positive (a reason is required).
	ActionDismiss = "dismiss"
)

// Actions lists the response actions.
var Actions = []string{ActionRevokeSessions, ActionDisableDevice, ActionDisableUser, ActionRequirePasswordChange,
	ActionConfirmCompromised, ActionDismiss}

// ActionRequest asks for one response action.
type ActionRequest struct {
	Action string `json:"action"`
	// Target is a user, session or device id of the incident's entities
	// ("": every entity the action applies to).
	Target string `json:"target,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ActionResult says what an action did, target by target.
type ActionResult struct {
	Incident string          `json:"incident"`
	Action   string          `json:"action"`
	Results  []*TargetResult `json:"results"`
	// EventID is the id of the incident.action_taken event recording it.
	EventID string `json:"event_id"`
}

// TargetResult is the outcome of an action on one target.
type TargetResult struct {
	Kind   string `json:"kind"` // user, session, device, detection
	ID     string `json:"id"`
	Done   bool   `json:"done"`             // the action changed something
	Detail string `json:"detail,omitempty"` // e.g. "3 sessions revoked", "already disabled"
	Error  string `json:"error,omitempty"`
}

// Act takes a response action from an incident on behalf of actor. Every
// target must be an entity of the incident (an incident is no way to act
// on anything else). Each change goes through the service that owns it,
// which records its own events (session.revoked, device.disabled,
// user.disabled, user.risk_changed, risk.compromise_confirmed,
// risk.dismissed: the CAE transmitter turns them into SETs); the action
// itself is recorded as incident.action_taken with the operator, the
// incident, the targets and the outcome, committed with the incident's
// timeline entry. An action that failed on some target is recorded too,
// and its error returned.
func (s *Service) Act(ctx context.Context, actor, ref string, req ActionRequest) (*ActionResult, error) {
	if !slices.Contains(Actions, req.Action) {
		return nil, invalid("action %q: want one of %s", textclean.Clip(req.Action, 32), strings.Join(Actions, ", "))
	}
	req.Reason = textclean.Clean(req.Reason, MaxReason+1)
	if len(req.Reason) > MaxReason {
		return nil, invalid("the reason is longer than %d bytes", MaxReason)
	}
	if req.Action == ActionDismiss && req.Reason == "" {
		return nil, ErrReasonRequired
	}
	in, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := notMerged(in); err != nil {
		return nil, err
	}
	dets, err := s.o.Store.IncidentDetections(ctx, in.ID, store.MaxIncidentMembers)
	if err != nil {
		return nil, err
	}
	ents := entities(dets)
	why := Name(in.Number) + ": " + req.Action
	if req.Reason != "" {
		why += ": " + req.Reason
	}
	why = textclean.Clip(why, MaxReason)
	res := &ActionResult{Incident: in.ID, Action: req.Action, Results: []*TargetResult{}}
	var errs []error
	run := func(kind, id string, f func() (bool, string, error)) {
		done, detail, err := f()
		r := &TargetResult{Kind: kind, ID: id, Done: done, Detail: detail}
		if err != nil {
			r.Error = textclean.Clip(err.Error(), 256)
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, id, err))
		}
		res.Results = append(res.Results, r)
	}
	targets := func(kind string, all []string) ([]string, error) {
		if req.Target == "" {
			if len(all) == 0 {
				return nil, invalid("%s names no %s", Name(in.Number), kind)
			}
			return all, nil
		}
		if !slices.Contains(all, req.Target) {
			return nil, invalid("%s is not a %s of %s", textclean.Clip(req.Target, maxIDLen), kind, Name(in.Number))
		}
		return []string{req.Target}, nil
	}
	switch req.Action {
	case ActionRevokeSessions:
		if s.o.Sessions == nil {
			return nil, invalid("no session service to revoke with")
		}
		if req.Target != "" && slices.Contains(ents.Sessions, req.Target) {
			run("session", req.Target, func() (bool, string, error) {
				done, err := s.o.Sessions.Revoke(ctx, actor, req.Target, model.CauseAdminRevoked)
				return done, "", err
			})
			break
		}
		users, err := targets("user", ents.Users)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			run("user", u, func() (bool, string, error) {
				ids, err := s.o.Sessions.RevokeUser(ctx, actor, u, model.CauseAdminRevoked)
				return len(ids) > 0, strconv.Itoa(len(ids)) + " sessions revoked", err
			})
		}
	case ActionDisableDevice:
		if s.o.Devices == nil {
			return nil, invalid("no device service to disable with")
		}
		devs, err := targets("device", ents.Devices)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			run("device", d, func() (bool, string, error) {
				dev, err := s.o.Devices.Disable(ctx, actor, d)
				if err != nil {
					return false, "", err
				}
				return true, "status " + dev.Status, nil
			})
		}
	case ActionDisableUser, ActionRequirePasswordChange, ActionConfirmCompromised:
		if err := s.userAction(ctx, actor, req, why, ents, targets, run); err != nil {
			return nil, err
		}
	case ActionDismiss:
		if s.o.Risk == nil {
			return nil, invalid("no risk service to dismiss with")
		}
		for _, d := range dets {
			run("detection", d.DetectionID, func() (bool, string, error) {
				done, err := s.o.Risk.DismissDetection(ctx, actor, d.DetectionID, why)
				if err == nil && !done {
					return false, "not active at the risk service", nil
				}
				return done, "", err
			})
		}
	}
	if err := s.recordAction(ctx, actor, in.ID, req, res); err != nil {
		errs = append(errs, err)
	}
	if req.Action == ActionDismiss {
		if _, err := s.SetStatus(ctx, actor, in.ID, model.IncidentFalsePositive, req.Reason); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

func (s *Service) userAction(ctx context.Context, actor string, req ActionRequest, why string, ents Entities,
	targets func(string, []string) ([]string, error), run func(string, string, func() (bool, string, error))) error {
	users, err := targets("user", ents.Users)
	if err != nil {
		return err
	}
	switch req.Action {
	case ActionDisableUser:
		if s.o.Users == nil {
			return invalid("no user service to disable with")
		}
		for _, u := range users {
			run("user", u, func() (bool, string, error) {
				return true, "", s.o.Users.SetDisabled(ctx, actor, u, true)
			})
		}
	case ActionRequirePasswordChange:
		if s.o.Risk == nil {
			return invalid("no risk service to raise the risk with")
		}
		for _, u := range users {
			run("user", u, func() (bool, string, error) {
				return true, "user risk set to high: password change required", s.o.Risk.SetUserLevel(ctx, actor, u, model.RiskHigh, why)
			})
		}
	case ActionConfirmCompromised:
		if s.o.Risk == nil {
			return invalid("no risk service to confirm with")
		}
		for _, u := range users {
			run("user", u, func() (bool, string, error) {
				ids, err := s.o.Risk.ConfirmCompromised(ctx, actor, u, why)
				return err == nil, strconv.Itoa(len(ids)) + " sessions revoked", err
			})
		}
	}
	return nil
}

// recordAction commits the action's timeline entry and its
// incident.action_taken event; a new incident becomes active.
func (s *Service) recordAction(ctx context.Context, actor, id string, req ActionRequest, res *ActionResult) error {
	now := s.o.Now()
	var parts []string
	failed := 0
	for _, r := range res.Results {
		p := r.Kind + ":" + r.ID
		switch {
		case r.Error != "":
			failed++
			p += "=error"
		case r.Done:
			p += "=done"
		default:
			p += "=unchanged"
		}
		parts = append(parts, p)
	}
	result := joinCapped(parts)
	_, err := s.change(ctx, []string{id}, false, func(c *store.IncidentChange, ids []string, evs *lazyEvents) error {
		in := c.Incidents[ids[0]]
		in.UpdatedAt = now
		activate(in)
		data := map[string]string{"action": req.Action, "target": req.Target, "result": result}
		c.Entries = append(c.Entries, &model.IncidentEntry{IncidentID: in.ID, At: now, Kind: model.IncidentEntryAction, Actor: actor,
			Text: req.Reason, Data: data})
		evs.add(func() *model.Event {
			ev := incidentEvent(model.EventIncidentActionTaken, actor, in, nil, map[string]string{"action": req.Action,
				"target": req.Target, "result": result, "action_reason": req.Reason})
			ev.ID, ev.Reason = bus.NewEventID(), req.Action
			if failed > 0 {
				ev.Outcome = model.OutcomeFailure
			}
			res.EventID = ev.ID
			return ev
		})
		return nil
	})
	return err
}
