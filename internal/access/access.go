// Package access is Ward's Conditional Access service. It stores the
// policy configuration as immutable, numbered versions (each change an
// audit event), keeps the version in force compiled in memory, and turns
// the facts of a sign-in or token request (user, client, device, address,
// authentication done) into a policy.Input for the pure engine in
// internal/policy. The sign-in flow, the token endpoint, the What-If tool
// and continuous access evaluation all call Evaluate.
package access

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ward-idp/ward/internal/geo"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
)

// Errors.
var (
	// ErrInvalid wraps every problem of a rejected policy document.
	ErrInvalid = errors.New("access: invalid policy document")
	// ErrConflict: the stored version is not the one the caller expected,
	// or another writer stored a version at the same moment.
	ErrConflict = errors.New("access: policy version conflict")
	// ErrUnavailable: the stored policies cannot be loaded or compiled;
	// requests fail closed until a valid version is applied.
	ErrUnavailable = errors.New("access: conditional access policies unavailable")
)

// Options configure the service.
type Options struct {
	Store store.Store
	Bus   bus.Bus
	Now   func() time.Time
	Log   *slog.Logger
	// Locator resolves countries for named locations; nil: the country
	// of every address is unknown and country locations never match.
	Locator *geo.DB
	// PollInterval is how often the store is checked for a version written
	// by another instance (default 5 s).
	PollInterval time.Duration
}

// Service evaluates and manages Conditional Access policies.
type Service struct {
	o       Options
	events  *bus.Emitter // records domain events (nothing without a bus)
	cur     atomic.Pointer[compiled]
	checked atomic.Int64 // unix nanos of the last version check
	polling atomic.Bool
	applyMu sync.Mutex // serialises this instance's writers
}

// compiled is one loaded policy version.
type compiled struct {
	version int64
	digest  string
	doc     *policy.Document
	set     *policy.Set
	err     error // the stored version does not load: fail closed
	// What the policies look at, so requests skip lookups nobody needs.
	needGroups, needCountry bool
	// trustedRanges are the IP ranges of the trusted named locations:
	// where a strict-location token may be used.
	trustedRanges []string
}

// New returns the service with no policies loaded; call Load.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	s := &Service{o: o, events: bus.NewEmitter(o.Bus, o.Now)}
	s.cur.Store(&compiled{})
	return s
}

// Load reads the version in force from the store. A stored version that
// no longer compiles is logged and makes every evaluation fail closed
// (ErrUnavailable) until a valid version is applied; Load then returns
// nil so that the server (and `ward policy apply`) can still start.
func (s *Service) Load(ctx context.Context) error {
	v, err := s.o.Store.LatestPolicyVersion(ctx)
	if errors.Is(err, store.ErrNotFound) {
		s.cur.Store(&compiled{})
		s.checked.Store(s.o.Now().UnixNano())
		return nil
	} else if err != nil {
		return fmt.Errorf("access: load policies: %w", err)
	}
	s.install(ctx, v)
	s.checked.Store(s.o.Now().UnixNano())
	return nil
}

// install compiles a stored version and makes it current.
func (s *Service) install(ctx context.Context, v *model.PolicyVersion) {
	s.cur.Store(s.compile(ctx, v))
}

// compile compiles a stored version.
func (s *Service) compile(ctx context.Context, v *model.PolicyVersion) *compiled {
	c := &compiled{version: v.Version, digest: v.Digest}
	doc, err := policy.DecodeJSON(strings.NewReader(string(v.Document)))
	if err == nil {
		c.doc = doc
		c.set, err = policy.Compile(doc.Policies, doc.Locations)
	}
	if err != nil {
		c.err = fmt.Errorf("%w: stored version %d does not compile: %w", ErrUnavailable, v.Version, err)
		s.o.Log.ErrorContext(ctx, "conditional access policies do not compile; sign-ins and token requests fail until a valid version is applied",
			"version", v.Version, "err", err)
	} else {
		c.needGroups, c.needCountry = needs(doc)
		c.trustedRanges = trustedRanges(doc)
	}
	return c
}

// needs reports whether any policy reads group memberships, and whether
// any location is a country.
func needs(doc *policy.Document) (groups, country bool) {
	for _, p := range doc.Policies {
		if len(p.Assignments.Groups.Include) > 0 || len(p.Assignments.Groups.Exclude) > 0 {
			groups = true
		}
	}
	for _, l := range doc.Locations {
		if len(l.Countries) > 0 {
			country = true
		}
	}
	return groups, country
}

// trustedRanges lists the IP ranges of trusted named locations.
func trustedRanges(doc *policy.Document) []string {
	var out []string
	for _, l := range doc.Locations {
		if l.Trusted {
			out = append(out, l.IPRanges...)
		}
	}
	return out
}

