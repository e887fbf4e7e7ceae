package device

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// PlatformAll is the platform of the policy that applies to devices of
// every platform without a policy of their own.
const PlatformAll = "*"

// maxReevaluate bounds the devices re-evaluated in one pass (the store's
// list maximum).
const maxReevaluate = 1000

// NormalizePlatform lower-cases and checks a policy platform name ("*" or
// a-z 0-9 - _).
func NormalizePlatform(platform string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(platform))
	if p == PlatformAll {
		return p, nil
	}
	if err := checkToken("platform", p, true); err != nil {
		return "", fmt.Errorf("%w: %s (or \"*\" for all platforms)", ErrInvalid, err)
	}
	return p, nil
}

// PutPolicy creates or replaces the compliance policy of a platform ("*":
// all platforms without a policy of their own). The rules are validated
// strictly (a *RulesError lists every problem) and stored in canonical
// form. Active devices of that platform are re-evaluated at once against
// their latest posture (up to 1000 per call; the maintenance sweep
// covers the same set every round). It publishes compliance.policy_changed.
func (s *Service) PutPolicy(ctx context.Context, actor, platform string, rules []byte) (*model.CompliancePolicy, error) {
	platform, err := NormalizePlatform(platform)
	if err != nil {
		return nil, err
	}
	r, err := ParseRules(rules)
	if err != nil {
		return nil, err
	}
	now := s.now()
	p := &model.CompliancePolicy{ID: newID(), Name: platform, Platform: platform, Rules: r.JSON(), CreatedAt: now, UpdatedAt: now}
	change := "created"
	if old, err := s.store.GetCompliancePolicy(ctx, platform); err == nil {
		p.ID, p.Name, p.CreatedAt, change = old.ID, old.Name, old.CreatedAt, "updated"
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("device: get policy %s: %w", platform, err)
	}
	// The policy and its record commit together.
	ev := &model.Event{Type: model.EventCompliancePolicyChanged, Actor: actor,
		Data: map[string]string{"platform": platform, "change": change, "rules": string(p.Rules)}}
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.store.PutCompliancePolicy(ectx, p); err != nil {
		return nil, fmt.Errorf("device: put policy %s: %w", platform, err)
	}
	s.log.InfoContext(ctx, "compliance policy changed", "actor", actor, "platform", platform, "change", change)
	if err := s.events.Emit(ectx, ev); err != nil {
		return nil, err
	}
	s.reevaluateAfterPolicyChange(ctx, actor, platform)
	return p, nil
}

// GetPolicy returns the policy of a platform ("*" included).
func (s *Service) GetPolicy(ctx context.Context, platform string) (*model.CompliancePolicy, error) {
	platform, err := NormalizePlatform(platform)
	if err != nil {
		return nil, err
	}
	p, err := s.store.GetCompliancePolicy(ctx, platform)
	if err != nil {
		return nil, wrapNotFound(err, "compliance policy "+platform)
	}
	return p, nil
}

// ListPolicies returns every compliance policy.
func (s *Service) ListPolicies(ctx context.Context) ([]*model.CompliancePolicy, error) {
	ps, err := s.store.ListCompliancePolicies(ctx)
	if err != nil {
		return nil, fmt.Errorf("device: list policies: %w", err)
	}
	return ps, nil
}

// DeletePolicy deletes the policy of a platform; its devices fall back to
// the "*" policy, or to compliance unknown without one. It publishes
// compliance.policy_changed and re-evaluates like PutPolicy.
func (s *Service) DeletePolicy(ctx context.Context, actor, platform string) error {
	platform, err := NormalizePlatform(platform)
	if err != nil {
		return err
	}
	ev := &model.Event{Type: model.EventCompliancePolicyChanged, Actor: actor,
		Data: map[string]string{"platform": platform, "change": "deleted"}}
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.store.DeleteCompliancePolicy(ectx, platform); err != nil {
		return wrapNotFound(err, "compliance policy "+platform)
	}
	s.log.InfoContext(ctx, "compliance policy deleted", "actor", actor, "platform", platform)
	if err := s.events.Emit(ectx, ev); err != nil {
		return err
	}
	s.reevaluateAfterPolicyChange(ctx, actor, platform)
	return nil
}

