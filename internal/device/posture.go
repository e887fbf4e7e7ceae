package device

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/posture"
)

// Reasons a posture report is refused (PostureError.Reason, the Reason of
// device.posture_rejected events). Never rename one, only add.
const (
	ReasonForged         = "forged"          // bad signature, bad or expired nonce, not a report
	ReasonWrongKey       = "wrong_key"       // signed by a key other than the device's
	ReasonReplayed       = "replayed"        // this report was accepted before
	ReasonStale          = "stale"           // issued too long ago (or in the future)
	ReasonUnknownDevice  = "unknown_device"  // no such device
	ReasonDeviceInactive = "device_inactive" // the device is disabled or lost
	ReasonMalformed      = "malformed"       // unreadable or invalid content
)

// PostureError is a refused posture report. Message is safe to show to
// the agent; Reason is stable.
type PostureError struct {
	Reason  string
	Message string
	Err     error // cause, for logs
}

func (e *PostureError) Error() string {
	return "posture report refused (" + e.Reason + "): " + e.Message
}
func (e *PostureError) Unwrap() error { return e.Err }

// PostureReason returns the Reason of a *PostureError in err's chain, or "".
func PostureReason(err error) string {
	if pe, ok := errors.AsType[*PostureError](err); ok {
		return pe.Reason
	}
	return ""
}

// errInactive aborts an update of a device that is no longer active.
var errInactive = errors.New("device inactive")

// Nonce returns a posture nonce for the agent to put in its next report.
// Nonces are stateless (timestamp + HMAC), valid for ReportMaxAge, and
// accepted by every instance sharing the nonce key.
func (s *Service) Nonce() string { return s.nonces.Nonce() }

// SubmitPosture verifies a signed posture report of an active device
// (signature by the device key, a valid nonce, issued within
// ReportMaxAge, never seen before), stores the posture and re-evaluates
// compliance. It publishes device.posture_reported and, when the
// compliance state changed, device.compliance_changed; a refused report
// publishes device.posture_rejected and returns a *PostureError.
func (s *Service) SubmitPosture(ctx context.Context, deviceID, report string) (*model.Device, error) {
	d, err := s.submit(ctx, deviceID, report)
	if pe, ok := errors.AsType[*PostureError](err); ok {
		ev := &model.Event{Type: model.EventDevicePostureRejected, Actor: deviceActor(d), DeviceID: truncate(deviceID, 64),
			Outcome: model.OutcomeFailure, Reason: pe.Reason}
		if d != nil {
			ev.UserID = d.UserID
		}
		s.log.WarnContext(ctx, "posture report refused", "device_id", ev.DeviceID, "reason", pe.Reason, "err", pe.Err)
		if perr := s.events.Emit(ctx, ev); perr != nil {
			return nil, errors.Join(err, perr)
		}
		return nil, err
	}
	return d, err
}

func deviceActor(d *model.Device) string {
	if d == nil {
		return "anonymous"
	}
	return d.UserID
}