// current returns the version in force, first checking the store for a
// newer one when the poll interval has passed (one request checks; the
// others go on with what is loaded).
func (s *Service) current(ctx context.Context) *compiled {
	now := s.o.Now().UnixNano()
	if now-s.checked.Load() >= int64(s.o.PollInterval) && s.polling.CompareAndSwap(false, true) {
		s.checked.Store(now)
		if err := s.Refresh(ctx); err != nil {
			s.o.Log.WarnContext(ctx, "check conditional access version", "err", err)
		}
		s.polling.Store(false)
	}
	return s.cur.Load()
}

// Refresh installs the version stored now if it is not the one in force:
// how a version stored by another process (`ward policy apply`, another
// instance) takes effect when its access.policy_changed event arrives,
// without waiting for the poll, which stays as a safety net. It costs one
// indexed read when nothing changed, so a repeated event is harmless.
func (s *Service) Refresh(ctx context.Context) error {
	// Install what was read only over what was loaded when the check
	// began, or over an older version: an Apply on this instance, or a
	// concurrent check, may have installed a newer version meanwhile,
	// which an older read must not replace.
	loaded := s.cur.Load()
	n, err := s.o.Store.LatestPolicyVersionNumber(ctx)
	if err != nil {
		return err
	}
	if n == loaded.version {
		return nil
	}
	v, err := s.o.Store.LatestPolicyVersion(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("load version %d: %w", n, err)
	}
	c := s.compile(ctx, v)
	for !s.cur.CompareAndSwap(loaded, c) {
		if loaded = s.cur.Load(); loaded.version >= c.version {
			return nil
		}
	}
	return nil
}

// Request is the facts of one sign-in or token request.
type Request struct {
	// Flow is policy.FlowInteractive, FlowRefresh, FlowDeviceCode or
	// FlowClientCredentials.
	Flow   string
	User   *model.User // nil for client_credentials
	Client *model.Client
	// Device is the registered device whose key signs the request (nil:
	// none, or not known yet).
	Device *model.Device
	// IP is the client address (after the trusted-proxy rule).
	IP string
	// Authentication already performed in the session.
	AuthTime time.Time
	AMR      []string
	// TokenProtected: the session is bound to the registered device's key.
	TokenProtected bool
	// SignInRisk is the risk of this sign-in (none until the risk engine
	// sets it).
	SignInRisk string
	// UserRisk overrides the user's stored risk level (What-If).
	UserRisk string
}

// Result is a decision with the version and input it was made from.
type Result struct {
	policy.Decision
	Version int64        `json:"version"`
	Input   policy.Input `json:"input"`
	// AllowedRanges, when the session control strict_location applies,
	// are the IP ranges of the trusted named locations: the access token
	// carries them (claim "ipr") and resources refuse it elsewhere.
	// Country locations cannot be carried; with only those, nothing is.
	AllowedRanges []string `json:"allowed_ranges,omitempty"`
}

// Evaluate decides a request against the version in force. With no
// policies it allows without any lookup. Errors mean the decision could
// not be made (the caller fails closed).
func (s *Service) Evaluate(ctx context.Context, req Request) (*Result, error) {
	c := s.current(ctx)
	if c.err != nil {
		return nil, c.err
	}
	if c.set == nil || c.set.Len() == 0 {
		return &Result{Decision: policy.Decision{Outcome: policy.OutcomeAllow}, Version: c.version}, nil
	}
	in, err := s.input(ctx, c, req)
	if err != nil {
		return nil, err
	}
	res := &Result{Decision: c.set.Evaluate(in), Version: c.version, Input: in}
	if res.Session.StrictLocation {
		res.AllowedRanges = c.trustedRanges
	}
	return res, nil
}

