package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent/posture"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

const (
	insideIP  = "203.0.113.10" // in the example's trusted "corp" range
	outsideIP = "198.51.100.7"
	nativeCB  = "http://127.0.0.1/callback" // loopback redirect: a native client (RFC 8252)
)

// startWithExamplePolicies runs Ward with the clients the example policies
// name, bob in the emergency-access group, loopback as a trusted proxy
// (so tests choose the client address with X-Forwarded-For), and
// examples/policies/policies.yaml applied.
func startWithExamplePolicies(t *testing.T, o wardtest.Options) *wardtest.Instance {
	t.Helper()
	base := o.Configure
	o.Configure = func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		scopes := []string{"openid", "offline_access", "profile"}
		c.StaticClients = append(c.StaticClients,
			config.StaticClient{ID: "docs", Name: "Documents", AuthMethod: "none", RedirectURIs: []string{nativeCB},
				GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: scopes},
			config.StaticClient{ID: "cli", Name: "Command line", AuthMethod: "none", RedirectURIs: []string{nativeCB},
				GrantTypes: []string{"authorization_code", "refresh_token"}, Scopes: scopes})
		for i := range c.StaticUsers {
			if c.StaticUsers[i].Username == "bob" {
				c.StaticUsers[i].Groups = []string{"emergency-access"}
			}
		}
		if base != nil {
			base(c)
		}
	}
	in := wardtest.Start(t, o)
	doc, err := app.ReadPolicyFile("../../examples/policies/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), doc, access.ApplyOptions{Actor: "test", ExpectVersion: 0}); err != nil {
		t.Fatal(err)
	}
	return in
}

// signIn runs the browser part of an authorization request for user from
// the given address and returns the final response (the redirect with the
// code, or a page).
func signIn(t *testing.T, in *wardtest.Instance, user, clientID, redirect, ip string, s *dpop.Signer) (*http.Response, string, string) {
	t.Helper()
	verifier, challenge := wardtest.PKCE()
	extra := url.Values{"redirect_uri": {redirect}}
	if s != nil {
		extra.Set("dpop_jkt", s.Thumbprint())
	}
	b := in.Browser()
	b.Transport = forwardedFor(ip)
	in.Clock.Advance(31 * time.Second) // a fresh TOTP step
	pw, otp := wardtest.BobPassword, ""
	if user == "alice" {
		pw, otp = wardtest.AlicePassword, in.TOTP(t, 0)
	}
	resp, body := in.TryLogin(t, b, in.AuthorizeURL(clientID, challenge, extra), user, pw, otp)
	if resp.StatusCode == http.StatusSeeOther {
		return resp, resp.Header.Get("Location"), verifier
	}
	return resp, body, verifier
}

type xffTransport struct{ ip string }

func (x xffTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", x.ip)
	return http.DefaultTransport.RoundTrip(r)
}

func forwardedFor(ip string) http.RoundTripper { return xffTransport{ip} }

func codeFrom(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil || u.Query().Get("code") == "" {
		t.Fatalf("no code in %.300s", loc)
	}
	return u.Query().Get("code")
}

func tokenFrom(t *testing.T, in *wardtest.Instance, clientID, code, verifier, redirect, ip string, s *dpop.Signer) result {
	t.Helper()
	return do(t, in, call{path: "/token", signer: s, header: http.Header{"X-Forwarded-For": {ip}}, form: url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {redirect}, "client_id": {clientID}}})
}

func lastEvent(t *testing.T, in *wardtest.Instance, typ model.EventType) *store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{typ}, Limit: 1})
	if err != nil || len(evs) != 1 {
		t.Fatalf("no %s event (%v)", typ, err)
	}
	return evs[0]
}

