package device

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
	"github.com/ward-idp/ward/internal/tpmattest"
)

// storedOf returns the stored events of type typ.
func (e *env) storedOf(typ model.EventType) []*store.StoredEvent {
	e.t.Helper()
	evs, err := e.st.ListEvents(e.ctx, store.EventFilter{Types: []model.EventType{typ}})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// envOn is an env on a new database of kind k, with b to make that
// database refuse events.
func envOn(t *testing.T, k backendtest.Kind) (*env, backendtest.Backend) {
	b := k.New(t)
	c := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	return newEnvOn(t, b.Open(t, c.Now), c), b
}

// An attested key commits with its device.key_attested (and the
// compliance change it causes with device.compliance_changed): with
// either record refused the device stays unattested, as it was, and the
// challenge can still be answered; accepted, the key is attested and the
// records stored are the ones published.
func TestKeyAttestationCommitsWithEvent(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			e, b := envOn(t, k)
			// The device complies once its key is attested and its
			// posture reported.
			e.putPolicy("linux", `{"require_hardware_key": true, "require_firewall": true}`)
			dk := newKey(t)
			d := e.register(dk)
			if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(dk, d.ID, fixture(t))); err != nil {
				t.Fatal(err)
			}
			before, err := e.st.GetDevice(e.ctx, d.ID)
			if err != nil || before.Compliance != model.NonCompliant {
				t.Fatalf("before the attestation: %+v, %v; want non-compliant (key not attested)", before, err)
			}
			secret := bytes.Repeat([]byte{9}, tpmattest.SecretSize)
			sum := sha256.Sum256(secret)
			state, err := e.svc.seal(&challengeState{DeviceID: d.ID, JKT: d.JKT, Expires: e.clock.Now().Add(10 * time.Minute).Unix(),
				SecretHash: sum[:], EK: "ek-sha256", Certified: true, Issuer: "CN=test EK CA"})
			if err != nil {
				t.Fatal(err)
			}
			changed := len(e.storedOf(model.EventDeviceComplianceChanged))
			for _, refused := range []model.EventType{model.EventDeviceKeyAttested, model.EventDeviceComplianceChanged} {
				lift := b.RefuseEvents(t, refused)
				_, err := e.svc.ActivateAttestation(e.ctx, d.ID, state, secret)
				if _, ae := errors.AsType[*AttestationError](err); err == nil || ae {
					t.Fatalf("activation with %s refused: %v, want a store failure", refused, err)
				}
				got, err := e.st.GetDevice(e.ctx, d.ID)
				if err != nil || got.KeyAttested || got.KeyAttestation != nil || got.Compliance != before.Compliance {
					t.Fatalf("device after a refused %s: %+v, %v; want it as before", refused, got, err)
				}
				if n := len(e.storedOf(model.EventDeviceKeyAttested)); n != 0 || len(e.storedOf(model.EventDeviceComplianceChanged)) != changed {
					t.Fatalf("records after a refused %s: %d key_attested, compliance changes %d -> %d", refused, n,
						changed, len(e.storedOf(model.EventDeviceComplianceChanged)))
				}
				lift()
			}
			got, err := e.svc.ActivateAttestation(e.ctx, d.ID, state, secret)
			if err != nil || !got.KeyAttested || got.Compliance != model.Compliant {
				t.Fatalf("activation: %+v, %v; want attested and compliant", got, err)
			}
			evs := e.storedOf(model.EventDeviceKeyAttested)
			if len(evs) != 1 || evs[0].ID != e.last(model.EventDeviceKeyAttested).ID || evs[0].DeviceID != d.ID ||
				evs[0].Data["ek_sha256"] != "ek-sha256" || evs[0].Data["ek_certified"] != "true" {
				t.Fatalf("key_attested stored %+v, want the one published", evs)
			}
			cs := e.storedOf(model.EventDeviceComplianceChanged)
			if len(cs) != changed+1 || cs[0].Data["compliance"] != model.Compliant || cs[0].Data["previous"] != model.NonCompliant {
				t.Fatalf("compliance changes stored %d (newest %+v), want %d ending compliant", len(cs), cs[0].Event, changed+1)
			}
			// Answered once: a second answer is refused and records nothing.
			if _, err := e.svc.ActivateAttestation(e.ctx, d.ID, state, secret); err == nil {
				t.Fatal("a second answer to the challenge was accepted")
			}
			if n := len(e.storedOf(model.EventDeviceKeyAttested)); n != 1 {
				t.Fatalf("%d key_attested after a second answer, want 1", n)
			}
		})
	}
}

// A posture report commits with its device.posture_reported (and the
// compliance change with device.compliance_changed): refused, the
// device's posture and compliance are as they were; accepted, each is
// stored once.
func TestPostureReportCommitsWithEvent(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			e, b := envOn(t, k)
			e.putPolicy("linux", `{"require_firewall": true}`)
			dk := newKey(t)
			d := e.register(dk)
			for _, refused := range []model.EventType{model.EventDevicePostureReported, model.EventDeviceComplianceChanged} {
				lift := b.RefuseEvents(t, refused)
				if _, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(dk, d.ID, fixture(t))); err == nil {
					t.Fatalf("report with %s refused: got nil", refused)
				}
				got, err := e.st.GetDevice(e.ctx, d.ID)
				if err != nil || got.Posture != nil || !got.PostureAt.IsZero() || got.Compliance != d.Compliance {
					t.Fatalf("device after a refused %s: %+v, %v; want no posture, compliance %s", refused, got, err, d.Compliance)
				}
				if n, c := len(e.storedOf(model.EventDevicePostureReported)), len(e.storedOf(model.EventDeviceComplianceChanged)); n != 0 || c != 0 {
					t.Fatalf("records after a refused %s: %d posture_reported, %d compliance_changed; want none", refused, n, c)
				}
				lift()
			}
			got, err := e.svc.SubmitPosture(e.ctx, d.ID, e.report(dk, d.ID, fixture(t)))
			if err != nil || got.Compliance != model.Compliant {
				t.Fatalf("report: %+v, %v", got, err)
			}
			evs := e.storedOf(model.EventDevicePostureReported)
			if len(evs) != 1 || evs[0].ID != e.last(model.EventDevicePostureReported).ID || evs[0].Data["compliance"] != model.Compliant {
				t.Fatalf("posture_reported stored %+v, want the one published", evs)
			}
			if c := len(e.storedOf(model.EventDeviceComplianceChanged)); c != 1 {
				t.Fatalf("%d compliance_changed stored, want 1", c)
			}
		})
	}
}
