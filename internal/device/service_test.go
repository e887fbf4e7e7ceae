package device

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/posture"
)

type env struct {
	t     *testing.T
	ctx   context.Context
	clock *clock.Fake
	st    store.Store
	rec   *bus.Recorder
	svc   *Service
	alice string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	c := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), sqlite.WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvOn(t, st, c)
}

// newEnvOn is newEnv on the store st, whose clock is c.
func newEnvOn(t *testing.T, st store.Store, c *clock.Fake) *env {
	t.Helper()
	ctx := context.Background()
	b := bus.NewLocal()
	rec := &bus.Recorder{}
	b.Subscribe("rec", rec.Handle)
	sessions := session.New(session.Options{Store: st, Bus: b, Now: c.Now})
	svc := New(Options{Store: st, Bus: b, Now: c.Now, NonceKey: bytes.Repeat([]byte{7}, 32), Sessions: sessions})
	e := &env{t: t, ctx: ctx, clock: c, st: st, rec: rec, svc: svc}
	e.alice = e.user("alice")
	return e
}

func (e *env) user(name string) string {
	e.t.Helper()
	u := &model.User{ID: newID(), Username: name, Roles: []string{}, CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now()}
	if err := e.st.CreateUser(e.ctx, u); err != nil {
		e.t.Fatal(err)
	}
	return u.ID
}

// deviceKey is a device's P-256 key with its public JWK.
type deviceKey struct {
	priv *ecdsa.PrivateKey
	jwk  json.RawMessage
	jkt  string
}

func newKey(t testing.TB) *deviceKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	j := s.PublicJWK()
	raw, err := j.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return &deviceKey{priv: k, jwk: raw, jkt: s.Thumbprint()}
}

func (e *env) register(k *deviceKey) *model.Device {
	e.t.Helper()
	d, err := e.svc.Register(e.ctx, e.alice, Registration{PublicJWK: k.jwk, KeyStorage: "tpm", Platform: "linux",
		OSName: "Debian GNU/Linux", OSVersion: "12", Hostname: "alice-laptop", AgentVersion: "0.1.0"})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// report signs p (collected now) for the device with key k over a fresh
// nonce.
func (e *env) report(k *deviceKey, deviceID string, p *posture.Posture) string {
	e.t.Helper()
	cp := *p
	cp.CollectedAt = e.clock.Now()
	r, err := posture.SignReport(k.priv, &cp, deviceID, e.svc.Nonce(), e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) putPolicy(platform string, rules string) {
	e.t.Helper()
	if _, err := e.svc.PutPolicy(e.ctx, "admin-1", platform, []byte(rules)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) count(typ model.EventType) int {
	n := 0
	for _, ev := range e.rec.Events() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func (e *env) last(typ model.EventType) model.Event {
	e.t.Helper()
	evs := e.rec.Events()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i]
		}
	}
	e.t.Fatalf("no %s event", typ)
	return model.Event{}
}

func rulesOf(fs []Failure) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Rule)
	}
	return out
}

