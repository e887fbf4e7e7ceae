// Package device manages registered devices: the device keys tokens are
// bound to (token protection), the signed posture reports the Ward agent
// sends, and the compliance of each device against the administrator's
// per-platform compliance policies.
//
// A device is registered by its user with the public half of a P-256 key
// the device keeps (in a TPM when it has one). The key is identified by its
// RFC 7638 thumbprint (JKT), unique across all devices: the same key is the
// device's DPoP key, so a token bound to it (cnf.jkt) is bound to the
// device. Posture reports are JWS signed with that key, carry a server
// nonce (stateless HMAC, like DPoP nonces) and a jti recorded once
// (Store.RecordJTI), so a report can neither be forged by another device,
// nor replayed, nor kept and sent later.
//
// Where the key lives is what the agent reports (KeyStorage), a claim
// nothing relies on; KeyAttested is set only by TPM 2.0 key attestation at
// registration (RegisterAttested, ActivateAttestation; see attest.go), and
// it is what the compliance rule require_hardware_key and Conditional
// Access (device.key_attested) see.
//
// Compliance is a pure function (Evaluate) of the policy rules, the latest
// posture and the time. States: compliant (every rule passed), noncompliant
// (at least one rule failed, or no posture arrived for longer than the
// posture grace period), unknown (no rule failed but at least one could not
// be decided, or no policy applies to the device's platform). A disabled or
// lost device is noncompliant whatever its posture said (rule
// device_status), from the write that changed its status. Conditional
// Access treats anything but compliant as not compliant.
//
// Every change is published on the bus (device.*, compliance.policy_changed)
// attributed to an actor; disabling, losing or deleting a device ends every
// session bound to it at once (session.revoked per session).
package device

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tpmattest"
)

// Defaults.
const (
	DefaultReportMaxAge = 5 * time.Minute
	DefaultPostureGrace = 24 * time.Hour
)

// ActorSystem is the actor of changes the service makes on its own (stale
// posture sweep, re-evaluation after a policy change).
const ActorSystem = "system"

// Revoke causes (session.revoked reasons) of the status changes.
const (
	ReasonDeviceDisabled = model.CauseDeviceDisabled
	ReasonDeviceLost     = model.CauseDeviceLost
	ReasonDeviceDeleted  = model.CauseDeviceDeleted
)

// SessionRevoker ends the sessions bound to a device (session.Service):
// the service that owns session revocation and its records.
type SessionRevoker interface {
	// RevokeDevice revokes every session holding a refresh token bound
	// to the device, records session.revoked for each and returns their
	// ids.
	RevokeDevice(ctx context.Context, actor, deviceID, userID string, cause model.RevocationCause) ([]string, error)
}

// Options configure a Service.
type Options struct {
	Store store.Store // required
	Bus   bus.Bus     // nil: events are not published
	// Sessions ends the sessions of a disabled, lost or deleted device
	// (required).
	Sessions SessionRevoker
	Now      func() time.Time
	Log      *slog.Logger
	// NonceKey is the HMAC key of posture nonces, at least 16 random
	// bytes (required). Instances sharing it accept each other's nonces.
	NonceKey []byte
	// ReportMaxAge is how old a posture report (its iat) and its nonce may
	// be (default 5m).
	ReportMaxAge time.Duration
	// PostureGrace is how long a device may go without a posture report
	// before SweepStale marks it noncompliant (default 24h).
	PostureGrace time.Duration
	// AttestationKey seals the server side of key attestation challenges
	// (AES-256: 32 bytes; default: derived from NonceKey). Instances
	// sharing it accept each other's challenges.
	AttestationKey []byte
	// EKCAs are the TPM vendor CAs whose endorsement key certificates are
	// trusted (devices.tpm_ek_ca_file); nil accepts any TPM's endorsement
	// key, and attested devices then say that it is not chained to a
	// trusted vendor.
	EKCAs *tpmattest.CAs
	// AttestationTTL is how long a device has to answer its key
	// attestation challenge (default 5m).
	AttestationTTL time.Duration
}

