package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func TestDeviceAndComplianceCommands(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct horse battery\n", "user", "add", "alice", "--password-stdin")
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	os.WriteFile(rules, []byte(`{"require_disk_encryption": true, "require_firewall": true}`), 0o600)
	if out := h.ok("", "compliance", "set", "--platform", "linux", "-f", rules); !strings.Contains(out, `"require_disk_encryption":true`) {
		t.Errorf("set: %q", out)
	}
	// Every problem of an invalid rule set, exit 2.
	_, errs, code := h.run(`{"require_tpm": 1, "min_os_version": "x"}`, "compliance", "set", "--platform", "linux", "-f", "-")
	if code != exitUsage || !strings.Contains(errs, "2 problems") || !strings.Contains(errs, "require_tpm") || !strings.Contains(errs, "min_os_version") {
		t.Errorf("invalid rules: exit %d, %q", code, errs)
	}
	h.ok(`{}`, "compliance", "set", "--platform", "*", "-f", "-")
	out := h.ok("", "compliance", "list")
	if !regexp.MustCompile(`(?m)^linux\s+\S+\s+\{"require_disk_encryption":true,"require_firewall":true\}$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^\*\s+\S+\s+\{\}$`).MatchString(out) {
		t.Errorf("list:\n%s", out)
	}
	h.ok("", "compliance", "delete", "*")
	if _, errs, code := h.run("", "compliance", "delete", "*"); code != 1 || !strings.Contains(errs, "no compliance policy") {
		t.Errorf("delete again: %d %q", code, errs)
	}

	// A device with disk encryption off.
	a := h.openApp()
	ctx := context.Background()
	u, err := a.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := dpop.NewSigner(k)
	j := s.PublicJWK()
	jwk, _ := j.MarshalJSON()
	d, err := a.Devices.Register(ctx, u.ID, device.Registration{PublicJWK: jwk, Platform: "linux", Hostname: "alice-laptop", KeyStorage: "file"})
	if err != nil {
		t.Fatal(err)
	}
	p := &posture.Posture{Platform: "linux", DiskEncrypted: posture.No, FirewallEnabled: posture.Yes, CollectedAt: time.Now()}
	rep, _ := posture.SignReport(k, p, d.ID, a.Devices.Nonce(), time.Now())
	if _, err := a.Devices.SubmitPosture(ctx, d.ID, rep); err != nil {
		t.Fatal(err)
	}
	a.Close()

	out = h.ok("", "device", "list")
	if !regexp.MustCompile(`(?m)^` + d.ID + `\s+alice\s+linux\s+alice-laptop\s+file \(not attested\)\s+active\s+noncompliant\s+\S+$`).MatchString(out) {
		t.Errorf("device list:\n%s", out)
	}
	if out := h.ok("", "device", "list", "--user", "alice", "--status", "lost"); strings.Contains(out, d.ID) {
		t.Errorf("list --status lost:\n%s", out)
	}
	// A thumbprint may start with "-": after "--" it is an argument, not a flag.
	out = h.ok("", "device", "show", "--", d.JKT)
	if !strings.Contains(out, "[FAIL] require_disk_encryption: disk encryption: no") || !strings.Contains(out, "fix: Turn on full-disk encryption") ||
		!regexp.MustCompile(`Compliance:\s+noncompliant`).MatchString(out) ||
		!regexp.MustCompile(`Key storage:\s+file \(not attested: the agent's claim\)`).MatchString(out) {
		t.Errorf("show:\n%s", out)
	}
	if out := h.ok("", "device", "lost", d.ID); !strings.Contains(out, "marked lost") {
		t.Errorf("lost: %q", out)
	}
	if out := h.ok("", "device", "list", "--status", "lost"); !regexp.MustCompile(`(?m)^` + d.ID + `\s+alice\s+linux\s+alice-laptop\s+file \(not attested\)\s+lost\s+noncompliant\s+\S+$`).MatchString(out) {
		t.Errorf("list lost:\n%s", out)
	}
	// Disabling a lost device leaves it lost (a disabled device can be
	// enabled again, a lost one cannot) and records nothing.
	h.ok("", "device", "disable", d.ID)
	if out := h.ok("", "device", "list", "--status", "lost"); !strings.Contains(out, d.ID) {
		t.Errorf("a lost device that was disabled is no longer lost:\n%s", out)
	}
	h.ok("", "device", "delete", d.ID)
	if _, errs, code := h.run("", "device", "show", d.ID); code != 1 || !strings.Contains(errs, "no device") {
		t.Errorf("show deleted: %d %q", code, errs)
	}
	a = h.openApp()
	evs, _ := a.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventDeviceLost, model.EventDeviceDisabled, model.EventDeviceDeleted, model.EventCompliancePolicyChanged}})
	if len(evs) != 5 { // 3 policy changes, lost, deleted
		t.Errorf("%d events, want 5", len(evs))
	}
	for _, ev := range evs {
		if ev.Actor != actorCLI {
			t.Errorf("%s actor %q", ev.Type, ev.Actor)
		}
	}
}

