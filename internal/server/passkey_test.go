package server_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// startPasskeys runs Ward on http://localhost:port, an origin browsers
// allow WebAuthn on (127.0.0.1 is not a relying party id).
func startPasskeys(t *testing.T, o wardtest.Options) *wardtest.Instance {
	t.Helper()
	base := o.Configure
	o.Configure = func(c *config.Config) {
		c.Issuer = strings.Replace(c.Issuer, "127.0.0.1", "localhost", 1)
		if base != nil {
			base(c)
		}
	}
	in := wardtest.Start(t, o)
	if !in.App.Identity.PasskeysEnabled() {
		t.Fatal("passkeys are off on a localhost issuer")
	}
	return in
}

// webauthnForm is one passkey form of a page.
type webauthnForm struct {
	action, kind string
	options      []byte
	fields       url.Values
}

var formRE = regexp.MustCompile(`(?s)<form method="post" action="([^"]+)" data-webauthn="(get|create)" data-webauthn-options="([^"]*)">(.*?)</form>`)

// webauthnForms returns the passkey forms of a page, in order.
func webauthnForms(body string) []webauthnForm {
	var out []webauthnForm
	for _, m := range formRE.FindAllStringSubmatch(body, -1) {
		out = append(out, webauthnForm{action: m[1], kind: m[2], options: []byte(html.UnescapeString(m[3])), fields: wardtest.HiddenFields(m[4])})
	}
	return out
}

func onlyForm(t *testing.T, body, kind string) webauthnForm {
	t.Helper()
	for _, f := range webauthnForms(body) {
		if f.kind == kind {
			return f
		}
	}
	t.Fatalf("no %s passkey form on the page: %.600s", kind, body)
	return webauthnForm{}
}

// post submits a passkey form with the authenticator's answer.
func (f webauthnForm) post(t *testing.T, in *wardtest.Instance, b *http.Client, response []byte, extra url.Values) (*http.Response, string) {
	t.Helper()
	form := url.Values{}
	for k, v := range f.fields {
		form[k] = v
	}
	form.Set("response", string(response))
	for k, v := range extra {
		form[k] = v
	}
	return wardtest.Do(t, b, http.MethodPost, in.URL+f.action, form)
}

