package deviceapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/keystore/swtpmtest"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

var b64 = base64.RawURLEncoding

// tpmDevice is a device whose key is in a (software) TPM.
type tpmDevice struct {
	*agent
	store *keystore.TPMStore
	tkey  keystore.Key
}

func newTPMDevice(t *testing.T, in *wardtest.Instance, sim *swtpmtest.Sim) *tpmDevice {
	t.Helper()
	st, err := keystore.OpenTPMSimulator(sim.Addr, sim.CtrlAddr)
	if err != nil {
		t.Fatal(err)
	}
	st.Dir = t.TempDir()
	t.Cleanup(func() { st.Close() })
	k, err := st.Create(context.Background(), "device")
	if err != nil {
		t.Fatal(err)
	}
	return &tpmDevice{agent: newAgentWith(t, in, k), store: st, tkey: k}
}

// evidence certifies the device key over a fresh server nonce.
func (d *tpmDevice) evidence(t *testing.T) (*keystore.KeyAttestation, map[string]any) {
	t.Helper()
	nonce := d.nonce(t)
	h := sha256.Sum256([]byte(nonce))
	a, err := d.store.AttestKey(context.Background(), d.tkey, h[:])
	if err != nil {
		t.Fatalf("AttestKey: %v", err)
	}
	return a, evidenceJSON(a, nonce)
}

func evidenceJSON(a *keystore.KeyAttestation, nonce string) map[string]any {
	return map[string]any{"format": "tpm2", "nonce": nonce, "ek_public": b64.EncodeToString(a.EKPublic),
		"ek_certificate": b64.EncodeToString(a.EKCertificate), "ak_public": b64.EncodeToString(a.AKPublic),
		"key_public": b64.EncodeToString(a.KeyPublic), "certify_info": b64.EncodeToString(a.CertifyInfo),
		"certify_signature": b64.EncodeToString(a.Signature)}
}

func (d *tpmDevice) registration(t *testing.T, ev map[string]any) map[string]any {
	body := d.agent.registration(t)
	body["key_storage"] = "tpm"
	if ev != nil {
		body["attestation"] = ev
	}
	return body
}

// challenge returns the attestation challenge of a registration answer.
func challenge(t *testing.T, r result) (blob, enc []byte, state string) {
	t.Helper()
	c, _ := r.JSON["attestation_challenge"].(map[string]any)
	if c == nil {
		t.Fatalf("no attestation_challenge: %s", r.Body)
	}
	blob, err1 := b64.DecodeString(c["credential_blob"].(string))
	enc, err2 := b64.DecodeString(c["encrypted_secret"].(string))
	if err1 != nil || err2 != nil || c["state"] == "" || c["expires_at"] == "" {
		t.Fatalf("malformed challenge: %v", c)
	}
	return blob, enc, c["state"].(string)
}

func (d *tpmDevice) answer(t *testing.T, id, state string, secret []byte) result {
	t.Helper()
	return d.call(t, "POST", "/devices/"+id+"/attestation", map[string]string{"state": state, "secret": b64.EncodeToString(secret)})
}

func wantReasonBody(t *testing.T, r result, status int, code, reason string) {
	t.Helper()
	want(t, r, status, code)
	if r.str("reason") != reason || r.str("error_description") == "" {
		t.Fatalf("got reason %q (%s), want %q; body %.400s", r.str("reason"), r.str("error_description"), reason, r.Body)
	}
}