func TestRegister(t *testing.T) {
	e := newEnv(t)
	k := newKey(t)
	d := e.register(k)
	if d.JKT != k.jkt || d.Status != model.DeviceActive || d.Compliance != model.ComplianceUnknown || d.UserID != e.alice ||
		d.TrustType != model.TrustRegistered || d.Platform != "linux" || d.KeyStorage != "tpm" {
		t.Fatalf("registered %+v", d)
	}
	if got := rulesOf(DecodeFailures(d)); strings.Join(got, ",") != "no_posture,no_policy" {
		t.Errorf("initial failures %v", got)
	}
	ev := e.last(model.EventDeviceRegistered)
	if ev.DeviceID != d.ID || ev.UserID != e.alice || ev.Data["jkt"] != k.jkt || ev.Code() != "W8000I" {
		t.Errorf("event %+v", ev)
	}
	if got, err := e.svc.LookupByJKT(e.ctx, k.jkt); err != nil || got.ID != d.ID {
		t.Fatalf("LookupByJKT = %v, %v", got, err)
	}
	if _, err := e.svc.LookupByJKT(e.ctx, "nope"); !errors.Is(err, ErrNotFound) || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LookupByJKT(unknown) = %v", err)
	}

	// The same key again, by anyone: ErrKeyInUse, and nothing changes.
	bob := e.user("bob")
	events := len(e.rec.Events())
	for _, uid := range []string{e.alice, bob} {
		if _, err := e.svc.Register(e.ctx, uid, Registration{PublicJWK: k.jwk, Platform: "darwin"}); !errors.Is(err, ErrKeyInUse) {
			t.Fatalf("duplicate key for %s: %v, want ErrKeyInUse", uid, err)
		}
	}
	if len(e.rec.Events()) != events {
		t.Error("a refused registration published an event")
	}
	ds, err := e.svc.List(e.ctx, Filter{})
	if err != nil || len(ds) != 1 || ds[0].Platform != "linux" || ds[0].UserID != e.alice {
		t.Fatalf("devices after duplicate: %v %v", ds, err)
	}

	// Key validation.
	priv := newKey(t)
	var m map[string]any
	json.Unmarshal(priv.jwk, &m)
	m["d"] = "AAAA"
	withD, _ := json.Marshal(m)
	for name, jwk := range map[string]string{
		"private":     string(withD),
		"rsa":         `{"kty":"RSA","n":"AQAB","e":"AQAB"}`,
		"p-384":       `{"kty":"EC","crv":"P-384","x":"AAAA","y":"AAAA"}`,
		"off curve":   `{"kty":"EC","crv":"P-256","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`,
		"symmetric":   `{"kty":"oct","k":"AAAA"}`,
		"certificate": strings.Replace(string(k.jwk), `{`, `{"x5c":["AAAA"],`, 1),
		"not json":    `{`,
		"empty":       ``,
	} {
		_, err := e.svc.Register(e.ctx, e.alice, Registration{PublicJWK: json.RawMessage(jwk), Platform: "linux"})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s key: %v, want ErrInvalid", name, err)
		}
	}
	// Every field problem at once.
	_, err = e.svc.Register(e.ctx, e.alice, Registration{PublicJWK: newKey(t).jwk, Platform: "Linux OS", Hostname: "a\x00b", TrustType: "owned"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "platform") || !strings.Contains(err.Error(), "hostname") ||
		!strings.Contains(err.Error(), "trust_type") {
		t.Errorf("invalid fields: %v", err)
	}
	if _, err := e.svc.Register(e.ctx, "no-such-user", Registration{PublicJWK: newKey(t).jwk, Platform: "linux"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
}

func TestSubmitPosture(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("linux", `{"require_disk_encryption": true, "require_firewall": true, "min_os_version": "12"}`)
	k := newKey(t)
	d := e.register(k)
	healthy := fixture(t)

	// Fresh report: compliant.
	rep := e.report(k, d.ID, healthy)
	got, err := e.svc.SubmitPosture(e.ctx, d.ID, rep)
	if err != nil {
		t.Fatal(err)
	}
	if got.Compliance != model.Compliant || len(DecodeFailures(got)) != 0 || !got.PostureAt.Equal(e.clock.Now()) || !got.LastSeen.Equal(e.clock.Now()) {
		t.Fatalf("after healthy report: %s %s", got.Compliance, got.ComplianceFailures)
	}
	var stored posture.Posture
	if err := json.Unmarshal(got.Posture, &stored); err != nil || stored.DiskEncrypted != posture.Yes || stored.Hostname != "alice-laptop" {
		t.Fatalf("stored posture %s: %v", got.Posture, err)
	}
	ch := e.last(model.EventDeviceComplianceChanged)
	if ch.Data["previous"] != model.ComplianceUnknown || ch.Data["compliance"] != model.Compliant || ch.DeviceID != d.ID {
		t.Errorf("compliance_changed %+v", ch)
	}
	if e.count(model.EventDevicePostureReported) != 1 {
		t.Error("no posture_reported event")
	}

	// The same report again: replayed, nothing stored.
	e.clock.Advance(time.Second)
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, rep); PostureReason(err) != ReasonReplayed {
		t.Fatalf("replay: %v", err)
	}
	if ev := e.last(model.EventDevicePostureRejected); ev.Reason != ReasonReplayed || ev.Outcome != model.OutcomeFailure || ev.DeviceID != d.ID {
		t.Errorf("rejection event %+v", ev)
	}

	// Stale: signed 6 minutes ago (the nonce is still valid).
	old := e.report(k, d.ID, healthy)
	e.clock.Advance(6 * time.Minute)
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, old); PostureReason(err) != ReasonStale {
		t.Fatalf("stale: %v", err)
	}

	// Forged: the signature does not verify.
	good := e.report(k, d.ID, healthy)
	parts := strings.Split(good, ".")
	// Change one base64url character to another base64url character (an
	// XOR could produce '.' or a non-alphabet byte: a malformed token, not
	// a forged signature).
	sig := []byte(parts[2])
	if sig[3] == 'A' {
		sig[3] = 'B'
	} else {
		sig[3] = 'A'
	}
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, parts[0]+"."+parts[1]+"."+string(sig)); PostureReason(err) != ReasonForged {
		t.Fatalf("bad signature: %v", err)
	}
	// Forged: a nonce Ward did not issue.
	cp := *healthy
	cp.CollectedAt = e.clock.Now()
	bad, _ := posture.SignReport(k.priv, &cp, d.ID, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", e.clock.Now())
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, bad); PostureReason(err) != ReasonStale {
		t.Fatalf("foreign nonce: %v", err)
	}
	// Another device's key, for this device: wrong_key.
	k2 := newKey(t)
	d2 := e.register(k2)
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k2, d.ID, healthy)); PostureReason(err) != ReasonWrongKey {
		t.Fatalf("other device's key: %v", err)
	}
	// This device's key, report for the other device.
	if _, err := e.svc.SubmitPosture(e.ctx, d2.ID, e.report(k, d2.ID, healthy)); PostureReason(err) != ReasonWrongKey {
		t.Fatalf("report for another device: %v", err)
	}
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d2.ID, healthy)); PostureReason(err) != ReasonWrongKey {
		t.Fatalf("report naming another device: %v", err)
	}
	for _, junk := range []string{"", "a.b.c", "not a jws", strings.Repeat("a", 70000)} {
		if _, err := e.svc.SubmitPosture(e.ctx, d.ID, junk); PostureReason(err) != ReasonMalformed {
			t.Errorf("junk %.10q: %v", junk, err)
		}
	}
	if _, err := e.svc.SubmitPosture(e.ctx, "no-such-device", good); PostureReason(err) != ReasonUnknownDevice {
		t.Errorf("unknown device: %v", err)
	}
	// The refusals changed nothing.
	now, err := e.svc.Get(e.ctx, d.ID)
	if err != nil || now.Compliance != model.Compliant || !now.PostureAt.Equal(got.PostureAt) {
		t.Fatalf("after refusals: %+v %v", now, err)
	}

	// The fixture flips: disk encryption "no" names the failing rule.
	flipped := *healthy
	flipped.DiskEncrypted = posture.No
	flipped.Evidence = map[string]string{posture.FieldDiskEncrypted: "root on /dev/sda2 (ext4), no dm-crypt"}
	got, err = e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, &flipped))
	if err != nil {
		t.Fatal(err)
	}
	fs := DecodeFailures(got)
	if got.Compliance != model.NonCompliant || len(fs) != 1 || fs[0].Rule != RuleDiskEncryption || fs[0].Unknown ||
		!strings.Contains(fs[0].Detail, "no dm-crypt") || !strings.Contains(fs[0].Fix, "LUKS") {
		t.Fatalf("flipped: %s %s", got.Compliance, got.ComplianceFailures)
	}
	ch = e.last(model.EventDeviceComplianceChanged)
	if ch.Data["previous"] != model.Compliant || ch.Data["compliance"] != model.NonCompliant || ch.Data["failing_rules"] != RuleDiskEncryption {
		t.Errorf("compliance_changed %+v", ch.Data)
	}
	// Unknown firewall on top: still noncompliant, both listed.
	flipped.FirewallEnabled = posture.Unknown
	got, _ = e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, &flipped))
	if got.Compliance != model.NonCompliant || strings.Join(rulesOf(DecodeFailures(got)), ",") != "require_disk_encryption,require_firewall" {
		t.Fatalf("fail + unknown: %s %s", got.Compliance, got.ComplianceFailures)
	}
	// Fixed disk, firewall still unknown: unknown.
	flipped.DiskEncrypted = posture.Yes
	changes := e.count(model.EventDeviceComplianceChanged)
	got, _ = e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, &flipped))
	if got.Compliance != model.ComplianceUnknown || e.count(model.EventDeviceComplianceChanged) != changes+1 {
		t.Fatalf("unknown only: %s", got.Compliance)
	}
	// Same state again: a posture_reported event, no compliance_changed.
	changes = e.count(model.EventDeviceComplianceChanged)
	e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, &flipped))
	if e.count(model.EventDeviceComplianceChanged) != changes {
		t.Error("compliance_changed without a change")
	}

	// A report for another platform is refused.
	mac := *healthy
	mac.Platform = "darwin"
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, &mac)); PostureReason(err) != ReasonMalformed {
		t.Errorf("platform mismatch: %v", err)
	}

	// A report for the registration (sub = key thumbprint) is accepted.
	if _, err := e.svc.SubmitPosture(e.ctx, d2.ID, e.report(k2, k2.jkt, healthy)); err != nil {
		t.Errorf("report with sub = jkt: %v", err)
	}
}