// With the example policies: an unbound session is refused for the
// document app while other apps still work.
func TestConditionalAccessDocsRequireTokenProtection(t *testing.T) {
	in := startWithExamplePolicies(t, wardtest.Options{})

	// bob, in a browser without a device key: the sign-in goes through (the
	// device is decided at the code exchange), the code exchange without a
	// DPoP proof is refused with the policy named in the audit log.
	resp, loc, verifier := signIn(t, in, "bob", "docs", nativeCB, insideIP, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("docs sign-in: %d %.300s", resp.StatusCode, loc)
	}
	r := tokenFrom(t, in, "docs", codeFrom(t, loc), verifier, nativeCB, insideIP, nil)
	wantError(t, r, 400, "invalid_grant")
	if !strings.Contains(r.str("error_description"), "token protection") || !strings.Contains(r.str("error_description"), "reference ") {
		t.Fatalf("description %q should name token protection and a reference", r.str("error_description"))
	}
	ev := lastEvent(t, in, model.EventTokenRequestFailed)
	if ev.Reason != "ca_controls_unmet" || ev.Data["ca_applied"] != "docs-token-protection,docs-strict-location" || ev.Data["ca_controls"] != "token_protection" {
		t.Fatalf("failure event: reason %q data %v", ev.Reason, ev.Data)
	}
	// The reference in the description finds the event.
	ref := r.str("error_description")
	ref = strings.TrimSuffix(ref[strings.LastIndex(ref, "reference ")+len("reference "):], ")")
	if evs, _ := in.App.Store.ListEvents(context.Background(), store.EventFilter{CorrelationID: ref}); len(evs) == 0 {
		t.Fatalf("no event with correlation id %q", ref)
	}

	// A DPoP key that no registered device holds: refused at sign-in, with
	// the reason shown.
	s := newSigner(t)
	resp, body, _ := signIn(t, in, "bob", "docs", nativeCB, insideIP, s)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "registered device") {
		t.Fatalf("docs with an unregistered key: %d %.500s", resp.StatusCode, body)
	}

	// The same user and kind of session still work for another app.
	resp, loc, verifier = signIn(t, in, "bob", "web", wardtest.RedirectURI, insideIP, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("web sign-in: %d %.300s", resp.StatusCode, loc)
	}
	r = do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, header: http.Header{"X-Forwarded-For": {insideIP}},
		form: url.Values{"grant_type": {"authorization_code"}, "code": {codeFrom(t, loc)}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("web token: %d %s", r.Status, r.Body)
	}
	if ev := lastEvent(t, in, model.EventTokenIssued); ev.Data["ca_outcome"] != "allow" || ev.Data["ca_version"] != "1" {
		t.Fatalf("token event CA data: %v", ev.Data)
	}

	// A device registered to alice makes the docs session protected.
	ctx := context.Background()
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	if _, err := in.App.Devices.PutPolicy(ctx, "test", "linux", []byte(`{"require_firewall": true}`)); err != nil {
		t.Fatal(err)
	}
	dev, key := registerDevice(t, in, alice.ID)
	resp, loc, verifier = signIn(t, in, "alice", "docs", nativeCB, insideIP, key)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("docs from a registered device: %d %.500s", resp.StatusCode, loc)
	}
	r = tokenFrom(t, in, "docs", codeFrom(t, loc), verifier, nativeCB, insideIP, key)
	if r.Status != 200 || claims(t, r.str("access_token"))["did"] != dev.ID {
		t.Fatalf("docs token from the device: %d %s", r.Status, r.Body)
	}
}