// attestedWard runs two instances of one deployment that trust the
// vendor CA of ca for EK certificates, with a policy requiring a hardware
// key for linux devices.
func attestedWard(t *testing.T, ca *swtpmtest.CA) (*wardtest.Instance, *wardtest.Instance) {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "tpm-vendors.pem")
	if err := os.WriteFile(caFile, ca.PEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	configure := func(c *config.Config) {
		c.Devices.TPMEKCAFile = caFile
		for i := range c.StaticClients {
			if c.StaticClients[i].ID == "spa" {
				c.StaticClients[i].Scopes = append(c.StaticClients[i].Scopes, model.ScopeDevice)
			}
		}
	}
	a := wardtest.Start(t, wardtest.Options{Configure: configure})
	// The second instance serves the same issuer (behind one address in
	// production), on the same database and KEK.
	b := wardtest.Start(t, wardtest.Options{Join: a, Configure: func(c *config.Config) { configure(c); c.Issuer = a.URL }})
	if _, err := a.App.Devices.PutPolicy(context.Background(), "test", "linux",
		[]byte(`{"require_hardware_key": true, "require_disk_encryption": true}`)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func deviceOf(t *testing.T, in *wardtest.Instance, id string) *model.Device {
	t.Helper()
	d, err := in.App.Devices.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func events(t *testing.T, in *wardtest.Instance, typ model.EventType) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{typ}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// Enrolment with a TPM key: the evidence verifies, the device is
// registered unattested with a challenge, the TPM answers it (on another
// instance of the deployment), and the key is attested: compliance with
// require_hardware_key follows. A replayed answer is refused.
func TestKeyAttestationEndToEnd(t *testing.T) {
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	in, other := attestedWard(t, vendor.CA)
	dev := newTPMDevice(t, in, vendor)
	dev.signIn(t, "alice")
	att, ev := dev.evidence(t)

	r := dev.call(t, "POST", "/devices", dev.registration(t, ev))
	want(t, r, 201, "")
	id := r.str("id")
	if r.JSON["key_attested"] != false || r.str("key_storage") != "tpm" || r.JSON["key_attestation"] != nil {
		t.Fatalf("registered: %s, want key_storage tpm, not attested yet", r.Body)
	}
	if !strings.Contains(strings.Join(r.rules(), ","), device.RuleHardwareKey) {
		t.Fatalf("before the answer the device fails %s: %s", device.RuleHardwareKey, r.Body)
	}
	blob, enc, state := challenge(t, r)
	secret, err := att.ActivateCredential(context.Background(), blob, enc)
	if err != nil {
		t.Fatalf("the TPM does not answer its challenge: %v", err)
	}

	// The answer, to the other instance: the sealed challenge needs no
	// shared state but the KEK. (Its clock is set to the first one's.)
	other.Clock.Advance(in.Clock.Now().Sub(other.Clock.Now()))
	dev.via = other.URL
	r = dev.answer(t, id, state, secret)
	want(t, r, 200, "")
	ka, _ := r.JSON["key_attestation"].(map[string]any)
	if r.JSON["key_attested"] != true || ka["method"] != "tpm2" || ka["ek_certified"] != true ||
		!strings.Contains(ka["ek_issuer"].(string), "swtpm-localca") || len(ka["ek_sha256"].(string)) != 64 {
		t.Fatalf("answered: %s, want an attested key certified by the local CA", r.Body)
	}
	if strings.Contains(strings.Join(r.rules(), ","), device.RuleHardwareKey) {
		t.Fatalf("an attested device still fails %s: %s", device.RuleHardwareKey, r.Body)
	}
	d := deviceOf(t, in, id)
	if !d.KeyAttested || d.KeyStorage != "tpm" || !strings.Contains(device.DescribeKey(d), "certified by") {
		t.Fatalf("stored device: attested %v, %q", d.KeyAttested, device.DescribeKey(d))
	}
	if evs := events(t, in, model.EventDeviceKeyAttested); len(evs) != 1 || evs[0].DeviceID != id || evs[0].Data["ek_certified"] != "true" {
		t.Fatalf("device.key_attested events: %+v", evs)
	}

	// A healthy report makes it compliant.
	dev.via = ""
	r = dev.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": dev.report(t, id, healthy())})
	want(t, r, 200, "")
	if r.str("compliance") != model.Compliant {
		t.Fatalf("attested and healthy: %s", r.Body)
	}

	// Replayed: the same answer again, on either instance.
	for _, via := range []*wardtest.Instance{in, other} {
		dev.via = via.URL
		wantReasonBody(t, dev.answer(t, id, state, secret), 409, "invalid_attestation", device.ReasonAlreadyAttested)
	}
	if evs := events(t, in, model.EventDeviceKeyAttested); len(evs) != 1 {
		t.Fatalf("%d device.key_attested events after the replays, want 1", len(evs))
	}
	if evs := events(t, in, model.EventDeviceKeyAttestationRejected); len(evs) != 2 || evs[0].Reason != device.ReasonAlreadyAttested {
		t.Fatalf("device.key_attestation_rejected events: %+v", evs)
	}
}

// The attacker's side of the challenge: every wrong answer is refused
// with a reason and changes nothing; the right one still works after.
func TestKeyAttestationChallengeAttacks(t *testing.T) {
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	in, _ := attestedWard(t, vendor.CA)
	dev := newTPMDevice(t, in, vendor)
	dev.signIn(t, "alice")
	att, ev := dev.evidence(t)
	r := dev.call(t, "POST", "/devices", dev.registration(t, ev))
	want(t, r, 201, "")
	id := r.str("id")
	blob, enc, state := challenge(t, r)
	secret, err := att.ActivateCredential(context.Background(), blob, enc)
	if err != nil {
		t.Fatal(err)
	}
	before := deviceOf(t, in, id)

	// Another device of the user, with its own (file) key.
	laptop := newAgent(t, in).signIn(t, "alice")
	lr := laptop.call(t, "POST", "/devices", laptop.registration(t))
	want(t, lr, 201, "")

	wrong := make([]byte, 32)
	rand.Read(wrong)
	tampered := []byte(state)
	tampered[len(tampered)/2] ^= 1
	for _, c := range []struct {
		name           string
		by             *agent
		id, state      string
		secret         []byte
		status         int
		code, reason   string
		unchangedOther bool
	}{
		{"wrong secret", dev.agent, id, state, wrong, 400, "invalid_attestation", device.ReasonWrongSecret, false},
		{"short secret", dev.agent, id, state, secret[:16], 400, "invalid_attestation", device.ReasonWrongSecret, false},
		{"tampered state", dev.agent, id, string(tampered), secret, 400, "invalid_attestation", device.ReasonInvalidChallenge, false},
		{"junk state", dev.agent, id, "not-a-state", secret, 400, "invalid_attestation", device.ReasonInvalidChallenge, false},
		{"another device's challenge", laptop, lr.str("id"), state, secret, 400, "invalid_attestation", device.ReasonInvalidChallenge, true},
		{"answered by another device", laptop, id, state, secret, 403, "access_denied", "", false},
	} {
		r := c.by.call(t, "POST", "/devices/"+c.id+"/attestation", map[string]string{"state": c.state, "secret": b64.EncodeToString(c.secret)})
		if c.reason != "" {
			wantReasonBody(t, r, c.status, c.code, c.reason)
		} else {
			want(t, r, c.status, c.code)
		}
		if got := deviceOf(t, in, id); got.KeyAttested || got.Compliance != before.Compliance || !got.UpdatedAt.Equal(before.UpdatedAt) {
			t.Fatalf("%s: the device changed: attested %v, compliance %s", c.name, got.KeyAttested, got.Compliance)
		}
		if c.unchangedOther && deviceOf(t, in, c.id).KeyAttested {
			t.Fatalf("%s: the other device became attested", c.name)
		}
	}
	want(t, dev.call(t, "POST", "/devices/"+id+"/attestation", map[string]string{"state": state}), 400, "invalid_request")
	want(t, dev.call(t, "POST", "/devices/"+id+"/attestation", map[string]string{"state": state, "secret": "!!"}), 400, "invalid_request")

	// The token must carry the registration scope here too.
	noScope := newAgentWith(t, in, dev.tkey).signInWith(t, "alice", "spa", "openid")
	want(t, noScope.call(t, "POST", "/devices/"+id+"/attestation", map[string]string{"state": state, "secret": b64.EncodeToString(secret)}),
		403, "insufficient_scope")

	// The right answer still works: nothing above used up the challenge.
	want(t, dev.answer(t, id, state, secret), 200, "")
	if !deviceOf(t, in, id).KeyAttested {
		t.Fatal("not attested after the right answer")
	}
}

// An expired challenge is refused and leaves the key unattested.
func TestKeyAttestationChallengeExpires(t *testing.T) {
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true})
	in, _ := attestedWard(t, vendor.CA)
	dev := newTPMDevice(t, in, vendor)
	dev.signIn(t, "alice")
	att, ev := dev.evidence(t)
	r := dev.call(t, "POST", "/devices", dev.registration(t, ev))
	want(t, r, 201, "")
	blob, enc, state := challenge(t, r)
	secret, err := att.ActivateCredential(context.Background(), blob, enc)
	if err != nil {
		t.Fatal(err)
	}
	in.Clock.Advance(device.DefaultAttestationTTL + time.Second)
	dev.signIn(t, "alice") // the earlier token expired meanwhile
	wantReasonBody(t, dev.answer(t, r.str("id"), state, secret), 400, "invalid_attestation", device.ReasonChallengeExpired)
	if d := deviceOf(t, in, r.str("id")); d.KeyAttested {
		t.Fatal("attested by an expired challenge")
	}
}

// Evidence that does not hold is refused at registration, which then
// registers nothing.
func TestKeyAttestationEvidenceRefused(t *testing.T) {
	ca := swtpmtest.NewCA(t)
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true, CA: ca})
	second := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true, CA: ca})
	uncertified := swtpmtest.Start(t, swtpmtest.Options{})
	in, _ := attestedWard(t, ca)
	ctx := context.Background()
	dev := newTPMDevice(t, in, vendor)
	dev.signIn(t, "alice")
	good, goodEv := dev.evidence(t)

	other, err := dev.store.Create(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	nonce := dev.nonce(t)
	h := sha256.Sum256([]byte(nonce))
	otherAtt, err := dev.store.AttestKey(ctx, other, h[:])
	if err != nil {
		t.Fatal(err)
	}
	foreign := newTPMDevice(t, in, second)
	foreignAtt, _ := foreign.evidence(t)
	plain := newTPMDevice(t, in, uncertified)
	plain.signIn(t, "alice")
	_, plainEv := plain.evidence(t)

	mod := func(f func(m map[string]any)) map[string]any {
		m := map[string]any{}
		for k, v := range goodEv {
			m[k] = v
		}
		f(m)
		return m
	}
	enc := func(b []byte) string { return b64.EncodeToString(b) }
	cases := []struct {
		name   string
		by     *tpmDevice
		ev     map[string]any
		body   func(map[string]any)
		status int
		code   string
		reason string
	}{
		{"certification of another key", dev, mod(func(m map[string]any) {
			m["certify_info"], m["certify_signature"], m["ak_public"] = enc(otherAtt.CertifyInfo), enc(otherAtt.Signature), enc(otherAtt.AKPublic)
			m["nonce"] = nonce
		}), nil, 400, "invalid_attestation", "key_mismatch"},
		{"another key's public area", dev, mod(func(m map[string]any) { m["key_public"] = enc(otherAtt.KeyPublic) }), nil, 400, "invalid_attestation", "key_mismatch"},
		{"AK and certification from another TPM", dev, mod(func(m map[string]any) {
			m["ak_public"], m["certify_info"], m["certify_signature"] = enc(foreignAtt.AKPublic), enc(foreignAtt.CertifyInfo), enc(foreignAtt.Signature)
		}), nil, 400, "invalid_attestation", "key_mismatch"},
		{"forged signature", dev, mod(func(m map[string]any) {
			sig := bytes.Clone(good.Signature)
			sig[len(sig)-1] ^= 1
			m["certify_signature"] = enc(sig)
		}), nil, 400, "invalid_attestation", "forged"},
		{"EK not certified by a trusted vendor", plain, plainEv, nil, 400, "invalid_attestation", "ek_untrusted"},
		{"EK certificate of another TPM", dev, mod(func(m map[string]any) { m["ek_certificate"] = enc(foreignAtt.EKCertificate) }), nil, 400, "invalid_attestation", "ek_untrusted"},
		{"nonce this server did not issue", dev, mod(func(m map[string]any) { m["nonce"] = "made-up" }), nil, 400, "invalid_attestation", "stale"},
		{"nonce of another certification", dev, mod(func(m map[string]any) { m["nonce"] = dev.nonceAfter(t, time.Minute) }), nil, 400, "invalid_attestation", "stale"},
		{"not base64url", dev, mod(func(m map[string]any) { m["ak_public"] = "a+b/c=" }), nil, 400, "invalid_attestation", "malformed"},
		{"junk key_public", dev, mod(func(m map[string]any) { m["key_public"] = enc([]byte("junk")) }), nil, 400, "invalid_attestation", "malformed"},
		{"trailing byte", dev, mod(func(m map[string]any) { m["certify_info"] = enc(append(bytes.Clone(good.CertifyInfo), 0)) }), nil, 400, "invalid_attestation", "malformed"},
		{"oversized EK certificate", dev, mod(func(m map[string]any) { m["ek_certificate"] = enc(make([]byte, 9000)) }), nil, 400, "invalid_attestation", "malformed"},
		{"oversized body", dev, mod(func(m map[string]any) { m["ek_certificate"] = enc(make([]byte, 70000)) }), nil, 413, "request_too_large", ""},
		{"unknown format", dev, mod(func(m map[string]any) { m["format"] = "tpm1.2" }), nil, 400, "invalid_attestation", "malformed"},
		{"unknown member", dev, mod(func(m map[string]any) { m["quote"] = "x" }), nil, 400, "invalid_request", ""},
		{"a file key claiming attestation", dev, goodEv, func(b map[string]any) { b["key_storage"] = "file" }, 400, "invalid_attestation", "not_tpm"},
	}
	for _, c := range cases {
		body := c.by.registration(t, c.ev)
		if c.body != nil {
			c.body(body)
		}
		r := c.by.call(t, "POST", "/devices", body)
		if c.reason != "" {
			wantReasonBody(t, r, c.status, c.code, c.reason)
		} else {
			want(t, r, c.status, c.code)
		}
		if ds, _ := in.App.Devices.List(ctx, device.Filter{}); len(ds) != 0 {
			t.Fatalf("%s: %d devices registered, want none", c.name, len(ds))
		}
	}
	if evs := events(t, in, model.EventDeviceKeyAttestationRejected); len(evs) < 10 {
		t.Errorf("%d device.key_attestation_rejected events, want one per refused evidence", len(evs))
	}

	// The genuine evidence still registers (nothing above used it up).
	want(t, dev.call(t, "POST", "/devices", dev.registration(t, goodEv)), 201, "")
}