func TestPolicies(t *testing.T) {
	e := newEnv(t)
	k := newKey(t)
	d := e.register(k)
	flipped := *fixture(t)
	flipped.DiskEncrypted = posture.No
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, &flipped)); err != nil {
		t.Fatal(err)
	}
	d, _ = e.svc.Get(e.ctx, d.ID)
	if d.Compliance != model.ComplianceUnknown || rulesOf(DecodeFailures(d))[0] != RuleNoPolicy {
		t.Fatalf("without a policy: %s %s", d.Compliance, d.ComplianceFailures)
	}

	// A "*" policy applies at once (eager re-evaluation).
	e.putPolicy("*", `{"require_firewall": true}`)
	if d, _ = e.svc.Get(e.ctx, d.ID); d.Compliance != model.Compliant {
		t.Fatalf("with * policy: %s %s", d.Compliance, d.ComplianceFailures)
	}
	ev := e.last(model.EventCompliancePolicyChanged)
	if ev.Actor != "admin-1" || ev.Data["platform"] != "*" || ev.Data["change"] != "created" || ev.Code() != "W8100I" {
		t.Errorf("policy event %+v", ev)
	}
	// A platform policy takes precedence over "*".
	e.putPolicy("LINUX", `{"require_disk_encryption": true}`)
	if d, _ = e.svc.Get(e.ctx, d.ID); d.Compliance != model.NonCompliant {
		t.Fatalf("with linux policy: %s", d.Compliance)
	}
	if ev := e.last(model.EventDeviceComplianceChanged); ev.Actor != "admin-1" || ev.Data["failing_rules"] != RuleDiskEncryption {
		t.Errorf("compliance change after policy: %+v", ev)
	}
	e.putPolicy("linux", `{"require_disk_encryption": false}`)
	if ev := e.last(model.EventCompliancePolicyChanged); ev.Data["change"] != "updated" || ev.Data["rules"] != `{}` {
		t.Errorf("update event %+v", ev.Data)
	}
	p, err := e.svc.GetPolicy(e.ctx, "linux")
	if err != nil || string(p.Rules) != `{}` {
		t.Fatalf("GetPolicy = %+v, %v", p, err)
	}
	ps, err := e.svc.ListPolicies(e.ctx)
	if err != nil || len(ps) != 2 {
		t.Fatalf("ListPolicies = %v, %v", ps, err)
	}
	// Deleting the platform policy falls back to "*".
	e.putPolicy("linux", `{"require_disk_encryption": true}`)
	if err := e.svc.DeletePolicy(e.ctx, "admin-1", "linux"); err != nil {
		t.Fatal(err)
	}
	if d, _ = e.svc.Get(e.ctx, d.ID); d.Compliance != model.Compliant {
		t.Fatalf("after delete: %s", d.Compliance)
	}
	if err := e.svc.DeletePolicy(e.ctx, "admin-1", "linux"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete again: %v", err)
	}
	// Invalid rules: every problem, nothing stored.
	_, err = e.svc.PutPolicy(e.ctx, "admin-1", "linux", []byte(`{"require_tpm": true, "min_os_version": 12}`))
	var re *RulesError
	if !errors.As(err, &re) || len(re.Problems) != 2 {
		t.Fatalf("invalid rules: %v", err)
	}
	if _, err := e.svc.GetPolicy(e.ctx, "linux"); !errors.Is(err, ErrNotFound) {
		t.Errorf("invalid policy stored: %v", err)
	}
	for _, bad := range []string{"", "linux os", "*linux", strings.Repeat("x", 40)} {
		if _, err := e.svc.PutPolicy(e.ctx, "admin-1", bad, []byte(`{}`)); !errors.Is(err, ErrInvalid) {
			t.Errorf("platform %q: %v", bad, err)
		}
	}
}

