package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/tpmattest"
)

func TestParseRulesHardwareKey(t *testing.T) {
	r, err := ParseRules([]byte(`{"require_hardware_key": true}`))
	if err != nil || !r.RequireHardwareKey || string(r.JSON()) != `{"require_hardware_key":true}` {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{`{"require_hardware_key": "tpm"}`, `{"require_hardware_key": null}`, `{"require_hardware_key": 1}`} {
		var re *RulesError
		if _, err := ParseRules([]byte(bad)); !errors.As(err, &re) || re.Problems[0] != "require_hardware_key must be true or false" {
			t.Errorf("ParseRules(%s) = %v", bad, err)
		}
	}
}

// EvaluateKey decides require_hardware_key from the attested fact alone:
// what the agent reports only shapes the message.
func TestEvaluateKey(t *testing.T) {
	on := &Rules{RequireHardwareKey: true}
	for _, c := range []struct {
		rules    *Rules
		attested bool
		storage  string
		fail     string // "" passes; else a fragment of the detail
	}{
		{on, true, "tpm", ""},
		{on, false, "tpm", "reports a TPM key, but it did not prove it"},
		{on, false, "file", `key storage "file"`},
		{on, false, "", "not attested"},
		{on, true, "file", ""}, // attested is what counts
		{&Rules{}, false, "file", ""},
		{nil, false, "file", ""},
	} {
		fs := EvaluateKey(c.rules, c.attested, c.storage)
		switch {
		case c.fail == "" && len(fs) != 0:
			t.Errorf("%+v attested=%v %q: failures %v, want none", c.rules, c.attested, c.storage, fs)
		case c.fail != "" && (len(fs) != 1 || fs[0].Rule != RuleHardwareKey || fs[0].Unknown ||
			!strings.Contains(fs[0].Detail, c.fail) || !strings.Contains(fs[0].Fix, "--key-store tpm")):
			t.Errorf("attested=%v %q: failures %+v, want %s failing with %q and a fix", c.attested, c.storage, fs, RuleHardwareKey, c.fail)
		}
	}
}

// A device without an attested key fails require_hardware_key as soon as
// it is registered, before any posture report, and whatever it reports.
func TestHardwareKeyRuleAtRegistration(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("linux", `{"require_hardware_key": true}`)
	d := e.register(newKey(t)) // reported as "tpm", not attested
	if d.Compliance != model.NonCompliant || strings.Join(rulesOf(DecodeFailures(d)), ",") != "no_posture,"+RuleHardwareKey {
		t.Fatalf("registered: %s %v", d.Compliance, rulesOf(DecodeFailures(d)))
	}
	if DecodeKeyAttestation(d) != nil || !strings.Contains(DescribeKey(d), "tpm (not attested") {
		t.Fatalf("DescribeKey = %q", DescribeKey(d))
	}
}

// RegisterAttested verifies before it stores: refused evidence registers
// nothing and records the refusal.
func TestRegisterAttestedRefusals(t *testing.T) {
	e := newEnv(t)
	k := newKey(t)
	reg := Registration{PublicJWK: k.jwk, Platform: "linux", KeyStorage: "tpm"}
	for _, c := range []struct {
		name   string
		reg    Registration
		att    *Attestation
		reason string
	}{
		{"file key", Registration{PublicJWK: k.jwk, Platform: "linux", KeyStorage: "file"}, &Attestation{Nonce: e.svc.Nonce()}, ReasonNotTPM},
		{"no nonce", reg, &Attestation{}, ReasonChallengeExpired},
		{"forged nonce", reg, &Attestation{Nonce: "x" + e.svc.Nonce()}, ReasonChallengeExpired},
		{"no evidence", reg, &Attestation{Nonce: e.svc.Nonce()}, tpmattest.ReasonMalformed},
		{"junk evidence", reg, &Attestation{Nonce: e.svc.Nonce(), Params: tpmattest.Params{EKPublic: []byte{1}, AKPublic: []byte{1},
			KeyPublic: []byte{1}, CertifyInfo: []byte{1}, Signature: []byte{1}}}, tpmattest.ReasonMalformed},
	} {
		before := e.count(model.EventDeviceKeyAttestationRejected)
		d, ch, err := e.svc.RegisterAttested(e.ctx, e.alice, c.reg, c.att)
		var ae *AttestationError
		if !errors.As(err, &ae) || ae.Reason != c.reason || d != nil || ch != nil {
			t.Fatalf("%s: %v, %v, %v; want refusal %q", c.name, d, ch, err, c.reason)
		}
		if e.count(model.EventDeviceKeyAttestationRejected) != before+1 {
			t.Errorf("%s: no device.key_attestation_rejected event", c.name)
		}
		if ev := e.last(model.EventDeviceKeyAttestationRejected); ev.Reason != c.reason || ev.UserID != e.alice || ev.Code() != "W8011W" {
			t.Errorf("%s: event %+v", c.name, ev)
		}
	}
	if ds, _ := e.svc.List(e.ctx, Filter{}); len(ds) != 0 {
		t.Fatalf("%d devices after refused evidence", len(ds))
	}
	if _, _, err := e.svc.RegisterAttested(e.ctx, e.alice, reg, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no evidence at all: %v", err)
	}
}

// The sealed challenge state opens only for its device, unaltered.
func TestChallengeState(t *testing.T) {
	e := newEnv(t)
	st := &challengeState{DeviceID: "dev-1", JKT: "jkt", Expires: 42, SecretHash: bytes.Repeat([]byte{1}, 32), EK: "ab", Certified: true, Issuer: "CN=x"}
	sealed, err := e.svc.seal(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.open("dev-1", sealed)
	if err != nil || got.JKT != "jkt" || got.Expires != 42 || !got.Certified || got.Issuer != "CN=x" {
		t.Fatalf("open = %+v, %v", got, err)
	}
	raw, _ := json.Marshal(st)
	if strings.Contains(sealed, string(raw)) || strings.Contains(sealed, "jkt") {
		t.Fatal("the state is not encrypted")
	}
	flip := []byte(sealed)
	flip[10] ^= 1
	other := New(Options{Store: e.svc.store, Sessions: e.svc.sessions, NonceKey: bytes.Repeat([]byte{8}, 32)})
	for name, c := range map[string]struct {
		svc       *Service
		id, state string
	}{
		"another device": {e.svc, "dev-2", sealed},
		"altered":        {e.svc, "dev-1", string(flip)},
		"truncated":      {e.svc, "dev-1", sealed[:20]},
		"empty":          {e.svc, "dev-1", ""},
		"oversized":      {e.svc, "dev-1", strings.Repeat("A", maxState+1)},
		"another key":    {other, "dev-1", sealed},
	} {
		var ae *AttestationError
		if _, err := c.svc.open(c.id, c.state); !errors.As(err, &ae) || ae.Reason != ReasonInvalidChallenge {
			t.Errorf("%s: %v, want %s", name, err, ReasonInvalidChallenge)
		}
	}
	// Two services with the same key (two instances) open each other's.
	twin := New(Options{Store: e.svc.store, Sessions: e.svc.sessions, NonceKey: bytes.Repeat([]byte{7}, 32)})
	if _, err := twin.open("dev-1", sealed); err != nil {
		t.Fatalf("an instance with the same key: %v", err)
	}
}