// Service is the device service. It is safe for concurrent use.
type Service struct {
	store    store.Store
	events   *bus.Emitter // records domain events (nothing without a bus)
	sessions SessionRevoker
	now      func() time.Time
	log      *slog.Logger
	nonces   dpop.NonceSource
	maxAge   time.Duration
	grace    time.Duration

	attestKey []byte
	attestTTL time.Duration
	verifier  *tpmattest.Verifier
}

// New returns a Service. It panics when Store or a NonceKey of at least 16
// bytes is missing (configuration errors).
func New(o Options) *Service {
	if o.Store == nil {
		panic("device: Options.Store is required")
	}
	if o.Sessions == nil {
		panic("device: Options.Sessions is required")
	}
	if len(o.NonceKey) < 16 {
		panic("device: Options.NonceKey must hold at least 16 bytes")
	}
	switch len(o.AttestationKey) {
	case 0:
		k, err := hkdf.Key(sha256.New, o.NonceKey, nil, "ward/device-attestation-challenge", 32)
		if err != nil {
			panic(err)
		}
		o.AttestationKey = k
	case 32:
	default:
		panic("device: Options.AttestationKey must hold 32 bytes")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ReportMaxAge <= 0 {
		o.ReportMaxAge = DefaultReportMaxAge
	}
	if o.PostureGrace <= 0 {
		o.PostureGrace = DefaultPostureGrace
	}
	if o.AttestationTTL <= 0 {
		o.AttestationTTL = DefaultAttestationTTL
	}
	return &Service{
		store:    o.Store,
		events:   bus.NewEmitter(o.Bus, o.Now),
		sessions: o.Sessions,
		now:      o.Now,
		log:      o.Log.With("component", "device"),
		nonces:   dpop.NewHMACNonces(o.NonceKey, o.ReportMaxAge, o.Now),
		maxAge:   o.ReportMaxAge,
		grace:    o.PostureGrace,

		attestKey: append([]byte(nil), o.AttestationKey...),
		attestTTL: o.AttestationTTL,
		verifier:  &tpmattest.Verifier{CAs: o.EKCAs, Now: o.Now},
	}
}

// Errors of registration and administration. Messages are safe to show.
var (
	// ErrKeyInUse: the key is already registered (to any user).
	ErrKeyInUse = errors.New("this device key is already registered")
	// ErrInvalid: a registration or policy field is malformed; returned
	// errors wrap it with every problem found.
	ErrInvalid = errors.New("invalid input")
	// ErrLost: a lost device cannot be enabled again; it is deleted and
	// the device enrolled anew (its key may be in someone else's hands).
	ErrLost = errors.New("a lost or stolen device cannot be enabled again: delete it (ward device delete) and enrol the device again (ward device enroll --force)")
	// ErrNotFound: no such device or policy. It wraps store.ErrNotFound.
	ErrNotFound error = notFoundError{}
)

type notFoundError struct{}

func (notFoundError) Error() string { return "not found" }
func (notFoundError) Unwrap() error { return store.ErrNotFound }

// Registration is what a device presents to be registered.
type Registration struct {
	// PublicJWK is the device key: a public EC P-256 JWK.
	PublicJWK    json.RawMessage
	KeyStorage   string // "tpm", "file", ... as the agent reports it
	Platform     string // linux, darwin, windows, ...
	OSName       string
	OSVersion    string
	Hostname     string
	AgentVersion string
	// TrustType is model.TrustRegistered (default) or model.TrustManaged.
	TrustType string
}

// Field limits.
const (
	maxTextLen     = 256
	maxTokenLen    = 32
	maxJWKLen      = 2048
	defaultListMax = 100
)

// Register registers a device for userID. The key must be a public EC
// P-256 JWK not registered before (ErrKeyInUse otherwise, and nothing
// changes). The device starts active with compliance unknown and its key
// not attested: KeyStorage is recorded as the agent's claim. It publishes
// device.registered.
func (s *Service) Register(ctx context.Context, userID string, r Registration) (*model.Device, error) {
	d, _, err := s.register(ctx, userID, r, nil)
	return d, err
}

// RegisterAttested is Register with TPM 2.0 key attestation evidence
// (KeyStorage must be "tpm"). The evidence is verified before anything is
// stored: a refusal is an *AttestationError, publishes
// device.key_attestation_rejected and registers nothing. The device is
// registered with its key not attested yet, and the challenge returned
// must be answered (ActivateAttestation) within the attestation TTL.
func (s *Service) RegisterAttested(ctx context.Context, userID string, r Registration, a *Attestation) (*model.Device, *Challenge, error) {
	if a == nil {
		return nil, nil, fmt.Errorf("%w: attestation evidence is required", ErrInvalid)
	}
	return s.register(ctx, userID, r, a)
}

func (s *Service) register(ctx context.Context, userID string, r Registration, a *Attestation) (*model.Device, *Challenge, error) {
	jwk, jkt, err := ParseDeviceKey(r.PublicJWK)
	var problems []string
	if err != nil {
		problems = append(problems, err.Error())
	}
	platform := strings.ToLower(strings.TrimSpace(r.Platform))
	if err := checkToken("platform", platform, true); err != nil {
		problems = append(problems, err.Error())
	}
	keyStorage := strings.ToLower(strings.TrimSpace(r.KeyStorage))
	if err := checkToken("key_storage", keyStorage, false); err != nil {
		problems = append(problems, err.Error())
	}
	trust := r.TrustType
	switch trust {
	case "":
		trust = model.TrustRegistered
	case model.TrustRegistered, model.TrustManaged:
	default:
		problems = append(problems, fmt.Sprintf("trust_type must be %q or %q", model.TrustRegistered, model.TrustManaged))
	}
	for _, f := range []struct{ name, v string }{
		{"os_name", r.OSName}, {"os_version", r.OSVersion}, {"hostname", r.Hostname}, {"agent_version", r.AgentVersion},
	} {
		if err := checkText(f.name, f.v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	u, err := s.store.GetUser(ctx, userID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, fmt.Errorf("device: user %s: %w", userID, ErrNotFound)
		}
		return nil, nil, fmt.Errorf("device: user %s: %w", userID, err)
	}
	if _, err := s.store.GetDeviceByJKT(ctx, jkt); err == nil {
		return nil, nil, ErrKeyInUse
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, nil, fmt.Errorf("device: look up key: %w", err)
	}
	var verified *tpmattest.Result
	if a != nil {
		if verified, err = s.verifyAttestation(a, keyStorage, jwk); err != nil {
			if ae, ok := errors.AsType[*AttestationError](err); ok {
				s.attestationRejected(ctx, "", &model.Device{UserID: u.ID}, ae)
			}
			return nil, nil, err
		}
	}
	rules, havePolicy, err := s.rulesFor(ctx, platform)
	if err != nil {
		return nil, nil, err
	}
	now := s.now()
	d := &model.Device{
		ID: newID(), UserID: u.ID, JKT: jkt, PublicJWK: jwk, KeyStorage: keyStorage, Platform: platform,
		OSName: strings.TrimSpace(r.OSName), OSVersion: strings.TrimSpace(r.OSVersion),
		Hostname: strings.TrimSpace(r.Hostname), AgentVersion: strings.TrimSpace(r.AgentVersion),
		TrustType: trust, Status: model.DeviceActive, ComplianceAt: now,
		CreatedAt: now, LastSeen: now, UpdatedAt: now,
	}
	// Without a posture report the state is unknown; the failures say why.
	var fs []Failure
	d.Compliance, fs = s.evaluate(d, nil, rules, havePolicy, now)
	d.ComplianceFailures = encodeFailures(fs)
	var ch *Challenge
	if verified != nil {
		// Made before the device is stored: a failure leaves nothing.
		if ch, err = s.challenge(d, verified); err != nil {
			return nil, nil, err
		}
	}
	// The device and its device.registered commit together: a key never
	// obtains device-bound tokens without its registration on record.
	ev := &model.Event{Type: model.EventDeviceRegistered, Actor: u.ID, UserID: u.ID, DeviceID: d.ID,
		Data: map[string]string{"jkt": d.JKT, "platform": d.Platform, "key_storage": d.KeyStorage, "trust_type": d.TrustType}}
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.store.CreateDevice(ectx, d); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, nil, ErrKeyInUse // lost a race with another registration of the key
		}
		return nil, nil, fmt.Errorf("device: create: %w", err)
	}
	s.log.InfoContext(ctx, "device registered", "device_id", d.ID, "user_id", d.UserID, "platform", d.Platform, "key_storage", d.KeyStorage,
		"attestation", verified != nil)
	return d, ch, s.events.Emit(ectx, ev)
}

