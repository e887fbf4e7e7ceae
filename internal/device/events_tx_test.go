package device

import (
	"testing"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// TestEventsCommitWithChange: device.compliance_changed, device.disabled
// and device.lost are appended by the transaction of the change they
// record. The test bus has no audit persister, so the events table holds
// exactly what the changes' own transactions appended, and those events
// are the ones published.
func TestEventsCommitWithChange(t *testing.T) {
	e := newEnv(t)
	e.putPolicy("linux", `{"require_disk_encryption": true, "require_firewall": true, "min_os_version": "12"}`)
	k, k2 := newKey(t), newKey(t)
	d, d2 := e.register(k), e.register(k2)
	ctx := bus.WithOrigin(e.ctx, bus.Origin{IP: "192.0.2.44", UserAgent: "ward-agent/1", CorrelationID: "corr-device"})

	stored := func(typ model.EventType) []*store.StoredEvent {
		t.Helper()
		evs, err := e.st.ListEvents(e.ctx, store.EventFilter{Types: []model.EventType{typ}})
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	want := func(typ model.EventType, n int) {
		t.Helper()
		evs := stored(typ)
		if len(evs) != n {
			t.Fatalf("%d %s events stored, want %d", len(evs), typ, n)
		}
		if n == 0 {
			return
		}
		got, pub := evs[0].Event, e.last(typ)
		if got.ID != pub.ID || got.DeviceID != pub.DeviceID || got.UserID != e.alice || got.Reason != pub.Reason ||
			len(got.Data) != len(pub.Data) || got.IP != "192.0.2.44" || got.UserAgent != "ward-agent/1" ||
			got.CorrelationID != "corr-device" || got.Outcome != model.OutcomeSuccess {
			t.Errorf("%s stored %+v, published %+v", typ, got, pub)
		}
	}

	if _, err := e.svc.SubmitPosture(ctx, d.ID, e.report(k, d.ID, fixture(t))); err != nil {
		t.Fatal(err)
	}
	want(model.EventDeviceComplianceChanged, 1)
	if ev := stored(model.EventDeviceComplianceChanged)[0]; ev.Data["previous"] != model.ComplianceUnknown || ev.Data["compliance"] != model.Compliant {
		t.Errorf("compliance_changed %+v", ev.Event)
	}
	// The report's own record commits with it too.
	want(model.EventDevicePostureReported, 1)
	// A registration commits with its device (one each).
	if evs := stored(model.EventDeviceRegistered); len(evs) != 2 || evs[0].DeviceID != d2.ID || evs[1].DeviceID != d.ID {
		t.Errorf("device.registered stored %+v, want one for each device", evs)
	}

	if _, err := e.svc.Disable(ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	want(model.EventDeviceDisabled, 1)
	if ev := stored(model.EventDeviceDisabled)[0]; ev.Data["previous_status"] != model.DeviceActive || ev.Reason != string(ReasonDeviceDisabled) {
		t.Errorf("device.disabled %+v", ev.Event)
	}
	// Disabling again changes nothing and records nothing.
	if _, err := e.svc.Disable(ctx, "admin-1", d.ID); err != nil {
		t.Fatal(err)
	}
	want(model.EventDeviceDisabled, 1)
	if _, err := e.svc.MarkLost(ctx, "admin-1", d2.ID); err != nil {
		t.Fatal(err)
	}
	want(model.EventDeviceLost, 1)
}