// registerDevice registers a fresh key as a linux device of userID and
// reports a posture with the disk unencrypted.
func registerDevice(t *testing.T, in *wardtest.Instance, userID string) (*model.Device, *dpop.Signer) {
	t.Helper()
	ctx := context.Background()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := json.Marshal(s.PublicJWK())
	dev, err := in.App.Devices.Register(ctx, userID, device.Registration{PublicJWK: jwk, KeyStorage: "file", Platform: "linux",
		OSName: "Debian", OSVersion: "12", Hostname: "laptop", AgentVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	p := &posture.Posture{Platform: "linux", OSName: "Debian", OSVersion: "12", Hostname: "laptop",
		DiskEncrypted: posture.No, UserIsAdmin: posture.No, AntiMalwarePresent: posture.Yes, FirewallEnabled: posture.Yes, SecureBoot: posture.Yes, CollectedAt: in.Clock.Now()}
	rep, err := posture.SignReport(k, p, dev.ID, in.App.Devices.Nonce(), in.Clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if dev, err = in.App.Devices.SubmitPosture(ctx, dev.ID, rep); err != nil {
		t.Fatal(err)
	}
	return dev, s
}

// With the example policies: a sign-in from a non-compliant device is
// refused with the failing compliance rule shown; once compliant, it works.
func TestConditionalAccessNonCompliantDevice(t *testing.T) {
	in := startWithExamplePolicies(t, wardtest.Options{})
	ctx := context.Background()
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	dev, key := registerDevice(t, in, alice.ID)
	if _, err := in.App.Devices.PutPolicy(ctx, "test", "linux", []byte(`{"require_disk_encryption": true}`)); err != nil {
		t.Fatal(err)
	}
	if d, _ := in.App.Devices.Get(ctx, dev.ID); d.Compliance != model.NonCompliant {
		t.Fatalf("device compliance %q, want noncompliant", d.Compliance)
	}
	resp, body, _ := signIn(t, in, "alice", "cli", nativeCB, insideIP, key)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("non-compliant device: %d %.500s", resp.StatusCode, body)
	}
	for _, want := range []string{"require_disk_encryption", "Reference:"} {
		if !strings.Contains(body, want) {
			t.Fatalf("the refusal page does not show %q: %.2000s", want, body)
		}
	}
	ev := lastEvent(t, in, model.EventSignInFailed)
	if ev.Reason != "ca_controls_unmet" || ev.DeviceID != dev.ID || ev.Data["ca_controls"] != "compliant_device" {
		t.Fatalf("sign-in failure event: reason %q device %q data %v", ev.Reason, ev.DeviceID, ev.Data)
	}
	// No session was created for the refused sign-in.
	if ss, _ := in.App.Store.ListSessions(ctx, store.SessionFilter{UserID: alice.ID}); len(ss) != 0 {
		t.Fatalf("%d sessions after a refused sign-in", len(ss))
	}

	// The policy relaxed (no rule): the device becomes compliant, the sign-in works.
	if _, err := in.App.Devices.PutPolicy(ctx, "test", "linux", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	resp, loc, verifier := signIn(t, in, "alice", "cli", nativeCB, insideIP, key)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("compliant device: %d %.500s", resp.StatusCode, loc)
	}
	if r := tokenFrom(t, in, "cli", codeFrom(t, loc), verifier, nativeCB, insideIP, key); r.Status != 200 {
		t.Fatalf("compliant device token: %d %s", r.Status, r.Body)
	}
}

// With the example policies: a refresh from outside the trusted network
// fails and changes nothing; the same refresh token still works inside.
func TestConditionalAccessRefreshOutsideTrustedNetwork(t *testing.T) {
	in := startWithExamplePolicies(t, wardtest.Options{})
	resp, loc, verifier := signIn(t, in, "bob", "web", wardtest.RedirectURI, insideIP, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	web := [2]string{"web", wardtest.WebSecret}
	r := do(t, in, call{path: "/token", basic: web, header: http.Header{"X-Forwarded-For": {insideIP}},
		form: url.Values{"grant_type": {"authorization_code"}, "code": {codeFrom(t, loc)}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 || r.str("refresh_token") == "" {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	rt := r.str("refresh_token")
	refreshFrom := func(ip string) result {
		return do(t, in, call{path: "/token", basic: web, header: http.Header{"X-Forwarded-For": {ip}},
			form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}})
	}
	for _, ip := range []string{outsideIP, "2001:db8:200::1", "10.0.0.1"} {
		r = refreshFrom(ip)
		wantError(t, r, 400, "invalid_grant")
		ev := lastEvent(t, in, model.EventTokenRequestFailed)
		if ev.Reason != "ca_block" || ev.Data["ca_blocked_by"] != "refresh-trusted-networks-only" || ev.IP != ip {
			t.Fatalf("refresh from %s: event reason %q ip %q data %v", ip, ev.Reason, ev.IP, ev.Data)
		}
	}
	// The refused attempts used nothing up: the token refreshes inside.
	r = refreshFrom(insideIP)
	if r.Status != 200 || r.str("refresh_token") == "" {
		t.Fatalf("refresh inside: %d %s", r.Status, r.Body)
	}
	rt = r.str("refresh_token")
	if r = refreshFrom("2001:db8:100::7"); r.Status != 200 {
		t.Fatalf("refresh from the corporate IPv6 range: %d %s", r.Status, r.Body)
	}
}

// With the example policies: the document app's tokens carry the trusted
// ranges (strict location) and a resource using rs refuses them from
// anywhere else, with a claims challenge.
func TestConditionalAccessStrictLocation(t *testing.T) {
	in := startWithExamplePolicies(t, wardtest.Options{})
	ctx := context.Background()
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	if _, err := in.App.Devices.PutPolicy(ctx, "test", "linux", []byte(`{"require_firewall": true}`)); err != nil {
		t.Fatal(err)
	}
	_, key := registerDevice(t, in, alice.ID)
	resp, loc, verifier := signIn(t, in, "alice", "docs", nativeCB, insideIP, key)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %.300s", resp.StatusCode, loc)
	}
	r := tokenFrom(t, in, "docs", codeFrom(t, loc), verifier, nativeCB, insideIP, key)
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	at := r.str("access_token")
	if ipr := fmt.Sprint(claims(t, at)["ipr"]); ipr != "[203.0.113.0/24 2001:db8:100::/48]" {
		t.Fatalf("ipr claim %s", ipr)
	}
	if ev := lastEvent(t, in, model.EventTokenIssued); ev.Data["strict_location"] != "true" {
		t.Fatalf("token event %v", ev.Data)
	}
	// Another app's token carries no ranges.
	resp, loc, verifier = signIn(t, in, "bob", "web", wardtest.RedirectURI, insideIP, nil)
	w := do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, header: http.Header{"X-Forwarded-For": {insideIP}},
		form: url.Values{"grant_type": {"authorization_code"}, "code": {codeFrom(t, loc)}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if _, ok := claims(t, w.str("access_token"))["ipr"]; ok || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("web token has ipr: %s", w.Body)
	}

	v, err := rs.New(rs.Config{Issuer: in.URL, Audience: in.URL, Now: in.Clock.Now, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if err != nil {
		t.Fatal(err)
	}
	res := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("doc")) })))
	defer res.Close()
	get := func(ip string) *http.Response {
		req, _ := http.NewRequest("GET", res.URL+"/doc", nil)
		p, _ := key.ProofAt("GET", res.URL+"/doc", at, "", in.Clock.Now())
		req.Header.Set("Authorization", "DPoP "+at)
		req.Header.Set("DPoP", p)
		req.Header.Set("X-Forwarded-For", ip)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := get(insideIP); resp.StatusCode != 200 {
		t.Fatalf("inside: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	resp = get(outsideIP)
	if c, ok := rs.ParseClaimsChallenge(resp.Header); resp.StatusCode != 401 || !ok || c.Error != "insufficient_claims" {
		t.Fatalf("outside: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// Ward's own resources honour strict location too: the token is
	// refused at /userinfo from outside the trusted ranges.
	userinfo := func(ip string) result {
		return do(t, in, call{path: "/userinfo", method: http.MethodGet, authz: "DPoP " + at, signer: key, at: at,
			header: http.Header{"X-Forwarded-For": {ip}}})
	}
	if r := userinfo(outsideIP); r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), "network location") {
		t.Errorf("userinfo from outside: %d %s", r.Status, r.Header.Get("WWW-Authenticate"))
	}
	if r := userinfo(insideIP); strings.Contains(r.Header.Get("WWW-Authenticate"), "network location") {
		t.Errorf("userinfo from inside refused for its location: %d %s", r.Status, r.Header.Get("WWW-Authenticate"))
	}
}