// ParseDeviceKey checks that raw is a public EC P-256 JWK (kty, crv, x, y
// and optional kid, use, alg "ES256" only: no private member, no
// certificate) and returns its canonical form and RFC 7638 thumbprint.
func ParseDeviceKey(raw json.RawMessage) (json.RawMessage, string, error) {
	if len(raw) == 0 {
		return nil, "", errors.New("jwk is required")
	}
	if len(raw) > maxJWKLen {
		return nil, "", errors.New("jwk is too large")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, "", errors.New("jwk must be a JSON object")
	}
	str := func(k string) (string, bool) {
		v, ok := m[k]
		if !ok {
			return "", false
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		return s, true
	}
	for k := range m {
		switch k {
		case "kty", "crv", "x", "y", "kid", "use", "alg":
		case "d":
			return nil, "", errors.New("jwk must be a public key: it contains the private member d")
		default:
			return nil, "", fmt.Errorf("jwk member %q is not allowed", k)
		}
	}
	if kty, _ := str("kty"); kty != "EC" {
		return nil, "", errors.New(`jwk must be an EC key (kty "EC")`)
	}
	if crv, _ := str("crv"); crv != "P-256" {
		return nil, "", errors.New(`jwk must be on curve P-256`)
	}
	if alg, ok := str("alg"); ok && alg != "ES256" {
		return nil, "", errors.New(`jwk alg must be ES256`)
	} else if _, present := m["alg"]; present && !ok {
		return nil, "", errors.New(`jwk alg must be ES256`)
	}
	if use, ok := str("use"); ok && use != "sig" {
		return nil, "", errors.New(`jwk use must be sig`)
	}
	x, okx := str("x")
	y, oky := str("y")
	if !okx || !oky {
		return nil, "", errors.New("jwk x and y are required")
	}
	canon, err := json.Marshal(map[string]string{"kty": "EC", "crv": "P-256", "x": x, "y": y})
	if err != nil {
		return nil, "", err
	}
	jkt, err := thumbprint(canon)
	if err != nil {
		return nil, "", errors.New("jwk is not a valid P-256 public key")
	}
	return canon, jkt, nil
}

func checkToken(field, v string, required bool) error {
	if v == "" {
		if required {
			return fmt.Errorf("%s is required", field)
		}
		return nil
	}
	if len(v) > maxTokenLen {
		return fmt.Errorf("%s is longer than %d characters", field, maxTokenLen)
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("%s may contain only a-z, 0-9, '-' and '_'", field)
		}
	}
	return nil
}