func (s *Service) submit(ctx context.Context, deviceID, report string) (*model.Device, error) {
	d, err := s.store.GetDevice(ctx, deviceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &PostureError{Reason: ReasonUnknownDevice, Message: "no such device"}
	} else if err != nil {
		return nil, fmt.Errorf("device: get %s: %w", deviceID, err)
	}
	if d.Status != model.DeviceActive {
		return d, &PostureError{Reason: ReasonDeviceInactive, Message: "the device is " + d.Status}
	}
	now := s.now()
	// The nonce proves freshness (stateless, shared by every device for a
	// while); the jti recorded below makes each report single-use.
	rep, err := posture.ParseReport(report, posture.VerifyOptions{JKT: d.JKT, Now: func() time.Time { return now },
		MaxAge: s.maxAge, CheckNonce: s.nonces.Check})
	if err != nil {
		return d, classifyReportError(err)
	}
	// sub is the device id, or the key thumbprint for a report made before
	// the id was known (sent with the registration).
	if rep.DeviceID != d.ID && rep.DeviceID != d.JKT {
		return d, &PostureError{Reason: ReasonWrongKey, Message: "the report is for another device"}
	}
	p := &rep.Posture
	if p.Platform != "" && !strings.EqualFold(p.Platform, d.Platform) {
		return d, &PostureError{Reason: ReasonMalformed, Message: fmt.Sprintf("the report is for platform %q, the device is registered as %q", truncate(p.Platform, 32), d.Platform)}
	}
	p.Normalize()
	// One-time: the same signed report (jti) is accepted once, across
	// instances. Recorded only after the signature verified, so that
	// garbage cannot fill the table.
	if err := s.store.RecordJTI(ctx, replayKey(d.ID, rep.Nonce, rep.JTI), now.Add(2*s.maxAge+time.Minute)); err != nil {
		if errors.Is(err, store.ErrReplay) {
			return d, &PostureError{Reason: ReasonReplayed, Message: "this report was already submitted", Err: err}
		}
		return d, fmt.Errorf("device: record report: %w", err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return d, &PostureError{Reason: ReasonMalformed, Message: "the posture cannot be stored", Err: err}
	}
	collected := p.CollectedAt
	if collected.IsZero() || collected.After(now) {
		collected = now
	}
	rules, havePolicy, err := s.rulesFor(ctx, d.Platform)
	if err != nil {
		return d, err
	}
	var prev, after string
	var fs []Failure
	// device.posture_reported, and device.compliance_changed when the
	// report changes the compliance state, commit with the update.
	pev := &model.Event{Type: model.EventDevicePostureReported, Actor: d.UserID, UserID: d.UserID, DeviceID: d.ID, TokenID: rep.JTI}
	cev := &model.Event{Type: model.EventDeviceComplianceChanged, Actor: d.UserID}
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		pev.Data = map[string]string{"compliance": after, "failing_rules": ruleNames(fs, false),
			"undecided_rules": ruleNames(fs, true), "collected_at": collected.UTC().Format(time.RFC3339)}
		if prev != after {
			return []*model.Event{pev, cev}
		}
		return []*model.Event{pev}
	})
	d, err = s.store.UpdateDevice(ectx, d.ID, func(d *model.Device) error {
		if d.Status != model.DeviceActive {
			return errInactive
		}
		prev = d.Compliance
		d.Posture, d.PostureAt, d.LastSeen, d.UpdatedAt = body, collected, now, now
		if p.OSName != "" {
			d.OSName = p.OSName
		}
		if p.OSVersion != "" {
			d.OSVersion = p.OSVersion
		}
		if p.Hostname != "" {
			d.Hostname = p.Hostname
		}
		var st string
		st, fs = s.evaluate(d, p, rules, havePolicy, now)
		d.Compliance, d.ComplianceFailures, d.ComplianceAt = st, encodeFailures(fs), now
		after = d.Compliance
		fillComplianceChanged(cev, d, prev, fs)
		return nil
	})
	switch {
	case errors.Is(err, errInactive):
		return nil, &PostureError{Reason: ReasonDeviceInactive, Message: "the device is no longer active"}
	case errors.Is(err, store.ErrNotFound):
		return nil, &PostureError{Reason: ReasonUnknownDevice, Message: "no such device"}
	case err != nil:
		return nil, fmt.Errorf("device: store posture: %w", err)
	}
	s.log.InfoContext(ctx, "posture reported", "device_id", d.ID, "compliance", d.Compliance)
	errs := []error{s.events.Emit(ectx, pev)}
	if prev != d.Compliance {
		errs = append(errs, s.publishComplianceChanged(ectx, cev, d, prev))
	}
	return d, errors.Join(errs...)
}

func replayKey(deviceID, nonce, jti string) string {
	h := sha256.Sum256([]byte(deviceID + "\x00" + nonce + "\x00" + jti))
	return "posture:" + base64.RawURLEncoding.EncodeToString(h[:])
}

// classifyReportError maps a ParseReport error to a PostureError.
func classifyReportError(err error) error {
	switch posture.ReasonOf(err) {
	case posture.ReasonKeyMismatch, posture.ReasonSubject:
		return &PostureError{Reason: ReasonWrongKey, Message: "the report is not signed by this device's key", Err: err}
	case posture.ReasonSignature, posture.ReasonAlg:
		return &PostureError{Reason: ReasonForged, Message: "the report's signature is invalid", Err: err}
	case posture.ReasonExpired, posture.ReasonStale, posture.ReasonFuture:
		return &PostureError{Reason: ReasonStale, Message: "the report is too old or dated in the future; collect and sign a new one", Err: err}
	case posture.ReasonNonce:
		return &PostureError{Reason: ReasonStale, Message: "the report's nonce is invalid or expired; fetch a fresh nonce (GET /devices/nonce) and sign again", Err: err}
	case posture.ReasonConfig, "":
		return fmt.Errorf("device: verify report: %w", err)
	}
	return &PostureError{Reason: ReasonMalformed, Message: "the report is not a valid posture report", Err: err}
}