func TestSweepStale(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("*", `{"require_disk_encryption": true, "max_posture_age_hours": 2}`)
	k := newKey(t)
	d := e.register(k)
	silent := e.register(newKey(t)) // never reports
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, fixture(t))); err != nil {
		t.Fatal(err)
	}
	if n, err := e.svc.SweepStale(e.ctx); err != nil || n != 0 {
		t.Fatalf("sweep right away: %d, %v", n, err)
	}
	// 3 h later the policy's max_posture_age_hours fails.
	e.clock.Advance(3 * time.Hour)
	if n, err := e.svc.SweepStale(e.ctx); err != nil || n != 1 {
		t.Fatalf("sweep after 3h: %d, %v", n, err)
	}
	got, _ := e.svc.Get(e.ctx, d.ID)
	if got.Compliance != model.NonCompliant || strings.Join(rulesOf(DecodeFailures(got)), ",") != RuleMaxPostureAge {
		t.Fatalf("after 3h: %s %s", got.Compliance, got.ComplianceFailures)
	}
	if ev := e.last(model.EventDeviceComplianceChanged); ev.Actor != ActorSystem || ev.DeviceID != d.ID {
		t.Errorf("sweep event %+v", ev)
	}
	// Past the 24 h grace both devices are stale.
	e.clock.Advance(22 * time.Hour)
	if n, err := e.svc.SweepStale(e.ctx); err != nil || n != 2 {
		t.Fatalf("sweep after 25h: %d, %v", n, err)
	}
	for _, id := range []string{d.ID, silent.ID} {
		got, _ := e.svc.Get(e.ctx, id)
		if fs := DecodeFailures(got); got.Compliance != model.NonCompliant || fs[0].Rule != RulePostureStale || fs[0].Fix == "" {
			t.Errorf("%s after grace: %s %s", id, got.Compliance, got.ComplianceFailures)
		}
	}
	// Nothing changes on the next round.
	if n, err := e.svc.SweepStale(e.ctx); err != nil || n != 0 {
		t.Errorf("idle sweep: %d, %v", n, err)
	}
	// A fresh report brings the device back.
	got, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, fixture(t)))
	if err != nil || got.Compliance != model.Compliant {
		t.Fatalf("fresh report: %v %v", got, err)
	}
}

