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
	if out := h.ok("", "device", "list", "--status", "lost"); !strings.Contains(out, d.ID) {
		t.Errorf("list lost:\n%s", out)
	}
	h.ok("", "device", "disable", d.ID)
	h.ok("", "device", "delete", d.ID)
	if _, errs, code := h.run("", "device", "show", d.ID); code != 1 || !strings.Contains(errs, "no device") {
		t.Errorf("show deleted: %d %q", code, errs)
	}
	a = h.openApp()
	evs, _ := a.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventDeviceLost, model.EventDeviceDisabled, model.EventDeviceDeleted, model.EventCompliancePolicyChanged}})
	if len(evs) != 6 {
		t.Errorf("%d events, want 6", len(evs))
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