// Evidence that holds together, but with the endorsement key of another
// (genuine, certified) TPM: registration gives a challenge that the
// device's TPM cannot answer, so its key stays unattested.
func TestKeyAttestationAKNotInEKsTPM(t *testing.T) {
	ca := swtpmtest.NewCA(t)
	vendor := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true, CA: ca})
	second := swtpmtest.Start(t, swtpmtest.Options{EKCertificate: true, CA: ca})
	in, _ := attestedWard(t, ca)
	dev := newTPMDevice(t, in, vendor)
	dev.signIn(t, "alice")
	att, ev := dev.evidence(t)
	foreign := newTPMDevice(t, in, second)
	foreignAtt, _ := foreign.evidence(t)
	ev["ek_public"], ev["ek_certificate"] = b64.EncodeToString(foreignAtt.EKPublic), b64.EncodeToString(foreignAtt.EKCertificate)
	r := dev.call(t, "POST", "/devices", dev.registration(t, ev))
	want(t, r, 201, "")
	id := r.str("id")
	blob, enc, state := challenge(t, r)
	if got, err := att.ActivateCredential(context.Background(), blob, enc); err == nil {
		t.Fatalf("the device's TPM answered a challenge for another TPM's EK (%d bytes)", len(got))
	}
	if got, err := foreignAtt.ActivateCredential(context.Background(), blob, enc); err == nil {
		t.Fatalf("the EK's TPM answered a challenge for an AK it does not hold (%d bytes)", len(got))
	}
	guess := make([]byte, 32)
	rand.Read(guess)
	wantReasonBody(t, dev.answer(t, id, state, guess), 400, "invalid_attestation", device.ReasonWrongSecret)
	if d := deviceOf(t, in, id); d.KeyAttested || d.Compliance == model.Compliant {
		t.Fatalf("attested %v, compliance %s; want neither", d.KeyAttested, d.Compliance)
	}
}