func TestDisableLostDelete(t *testing.T) {
	e := newEnv(t)
	k := newKey(t)
	d := e.register(k)
	other := e.register(newKey(t))
	now := e.clock.Now()
	// Two sessions bound to d, one to the other device, one unbound.
	sess := func(deviceID string) string {
		s := &model.Session{ID: newID(), UserID: e.alice, AuthTime: now, AMR: []string{"pwd"}, CreatedAt: now, LastSeen: now,
			ExpiresAt: now.Add(24 * time.Hour), IdleTimeout: time.Hour}
		if err := e.st.CreateSession(e.ctx, s); err != nil {
			t.Fatal(err)
		}
		h := []byte(newID())
		if err := e.st.CreateRefreshToken(e.ctx, &model.RefreshToken{Hash: h, SessionID: s.ID, ClientID: "agent", UserID: e.alice,
			JKT: "x", DeviceID: deviceID, AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	s1, s2, s3, s4 := sess(d.ID), sess(d.ID), sess(other.ID), sess("")

	got, err := e.svc.Disable(e.ctx, "admin-1", d.ID)
	if err != nil || got.Status != model.DeviceDisabled {
		t.Fatalf("Disable = %v, %v", got, err)
	}
	for id, revoked := range map[string]bool{s1: true, s2: true, s3: false, s4: false} {
		s, _ := e.st.GetSession(e.ctx, id)
		if !s.RevokedAt.IsZero() != revoked {
			t.Errorf("session %s revoked=%v, want %v", id, !s.RevokedAt.IsZero(), revoked)
		}
		if revoked && s.RevokeCause != string(ReasonDeviceDisabled) {
			t.Errorf("cause %q", s.RevokeCause)
		}
	}
	var revokedEvents []string
	for _, ev := range e.rec.Events() {
		if ev.Type == model.EventSessionRevoked {
			revokedEvents = append(revokedEvents, ev.SessionID)
			if ev.Reason != string(ReasonDeviceDisabled) || ev.Actor != "admin-1" || ev.DeviceID != d.ID {
				t.Errorf("session.revoked %+v", ev)
			}
		}
	}
	if len(revokedEvents) != 2 {
		t.Errorf("session.revoked for %v", revokedEvents)
	}
	// The event commits with the status change, before the sessions are
	// revoked: their number is in the session.revoked events, not in it.
	if ev := e.last(model.EventDeviceDisabled); ev.DeviceID != d.ID || ev.Data["previous_status"] != model.DeviceActive || ev.Actor != "admin-1" {
		t.Errorf("device.disabled %+v", ev)
	}
	// A disabled device's reports are refused.
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, fixture(t))); PostureReason(err) != ReasonDeviceInactive {
		t.Errorf("report of a disabled device: %v", err)
	}
	// Disabling again changes nothing and records nothing.
	n := len(e.rec.Events())
	if _, err := e.svc.Disable(e.ctx, "admin-1", d.ID); err != nil || len(e.rec.Events()) != n {
		t.Errorf("disable again: %v, %d new events", err, len(e.rec.Events())-n)
	}

	got, err = e.svc.MarkLost(e.ctx, "admin-1", other.ID)
	if err != nil || got.Status != model.DeviceLost {
		t.Fatalf("MarkLost = %v, %v", got, err)
	}
	if s, _ := e.st.GetSession(e.ctx, s3); s.RevokeCause != string(ReasonDeviceLost) {
		t.Errorf("lost device session cause %q", s.RevokeCause)
	}
	if ev := e.last(model.EventDeviceLost); ev.DeviceID != other.ID || ev.Code() != "W8002W" {
		t.Errorf("device.lost %+v", ev)
	}
	if ds, _ := e.svc.List(e.ctx, Filter{Status: model.DeviceLost}); len(ds) != 1 || ds[0].ID != other.ID {
		t.Errorf("List(lost) = %v", ds)
	}

	if err := e.svc.Delete(e.ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(e.ctx, d.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if ev := e.last(model.EventDeviceDeleted); ev.DeviceID != d.ID {
		t.Errorf("device.deleted %+v", ev)
	}
	// The key may be registered again.
	if _, err := e.svc.Register(e.ctx, e.alice, Registration{PublicJWK: k.jwk, Platform: "linux"}); err != nil {
		t.Errorf("re-register after delete: %v", err)
	}
	for _, op := range []func() error{
		func() error { _, err := e.svc.Disable(e.ctx, "a", "nope"); return err },
		func() error { _, err := e.svc.MarkLost(e.ctx, "a", "nope"); return err },
		func() error { return e.svc.Delete(e.ctx, "a", "nope") },
	} {
		if err := op(); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown device: %v", err)
		}
	}
}

// A report is accepted once even when submitted concurrently.
func TestSubmitPostureConcurrentReplay(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("*", `{}`)
	k := newKey(t)
	d := e.register(k)
	rep := e.report(k, d.ID, fixture(t))
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			if _, err := e.svc.SubmitPosture(e.ctx, d.ID, rep); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if PostureReason(err) != ReasonReplayed {
				t.Errorf("concurrent submit: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d submissions accepted, want 1", ok)
	}
}

// A disabled or lost device is noncompliant from the write that changes
// its status, naming the status, whatever its posture said; the sweep
// leaves it so, and a lost device stays lost when it is disabled.
func TestInactiveDeviceIsNoncompliant(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("*", `{}`)
	k := newKey(t)
	d := e.register(k)
	if got, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, fixture(t))); err != nil || got.Compliance != model.Compliant {
		t.Fatalf("report: %v %v", got, err)
	}
	check := func(id, status, detail string) {
		t.Helper()
		got, err := e.svc.Get(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		fs := DecodeFailures(got)
		if got.Status != status || got.Compliance != model.NonCompliant || len(fs) != 1 || fs[0].Rule != RuleDeviceStatus ||
			fs[0].Unknown || !strings.Contains(fs[0].Detail, detail) || fs[0].Fix == "" || !got.ComplianceAt.Equal(e.clock.Now()) {
			t.Errorf("%s device: status %s, compliance %s, failures %+v", status, got.Status, got.Compliance, fs)
		}
		ds, err := e.svc.List(e.ctx, Filter{Status: status})
		if err != nil || len(ds) != 1 || ds[0].Compliance != model.NonCompliant {
			t.Errorf("List(%s) = %v, %v", status, ds, err)
		}
	}
	e.clock.Advance(time.Minute)
	if _, err := e.svc.Disable(e.ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	check(d.ID, model.DeviceDisabled, "disabled")
	if ev := e.last(model.EventDeviceDisabled); ev.Data["previous_compliance"] != model.Compliant || ev.Data["previous_status"] != model.DeviceActive {
		t.Errorf("device.disabled data %v", ev.Data)
	}
	// The status change carries the compliance change: no separate
	// device.compliance_changed (device.disabled maps to the CAEP one).
	if n := e.count(model.EventDeviceComplianceChanged); n != 1 {
		t.Errorf("%d device.compliance_changed, want the report's only", n)
	}
	// Sweeps and policy changes do not bring it back.
	e.clock.Advance(time.Minute)
	if _, err := e.svc.SweepStale(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.putPolicy("linux", `{}`)
	if got, _ := e.svc.Get(e.ctx, d.ID); got.Compliance != model.NonCompliant {
		t.Errorf("after sweep and policy change: %s", got.Compliance)
	}

	e.clock.Advance(time.Minute)
	if _, err := e.svc.MarkLost(e.ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	check(d.ID, model.DeviceLost, "lost or stolen")
	if ev := e.last(model.EventDeviceLost); ev.Data["previous_status"] != model.DeviceDisabled || ev.Data["previous_compliance"] != model.NonCompliant {
		t.Errorf("device.lost data %v", ev.Data)
	}
	// Disabling a lost device leaves it lost and records nothing.
	n := len(e.rec.Events())
	if got, err := e.svc.Disable(e.ctx, "admin-1", d.ID); err != nil || got.Status != model.DeviceLost {
		t.Errorf("disable a lost device: %v %v", got, err)
	}
	if len(e.rec.Events()) != n {
		t.Errorf("disabling a lost device recorded %v", e.rec.Events()[n:])
	}
}

// Enable makes a disabled device active again, evaluated at once against
// its stored posture, and commits device.enabled (and the compliance
// change) with it; a lost device is refused.
func TestEnable(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("*", `{}`)
	k := newKey(t)
	d := e.register(k)
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, fixture(t))); err != nil {
		t.Fatal(err)
	}
	stored := func(typ model.EventType) []*store.StoredEvent {
		t.Helper()
		evs, err := e.st.ListEvents(e.ctx, store.EventFilter{Types: []model.EventType{typ}})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	if _, err := e.svc.Disable(e.ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	changes := len(stored(model.EventDeviceComplianceChanged))

	e.clock.Advance(time.Minute)
	got, err := e.svc.Enable(e.ctx, "admin-2", d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != model.DeviceActive || got.Compliance != model.Compliant || len(DecodeFailures(got)) != 0 || !got.ComplianceAt.Equal(e.clock.Now()) {
		t.Fatalf("enabled device: %s %s %s", got.Status, got.Compliance, got.ComplianceFailures)
	}
	// Both events were appended by the change's transaction (the test bus
	// has no persister) and are the ones published.
	en := stored(model.EventDeviceEnabled)
	if len(en) != 1 || en[0].Actor != "admin-2" || en[0].DeviceID != d.ID || en[0].UserID != e.alice ||
		en[0].Data["previous_status"] != model.DeviceDisabled || en[0].Data["compliance"] != model.Compliant || en[0].Code() != "W8007I" {
		t.Fatalf("device.enabled: %+v", en)
	}
	if pub := e.last(model.EventDeviceEnabled); pub.ID != en[0].ID {
		t.Errorf("published %s, stored %s", pub.ID, en[0].ID)
	}
	cc := stored(model.EventDeviceComplianceChanged)
	if len(cc) != changes+1 || cc[0].Data["previous"] != model.NonCompliant || cc[0].Data["compliance"] != model.Compliant || cc[0].DeviceID != d.ID {
		t.Fatalf("device.compliance_changed: %+v", cc)
	}
	// Reports are accepted again.
	if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(k, d.ID, fixture(t))); err != nil {
		t.Errorf("report after enable: %v", err)
	}
	// Enabling an active device changes nothing and records nothing.
	n := len(e.rec.Events())
	if got, err := e.svc.Enable(e.ctx, "admin-2", d.ID); err != nil || got.Status != model.DeviceActive || len(e.rec.Events()) != n {
		t.Errorf("enable again: %v %v, %d new events", got, err, len(e.rec.Events())-n)
	}

	// A posture older than the grace period: enabled, but noncompliant
	// (stale), and no compliance change to record.
	if _, err := e.svc.Disable(e.ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(DefaultPostureGrace + time.Hour)
	changes = len(stored(model.EventDeviceComplianceChanged))
	got, err = e.svc.Enable(e.ctx, "admin-2", d.ID)
	if err != nil || got.Compliance != model.NonCompliant || DecodeFailures(got)[0].Rule != RulePostureStale {
		t.Fatalf("enable with a stale posture: %v %v", got, err)
	}
	if len(stored(model.EventDeviceEnabled)) != 2 || len(stored(model.EventDeviceComplianceChanged)) != changes {
		t.Errorf("events after enabling a stale device")
	}

	// A lost device is refused and stays lost.
	if _, err := e.svc.MarkLost(e.ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	n = len(e.rec.Events())
	if _, err := e.svc.Enable(e.ctx, "admin-2", d.ID); !errors.Is(err, ErrLost) {
		t.Errorf("enable a lost device: %v", err)
	}
	if got, _ := e.svc.Get(e.ctx, d.ID); got.Status != model.DeviceLost || got.Compliance != model.NonCompliant || len(e.rec.Events()) != n {
		t.Errorf("after a refused enable: %s %s, %d new events", got.Status, got.Compliance, len(e.rec.Events())-n)
	}
	if _, err := e.svc.Enable(e.ctx, "admin-2", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown device: %v", err)
	}
}