func checkText(field, v string) error {
	if len(v) > maxTextLen {
		return fmt.Errorf("%s is longer than %d bytes", field, maxTextLen)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s contains a control or non-printable character", field)
		}
	}
	return nil
}

// Get returns a device.
func (s *Service) Get(ctx context.Context, id string) (*model.Device, error) {
	d, err := s.store.GetDevice(ctx, id)
	if err != nil {
		return nil, wrapNotFound(err, "device "+id)
	}
	return d, nil
}

// LookupByJKT returns the device whose key has thumbprint jkt, or an error
// wrapping ErrNotFound. The token endpoint uses it to mark sessions bound
// to a registered device's key as protected.
func (s *Service) LookupByJKT(ctx context.Context, jkt string) (*model.Device, error) {
	if jkt == "" {
		return nil, fmt.Errorf("device: empty key thumbprint: %w", ErrNotFound)
	}
	d, err := s.store.GetDeviceByJKT(ctx, jkt)
	if err != nil {
		return nil, wrapNotFound(err, "device key")
	}
	return d, nil
}

// Filter selects devices in List.
type Filter = store.DeviceFilter

// List returns devices matching f (default limit 100, at most 1000).
func (s *Service) List(ctx context.Context, f Filter) ([]*model.Device, error) {
	if f.Limit <= 0 {
		f.Limit = defaultListMax
	}
	f.Limit = min(f.Limit, 1000)
	if f.Status != "" && !ValidStatus(f.Status) {
		return nil, fmt.Errorf("%w: status must be %s, %s or %s", ErrInvalid, model.DeviceActive, model.DeviceDisabled, model.DeviceLost)
	}
	ds, err := s.store.ListDevices(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("device: list: %w", err)
	}
	return ds, nil
}

