package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// ssoBrowser signs alice in from ip through client spa and returns her
// browser, which holds the SSO cookie, and the session id.
func ssoBrowser(t *testing.T, in *wardtest.Instance, ip string) (*http.Client, string) {
	t.Helper()
	b := in.Browser()
	b.Transport = forwardedFor(ip)
	_, challenge := wardtest.PKCE()
	loc := in.Login(t, b, in.AuthorizeURL("spa", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	if loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: %s", loc)
	}
	return b, lastEvent(t, in, model.EventSignInSucceeded).SessionID
}

// ssoAuthorize sends an authorization request with the browser's SSO
// cookie from ip (the cookie jar is shared: a copied cookie).
func ssoAuthorize(t *testing.T, in *wardtest.Instance, b *http.Client, ip string) (*http.Response, string) {
	t.Helper()
	thief := &http.Client{Jar: b.Jar, CheckRedirect: b.CheckRedirect, Transport: forwardedFor(ip)}
	_, challenge := wardtest.PKCE()
	return wardtest.Do(t, thief, http.MethodGet, in.AuthorizeURL("spa", challenge, nil), nil)
}

func trustLoopback(c *config.Config) { c.TrustedProxies = []string{"127.0.0.1/32"} }

// A code issued by the SSO cookie alone is a sign-in of its own,
// signin.sso, with this request's address and user agent, the session,
// client and MFA of the session. Conditional Access evaluates it with
// this request's address: a policy blocking a named location blocks an
// SSO sign-in from there although the session was created elsewhere, and
// the refusal is recorded against the session.
func TestSSOSignInRecordedAndEvaluatedAtItsLocation(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: trustLoopback})
	applyPolicies(t, in, `
locations:
  - id: elsewhere
    name: Somewhere else
    ip_ranges: [198.51.100.0/24]
policies:
  - id: block-elsewhere
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {locations: {include: [elsewhere]}}
    grant: {block: true}
`)
	b, sid := ssoBrowser(t, in, insideIP)

	resp, _ := ssoAuthorize(t, in, b, "192.0.2.44")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		t.Fatalf("SSO sign-in from an allowed network: %d %s", resp.StatusCode, loc)
	}
	a := lastActivity(t, in, model.EventSSOSignIn)
	if a.Kind != activity.KindSSOSignIn || a.Result != activity.ResultSuccess || a.SessionID != sid || a.IP != "192.0.2.44" ||
		a.ClientID != "spa" || !a.MFA || a.UserID == "" || a.UserAgent == "" || a.Proof != activity.ProofNone {
		t.Fatalf("SSO sign-in activity: %+v", a)
	}

	resp, _ = ssoAuthorize(t, in, b, outsideIP)
	loc, _ = url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("error") != "access_denied" || loc.Query().Get("code") != "" {
		t.Fatalf("SSO sign-in from a blocked network: %d %s", resp.StatusCode, loc)
	}
	ev := lastEvent(t, in, model.EventSSOSignIn)
	if ev.Outcome != model.OutcomeFailure || ev.Reason != "ca_block" || ev.IP != outsideIP || ev.SessionID != sid ||
		ev.Data["ca_blocked_by"] != "block-elsewhere" {
		t.Fatalf("blocked SSO sign-in: %+v %v", ev.Event, ev.Data)
	}
	if e := lastEvent(t, in, model.EventSignInSucceeded); e.IP != insideIP {
		t.Fatalf("the interactive sign-in's address changed: %s", e.IP)
	}
}

// riskByIP is a sign-in risk assessor: the level of the request's
// address, and what it was asked.
type riskByIP struct {
	mu     sync.Mutex
	levels map[string]string
	seen   []activity.Activity
}

func (r *riskByIP) AssessSignIn(_ context.Context, a activity.Activity) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, a)
	return r.levels[a.IP], nil
}

func (r *riskByIP) last() activity.Activity {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[len(r.seen)-1]
}

