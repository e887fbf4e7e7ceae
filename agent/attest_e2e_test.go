package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/keystore/swtpmtest"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

// startAttestingIdP runs Ward with the agent's client, trusting the TPM
// vendor ca, and a policy that requires a hardware key.
func startAttestingIdP(t *testing.T, ca *swtpmtest.CA) *wardtest.Instance {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "vendors.pem")
	if err := os.WriteFile(caFile, ca.PEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.Devices.TPMEKCAFile = caFile
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: agent.DefaultClientID, Name: "Ward device agent", AuthMethod: "none",
			GrantTypes:            []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"},
			Scopes:                []string{"openid", "profile", "offline_access", "ward:device"},
			DPoPBoundAccessTokens: true, CAECapable: true})
	}})
	if _, err := in.App.Devices.PutPolicy(context.Background(), "test", "linux", []byte(`{"require_hardware_key": true}`)); err != nil {
		t.Fatal(err)
	}
	return in
}

// tpmEnrollOptions are enrolOptions with the device key in sim's TPM.
func tpmEnrollOptions(t *testing.T, in *wardtest.Instance, sim *swtpmtest.Sim) agent.EnrollOptions {
	t.Helper()
	st, err := keystore.OpenTPMSimulator(sim.Addr, sim.CtrlAddr)
	if err != nil {
		t.Fatal(err)
	}
	st.Dir = filepath.Join(t.TempDir(), "tpm-keys")
	t.Cleanup(func() { st.Close() })
	o := enrollOptions(in, t.TempDir(), func(uri, complete, code string) { approve(t, in, in.Browser(), complete, code, "approve") })
	o.Store, o.KeyDir = st, st.Dir
	return o
}

// Enrolment with a TPM key: the key is attested by the server (the TPM
// answers its challenge), so a policy requiring a hardware key is met.
func TestEnrollWithTPMKeyIsAttested(t *testing.T) {
	sim := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	in := startAttestingIdP(t, sim.CA)
	ctx := context.Background()
	o := tpmEnrollOptions(t, in, sim)
	cfg, err := agent.Enroll(ctx, o)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if cfg.KeyStorage != keystore.KindTPM {
		t.Fatalf("key storage %q", cfg.KeyStorage)
	}
	d, err := in.App.Devices.Get(ctx, cfg.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if !d.KeyAttested || d.KeyStorage != "tpm" || d.Compliance != "compliant" {
		t.Fatalf("server's device: attested %v, storage %q, compliance %s (%s)", d.KeyAttested, d.KeyStorage, d.Compliance, d.ComplianceFailures)
	}
	c, err := agent.Open(ctx, cfg, agent.Options{Store: o.Store, Collector: o.Collector, Now: in.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dev, err := c.Device(ctx)
	if err != nil || !dev.KeyAttested || dev.KeyAttestation == nil || !dev.KeyAttestation.EKCertified ||
		!strings.Contains(dev.KeyAttestation.EKIssuer, "swtpm-localca") {
		t.Fatalf("GET /devices/{id}: %+v %v", dev, err)
	}
}

// A TPM the server does not trust (no vendor certificate): the device is
// enrolled, its key not attested, Enroll says so and why, and the policy
// requiring a hardware key fails it with the rule named.
func TestEnrollWithUntrustedTPM(t *testing.T) {
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	in := startAttestingIdP(t, vendor.CA)
	ctx := context.Background()
	o := tpmEnrollOptions(t, in, swtpmtest.Start(t, swtpmtest.Options{}))
	cfg, err := agent.Enroll(ctx, o)
	if !errors.Is(err, agent.ErrKeyNotAttested) || cfg == nil || !strings.Contains(err.Error(), "vendor") {
		t.Fatalf("Enroll: %v, want ErrKeyNotAttested naming the untrusted vendor", err)
	}
	if errors.Is(err, agent.ErrBindingRefused) || cfg.Incomplete {
		t.Fatalf("the enrolment is not finished: %v", err)
	}
	d, err := in.App.Devices.Get(ctx, cfg.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if d.KeyAttested || d.KeyStorage != "tpm" || d.Compliance != "noncompliant" || !strings.Contains(string(d.ComplianceFailures), "require_hardware_key") {
		t.Fatalf("server's device: attested %v, storage %q, compliance %s %s", d.KeyAttested, d.KeyStorage, d.Compliance, d.ComplianceFailures)
	}
}

// A file key is never attested, and the agent does not claim otherwise.
func TestEnrollWithFileKeyIsNotAttested(t *testing.T) {
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	in := startAttestingIdP(t, vendor.CA)
	ctx := context.Background()
	o := enrollOptions(in, t.TempDir(), func(uri, complete, code string) { approve(t, in, in.Browser(), complete, code, "approve") })
	cfg, err := agent.Enroll(ctx, o)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	d, err := in.App.Devices.Get(ctx, cfg.DeviceID)
	if err != nil || d.KeyAttested || d.KeyStorage != "file" || d.Compliance != "noncompliant" {
		t.Fatalf("server's device: %+v %v", d, err)
	}
}