// enrolPasskey signs alice in (password + TOTP) and adds a passkey from
// "My account"; it returns the browser, signed in.
func enrolPasskey(t *testing.T, in *wardtest.Instance, au *webauthntest.Authenticator, name string) *http.Client {
	t.Helper()
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	in.Login(t, b, in.AuthorizeURL("native", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	resp, body := wardtest.Do(t, b, http.MethodGet, in.URL+"/account", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("account page: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	add := onlyForm(t, body, "create")
	answer, _, err := au.Create(add.options)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = add.post(t, in, b, answer, url.Values{"name": {name}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Added "+name) || !strings.Contains(body, "<strong>"+name+"</strong>") {
		t.Fatalf("add passkey: %d %.600s", resp.StatusCode, body)
	}
	return b
}

// passkeySignIn runs a usernameless sign-in with au for the native client
// and returns the final response.
func passkeySignIn(t *testing.T, in *wardtest.Instance, b *http.Client, au *webauthntest.Authenticator, extra url.Values) (*http.Response, string, string) {
	t.Helper()
	verifier, challenge := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, extra), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	f := onlyForm(t, body, "get")
	answer, err := au.Get(f.options, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = f.post(t, in, b, answer, nil)
	return resp, body, verifier
}

// TestPasskeyEndToEnd: enrolment in "My account", a usernameless sign-in
// through the real pages, amr and acr in the tokens and the sign-in log,
// the replayed form refused, and the pages' CSP allowing only Ward's own
// script.
func TestPasskeyEndToEnd(t *testing.T) {
	in := startPasskeys(t, wardtest.Options{})
	au := webauthntest.New(in.URL)
	enrolPasskey(t, in, au, "Laptop")

	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, nil), nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("login CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Contains(csp, "connect-src") {
		t.Errorf("login CSP %q allows more than the script file", csp)
	}
	if n := strings.Count(body, "<script"); n != 1 || !strings.Contains(body, `<script src="/static/passkey.js"></script>`) || strings.Contains(body, "style=") {
		t.Errorf("login page scripts: %d; want exactly the passkey.js file, no inline script or style", n)
	}
	if !strings.Contains(body, `name="password"`) {
		t.Error("the password form is gone")
	}
	f := onlyForm(t, body, "get")
	answer, err := au.Get(f.options, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = f.post(t, in, b, answer, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("passkey sign-in: %d %.500s", resp.StatusCode, body)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	tok := exchange(t, in, "native", loc.Query().Get("code"), verifier, nil)
	if tok.Status != http.StatusOK {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
	for _, jwt := range []string{tok.str("access_token"), tok.str("id_token")} {
		cl := claims(t, jwt)
		if cl["acr"] != "urn:ward:acr:phishing_resistant" {
			t.Errorf("acr %v", cl["acr"])
		}
		amr, _ := cl["amr"].([]any)
		if len(amr) != 3 || amr[0] != "hwk" || amr[1] != "user" || amr[2] != "mfa" {
			t.Errorf("amr %v, want [hwk user mfa]", amr)
		}
	}
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventSignInSucceeded}, Limit: 1})
	if err != nil || len(evs) == 0 || evs[0].Data["amr"] != "hwk user mfa" || evs[0].Data["acr"] != "urn:ward:acr:phishing_resistant" {
		t.Errorf("sign-in log: %v %+v", err, evs)
	}

	// The same form posted again (a replay by whoever captured it).
	resp, body = f.post(t, in, in.Browser(), answer, nil)
	if resp.StatusCode == http.StatusSeeOther {
		t.Fatal("a replayed passkey answer signed in")
	}
	resp, body = f.post(t, in, b, answer, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "expired or was already used") {
		t.Errorf("replay with the form's cookie: %d %.300s", resp.StatusCode, body)
	}
	failed, _ := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventSignInFailed}, Limit: 1})
	if len(failed) == 0 || failed[0].Reason != "passkey_challenge" || failed[0].Data["stage"] != "passkey" {
		t.Errorf("signin.failed of the replay: %+v", failed)
	}

	// An answer made for another origin (a phishing proxy's page).
	phish := *au
	phish.Origin = "http://localhost.evil.test"
	resp, body, _ = passkeySignIn(t, in, in.Browser(), &phish, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "made for another site") {
		t.Errorf("phishing origin: %d %.300s", resp.StatusCode, body)
	}
}

// TestPasskeyPolicyStepUp: a policy requiring phishing-resistant
// authentication for one app refuses a password + TOTP sign-in and steps
// it up to the passkey (a posted TOTP code does not do); without a
// passkey it names what is missing; another app is unaffected.
func TestPasskeyPolicyStepUp(t *testing.T) {
	in := startPasskeys(t, wardtest.Options{})
	doc, err := policy.DecodeYAML([]byte(`
policies:
  - id: native-phishing-resistant
    name: Native app needs a passkey
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [native]}
    grant: {authentication_strength: phishing_resistant}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), doc, access.ApplyOptions{Actor: "test"}); err != nil {
		t.Fatal(err)
	}

	// Without a passkey: refused, and told what to do.
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	resp, body := in.TryLogin(t, b, in.AuthorizeURL("native", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "phishing-resistant") || !strings.Contains(body, "/account") {
		t.Fatalf("no passkey yet: %d %.500s", resp.StatusCode, body)
	}

	// "web" is not covered by the policy: a sign-in there gives the recent
	// MFA session "My account" needs to add a passkey (the refused
	// sign-in created none).
	au := webauthntest.New(in.URL)
	in.Clock.Advance(31 * time.Second)
	bw := in.Browser()
	_, challenge = wardtest.PKCE()
	u := in.AuthorizeURL("web", challenge, nil)
	in.Login(t, bw, u, "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	_, body = wardtest.Do(t, bw, http.MethodGet, in.URL+"/account", nil)
	add := onlyForm(t, body, "create")
	answer, _, _ := au.Create(add.options)
	if resp, body := add.post(t, in, bw, answer, url.Values{"name": {"Laptop"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("enrol: %d %.300s", resp.StatusCode, body)
	}

	// Password + TOTP for "native": the second-factor page asks for the
	// passkey only.
	b = in.Browser()
	verifier, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	_, body = wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, nil), nil)
	form := wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	// alice has TOTP and a passkey: the second-factor page offers both...
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="otp"`) {
		t.Fatalf("second factor page: %d %.300s", resp.StatusCode, body)
	}
	// ...but TOTP leads to the phishing-resistant step-up.
	mfa := totpForm(t, body)
	mfa.Set("otp", in.TOTP(t, 0))
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", mfa)
	if resp.StatusCode != http.StatusOK || strings.Contains(body, `name="otp"`) || !strings.Contains(body, "requires a phishing-resistant sign-in") {
		t.Fatalf("after TOTP: %d, want the passkey-only step-up; %.600s", resp.StatusCode, body)
	}
	pk := onlyForm(t, body, "get")
	answer, err = au.Get(pk.options, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = pk.post(t, in, b, answer, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("passkey step-up: %d %.500s", resp.StatusCode, body)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	tok := exchange(t, in, "native", loc.Query().Get("code"), verifier, nil)
	cl := claims(t, tok.str("access_token"))
	amr, _ := cl["amr"].([]any)
	if cl["acr"] != "urn:ward:acr:phishing_resistant" || !slices.Contains(amr, any("hwk")) || !slices.Contains(amr, any("pwd")) {
		t.Errorf("step-up token: acr %v amr %v", cl["acr"], amr)
	}
}

// totpForm returns the fields of the second-factor page's TOTP form (its
// first form).
func totpForm(t *testing.T, body string) url.Values {
	t.Helper()
	i := strings.Index(body, `name="otp"`)
	start := strings.LastIndex(body[:i], "<form")
	return wardtest.HiddenFields(body[start:i])
}

// TestPasskeyClaimsChallenge: a resource's claims challenge for the
// phishing-resistant acr (essential) steps an SSO session of password +
// TOTP up to the passkey; an MFA request is met by the passkey session.
func TestPasskeyClaimsChallenge(t *testing.T) {
	in := startPasskeys(t, wardtest.Options{})
	au := webauthntest.New(in.URL)
	enrolPasskey(t, in, au, "Laptop")

	b := in.Browser()
	_, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	in.Login(t, b, in.AuthorizeURL("native", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))

	pr := `{"access_token":{"acr":{"essential":true,"values":["urn:ward:acr:phishing_resistant"]}}}`
	verifier, challenge := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, url.Values{"claims": {pr}}), nil)
	if resp.StatusCode != http.StatusOK || strings.Contains(body, `name="otp"`) {
		t.Fatalf("claims step-up: %d, want the passkey page; %.500s", resp.StatusCode, body)
	}
	pk := onlyForm(t, body, "get")
	answer, _ := au.Get(pk.options, nil)
	resp, body = pk.post(t, in, b, answer, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("step-up: %d %.300s", resp.StatusCode, body)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	tok := exchange(t, in, "native", loc.Query().Get("code"), verifier, nil)
	if acr := claims(t, tok.str("access_token"))["acr"]; acr != "urn:ward:acr:phishing_resistant" {
		t.Errorf("acr %v", acr)
	}
	// The discovery document lists the new acr.
	_, disc := wardtest.Do(t, b, http.MethodGet, in.URL+"/.well-known/openid-configuration", nil)
	if !strings.Contains(disc, "urn:ward:acr:phishing_resistant") {
		t.Error("discovery lacks the phishing-resistant acr")
	}
	// The passkey session now meets an MFA request without a prompt.
	mfa := `{"access_token":{"acr":{"essential":true,"values":["urn:ward:acr:mfa"]}}}`
	_, challenge = wardtest.PKCE()
	resp, _ = wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, url.Values{"claims": {mfa}, "prompt": {"none"}}), nil)
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		t.Errorf("MFA request on a passkey session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestPasskeyPagesWithoutPasskeys: on an issuer browsers refuse WebAuthn
// on (127.0.0.1) the pages stay script-free and password + TOTP work.
func TestPasskeyPagesWithoutPasskeys(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	if in.App.Identity.PasskeysEnabled() {
		t.Fatal("passkeys on for an IP issuer")
	}
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, nil), nil)
	if strings.Contains(body, "<script") || strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src") {
		t.Error("login page without passkeys has a script")
	}
	in.Clock.Advance(31 * time.Second)
	in.Login(t, b, in.AuthorizeURL("native", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
}

// TestPasskeyRecoveryFallback: with passkeys.recovery_fallback
// recovery_code, a user who lost every passkey meets the
// phishing-resistant step with a recovery code: My account opens (not
// the application), a new passkey is added and signs in to the
// application; the recovery is audited and raises risk. Without the
// setting the code is refused at that step.
func TestPasskeyRecoveryFallback(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		in := startPasskeys(t, wardtest.Options{Configure: func(c *config.Config) {
			if fallback {
				c.Passkeys.RecoveryFallback = "recovery_code"
			}
		}})
		ctx := context.Background()
		lost := webauthntest.New(in.URL)
		enrolPasskey(t, in, lost, "Lost phone")
		alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
		codes, err := in.App.Identity.NewRecoveryCodes(ctx, "test", alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		doc, _ := policy.DecodeYAML([]byte("policies:\n  - {id: pr, name: PR, state: enabled, assignments: {users: {include: [all]}, applications: {include: [native]}}, grant: {authentication_strength: phishing_resistant}}\n"))
		if _, err := in.App.Access.Apply(ctx, doc, access.ApplyOptions{Actor: "test"}); err != nil {
			t.Fatal(err)
		}
		b := in.Browser()
		_, challenge := wardtest.PKCE()
		in.Clock.Advance(31 * time.Second)
		resp, body := in.TryLogin(t, b, in.AuthorizeURL("native", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "requires a phishing-resistant sign-in") {
			t.Fatalf("step-up page: %d %.400s", resp.StatusCode, body)
		}
		if got := strings.Contains(body, "Lost all your passkeys?"); got != fallback {
			t.Errorf("fallback %v: recovery offered %v", fallback, got)
		}
		pk := onlyForm(t, body, "get")
		if !fallback {
			if strings.Contains(body, `name="recovery"`) || strings.Contains(body, `name="otp"`) {
				t.Error("the phishing-resistant step offers a code without the fallback")
			}
			continue
		}
		// The step's state with a TOTP code instead of the recovery code:
		// refused (only a passkey, or the fallback, serves this step).
		in.Clock.Advance(31 * time.Second)
		bad := url.Values{"csrf": pk.fields["csrf"], "state": {recoveryStateOf(t, body)}, "otp": {in.TOTP(t, 0)}}
		if resp, _ := wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("TOTP at the phishing-resistant step: %d, want 400", resp.StatusCode)
		}
		form := url.Values{"csrf": pk.fields["csrf"], "recovery": {codes[0].Reveal()}}
		form.Set("state", recoveryStateOf(t, body))
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", form)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "My account") || !strings.Contains(body, "signed in with a recovery code") {
			t.Fatalf("recovery: %d %.500s", resp.StatusCode, body)
		}
		rec := events(t, in, model.EventPasskeyRecovery)
		det := events(t, in, model.EventRiskDetected)
		if len(rec) != 1 || rec[0].Reason != "fallback" || len(det) != 1 || det[0].Data[model.DataDetectionSource] != model.DetectionSourceSignIn ||
			det[0].Data[model.DataDetectionID] != "passkey-recovery:"+rec[0].ID {
			t.Fatalf("recovery events: %+v %+v", rec, det)
		}
		// Add the new passkey, then sign in to the application with it.
		fresh := webauthntest.New(in.URL)
		add := onlyForm(t, body, "create")
		answer, _, _ := fresh.Create(add.options)
		if resp, body := add.post(t, in, b, answer, url.Values{"name": {"New phone"}}); resp.StatusCode != http.StatusOK {
			t.Fatalf("add: %d %.300s", resp.StatusCode, body)
		}
		resp, body, _ = passkeySignIn(t, in, in.Browser(), fresh, nil)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("new passkey sign-in: %d %.300s", resp.StatusCode, body)
		}
	}
}