// An id that starts with "-" is read as a flag unless it follows "--":
// the error says so.
func TestDashArgumentHint(t *testing.T) {
	h := newHarness(t, "")
	_, errs, code := h.run("", "device", "show", "-UXRSEZQfU3_xLRh-YzS5HxkjrtuvYtBYb34FXxl3nU")
	if code != exitUsage || !strings.Contains(errs, "goes after '--'") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

// A lost or disabled device never shows as compliant: list and show say
// noncompliant and name the status as the failing rule.
func TestInactiveDeviceShownNoncompliant(t *testing.T) {
	h := newHarness(t, "")
	d, _ := compliantDevice(t, h)
	for _, c := range []struct{ cmd, status, detail string }{
		{"disable", "disabled", "the device is disabled"},
		{"lost", "lost", "the device is marked lost or stolen"},
	} {
		h.ok("", "device", c.cmd, d.ID)
		if out := h.ok("", "device", "list"); !regexp.MustCompile(`(?m)^` + d.ID + `\s+alice\s+linux\s+laptop\s+file \(not attested\)\s+` + c.status + `\s+noncompliant\s`).MatchString(out) {
			t.Errorf("list after %s:\n%s", c.cmd, out)
		}
		out := h.ok("", "device", "show", d.ID)
		if !regexp.MustCompile(`Compliance:\s+noncompliant`).MatchString(out) || !strings.Contains(out, "[FAIL] device_status: "+c.detail) ||
			strings.Contains(out, "Every compliance rule passes") {
			t.Errorf("show after %s:\n%s", c.cmd, out)
		}
	}
}

// compliantDevice creates alice (with a "*" policy without rules) and a
// device of hers that reported its posture: compliant. It returns the
// device and its key.
func compliantDevice(t *testing.T, h *harness) (*model.Device, *ecdsa.PrivateKey) {
	t.Helper()
	h.ok("correct horse battery\n", "user", "add", "alice", "--password-stdin")
	h.ok(`{}`, "compliance", "set", "--platform", "*", "-f", "-")
	a := h.openApp()
	defer a.Close()
	ctx := context.Background()
	u, _ := a.Store.GetUserByUsername(ctx, "alice")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := dpop.NewSigner(k)
	j := s.PublicJWK()
	jwk, _ := j.MarshalJSON()
	d, err := a.Devices.Register(ctx, u.ID, device.Registration{PublicJWK: jwk, Platform: "linux", Hostname: "laptop", KeyStorage: "file"})
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := posture.SignReport(k, &posture.Posture{Platform: "linux", CollectedAt: time.Now()}, d.ID, a.Devices.Nonce(), time.Now())
	if d, err = a.Devices.SubmitPosture(ctx, d.ID, rep); err != nil || d.Compliance != model.Compliant {
		t.Fatalf("report: %v %v", d, err)
	}
	return d, k
}

// ward device enable: a disabled device is active and compliant again
// (device.enabled and device.compliance_changed with actor cli, and the
// CAEP device-compliance-change back to compliant); a lost one is refused.
func TestDeviceEnable(t *testing.T) {
	h := newHarness(t, "")
	d, _ := compliantDevice(t, h)
	a := h.openApp()
	stream := createPollStream(t, a)
	a.Close()
	h.ok("", "device", "disable", d.ID)
	pollSETs(t, h, stream) // the disable's
	out := h.ok("", "device", "enable", d.ID)
	if !strings.Contains(out, "enabled device "+d.ID+" (laptop); compliance: compliant") || !strings.Contains(out, "signs in again") {
		t.Errorf("enable: %q", out)
	}
	if out := h.ok("", "device", "list"); !regexp.MustCompile(`(?m)^` + d.ID + `\s+alice\s+linux\s+laptop\s+file \(not attested\)\s+active\s+compliant\s`).MatchString(out) {
		t.Errorf("list after enable:\n%s", out)
	}
	sets := pollSETs(t, h, stream)
	if len(sets) != 1 || sets[0].typ != cae.EventDeviceComplianceChange || sets[0].event["previous_status"] != "not-compliant" ||
		sets[0].event["current_status"] != "compliant" {
		t.Errorf("SETs of enable: %+v", sets)
	}
	if dev, _ := sets[0].subject["device"].(map[string]any); dev["id"] != d.ID {
		t.Errorf("subject %v", sets[0].subject)
	}
	if out := h.ok("", "device", "enable", d.ID); !strings.Contains(out, "active already") {
		t.Errorf("enable again: %q", out)
	}

	h.ok("", "device", "lost", d.ID)
	if _, errs, code := h.run("", "device", "enable", d.ID); code != exitFailure || !strings.Contains(errs, "lost or stolen device cannot be enabled") ||
		!strings.Contains(errs, "ward device delete") {
		t.Errorf("enable a lost device: %d %q", code, errs)
	}
	if out := h.ok("", "device", "list", "--status", "lost"); !strings.Contains(out, d.ID) {
		t.Errorf("the lost device changed:\n%s", out)
	}
	a = h.openApp()
	defer a.Close()
	evs, _ := a.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventDeviceEnabled}})
	if len(evs) != 1 || evs[0].Actor != actorCLI || evs[0].DeviceID != d.ID || evs[0].Data["compliance"] != model.Compliant {
		t.Errorf("device.enabled events: %+v", evs)
	}
}