// The sign-in risk hook is asked about every sign-in, SSO ones included,
// with this request's activity, and Conditional Access's sign-in risk
// condition reads its answer. A risky SSO sign-in of a session that
// performed MFA earlier does not get a code on the strength of that old
// factor: a policy requiring MFA on risk steps up (the second-factor
// page, or interaction_required without prompts), and one blocking it
// blocks.
func TestSSOSignInRiskStepsUpOrBlocks(t *testing.T) {
	risk := &riskByIP{levels: map[string]string{outsideIP: "medium", "192.0.2.99": "high"}}
	in := wardtest.Start(t, wardtest.Options{Configure: trustLoopback, SignInRisk: risk})
	applyPolicies(t, in, `
policies:
  - id: mfa-on-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {sign_in_risk: [medium]}
    grant: {controls: [mfa]}
  - id: block-high-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {sign_in_risk: [high]}
    grant: {block: true}
`)
	b, sid := ssoBrowser(t, in, insideIP)
	if a := risk.last(); a.Kind != activity.KindSignIn || a.IP != insideIP || a.ClientID != "spa" {
		t.Fatalf("the interactive sign-in's assessment: %+v", a)
	}

	// Medium: the second-factor page, no code.
	resp, body := ssoAuthorize(t, in, b, outsideIP)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="otp"`) || resp.Header.Get("Location") != "" {
		t.Fatalf("medium-risk SSO sign-in: %d %s %.300s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if a := risk.last(); a.Kind != activity.KindSSOSignIn || a.SessionID != sid || a.IP != outsideIP || !a.MFA {
		t.Fatalf("the SSO sign-in's assessment: %+v", a)
	}
	ev := lastEvent(t, in, model.EventSSOSignIn)
	if ev.Outcome != model.OutcomeFailure || ev.Reason != "ca_mfa_required" || ev.Data["sign_in_risk"] != "medium" || ev.IP != outsideIP {
		t.Fatalf("stepped-up SSO sign-in: %+v %v", ev.Event, ev.Data)
	}
	// Without prompts: interaction_required, no code.
	thief := &http.Client{Jar: b.Jar, CheckRedirect: b.CheckRedirect, Transport: forwardedFor(outsideIP)}
	_, challenge := wardtest.PKCE()
	resp, _ = wardtest.Do(t, thief, http.MethodGet, in.AuthorizeURL("spa", challenge, url.Values{"prompt": {"none"}}), nil)
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || loc.Query().Get("error") != "interaction_required" || loc.Query().Get("code") != "" {
		t.Fatalf("medium-risk SSO sign-in with prompt=none: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	// High: blocked.
	resp, _ = ssoAuthorize(t, in, b, "192.0.2.99")
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || loc.Query().Get("error") != "access_denied" || loc.Query().Get("code") != "" {
		t.Fatalf("high-risk SSO sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if ev := lastEvent(t, in, model.EventSSOSignIn); ev.Reason != "ca_block" || ev.Data["sign_in_risk"] != "high" {
		t.Fatalf("blocked SSO sign-in: %q %v", ev.Reason, ev.Data)
	}

	// No risk: the code as before.
	resp, _ = ssoAuthorize(t, in, b, insideIP)
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		t.Fatalf("SSO sign-in without risk: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// uaTransport sets the User-Agent of every request.
type uaTransport struct {
	next http.RoundTripper
	ua   string
}

func (u uaTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.ua)
	return u.next.RoundTrip(r)
}

// The seed's browser case with Ward's own detectors (no stand-in): the
// SSO cookie of a browser without DBSC, copied and presented from another
// network by another browser, is judged before any code is issued. The
// sign-in is risky, so Conditional Access steps it up or blocks it, no
// code is issued, and the detection is recorded against the session; the
// victim's own browser goes on signing in without a step-up.
func TestCopiedSSOCookieDetected(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: trustLoopback})
	applyPolicies(t, in, `
policies:
  - id: mfa-on-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {sign_in_risk: [medium]}
    grant: {controls: [mfa]}
  - id: block-high-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {sign_in_risk: [high]}
    grant: {block: true}
`)
	const victimUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/133.0"
	b := in.Browser()
	b.Transport = uaTransport{forwardedFor(insideIP), victimUA}
	_, challenge := wardtest.PKCE()
	if loc := in.Login(t, b, in.AuthorizeURL("spa", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(t, 0)); loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: %s", loc)
	}
	sid := lastEvent(t, in, model.EventSignInSucceeded).SessionID

	// The victim's browser, same network: a code, no detection.
	_, challenge = wardtest.PKCE()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("spa", challenge, nil), nil)
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		t.Fatalf("the victim's own SSO sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := len(eventsOf(t, in, model.EventRiskDetected)); n != 0 {
		t.Fatalf("%d detections for the victim's own browser", n)
	}

	// The thief: the copied cookie, another network, another browser.
	thief := &http.Client{Jar: b.Jar, CheckRedirect: b.CheckRedirect, Transport: uaTransport{forwardedFor(outsideIP), "curl/8.5.0"}}
	_, challenge = wardtest.PKCE()
	resp, body := wardtest.Do(t, thief, http.MethodGet, in.AuthorizeURL("spa", challenge, nil), nil)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	stepped := resp.StatusCode == http.StatusOK && strings.Contains(body, `name="otp"`)
	blocked := loc != nil && loc.Query().Get("error") == "access_denied"
	if (!stepped && !blocked) || (loc != nil && loc.Query().Get("code") != "") {
		t.Fatalf("the copied cookie: %d %s %.300s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	ev := lastEvent(t, in, model.EventSSOSignIn)
	if ev.Outcome != model.OutcomeFailure || ev.SessionID != sid || ev.IP != outsideIP ||
		(ev.Data["sign_in_risk"] != "medium" && ev.Data["sign_in_risk"] != "high") {
		t.Fatalf("the copied cookie's sign-in: %+v %v", ev.Event, ev.Data)
	}
	var found bool
	for _, d := range eventsOf(t, in, model.EventRiskDetected) {
		if d.Reason == "sso_cookie_anomaly" && d.SessionID == sid && d.IP == outsideIP && d.Data[model.DataDetectionSource] == model.DetectionSourceSignIn &&
			d.Data[model.DataDetectionTechnique] == "T1539" {
			found = true
		}
	}
	if !found {
		for _, d := range eventsOf(t, in, model.EventRiskDetected) {
			t.Logf("%s %s %v", d.Reason, d.IP, d.Data)
		}
		t.Fatal("no sso_cookie_anomaly detection for the session")
	}
}

// eventsOf returns the stored events of type typ, newest first.
func eventsOf(t *testing.T, in *wardtest.Instance, typ model.EventType) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{typ}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}