// ValidStatus reports whether st is a device status.
func ValidStatus(st string) bool {
	return st == model.DeviceActive || st == model.DeviceDisabled || st == model.DeviceLost
}

// Disable stops a device: its key no longer counts as a registered
// device's, its posture reports are refused, its compliance becomes
// noncompliant (rule device_status) and every session bound to it is
// revoked. A lost device stays lost. It publishes device.disabled (when
// the status changed; Data: previous_status, previous_compliance) and
// session.revoked for each session ended.
func (s *Service) Disable(ctx context.Context, actor, id string) (*model.Device, error) {
	return s.setStatus(ctx, actor, id, model.DeviceDisabled, model.EventDeviceDisabled, ReasonDeviceDisabled)
}

// MarkLost is Disable for a lost or stolen device; it publishes
// device.lost, which SIEM rules may treat as an incident.
func (s *Service) MarkLost(ctx context.Context, actor, id string) (*model.Device, error) {
	return s.setStatus(ctx, actor, id, model.DeviceLost, model.EventDeviceLost, ReasonDeviceLost)
}

func (s *Service) setStatus(ctx context.Context, actor, id, status string, typ model.EventType, cause model.RevocationCause) (*model.Device, error) {
	now := s.now()
	var prev string
	var changed bool
	// The event commits with the status change (and only with a change):
	// once that transaction committed, the device's key obtains no more
	// tokens, so the sessions revoked below, in a transaction of their
	// own, are a clean-up that a retry finishes. Their number is therefore
	// not in this event; each has its session.revoked.
	ev := &model.Event{Type: typ, Actor: actor, DeviceID: id, Reason: string(cause)}
	ectx := s.events.Pending(ctx, ev, func([]string) bool { return changed })
	d, err := s.store.UpdateDevice(ectx, id, func(d *model.Device) error {
		prev, changed = d.Status, false // fn may run again: start afresh
		ev.UserID, ev.DeviceID = d.UserID, d.ID
		ev.Data = map[string]string{"previous_status": prev, "previous_compliance": d.Compliance}
		// A lost device stays lost: disabling it would make it one that
		// Enable accepts.
		if d.Status == status || d.Status == model.DeviceLost {
			return nil
		}
		changed = true
		d.Status, d.UpdatedAt = status, now
		// Out of compliance with the status, in the same write: no reader
		// ever sees a lost or disabled device that is compliant.
		var fs []Failure
		d.Compliance, fs = s.evaluate(d, nil, nil, false, now)
		d.ComplianceFailures, d.ComplianceAt = encodeFailures(fs), now
		return nil
	})
	if err != nil {
		return nil, wrapNotFound(err, "device "+id)
	}
	// Revoke even when the status did not change: a retry after a failed
	// revocation must finish the job.
	sids, rerr := s.sessions.RevokeDevice(ctx, actor, id, d.UserID, cause)
	if changed {
		s.log.InfoContext(ctx, "device status changed", "actor", actor, "device_id", id, "from", prev, "to", status, "sessions_revoked", len(sids))
		if err := s.events.Emit(ectx, ev); err != nil {
			return nil, errors.Join(err, rerr)
		}
	}
	if rerr != nil {
		return nil, fmt.Errorf("device: %w", rerr)
	}
	return d, nil
}

