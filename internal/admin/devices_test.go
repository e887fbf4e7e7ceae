package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// registerDevice registers a new device key for a user through the
// device service and sends one posture report (disk encryption as given).
func registerDevice(t testing.TB, in *wardtest.Instance, userID string, disk posture.State) *model.Device {
	t.Helper()
	ctx := context.Background()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := dpop.NewSigner(k)
	j := s.PublicJWK()
	jwk, _ := j.MarshalJSON()
	d, err := in.App.Devices.Register(ctx, userID, device.Registration{PublicJWK: jwk, KeyStorage: "tpm", Platform: "linux", Hostname: "host-" + userID[:4]})
	if err != nil {
		t.Fatal(err)
	}
	p := &posture.Posture{Platform: "linux", OSVersion: "12", DiskEncrypted: disk, FirewallEnabled: posture.Unknown, CollectedAt: in.Clock.Now()}
	rep, err := posture.SignReport(k, p, d.ID, in.App.Devices.Nonce(), in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d, err = in.App.Devices.SubmitPosture(ctx, d.ID, rep); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDevicesAndPolicies(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	aliceID, bobID := userID(t, in, "alice"), userID(t, in, "bob")

	// Policies.
	wantStatus(t, alice.do(t, req{method: "GET", path: "/compliance-policies"}), 200, "")
	r := alice.do(t, req{method: "PUT", path: "/compliance-policies/linux", body: `{"rules": {"require_disk_encryption": true, "min_os_version": "11"}}`})
	wantStatus(t, r, 200, "")
	if r.str("platform") != "linux" || !strings.Contains(r.Body, `"min_os_version":"11"`) {
		t.Fatalf("put policy: %s", r.Body)
	}
	// Every problem of an invalid rule set is listed; nothing changes.
	r = alice.do(t, req{method: "PUT", path: "/compliance-policies/linux", body: `{"rules": {"require_tpm": true, "min_os_version": "eleven", "max_posture_age_hours": -1}}`})
	wantStatus(t, r, 400, "invalid_request")
	if len(r.list("fields")) != 3 || !strings.Contains(r.str("error_description"), "require_tpm") {
		t.Fatalf("invalid rules: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "PUT", path: "/compliance-policies/linux", body: `{}`}), 400, "invalid_request")
	wantStatus(t, alice.do(t, req{method: "PUT", path: "/compliance-policies/Linux%20OS", body: `{"rules": {}}`}), 400, "invalid_request")
	r = alice.do(t, req{method: "GET", path: "/compliance-policies/linux"})
	wantStatus(t, r, 200, "")
	if !strings.Contains(r.Body, `"require_disk_encryption":true`) {
		t.Fatalf("policy changed by an invalid PUT: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "PUT", path: "/compliance-policies/*", body: `{"rules": {}}`}), 200, "")
	r = alice.do(t, req{method: "GET", path: "/compliance-policies"})
	if ps := r.list("policies"); len(ps) != 2 {
		t.Fatalf("list policies: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/compliance-policies/*"}), 204, "")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/compliance-policies/*"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "GET", path: "/compliance-policies/darwin"}), 404, "not_found")

	// Devices: alice's is noncompliant (no disk encryption, firewall
	// unknown), bob's compliant except for the unknown firewall... which
	// the linux policy does not require.
	dA := registerDevice(t, in, aliceID, posture.No)
	dB := registerDevice(t, in, bobID, posture.Yes)

	r = alice.do(t, req{method: "GET", path: "/devices"})
	wantStatus(t, r, 200, "")
	if ds := r.list("devices"); len(ds) != 2 || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("list: %s", r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/devices?user_id=" + bobID})
	if ds := r.list("devices"); len(ds) != 1 || ds[0]["id"] != dB.ID || ds[0]["compliance"] != model.Compliant {
		t.Fatalf("list by user: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/devices?status=gone"}), 400, "invalid_request")

	r = alice.do(t, req{method: "GET", path: "/devices/" + dA.ID})
	wantStatus(t, r, 200, "")
	fs := r.list("failures")
	if r.str("compliance") != model.NonCompliant || len(fs) != 1 || fs[0]["rule"] != device.RuleDiskEncryption ||
		!strings.Contains(fs[0]["fix"].(string), "LUKS") || r.str("jkt") != dA.JKT || r.JSON["posture"] == nil {
		t.Fatalf("get: %s", r.Body)
	}
	// The reported storage, and the attested fact apart from it.
	if r.str("key_storage") != "tpm" || r.JSON["key_attested"] != false || r.JSON["key_attestation"] != nil {
		t.Fatalf("get: key_storage %v, key_attested %v, key_attestation %v; want tpm as reported, not attested",
			r.JSON["key_storage"], r.JSON["key_attested"], r.JSON["key_attestation"])
	}
	for _, leak := range []string{`"d":`, "private"} {
		if strings.Contains(r.Body, leak) {
			t.Errorf("device response contains %q", leak)
		}
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/devices/nope"}), 404, "not_found")

	// Disable, lost, delete.
	r = alice.do(t, req{method: "POST", path: "/devices/" + dA.ID + "/disable"})
	wantStatus(t, r, 200, "")
	if r.str("status") != model.DeviceDisabled {
		t.Fatalf("disable: %s", r.Body)
	}
	r = alice.do(t, req{method: "POST", path: "/devices/" + dB.ID + "/lost"})
	if r.str("status") != model.DeviceLost {
		t.Fatalf("lost: %s", r.Body)
	}
	r = alice.do(t, req{method: "GET", path: "/devices?status=lost"})
	if ds := r.list("devices"); len(ds) != 1 || ds[0]["id"] != dB.ID {
		t.Fatalf("list lost: %s", r.Body)
	}
	// A lost device never presents as compliant: noncompliant, naming its
	// status, in the list and in the device.
	for _, body := range []map[string]any{r.list("devices")[0], alice.do(t, req{method: "GET", path: "/devices/" + dB.ID}).JSON} {
		fs, _ := body["failures"].([]any)
		if body["compliance"] != model.NonCompliant || len(fs) != 1 || fs[0].(map[string]any)["rule"] != device.RuleDeviceStatus {
			t.Errorf("lost device: compliance %v, failures %v", body["compliance"], body["failures"])
		}
	}
	// Enable: the disabled device is active again; the lost one is 409.
	r = alice.do(t, req{method: "POST", path: "/devices/" + dA.ID + "/enable"})
	wantStatus(t, r, 200, "")
	if r.str("status") != model.DeviceActive {
		t.Fatalf("enable: %s", r.Body)
	}
	r = alice.do(t, req{method: "POST", path: "/devices/" + dB.ID + "/enable"})
	wantStatus(t, r, 409, "conflict")
	if !strings.Contains(r.str("error_description"), "lost") {
		t.Errorf("enable a lost device: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "POST", path: "/devices/nope/enable"}), 404, "not_found")
	if evs := events(t, in, model.EventDeviceEnabled); len(evs) != 1 || evs[0].Actor != aliceID || evs[0].DeviceID != dA.ID {
		t.Errorf("device.enabled events: %+v", evs)
	}
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/devices/" + dA.ID}), 204, "")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/devices/" + dA.ID}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "POST", path: "/devices/" + dA.ID + "/lost"}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/devices/" + dB.ID, body: `{}`}), 405, "method_not_allowed")

	// Every change is attributed to alice.
	for typ, n := range map[model.EventType]int{model.EventDeviceDisabled: 1, model.EventDeviceLost: 1, model.EventDeviceDeleted: 1,
		model.EventCompliancePolicyChanged: 3} {
		evs := events(t, in, typ)
		if len(evs) != n {
			t.Errorf("%d %s events, want %d", len(evs), typ, n)
		}
		for _, e := range evs {
			if e.Actor != aliceID || e.CorrelationID == "" {
				t.Errorf("%s actor %q correlation %q", typ, e.Actor, e.CorrelationID)
			}
		}
	}

	// The audit log can be filtered by the new types.
	r = alice.do(t, req{method: "GET", path: "/events?type=device.lost"})
	wantStatus(t, r, 200, "")
}

// Device routes follow the admin access rule.
func TestDevicesNeedAdmin(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	bob := signIn(t, in, "bob", "openid ward:admin").caller
	in.Clock.Advance(time.Second)
	for _, q := range []req{
		{method: "GET", path: "/devices"},
		{method: "GET", path: "/compliance-policies"},
		{method: "PUT", path: "/compliance-policies/linux", body: `{"rules": {}}`},
		{method: "POST", path: "/devices/x/disable"},
	} {
		wantStatus(t, bob.do(t, q), 403, "access_denied")
	}
	anon := &caller{in: in}
	wantStatus(t, anon.do(t, req{method: "GET", path: "/devices"}), 401, "invalid_token")
	if ps, _ := in.App.Devices.ListPolicies(context.Background()); len(ps) != 0 {
		t.Error("a policy was stored")
	}
}