// recoveryStateOf is the state of the step-up page's recovery-code form.
func recoveryStateOf(t *testing.T, body string) string {
	t.Helper()
	i := strings.Index(body, `name="recovery"`)
	if i < 0 {
		t.Fatalf("no recovery form: %.400s", body)
	}
	start := strings.LastIndex(body[:i], "<form")
	return wardtest.HiddenFields(body[start:i]).Get("state")
}

func events(t *testing.T, in *wardtest.Instance, typ model.EventType) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{typ}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestPasskeyAcrossRestart: a ceremony begun before a restart is answered
// after it (the challenge lives in the database), and an answer used
// before the restart is refused after it.
func TestPasskeyAcrossRestart(t *testing.T) {
	in := startPasskeys(t, wardtest.Options{})
	au := webauthntest.New(in.URL)
	enrolPasskey(t, in, au, "Laptop")

	b := in.Browser()
	_, challenge := wardtest.PKCE()
	_, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", challenge, nil), nil)
	used := onlyForm(t, body, "get")
	usedAnswer, _ := au.Get(used.options, nil)
	if resp, body := used.post(t, in, b, usedAnswer, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %.300s", resp.StatusCode, body)
	}
	b2 := in.Browser()
	_, challenge = wardtest.PKCE()
	_, body = wardtest.Do(t, b2, http.MethodGet, in.AuthorizeURL("native", challenge, nil), nil)
	pending := onlyForm(t, body, "get")
	pendingAnswer, _ := au.Get(pending.options, nil)

	in = in.Restart(t)
	if resp, body := used.post(t, in, b, usedAnswer, nil); resp.StatusCode == http.StatusSeeOther || !strings.Contains(body, "expired or was already used") {
		t.Errorf("an answer used before the restart: %d %.300s", resp.StatusCode, body)
	}
	if resp, body := pending.post(t, in, b2, pendingAnswer, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a ceremony begun before the restart: %d %.300s", resp.StatusCode, body)
	}
}