// fillComplianceChanged completes the device.compliance_changed event ev
// of an update that evaluated d (compliance prev before). It runs inside
// the update function, so the event commits with the update.
func fillComplianceChanged(ev *model.Event, d *model.Device, prev string, fs []Failure) {
	ev.UserID, ev.DeviceID, ev.Reason = d.UserID, d.ID, d.Compliance
	ev.Data = map[string]string{"previous": prev, "compliance": d.Compliance,
		"failing_rules": ruleNames(fs, false), "undecided_rules": ruleNames(fs, true)}
}

// publishComplianceChanged publishes ev (fillComplianceChanged) with the
// context of the update that committed it.
func (s *Service) publishComplianceChanged(ctx context.Context, ev *model.Event, d *model.Device, prev string) error {
	s.log.InfoContext(ctx, "device compliance changed", "device_id", d.ID, "from", prev, "to", d.Compliance)
	return s.events.Emit(ctx, ev)
}

// evaluate decides a device's compliance from its posture p (nil: none),
// the rules of the policy that applies (havePolicy false: none) and the
// posture grace period.
func (s *Service) evaluate(d *model.Device, p *posture.Posture, rules *Rules, havePolicy bool, now time.Time) (string, []Failure) {
	if d.Status != model.DeviceActive {
		// A disabled or lost device is out of compliance whatever its last
		// posture said: nothing may present it as compliant (lists, the
		// admin API, Conditional Access filters, SETs).
		return model.NonCompliant, []Failure{statusFailure(d.Status)}
	}
	var fs []Failure
	last := d.PostureAt
	if p == nil || last.IsZero() {
		last = d.CreatedAt
	}
	if now.Sub(last) > s.grace {
		detail := "no posture report since the device was registered on " + d.CreatedAt.UTC().Format(time.RFC3339)
		if p != nil {
			detail = "the latest posture report is from " + d.PostureAt.UTC().Format(time.RFC3339)
		}
		fs = append(fs, Failure{Rule: RulePostureStale, Detail: fmt.Sprintf("%s, longer ago than the allowed %s", detail, s.grace),
			Fix: "Make sure the Ward agent is installed, running and able to reach Ward; it reports the device's posture regularly."})
	}
	if p == nil {
		fs = append(fs, Failure{Rule: RuleNoPosture, Unknown: true, Detail: "no posture report has been received from this device yet",
			Fix: "Run the Ward agent on the device so that it reports its posture."})
	}
	if !havePolicy {
		fs = append(fs, Failure{Rule: RuleNoPolicy, Unknown: true,
			Detail: fmt.Sprintf("no compliance policy applies to platform %q", d.Platform),
			Fix:    fmt.Sprintf("An administrator defines a compliance policy for %q or for all platforms (\"*\"), e.g. `ward compliance set --platform %s -f rules.json`.", d.Platform, d.Platform)})
	} else {
		if p != nil {
			_, more := Evaluate(rules, p, d.PostureAt, now)
			fs = append(fs, more...)
		}
		// Decided by what Ward verified at registration, report or not.
		fs = append(fs, EvaluateKey(rules, d.KeyAttested, d.KeyStorage)...)
	}
	return stateOf(fs), fs
}

// statusFailure is the failure of a device that is not active.
func statusFailure(status string) Failure {
	if status == model.DeviceLost {
		return Failure{Rule: RuleDeviceStatus, Detail: "the device is marked lost or stolen",
			Fix: "A lost device is not enabled again: delete it (ward device delete) and enrol the device again (ward device enroll --force)."}
	}
	return Failure{Rule: RuleDeviceStatus, Detail: "the device is " + status,
		Fix: "An administrator enables the device again (ward device enable) when it may be used; its agent then signs in again."}
}

// storedPosture decodes a device's stored posture (nil if none or
// unreadable).
func storedPosture(d *model.Device) *posture.Posture {
	if len(d.Posture) == 0 || d.PostureAt.IsZero() {
		return nil
	}
	var p posture.Posture
	if err := json.Unmarshal(d.Posture, &p); err != nil {
		return nil
	}
	p.Normalize()
	return &p
}
