package deviceapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// agent is a device: its key, and a user's access token bound to it.
type agent struct {
	in     *wardtest.Instance
	key    crypto.Signer // a software key, or a TPM key (keystore)
	signer *dpop.Signer
	token  string
	// via, when set, is the base URL requests are sent to: another
	// instance serving the same issuer (proofs still name the issuer).
	via string
}

func newAgent(t testing.TB, in *wardtest.Instance) *agent {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newAgentWith(t, in, k)
}

// newAgentWith is an agent whose device key is k.
func newAgentWith(t testing.TB, in *wardtest.Instance, k crypto.Signer) *agent {
	t.Helper()
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return &agent{in: in, key: k, signer: s}
}

func (a *agent) jwk(t testing.TB) json.RawMessage {
	t.Helper()
	j := a.signer.PublicJWK()
	b, err := j.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startWard runs Ward whose client "spa" may request the device
// registration scope, as the device agent's client may; "native" may not.
func startWard(t testing.TB) *wardtest.Instance {
	t.Helper()
	return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		for i := range c.StaticClients {
			if c.StaticClients[i].ID == "spa" {
				c.StaticClients[i].Scopes = append(c.StaticClients[i].Scopes, model.ScopeDevice)
			}
		}
	}})
}

// signIn gets a DPoP-bound access token for username through the code
// flow of the public client "spa" with the scopes "openid ward:device",
// bound to the agent's device key.
func (a *agent) signIn(t testing.TB, username string) *agent {
	t.Helper()
	return a.signInWith(t, username, "spa", "openid "+model.ScopeDevice)
}

