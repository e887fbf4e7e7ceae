package access

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
)

// AnyVersion as ApplyOptions.ExpectVersion applies over whatever is stored.
const AnyVersion = -1

// ApplyOptions qualify a change.
type ApplyOptions struct {
	Actor   string
	Comment string
	// ExpectVersion is the version the change was made from (0: nothing
	// stored yet); a different stored version is ErrConflict. AnyVersion
	// skips the check.
	ExpectVersion int64
}

// ApplyResult says what Apply did.
type ApplyResult struct {
	Version int64 `json:"version"`
	// Changed is false when the document equals the version in force
	// (nothing was stored: apply is idempotent).
	Changed bool     `json:"changed"`
	Added   []string `json:"added,omitempty"`
	Updated []string `json:"updated,omitempty"`
	Removed []string `json:"removed,omitempty"`
	// LocationsChanged reports a change to the named locations.
	LocationsChanged bool `json:"locations_changed,omitempty"`
}

// Apply validates doc and, when it differs from the version in force,
// stores it as the next version and publishes access.policy_changed. An
// invalid document (ErrInvalid, with every problem) leaves the stored
// policies untouched.
func (s *Service) Apply(ctx context.Context, doc *policy.Document, o ApplyOptions) (*ApplyResult, error) {
	if doc == nil {
		return nil, fmt.Errorf("%w: empty document", ErrInvalid)
	}
	if doc.Policies == nil {
		doc.Policies = []policy.Policy{}
	}
	set, err := policy.Compile(doc.Policies, doc.Locations)
	if err != nil {
		return nil, fmt.Errorf("%w:\n%w", ErrInvalid, err)
	}
	body, digest, err := canonical(doc)
	if err != nil {
		return nil, fmt.Errorf("access: encode policies: %w", err)
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()

	prev, err := s.o.Store.LatestPolicyVersion(ctx)
	var prevDoc *policy.Document
	var prevVersion int64
	switch {
	case errors.Is(err, store.ErrNotFound):
		prevDoc = &policy.Document{}
	case err != nil:
		return nil, fmt.Errorf("access: read policies: %w", err)
	default:
		prevVersion = prev.Version
		if prevDoc, err = policy.DecodeJSON(strings.NewReader(string(prev.Document))); err != nil {
			// A stored version that no longer decodes can still be replaced.
			prevDoc = &policy.Document{}
		}
	}
	if o.ExpectVersion != AnyVersion && o.ExpectVersion != prevVersion {
		return nil, fmt.Errorf("%w: version %d is in force, the change was made from %d", ErrConflict, prevVersion, o.ExpectVersion)
	}
	res := diff(prevDoc, doc)
	if prev != nil && prev.Digest == digest {
		res.Version = prev.Version
		return res, nil
	}
	v := &model.PolicyVersion{Version: prevVersion + 1, Document: body, Digest: digest, CreatedAt: s.o.Now(), CreatedBy: o.Actor, Comment: o.Comment}
	// access.policy_changed commits with the version it records.
	data := map[string]string{"version": fmt.Sprint(v.Version), "digest": digest, "policies": fmt.Sprint(len(doc.Policies))}
	for k, ids := range map[string][]string{"added": res.Added, "updated": res.Updated, "removed": res.Removed} {
		if len(ids) > 0 {
			data[k] = strings.Join(ids, ",")
		}
	}
	if res.LocationsChanged {
		data["locations_changed"] = "true"
	}
	if o.Comment != "" {
		data["comment"] = o.Comment
	}
	ev := &model.Event{Type: model.EventAccessPolicyChanged, Actor: o.Actor, Data: data}
	ctx = s.events.Pending(ctx, ev, nil)
	if err := s.o.Store.CreatePolicyVersion(ctx, v); errors.Is(err, store.ErrAlreadyExists) {
		return nil, fmt.Errorf("%w: another change was stored at the same time; retry", ErrConflict)
	} else if err != nil {
		return nil, fmt.Errorf("access: store policies: %w", err)
	}
	res.Version, res.Changed = v.Version, true
	c := &compiled{version: v.Version, digest: digest, doc: doc, set: set}
	c.needGroups, c.needCountry = needs(doc)
	c.trustedRanges = trustedRanges(doc)
	s.cur.Store(c)

	s.o.Log.InfoContext(ctx, "conditional access policies changed", "actor", o.Actor, "version", v.Version)
	if err := s.events.Emit(ctx, ev); err != nil {
		return res, fmt.Errorf("access: %w", err)
	}
	return res, nil
}

// diff lists the policies added, changed and removed between two documents.
func diff(old, cur *policy.Document) *ApplyResult {
	r := &ApplyResult{}
	before := map[string]policy.Policy{}
	for _, p := range old.Policies {
		before[p.ID] = p
	}
	seen := map[string]bool{}
	for _, p := range cur.Policies {
		seen[p.ID] = true
		if q, ok := before[p.ID]; !ok {
			r.Added = append(r.Added, p.ID)
		} else if !sameJSON(p, q) {
			r.Updated = append(r.Updated, p.ID)
		}
	}
	for _, p := range old.Policies {
		if !seen[p.ID] {
			r.Removed = append(r.Removed, p.ID)
		}
	}
	r.LocationsChanged = !sameJSON(old.Locations, cur.Locations) && (len(old.Locations) > 0 || len(cur.Locations) > 0)
	slices.Sort(r.Added)
	slices.Sort(r.Updated)
	slices.Sort(r.Removed)
	return r
}

// sameJSON reports whether a and b have the same JSON encoding: the
// canonical, stored form, in which an empty list and an absent one are
// the same (reflect.DeepEqual tells them apart, so a policy read back from
// the store would count as updated).
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// Current returns the document in force and its version (an empty
// document and 0 when none was stored).
func (s *Service) Current(ctx context.Context) (*policy.Document, int64, error) {
	c := s.current(ctx)
	if c.err != nil {
		// Show what is stored even when it does not compile, so it can be fixed.
		v, err := s.o.Store.GetPolicyVersion(ctx, c.version)
		if err != nil {
			return nil, 0, c.err
		}
		doc, err := policy.DecodeJSON(strings.NewReader(string(v.Document)))
		if err != nil {
			return nil, 0, c.err
		}
		return doc, c.version, nil
	}
	if c.doc == nil {
		return &policy.Document{Policies: []policy.Policy{}}, 0, nil
	}
	return c.doc, c.version, nil
}

// Set returns the compiled set in force (nil when no policies exist).
func (s *Service) Set(ctx context.Context) (*policy.Set, int64, error) {
	c := s.current(ctx)
	return c.set, c.version, c.err
}

// Versions lists stored versions, newest first, without documents.
func (s *Service) Versions(ctx context.Context, limit int) ([]*model.PolicyVersion, error) {
	return s.o.Store.ListPolicyVersions(ctx, limit)
}

// ErrNotFound: no such policy version. Errors that match it keep the
// store's message and match store.ErrNotFound too.
var ErrNotFound = errors.New("access: policy version not found")

type notFoundError struct{ error }

func (e notFoundError) Unwrap() error        { return e.error }
func (e notFoundError) Is(target error) bool { return target == ErrNotFound }

// Version returns one stored version's document; an error matching
// ErrNotFound when there is no version n.
func (s *Service) Version(ctx context.Context, n int64) (*model.PolicyVersion, *policy.Document, error) {
	v, err := s.o.Store.GetPolicyVersion(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, notFoundError{err}
	}
	if err != nil {
		return nil, nil, err
	}
	doc, err := policy.DecodeJSON(strings.NewReader(string(v.Document)))
	return v, doc, err
}

// WhatIf describes a hypothetical request.
type WhatIf struct {
	// User is a user id or username ("" for client_credentials).
	User string `json:"user,omitempty"`
	// App is the client id.
	App string `json:"app"`
	IP  string `json:"ip,omitempty"`
	// Device is a registered device id ("" = no device).
	Device     string `json:"device,omitempty"`
	SignInRisk string `json:"sign_in_risk,omitempty"`
	// UserRisk overrides the user's stored risk ("" = stored).
	UserRisk string `json:"user_risk,omitempty"`
	// Flow defaults to interactive (client_credentials without a user).
	Flow string `json:"flow,omitempty"`
	// MFA: the session has done multi-factor authentication.
	MFA bool `json:"mfa,omitempty"`
	// Passkey: the session signed in with a passkey or security key
	// (phishing-resistant; implies MFA).
	Passkey bool `json:"passkey,omitempty"`
	// TokenProtected defaults to true when Device is given (the session
	// is bound to the device's key).
	TokenProtected *bool `json:"token_protected,omitempty"`
}

// ErrWhatIf reports a What-If request naming something that does not exist
// or is malformed.
var ErrWhatIf = errors.New("access: what-if")

// Explain evaluates a hypothetical request against the policies in force.
func (s *Service) Explain(ctx context.Context, w WhatIf) (*Result, error) {
	req := Request{IP: w.IP, SignInRisk: w.SignInRisk, UserRisk: w.UserRisk, Flow: w.Flow}
	var errs []error
	if w.App == "" {
		errs = append(errs, fmt.Errorf("%w: app is required", ErrWhatIf))
	} else if c, err := s.o.Store.GetClient(ctx, w.App); err != nil {
		errs = append(errs, fmt.Errorf("%w: app %q: %w", ErrWhatIf, w.App, err))
	} else {
		req.Client = c
	}
	if w.User != "" {
		u, err := s.o.Store.GetUser(ctx, w.User)
		if errors.Is(err, store.ErrNotFound) {
			u, err = s.o.Store.GetUserByUsername(ctx, strings.ToLower(w.User))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: user %q: %w", ErrWhatIf, w.User, err))
		}
		req.User = u
	}
	if w.Device != "" {
		d, err := s.o.Store.GetDevice(ctx, w.Device)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: device %q: %w", ErrWhatIf, w.Device, err))
		}
		req.Device = d
	}
	if w.IP != "" {
		if _, err := parseIP(w.IP); err != nil {
			errs = append(errs, fmt.Errorf("%w: ip %q is not an IP address", ErrWhatIf, w.IP))
		}
	}
	for name, v := range map[string]string{"sign_in_risk": w.SignInRisk, "user_risk": w.UserRisk} {
		switch v {
		case "", policy.RiskNone, policy.RiskLow, policy.RiskMedium, policy.RiskHigh:
		default:
			errs = append(errs, fmt.Errorf("%w: %s must be none, low, medium or high", ErrWhatIf, name))
		}
	}
	switch req.Flow {
	case "":
		req.Flow = policy.FlowInteractive
		if w.User == "" {
			req.Flow = policy.FlowClientCredentials
		}
	case policy.FlowInteractive, policy.FlowRefresh, policy.FlowDeviceCode, policy.FlowClientCredentials:
	default:
		errs = append(errs, fmt.Errorf("%w: flow must be interactive, refresh, device_code or client_credentials", ErrWhatIf))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if req.User != nil {
		req.AMR = []string{"pwd"}
		if w.MFA {
			req.AMR = []string{"pwd", "otp", "mfa"}
		}
		if w.Passkey {
			req.AMR = []string{"hwk", "user", "mfa"}
		}
		req.AuthTime = s.o.Now()
	}
	req.TokenProtected = req.Device != nil && req.Device.Status == model.DeviceActive
	if w.TokenProtected != nil {
		req.TokenProtected = *w.TokenProtected
	}
	return s.Evaluate(ctx, req)
}