// input builds the engine's input from the request's facts.
func (s *Service) input(ctx context.Context, c *compiled, req Request) (policy.Input, error) {
	in := policy.Input{Flow: req.Flow, SignInRisk: req.SignInRisk}
	if ip, err := netip.ParseAddr(req.IP); err == nil {
		in.IP = ip.Unmap()
		if c.needCountry && s.o.Locator != nil {
			if cc, err := s.o.Locator.Country(in.IP); err == nil {
				in.Country = cc
			} else {
				s.o.Log.WarnContext(ctx, "geolocation lookup", "err", err)
			}
		}
	}
	if req.Client != nil {
		in.App = policy.AppInput{ClientID: req.Client.ID, Public: req.Client.Public(), Native: Native(req.Client)}
	}
	if u := req.User; u != nil {
		in.User = policy.UserInput{ID: u.ID, Username: u.Username, Risk: u.RiskLevel}
		if req.UserRisk != "" {
			in.User.Risk = req.UserRisk
		}
		if c.needGroups {
			gs, err := s.o.Store.GroupsOfUser(ctx, u.ID)
			if err != nil {
				return in, fmt.Errorf("access: groups of user: %w", err)
			}
			for _, g := range gs {
				// Policies may name a group by id or by name.
				in.User.Groups = append(in.User.Groups, g.ID, g.Name)
			}
		}
		in.Auth = policy.AuthInput{Methods: req.AMR, Strength: Strength(req.AMR), TokenProtected: req.TokenProtected}
		in.Auth.MFA = in.Auth.Strength == policy.StrengthPasswordTOTP || in.Auth.Strength == policy.StrengthPhishingResistant
		// A password change after the risk was raised remediates it.
		in.Auth.PasswordChanged = !u.PasswordChangedAt.IsZero() && u.PasswordChangedAt.After(u.RiskUpdatedAt)
	}
	if d := req.Device; d != nil {
		in.Device = &policy.DeviceInput{
			ID: d.ID, Registered: true, Compliance: d.Compliance, Platform: d.Platform, OSVersion: d.OSVersion,
			TrustType: d.TrustType, Status: d.Status, Hostname: d.Hostname, KeyAttested: d.KeyAttested,
		}
	}
	return in, nil
}

// Strength maps RFC 8176 amr values to an authentication strength: a
// WebAuthn key (hwk: bound to the authenticator; swk: a synced passkey)
// with user verification is phishing-resistant, since the browser binds
// its signature to Ward's origin.
func Strength(amr []string) string {
	switch {
	case (slices.Contains(amr, "hwk") || slices.Contains(amr, "swk")) && slices.Contains(amr, "user"):
		return policy.StrengthPhishingResistant
	case slices.Contains(amr, "otp") || slices.Contains(amr, "mfa"):
		return policy.StrengthPasswordTOTP
	case slices.Contains(amr, "pwd"):
		return policy.StrengthPassword
	}
	return ""
}

// Native reports whether a client is a native application rather than a
// browser one: its registered application_type when it has one, otherwise
// a public client whose redirect URIs are all loopback or
// private-use schemes (RFC 8252), or one with no redirect URIs that uses
// the device authorization grant. Everything else runs in a browser.
func Native(c *model.Client) bool {
	switch c.ApplicationType {
	case "native":
		return true
	case "web":
		return false
	}
	if len(c.RedirectURIs) == 0 {
		return c.AllowsGrant(model.GrantDeviceCode)
	}
	if !c.Public() {
		return false
	}
	for _, u := range c.RedirectURIs {
		if !nativeRedirect(u) {
			return false
		}
	}
	return true
}

// nativeRedirect reports whether a redirect URI is a native app's: an
// http loopback URI or a private-use scheme (RFC 8252 7.1, 7.3). The
// host is compared whole, so http://localhost.example.com is a web
// redirect; schemes are compared case-insensitively (url.Parse lowers
// them); an unparseable URI counts as a browser one.
func nativeRedirect(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" {
		return false
	}
	switch p.Scheme {
	case "https":
		return false
	case "http":
		h := p.Hostname()
		if strings.EqualFold(h, "localhost") {
			return true
		}
		ip, err := netip.ParseAddr(h)
		return err == nil && ip.IsLoopback()
	}
	return true
}

// EventData records a decision in an audit event's data: the version,
// the outcome, the enforced policies that applied, what report-only
// policies would have done, and the unmet controls.
func (r *Result) EventData(m map[string]string) {
	if r == nil || m == nil {
		return
	}
	m["ca_version"] = fmt.Sprint(r.Version)
	m["ca_outcome"] = string(r.Outcome)
	var applied, reportOnly []string
	for _, p := range r.Policies {
		switch p.Result {
		case policy.ResultApplied:
			applied = append(applied, p.ID)
		case policy.ResultReportOnly:
			entry := p.ID + "=" + string(p.Outcome)
			if len(p.Unmet) > 0 {
				entry += ":" + strings.Join(p.Unmet, "+")
			}
			reportOnly = append(reportOnly, entry)
		}
	}
	if len(applied) > 0 {
		m["ca_applied"] = strings.Join(applied, ",")
	}
	if len(reportOnly) > 0 {
		m["ca_report_only"] = strings.Join(reportOnly, ",")
	}
	if len(r.BlockedBy) > 0 {
		m["ca_blocked_by"] = strings.Join(r.BlockedBy, ",")
	}
	if len(r.Controls) > 0 {
		m["ca_controls"] = strings.Join(r.Controls, ",")
	}
}

// canonical returns the canonical JSON of a document and its digest.
func canonical(doc *policy.Document) ([]byte, string, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:]), nil
}

func parseIP(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