// signInWith is signIn with another client and scope.
func (a *agent) signInWith(t testing.TB, username, client, scope string) *agent {
	t.Helper()
	in := a.in
	verifier, challenge := wardtest.PKCE()
	password, otp := wardtest.BobPassword, ""
	if username == "alice" {
		password = wardtest.AlicePassword
		in.Clock.Advance(31 * time.Second) // a fresh TOTP step
		otp = in.TOTP(t, 0)
	}
	loc := in.Login(t, in.Browser(), in.AuthorizeURL(client, challenge, url.Values{"scope": {scope}, "dpop_jkt": {a.signer.Thumbprint()}}),
		username, password, otp)
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("authorize: %s", loc)
	}
	r := a.post(t, "/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}, "client_id": {client}})
	if r.Status != 200 || r.str("token_type") != "DPoP" {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	a.token = r.str("access_token")
	return a
}

func (a *agent) post(t testing.TB, path string, form url.Values) result {
	t.Helper()
	hr, _ := http.NewRequest(http.MethodPost, a.in.URL+path, strings.NewReader(form.Encode()))
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	p, err := a.signer.ProofAt(http.MethodPost, a.in.URL+path, "", "", a.in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("DPoP", p)
	return send(t, hr)
}

type result struct {
	Status int
	Header http.Header
	Body   string
	JSON   map[string]any
}

func (r result) str(k string) string { s, _ := r.JSON[k].(string); return s }

// rules returns the rule names of the failures in a device response.
func (r result) rules() []string {
	var out []string
	fs, _ := r.JSON["failures"].([]any)
	for _, f := range fs {
		m, _ := f.(map[string]any)
		s, _ := m["rule"].(string)
		out = append(out, s)
	}
	return out
}

func send(t testing.TB, hr *http.Request) result {
	t.Helper()
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	_ = json.Unmarshal(b, &r.JSON)
	return r
}

// call sends a JSON request to the device API with the agent's token and a
// DPoP proof signed by signer (default: the agent's key).
func (a *agent) call(t testing.TB, method, path string, body any, signer ...*dpop.Signer) result {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	base := a.in.URL
	if a.via != "" {
		base = a.via
	}
	hr, _ := http.NewRequest(method, base+path, rd)
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		s := a.signer
		if len(signer) > 0 {
			s = signer[0]
		}
		hr.Header.Set("Authorization", "DPoP "+a.token)
		p, err := s.ProofAt(method, a.in.URL+path, a.token, "", a.in.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("DPoP", p)
	}
	return send(t, hr)
}

func (a *agent) nonce(t testing.TB) string {
	t.Helper()
	r := send(t, mustReq(t, http.MethodGet, a.in.URL+"/devices/nonce"))
	if r.Status != 200 || r.str("nonce") == "" || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("nonce: %d %v %s", r.Status, r.Header, r.Body)
	}
	return r.str("nonce")
}

func mustReq(t testing.TB, method, u string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// report signs p for deviceID over a fresh nonce from the API.
func (a *agent) report(t testing.TB, deviceID string, p *posture.Posture) string {
	t.Helper()
	cp := *p
	cp.CollectedAt = a.in.Clock.Now()
	r, err := posture.SignReport(a.key, &cp, deviceID, a.nonce(t), a.in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (a *agent) registration(t testing.TB) map[string]any {
	return map[string]any{"jwk": a.jwk(t), "key_storage": "file", "platform": "linux", "os_name": "Debian GNU/Linux",
		"os_version": "12", "hostname": "alice-laptop", "agent_version": "0.1.0"}
}

func healthy() *posture.Posture {
	return &posture.Posture{Platform: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", Hostname: "alice-laptop",
		DiskEncrypted: posture.Yes, UserIsAdmin: posture.No, AntiMalwarePresent: posture.Yes, FirewallEnabled: posture.Yes,
		SecureBoot: posture.Yes, ScreenLock: posture.Yes, Rooted: posture.No}
}

func want(t testing.TB, r result, status int, code string) {
	t.Helper()
	if r.Status != status || r.str("error") != code {
		t.Fatalf("got %d %q (%s), want %d %q; body %.400s", r.Status, r.str("error"), r.str("error_description"), status, code, r.Body)
	}
}

func TestDeviceAPI(t *testing.T) {
	in := startWard(t)
	ctx := context.Background()
	if _, err := in.App.Devices.PutPolicy(ctx, "test", "linux", []byte(`{"require_disk_encryption": true, "require_firewall": true}`)); err != nil {
		t.Fatal(err)
	}
	laptop := newAgent(t, in)

	// No token.
	r := laptop.call(t, "POST", "/devices", laptop.registration(t))
	want(t, r, 401, "invalid_token")
	if len(r.Header.Values("WWW-Authenticate")) == 0 {
		t.Error("401 without WWW-Authenticate")
	}

	laptop.signIn(t, "alice")

	// Proof of possession: a token bound to another key cannot register
	// this one.
	other := newAgent(t, in).signIn(t, "alice")
	body := laptop.registration(t)
	r = other.call(t, "POST", "/devices", body)
	want(t, r, 403, "access_denied")
	if !strings.Contains(r.str("error_description"), "key being registered") {
		t.Errorf("description %q", r.str("error_description"))
	}
	// The proof must be made with the token's key.
	r = laptop.call(t, "POST", "/devices", body, other.signer)
	want(t, r, 401, "invalid_dpop_proof")

	// Registration.
	r = laptop.call(t, "POST", "/devices", body)
	want(t, r, 201, "")
	id := r.str("id")
	if id == "" || r.str("jkt") != laptop.signer.Thumbprint() || r.str("status") != model.DeviceActive ||
		r.str("compliance") != model.ComplianceUnknown || r.Header.Get("Location") != "/devices/"+id ||
		strings.Join(r.rules(), ",") != "no_posture" || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("register: %v %s", r.Header, r.Body)
	}
	// Again: conflict.
	want(t, laptop.call(t, "POST", "/devices", body), 409, "conflict")
	// Invalid bodies.
	bad := laptop.registration(t)
	bad["platform"] = "Linux!"
	want(t, laptop.call(t, "POST", "/devices", bad), 400, "invalid_request")
	bad = laptop.registration(t)
	bad["extra"] = 1
	want(t, laptop.call(t, "POST", "/devices", bad), 400, "invalid_request")

	// A healthy report.
	r = laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": laptop.report(t, id, healthy())})
	want(t, r, 200, "")
	if r.str("compliance") != model.Compliant || len(r.rules()) != 0 || r.str("posture_at") == "" {
		t.Fatalf("healthy report: %s", r.Body)
	}
	// A replayed report.
	rep := laptop.report(t, id, healthy())
	want(t, laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": rep}), 200, "")
	r = laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": rep})
	want(t, r, 409, "invalid_report")
	if r.str("reason") != device.ReasonReplayed {
		t.Errorf("replay reason %q", r.str("reason"))
	}
	// Disk encryption off: noncompliant, the failing rule with its fix.
	p := healthy()
	p.DiskEncrypted = posture.No
	r = laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": laptop.report(t, id, p)})
	want(t, r, 200, "")
	fs, _ := r.JSON["failures"].([]any)
	if r.str("compliance") != model.NonCompliant || strings.Join(r.rules(), ",") != device.RuleDiskEncryption ||
		!strings.Contains(fs[0].(map[string]any)["fix"].(string), "encryption") {
		t.Fatalf("flipped report: %s", r.Body)
	}
	// GET shows the same.
	r = laptop.call(t, "GET", "/devices/"+id, nil)
	want(t, r, 200, "")
	if r.str("compliance") != model.NonCompliant || strings.Join(r.rules(), ",") != device.RuleDiskEncryption {
		t.Fatalf("get: %s", r.Body)
	}

	// Another device of the same user cannot act for this one.
	want(t, other.call(t, "GET", "/devices/"+id, nil), 403, "access_denied")
	want(t, other.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": laptop.report(t, id, healthy())}), 403, "access_denied")
	// Another user cannot see it at all.
	bob := newAgent(t, in).signIn(t, "bob")
	want(t, bob.call(t, "GET", "/devices/"+id, nil), 404, "not_found")
	want(t, laptop.call(t, "GET", "/devices/nope", nil), 404, "not_found")

	// A report signed by another key, sent with this device's token.
	r = laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": other.report(t, id, healthy())})
	want(t, r, 400, "invalid_report")
	if r.str("reason") != device.ReasonWrongKey {
		t.Errorf("other key: reason %q", r.str("reason"))
	}
	want(t, laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": ""}), 400, "invalid_request")
	want(t, laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": "x.y.z"}), 400, "invalid_report")

	// Registration with a first report (sub = the key thumbprint).
	desk := newAgent(t, in).signIn(t, "alice")
	body = desk.registration(t)
	body["posture_report"] = desk.report(t, desk.signer.Thumbprint(), healthy())
	r = desk.call(t, "POST", "/devices", body)
	want(t, r, 201, "")
	if r.str("compliance") != model.Compliant || r.JSON["posture_error"] != nil {
		t.Fatalf("register with report: %s", r.Body)
	}

	// A disabled device's reports are refused.
	if _, err := in.App.Devices.Disable(ctx, "test", id); err != nil {
		t.Fatal(err)
	}
	r = laptop.call(t, "POST", "/devices/"+id+"/posture", map[string]string{"report": laptop.report(t, id, healthy())})
	want(t, r, 403, "access_denied")
	if r.str("reason") != device.ReasonDeviceInactive {
		t.Errorf("disabled: %s", r.Body)
	}
	if r := laptop.call(t, "GET", "/devices/"+id, nil); r.str("status") != model.DeviceDisabled {
		t.Errorf("get disabled: %s", r.Body)
	}
}

// A bearer (unbound) token is refused: registration needs proof of
// possession.
func TestDeviceAPIRefusesBearerTokens(t *testing.T) {
	in := startWard(t)
	verifier, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	loc := in.Login(t, in.Browser(), in.AuthorizeURL("native", challenge, url.Values{"scope": {"openid"}}), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}, "client_id": {"native"}}
	hr, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form.Encode()))
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tr := send(t, hr)
	if tr.Status != 200 || tr.str("token_type") != "Bearer" {
		t.Fatalf("token: %s", tr.Body)
	}
	a := newAgent(t, in)
	b, _ := json.Marshal(a.registration(t))
	hr, _ = http.NewRequest(http.MethodPost, in.URL+"/devices", strings.NewReader(string(b)))
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+tr.str("access_token"))
	r := send(t, hr)
	want(t, r, 403, "access_denied")
	if !strings.Contains(r.str("error_description"), "DPoP-bound") {
		t.Errorf("description %q", r.str("error_description"))
	}
	if ds, _ := in.App.Devices.List(context.Background(), device.Filter{}); len(ds) != 0 {
		t.Error("a device was registered")
	}
}

// Registration needs the device scope: another application the user signed
// in to (here "native", which may not request the scope, and "spa" when it
// did not ask for it) holds a token bound to its own key, and must not be
// able to register that key as the user's device.
func TestRegistrationNeedsDeviceScope(t *testing.T) {
	in := startWard(t)
	ctx := context.Background()
	for _, c := range []struct{ client, scope string }{{"native", "openid"}, {"spa", "openid"}, {"spa", "openid profile offline_access"}} {
		attacker := newAgent(t, in).signInWith(t, "alice", c.client, c.scope)
		if claims := wardtest.JWTClaims(t, attacker.token); claims["cnf"] == nil {
			t.Fatalf("%s: the attacker's token is not DPoP-bound: %v", c.client, claims)
		}
		body := attacker.registration(t)
		body["key_storage"] = "tpm"
		r := attacker.call(t, "POST", "/devices", body)
		want(t, r, 403, "insufficient_scope")
		if !strings.Contains(r.str("error_description"), model.ScopeDevice) {
			t.Errorf("%s: description %q does not name the scope", c.client, r.str("error_description"))
		}
		chs, err := httpauth.Parse(r.Header.Values("WWW-Authenticate")...)
		if err != nil || len(chs) != 1 || chs[0].Scheme != "DPoP" || chs[0].Param("error") != "insufficient_scope" ||
			chs[0].Param("scope") != model.ScopeDevice {
			t.Errorf("%s: challenge %v (%v), want DPoP error=insufficient_scope scope=%s", c.client, r.Header.Values("WWW-Authenticate"), err, model.ScopeDevice)
		}
	}
	if ds, err := in.App.Devices.List(ctx, device.Filter{}); err != nil || len(ds) != 0 {
		t.Fatalf("devices after refused registrations: %d (%v), want none", len(ds), err)
	}

	// A client the administrator did not grant the scope cannot obtain it.
	a := newAgent(t, in)
	_, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	loc := in.Login(t, in.Browser(), in.AuthorizeURL("native", challenge, url.Values{"scope": {"openid " + model.ScopeDevice},
		"dpop_jkt": {a.signer.Thumbprint()}}), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	if loc.Query().Get("error") != "invalid_scope" || loc.Query().Get("code") != "" {
		t.Fatalf("native asking for %s: %s, want error=invalid_scope", model.ScopeDevice, loc)
	}

	// The device agent's client (here "spa", granted the scope) registers.
	a.signIn(t, "alice")
	want(t, a.call(t, "POST", "/devices", a.registration(t)), 201, "")
}
