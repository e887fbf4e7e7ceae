package agent_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/wardtest"
)

func applyPolicies(t *testing.T, in *wardtest.Instance, doc string) {
	t.Helper()
	d, err := policy.DecodeYAML([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), d, access.ApplyOptions{Actor: "test", ExpectVersion: access.AnyVersion}); err != nil {
		t.Fatal(err)
	}
}

// A policy that wants a compliant device on the agent's refresh must not
// break enrolment: the first posture report goes before the refresh that
// binds the session to the new device.
func TestEnrollPostureBeforeBinding(t *testing.T) {
	in := startAgentIdP(t)
	applyPolicies(t, in, `
policies:
  - id: agent-compliant
    name: The agent's refreshes need a compliant device
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [ward-agent]}}
    conditions: {flows: [refresh]}
    grant: {controls: [compliant_device]}
`)
	if _, err := in.App.Devices.PutPolicy(context.Background(), "test", "linux", []byte(`{"require_disk_encryption": true, "require_firewall": true}`)); err != nil {
		t.Fatal(err)
	}
	b := in.Browser()
	o := enrollOptions(in, t.TempDir(), func(_, complete, code string) { approve(t, in, b, complete, code, "approve") })
	cfg, err := agent.Enroll(context.Background(), o)
	if err != nil {
		t.Fatalf("Enroll under a compliant-device policy: %v", err)
	}
	if cfg.Incomplete {
		t.Error("enrolment left incomplete")
	}
	if c := introspect(t, in, cfg.AccessToken.Reveal()); c["did"] != cfg.DeviceID {
		t.Errorf("the session is not bound to the device: %v", c)
	}
}

// When Ward refuses to bind the session (a policy on the agent's refresh),
// the registered device and its session are kept as an incomplete
// enrolment, which FinishEnrollment ends once the cause is gone: no second
// device code, no second device.
func TestEnrollResumable(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()
	applyPolicies(t, in, `
policies:
  - id: no-agent-refresh
    name: Block the agent's refresh
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [ward-agent]}}
    conditions: {flows: [refresh]}
    grant: {block: true}
`)
	b := in.Browser()
	o := enrollOptions(in, t.TempDir(), func(_, complete, code string) { approve(t, in, b, complete, code, "approve") })
	cfg, err := agent.Enroll(ctx, o)
	if !errors.Is(err, agent.ErrBindingRefused) || cfg == nil {
		t.Fatalf("Enroll with the binding refused: %v, config %v", err, cfg != nil)
	}
	saved, err := agent.LoadConfig(o.ConfigPath)
	if err != nil || !saved.Incomplete || saved.DeviceID != cfg.DeviceID {
		t.Fatalf("saved config: %+v, %v", saved, err)
	}
	if _, err := in.App.Devices.Get(ctx, cfg.DeviceID); err != nil {
		t.Fatalf("the registered device: %v", err)
	}

	// Still refused: stays incomplete.
	c, err := agent.Open(ctx, saved, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.FinishEnrollment(ctx); !errors.Is(err, agent.ErrBindingRefused) || !c.Config().Incomplete {
		t.Fatalf("FinishEnrollment while refused: %v, incomplete %v", err, c.Config().Incomplete)
	}

	// The policy is fixed: finishing binds the session and saves it complete.
	applyPolicies(t, in, "policies: []\n")
	if err := c.FinishEnrollment(ctx); err != nil {
		t.Fatalf("FinishEnrollment: %v", err)
	}
	saved, _ = agent.LoadConfig(o.ConfigPath)
	if saved.Incomplete {
		t.Error("saved config still incomplete")
	}
	if claims := introspect(t, in, saved.AccessToken.Reveal()); claims["did"] != cfg.DeviceID {
		t.Errorf("the session is not bound to the device: %v", claims)
	}
	if ds, _ := in.App.Devices.List(ctx, device.Filter{}); len(ds) != 1 {
		t.Errorf("%d devices, want 1", len(ds))
	}
}

// A device removes itself (enrolling again with --force): the device and
// its sessions are gone. Only the device itself can: a token of the same
// user bound to another key cannot.
func TestDeregister(t *testing.T) {
	in := startAgentIdP(t)
	ctx := context.Background()
	b := in.Browser()
	enroll := func() (agent.EnrollOptions, *agent.Config) {
		o := enrollOptions(in, t.TempDir(), func(_, complete, code string) { approve(t, in, b, complete, code, "approve") })
		cfg, err := agent.Enroll(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		return o, cfg
	}
	o1, d1 := enroll()
	o2, d2 := enroll()

	// Device 2's session asks to delete device 1: not its key.
	c2, err := agent.Open(ctx, d2, agent.Options{Store: o2.Store, Collector: o2.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, in.URL+"/devices/"+d1.DeviceID, nil)
	resp, err := c2.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("another device's key: %d, want 403", resp.StatusCode)
	}
	if _, err := in.App.Devices.Get(ctx, d1.DeviceID); err != nil {
		t.Fatalf("device 1 was deleted by device 2: %v", err)
	}

	c1, err := agent.Open(ctx, d1, agent.Options{Store: o1.Store, Collector: o1.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if err := c1.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if _, err := in.App.Devices.Get(ctx, d1.DeviceID); !errors.Is(err, device.ErrNotFound) {
		t.Errorf("device after Deregister: %v", err)
	}
	// Its session ended with it.
	if _, err := c1.Refresh(ctx); err == nil {
		t.Error("the deregistered device's session still refreshes")
	}
	if _, err := in.App.Devices.Get(ctx, d2.DeviceID); err != nil {
		t.Errorf("device 2: %v", err)
	}
}