func (s *Service) reevaluateAfterPolicyChange(ctx context.Context, actor, platform string) {
	only := platform
	if platform == PlatformAll {
		only = ""
	}
	if _, err := s.reevaluate(ctx, actor, only); err != nil {
		// The policy is saved; the next sweep or report catches up.
		s.log.WarnContext(ctx, "re-evaluating devices after a policy change failed", "platform", platform, "err", err)
	}
}

// rulesFor returns the rules that apply to a platform: its own policy,
// else the "*" policy; found is false when neither exists.
func (s *Service) rulesFor(ctx context.Context, platform string) (*Rules, bool, error) {
	for _, pl := range []string{platform, PlatformAll} {
		p, err := s.store.GetCompliancePolicy(ctx, pl)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("device: get policy %s: %w", pl, err)
		}
		r, err := ParseRules(p.Rules)
		if err != nil {
			// Stored rules were validated on Put; a rule set this
			// version cannot read decides nothing.
			return nil, false, fmt.Errorf("device: policy %s: %w", pl, err)
		}
		return r, true, nil
	}
	return nil, false, nil
}

// SweepStale re-evaluates every active device against the current
// policies and time: devices without a posture report for longer than the
// posture grace period (counted from registration when they never
// reported) become noncompliant with the rule posture_stale, and
// time-dependent rules (max_posture_age_hours) are applied. Only changed
// evaluations are written; a state change publishes
// device.compliance_changed (actor "system"). It returns the number of
// devices whose evaluation changed. Call it periodically (app maintenance
// does, every round).
func (s *Service) SweepStale(ctx context.Context) (int, error) {
	return s.reevaluate(ctx, ActorSystem, "")
}

// reevaluate re-evaluates active devices (of one platform, or all when
// platform is "") and stores the evaluations that changed.
func (s *Service) reevaluate(ctx context.Context, actor, platform string) (int, error) {
	ds, err := s.store.ListDevices(ctx, store.DeviceFilter{Status: model.DeviceActive, Limit: maxReevaluate})
	if err != nil {
		return 0, fmt.Errorf("device: list devices: %w", err)
	}
	type policy struct {
		rules *Rules
		found bool
	}
	policies := map[string]policy{}
	now := s.now()
	changed := 0
	var errs []error
	for _, d := range ds {
		if platform != "" && d.Platform != platform {
			continue
		}
		pol, ok := policies[d.Platform]
		if !ok {
			r, found, err := s.rulesFor(ctx, d.Platform)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			pol = policy{r, found}
			policies[d.Platform] = pol
		}
		st, fs := s.evaluate(d, storedPosture(d), pol.rules, pol.found, now)
		enc := encodeFailures(fs)
		if st == d.Compliance && string(enc) == string(d.ComplianceFailures) {
			continue
		}
		var prev string
		// device.compliance_changed commits with the update that changes
		// the compliance state.
		ev := &model.Event{Type: model.EventDeviceComplianceChanged, Actor: actor}
		ectx := s.events.Pending(ctx, ev, func([]string) bool { return prev != st })
		nd, err := s.store.UpdateDevice(ectx, d.ID, func(cur *model.Device) error {
			if cur.Status != model.DeviceActive || !cur.PostureAt.Equal(d.PostureAt) {
				return errInactive // changed meanwhile; its own update evaluated it
			}
			prev = cur.Compliance
			cur.Compliance, cur.ComplianceFailures, cur.ComplianceAt, cur.UpdatedAt = st, enc, now, now
			fillComplianceChanged(ev, cur, prev, fs)
			return nil
		})
		if errors.Is(err, errInactive) || errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("device: update %s: %w", d.ID, err))
			continue
		}
		changed++
		if prev != nd.Compliance {
			errs = append(errs, s.publishComplianceChanged(ectx, ev, nd, prev))
		}
	}
	return changed, errors.Join(errs...)
}