// nonceAfter returns a nonce issued d later (a valid nonce that is not
// the one the certification carries).
func (a *agent) nonceAfter(t *testing.T, d time.Duration) string {
	t.Helper()
	a.in.Clock.Advance(d)
	return a.nonce(t)
}

// The original finding: a key in a file (or anywhere) reported as a TPM
// key is recorded as reported but not attested, and fails
// require_hardware_key with a fix, however healthy its posture.
func TestUnattestedKeysFailHardwareKeyRule(t *testing.T) {
	in := startWard(t)
	if _, err := in.App.Devices.PutPolicy(context.Background(), "test", "linux", []byte(`{"require_hardware_key": true}`)); err != nil {
		t.Fatal(err)
	}
	for _, storage := range []string{"file", "tpm"} {
		a := newAgent(t, in).signIn(t, "alice")
		body := a.registration(t)
		body["key_storage"] = storage
		r := a.call(t, "POST", "/devices", body)
		want(t, r, 201, "")
		id := r.str("id")
		r = a.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": a.report(t, id, healthy())})
		want(t, r, 200, "")
		fs, _ := r.JSON["failures"].([]any)
		if r.str("compliance") != model.NonCompliant || r.JSON["key_attested"] != false || r.str("key_storage") != storage ||
			strings.Join(r.rules(), ",") != device.RuleHardwareKey {
			t.Fatalf("%s key: %s, want noncompliant with %s only", storage, r.Body, device.RuleHardwareKey)
		}
		f := fs[0].(map[string]any)
		if !strings.Contains(f["detail"].(string), "not attested") || !strings.Contains(f["fix"].(string), "--key-store tpm") {
			t.Fatalf("%s key: failure %v lacks a clear detail and fix", storage, f)
		}
		if storage == "tpm" && !strings.Contains(f["detail"].(string), "reports a TPM key") {
			t.Fatalf("a claimed TPM key: detail %q does not say the claim is unproven", f["detail"])
		}
		if d := deviceOf(t, in, id); d.KeyAttested || !strings.Contains(device.DescribeKey(d), "not attested") {
			t.Fatalf("%s key: %q", storage, device.DescribeKey(d))
		}
	}
}

// Without configured vendor CAs an attested device says that its
// endorsement key is not chained to a trusted vendor.
func TestKeyAttestationWithoutVendorCAs(t *testing.T) {
	sim := swtpmtest.Start(t, swtpmtest.Options{})
	in := startWard(t)
	dev := newTPMDevice(t, in, sim)
	dev.signIn(t, "alice")
	att, ev := dev.evidence(t)
	r := dev.call(t, "POST", "/devices", dev.registration(t, ev))
	want(t, r, 201, "")
	blob, enc, state := challenge(t, r)
	secret, err := att.ActivateCredential(context.Background(), blob, enc)
	if err != nil {
		t.Fatal(err)
	}
	r = dev.answer(t, r.str("id"), state, secret)
	want(t, r, 200, "")
	ka, _ := r.JSON["key_attestation"].(map[string]any)
	if r.JSON["key_attested"] != true || ka["ek_certified"] != false || ka["ek_issuer"] != nil {
		t.Fatalf("%s: want attested, EK not certified", r.Body)
	}
	if s := device.DescribeKey(deviceOf(t, in, r.str("id"))); !strings.Contains(s, "not chained to a trusted TPM vendor") {
		t.Fatalf("DescribeKey = %q", s)
	}
}