// TestPasskeyDeviceFlow: a device's request (RFC 8628) approved in a
// browser signed in with a passkey: the device's tokens carry the
// passkey's acr and amr.
func TestPasskeyDeviceFlow(t *testing.T) {
	in := startPasskeys(t, wardtest.Options{Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "tv", Name: "Living Room TV", AuthMethod: "none",
			GrantTypes: []string{deviceGrant, "refresh_token"}, Scopes: []string{"openid", "offline_access"}})
	}})
	au := webauthntest.New(in.URL)
	enrolPasskey(t, in, au, "Laptop")
	deviceCode, userCode := startDeviceFlow(t, in, "tv", nil, nil)
	b := in.Browser()
	resp, body := enterUserCode(t, in, b, userCode, userCode)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="password"`) {
		t.Fatalf("login page: %d %.300s", resp.StatusCode, body)
	}
	f := onlyForm(t, body, "get")
	answer, err := au.Get(f.options, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = f.post(t, in, b, answer, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `value="approve"`) {
		t.Fatalf("confirmation page: %d %.400s", resp.StatusCode, body)
	}
	form := wardtest.HiddenFields(body)
	form.Set("decision", "approve")
	if resp, body := wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", form); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Device connected") {
		t.Fatalf("approve: %d %.300s", resp.StatusCode, body)
	}
	tok := poll(t, in, "tv", deviceCode, nil)
	if tok.Status != http.StatusOK {
		t.Fatalf("poll: %d %s", tok.Status, tok.Body)
	}
	cl := claims(t, tok.str("access_token"))
	if cl["acr"] != "urn:ward:acr:phishing_resistant" || !slices.Contains(cl["amr"].([]any), any("hwk")) {
		t.Errorf("device token: acr %v amr %v", cl["acr"], cl["amr"])
	}
}

// TestPasskeyTurnedOffFailsClosed: a user whose only second factor is a
// security key is not signed in with the password alone after passkeys
// are turned off.
func TestPasskeyTurnedOffFailsClosed(t *testing.T) {
	in := startPasskeys(t, wardtest.Options{})
	ctx := context.Background()
	bob, _ := in.App.Store.GetUserByUsername(ctx, "bob")
	c, err := in.App.Identity.BeginPasskeyRegistration(ctx, bob, "security_key")
	if err != nil {
		t.Fatal(err)
	}
	resp, _, _ := webauthntest.New(in.URL).Create(c.Options)
	if _, err := in.App.Identity.FinishPasskeyRegistration(ctx, bob.ID, bob, c.ID, "key", resp); err != nil {
		t.Fatal(err)
	}
	off := wardtest.Start(t, wardtest.Options{Join: in, Configure: func(c *config.Config) { c.Passkeys.Disabled = true }})
	if off.App.Identity.PasskeysEnabled() {
		t.Fatal("passkeys on")
	}
	_, challenge := wardtest.PKCE()
	r, body := off.TryLogin(t, off.Browser(), off.AuthorizeURL("native", challenge, nil), "bob", wardtest.BobPassword, "")
	if r.StatusCode == http.StatusSeeOther || !strings.Contains(body, "cannot be used on this server") {
		t.Fatalf("bob with a security key and passkeys off: %d %.400s", r.StatusCode, body)
	}
}