// Enable makes a disabled device active again: its key counts as a
// registered device's and its reports are accepted, and its compliance is
// evaluated at once against its stored posture and the current policy
// (posture_stale when the posture is older than the grace period). The
// sessions ended when it was disabled stay ended: its agent signs in
// again. A lost device is refused with ErrLost (its key may have been
// copied while it was out of hand: delete it and enrol again); enabling an
// active device changes nothing. It publishes device.enabled (Data:
// previous_status, compliance) and, when the compliance state changed,
// device.compliance_changed, both committed with the change.
func (s *Service) Enable(ctx context.Context, actor, id string) (*model.Device, error) {
	cur, err := s.store.GetDevice(ctx, id)
	if err != nil {
		return nil, wrapNotFound(err, "device "+id)
	}
	switch cur.Status {
	case model.DeviceLost:
		return nil, ErrLost
	case model.DeviceActive:
		return cur, nil
	}
	rules, havePolicy, err := s.rulesFor(ctx, cur.Platform)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var prevCompliance string
	var enabled bool
	ev := &model.Event{Type: model.EventDeviceEnabled, Actor: actor, DeviceID: cur.ID, UserID: cur.UserID}
	cev := &model.Event{Type: model.EventDeviceComplianceChanged, Actor: actor}
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		switch {
		case !enabled:
			return nil
		case cev.Data["previous"] != cev.Data["compliance"]:
			return []*model.Event{ev, cev}
		}
		return []*model.Event{ev}
	})
	d, err := s.store.UpdateDevice(ectx, id, func(d *model.Device) error {
		enabled = false // fn may run again: start afresh
		switch d.Status {
		case model.DeviceLost:
			return ErrLost // marked lost meanwhile
		case model.DeviceActive:
			return nil
		}
		enabled, prevCompliance = true, d.Compliance
		ev.Data = map[string]string{"previous_status": d.Status}
		d.Status, d.UpdatedAt = model.DeviceActive, now
		st, fs := s.evaluate(d, storedPosture(d), rules, havePolicy, now)
		d.Compliance, d.ComplianceFailures, d.ComplianceAt = st, encodeFailures(fs), now
		ev.Data["compliance"] = st
		fillComplianceChanged(cev, d, prevCompliance, fs)
		return nil
	})
	if errors.Is(err, ErrLost) {
		return nil, ErrLost
	}
	if err != nil {
		return nil, wrapNotFound(err, "device "+id)
	}
	if !enabled {
		return d, nil
	}
	s.log.InfoContext(ctx, "device enabled", "actor", actor, "device_id", id, "compliance", d.Compliance)
	errs := []error{s.events.Emit(ectx, ev)}
	if prevCompliance != d.Compliance {
		errs = append(errs, s.publishComplianceChanged(ectx, cev, d, prevCompliance))
	}
	return d, errors.Join(errs...)
}

// Delete revokes every session bound to the device and deletes it; its key
// may then be registered again. It publishes session.revoked per session
// and device.deleted, which commits with the deletion.
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	d, err := s.store.GetDevice(ctx, id)
	if err != nil {
		return wrapNotFound(err, "device "+id)
	}
	sids, err := s.sessions.RevokeDevice(ctx, actor, id, d.UserID, ReasonDeviceDeleted)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	// The deletion and its device.deleted commit together (the sessions
	// were revoked, each with its record, before).
	ev := &model.Event{Type: model.EventDeviceDeleted, Actor: actor, UserID: d.UserID, DeviceID: d.ID,
		Reason: string(ReasonDeviceDeleted), Data: map[string]string{"jkt": d.JKT, "sessions_revoked": fmt.Sprint(len(sids))}}
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.store.DeleteDevice(ectx, id); err != nil {
		return wrapNotFound(err, "device "+id)
	}
	s.log.InfoContext(ctx, "device deleted", "actor", actor, "device_id", id, "sessions_revoked", len(sids))
	return s.events.Emit(ectx, ev)
}

func wrapNotFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("device: %s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("device: %s: %w", what, err)
}

// newID returns a random RFC 4122 version 4 UUID.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
