package console_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// seedUsers are the people of the realistic fixture (besides the
// operators): name, display name, what happens to them.
var seedUsers = []struct{ name, display string }{
	{"dana", "Dana Whitfield"}, {"erik", "Erik Lindqvist"}, {"fatima", "Fatima Haddad"},
	{"george", "George Okafor"}, {"hiro", "Hiro Tanaka"}, {"ines", "Inés Moreno"},
}

// seed fills a Ward with a day of realistic activity: sessions of every
// binding kind, devices in and out of compliance with their posture,
// sign-ins and refused replays over the last 24 hours, risk detections.
// It writes through the store (fixtures), and the risk detections through
// the risk service's handler, as the risk engine would record them.
func seed(t *testing.T, in *wardtest.Instance) map[string]string {
	t.Helper()
	ctx := context.Background()
	st := in.App.Store
	now := time.Now()
	rng := mrand.New(mrand.NewPCG(7, 14))
	ids := map[string]string{}
	for _, u := range seedUsers {
		ids[u.name] = userID(t, in, u.name)
	}
	uas := []string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
		"ward-agent/1.4.2 (linux; amd64)",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
	}
	ips := []string{"203.0.113.24", "198.51.100.7", "203.0.113.88", "192.0.2.140", "2001:db8:4::17"}
	// Devices.
	type dev struct {
		id, user, host, platform, os, ver, compliance string
		failures                                      string
		posture                                       string
		attested                                      bool
	}
	devs := []dev{
		{"dev-dana-mbp", "dana", "dana-mbp", "darwin", "macOS", "14.5", model.Compliant, `[]`,
			`{"disk_encrypted":true,"firewall":true,"os":{"name":"macOS","version":"14.5"},"secure_boot":true,"user_is_admin":false,"antimalware":{"enabled":true,"signatures_age_hours":6}}`, true},
		{"dev-erik-x1", "erik", "erik-x1", "linux", "Debian GNU/Linux", "13", model.NonCompliant,
			`[{"rule":"disk_encryption","detail":"the root file system is not encrypted (LUKS not active)","fix":"Encrypt the disk with LUKS and enrol the device again"},{"rule":"user_not_admin","detail":"the signed-in user is in the sudo group","fix":"Remove the user from the sudo group"}]`,
			`{"disk_encrypted":false,"firewall":true,"os":{"name":"Debian GNU/Linux","version":"13"},"secure_boot":true,"user_is_admin":true}`, true},
		{"dev-fatima-win", "fatima", "FH-LAPTOP-07", "windows", "Windows 11 Enterprise", "24H2", model.Compliant, `[]`,
			`{"disk_encrypted":true,"firewall":true,"os":{"name":"Windows 11 Enterprise","version":"24H2"},"secure_boot":true,"credential_guard":true,"antimalware":{"enabled":true,"signatures_age_hours":3}}`, true},
		{"dev-hiro-mbp", "hiro", "hiro-mbp", "darwin", "macOS", "13.2", model.NonCompliant,
			`[{"rule":"min_os_version","detail":"macOS 13.2 is older than the required 14.0","fix":"Update macOS to 14.0 or later"},{"rule":"antimalware","detail":"XProtect signatures are 19 days old","fix":"Let the system update its security data"}]`,
			`{"disk_encrypted":true,"firewall":false,"os":{"name":"macOS","version":"13.2"},"secure_boot":true,"antimalware":{"enabled":true,"signatures_age_hours":456}}`, false},
		{"dev-ines-tab", "ines", "ines-surface", "windows", "Windows 11 Pro", "23H2", model.ComplianceUnknown, `[{"rule":"firewall","detail":"not reported","fix":"Update the device agent","unknown":true}]`,
			`{"disk_encrypted":true,"os":{"name":"Windows 11 Pro","version":"23H2"}}`, false},
	}
	for i, d := range devs {
		storage := "file"
		if d.attested {
			storage = "tpm"
		}
		err := st.CreateDevice(ctx, &model.Device{ID: d.id, UserID: ids[d.user], JKT: fmt.Sprintf("jkt-%s-%02d", d.id, i),
			PublicJWK:  json.RawMessage(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`),
			KeyStorage: storage, KeyAttested: d.attested, Platform: d.platform, OSName: d.os, OSVersion: d.ver, Hostname: d.host,
			AgentVersion: "1.4.2", TrustType: model.TrustManaged, Status: model.DeviceActive, Compliance: d.compliance,
			ComplianceFailures: json.RawMessage(d.failures), ComplianceAt: now.Add(-20 * time.Minute), Posture: json.RawMessage(d.posture),
			PostureAt: now.Add(-20 * time.Minute), CreatedAt: now.Add(-time.Duration(30+i) * 24 * time.Hour), LastSeen: now.Add(-time.Duration(i*7) * time.Minute),
			UpdatedAt: now.Add(-20 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Sessions: device-bound (the agent's), DPoP key (the SPA's), DBSC
	// browser, unbound (a web app's bearer refresh token).
	type sess struct {
		user, client, jkt, device string
		dbsc                      bool
		age                       time.Duration
	}
	sessions := []sess{
		{"dana", "native", "jkt-dev-dana-mbp-00", "dev-dana-mbp", false, 3 * time.Hour},
		{"dana", "spa", "jkt-browser-dana", "", true, 50 * time.Minute},
		{"erik", "native", "jkt-dev-erik-x1-01", "dev-erik-x1", false, 9 * time.Hour},
		{"erik", "web", "", "", false, 2 * time.Hour},
		{"erik", "spa", "jkt-spa-erik", "", false, 25 * time.Minute},
		{"fatima", "native", "jkt-dev-fatima-win-02", "dev-fatima-win", false, 5 * time.Hour},
		{"fatima", "spa", "", "", true, 70 * time.Minute},
		{"hiro", "native", "jkt-dev-hiro-mbp-03", "dev-hiro-mbp", false, 14 * time.Hour},
		{"ines", "web", "", "", false, 40 * time.Minute},
		{"george", "web", "", "", false, 6 * time.Hour},
	}
	for i, s := range sessions {
		sid := fmt.Sprintf("sess-%s-%d-%s", s.user, i, strings.ToLower(rand.Text()[:8]))
		ms := &model.Session{ID: sid, UserID: ids[s.user], AuthTime: now.Add(-s.age), AMR: []string{"pwd", "otp"}, ACR: "urn:ward:acr:mfa",
			IP: ips[i%len(ips)], UserAgent: uas[i%len(uas)], CreatedAt: now.Add(-s.age), LastSeen: now.Add(-s.age / 5),
			ExpiresAt: now.Add(30 * 24 * time.Hour), IdleTimeout: 72 * time.Hour}
		if s.dbsc {
			ms.DBSCKeyJKT = "dbsc-" + sid
			ms.DBSCKey = json.RawMessage(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`)
		}
		if err := st.CreateSession(ctx, ms); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateRefreshToken(ctx, &model.RefreshToken{Hash: []byte("rt-" + sid), SessionID: sid, ClientID: s.client, UserID: ids[s.user],
			Scope: "openid profile offline_access", JKT: s.jkt, DeviceID: s.device, AuthTime: ms.AuthTime, AMR: ms.AMR, ACR: ms.ACR,
			CreatedAt: ms.CreatedAt, ExpiresAt: now.Add(30 * 24 * time.Hour), Generation: 1 + i%4}); err != nil {
			t.Fatal(err)
		}
		ids["session:"+s.user+":"+s.client] = sid
	}
	// A day of sign-ins and refused replays.
	names := []string{"dana", "erik", "fatima", "george", "hiro", "ines"}
	clients := []string{"web", "spa", "native"}
	ev := func(typ model.EventType, at time.Time, user, outcome, reason string) *model.Event {
		e := &model.Event{ID: "seed-" + rand.Text(), Type: typ, Time: at, Actor: ids[user], UserID: ids[user],
			ClientID: clients[rng.IntN(len(clients))], IP: ips[rng.IntN(len(ips))], UserAgent: uas[rng.IntN(len(uas))],
			Outcome: outcome, Reason: reason, Binding: model.BindingDPoP, Data: map[string]string{"session_binding": model.SessionBindingCookie}}
		if outcome == model.OutcomeFailure {
			e.Actor = "anonymous"
		}
		if e.ClientID == "web" && typ != model.EventSignInFailed {
			// The report-only MFA trial (policiesV2): what it would have done.
			e.Data["ca_version"], e.Data["ca_report_only"] = "2", "ro-mfa-web=allow"
			if e.Time.Second()%3 == 0 {
				e.Data["ca_report_only"] = "ro-mfa-web=allow_with_controls:mfa"
			}
		}
		return e
	}
	var evs []*model.Event
	for h := 23; h >= 0; h-- {
		base := now.Add(-time.Duration(h) * time.Hour)
		busy := 4 + rng.IntN(6)
		if hr := base.UTC().Hour(); hr >= 7 && hr <= 18 {
			busy += 10 + rng.IntN(10)
		}
		for i := 0; i < busy; i++ {
			at := base.Add(-time.Duration(rng.IntN(3600)) * time.Second)
			user := names[rng.IntN(len(names))]
			switch r := rng.IntN(10); {
			case r < 6:
				evs = append(evs, ev(model.EventSignInSucceeded, at, user, model.OutcomeSuccess, ""))
			case r < 9:
				evs = append(evs, ev(model.EventSSOSignIn, at, user, model.OutcomeSuccess, ""))
			default:
				evs = append(evs, ev(model.EventSignInFailed, at, user, model.OutcomeFailure, "invalid_credentials"))
			}
		}
		if rng.IntN(4) == 0 {
			evs = append(evs, ev(model.EventDPoPProofRejected, base.Add(-10*time.Minute), "erik", model.OutcomeFailure, "dpop_replay"))
		}
	}
	evs = append(evs,
		ev(model.EventRefreshReuseDetected, now.Add(-95*time.Minute), "george", model.OutcomeFailure, "refresh_reuse"),
		ev(model.EventTokenUsed, now.Add(-80*time.Minute), "erik", model.OutcomeFailure, "dpop_wrong_key"),
		ev(model.EventTokenUsed, now.Add(-79*time.Minute), "erik", model.OutcomeFailure, "dpop_wrong_key"),
		ev(model.EventSignInFailed, now.Add(-3*time.Minute), "hiro", model.OutcomeFailure, "ca_block"),
	)
	slices.SortFunc(evs, func(a, b *model.Event) int { return a.Time.Compare(b.Time) })
	for _, e := range evs {
		if _, err := st.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// Risk: a replay of erik's token from an unfamiliar place (medium), a
	// refresh token replay of george's (high: his sessions are revoked).
	detect := func(user, sid, typ, severity, conf, technique, detail string, ago time.Duration) {
		e := &model.Event{ID: "det-ev-" + rand.Text(), Type: model.EventRiskDetected, Time: now.Add(-ago), Actor: "system",
			UserID: ids[user], SessionID: sid, IP: "198.51.100.201", Outcome: model.OutcomeSuccess, Reason: typ,
			Data: map[string]string{model.DataDetectionID: "det-" + rand.Text(), model.DataDetectionSeverity: severity,
				model.DataDetectionConfidence: conf, model.DataDetectionTechnique: technique, model.DataDetectionDetail: detail,
				model.DataDetectionSource: "online"}}
		if _, err := st.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := in.App.Risk.HandleDetection(ctx, e); err != nil {
			t.Fatal(err)
		}
		if err := in.App.Incidents.HandleDetection(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	detect("erik", ids["session:erik:spa"], "token_replay_unfamiliar_location", "medium", "0.82", "T1550.001",
		"access token of session used from 198.51.100.201 (AS64500, Reykjavik) 40 min after a use from 203.0.113.24 (Berlin)", 78*time.Minute)
	detect("erik", "", "anomalous_token", "low", "0.55", "T1528", "token lifetime and claims unlike this client's", 70*time.Minute)
	detect("george", ids["session:george:web"], "refresh_token_replay", "high", "0.95", "T1550.001",
		"a rotated refresh token was presented again from another network", 95*time.Minute)
	return ids
}

func chromium(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WARD_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Chromium not found at %s; CI must run the browser tests (apt-get install -y chromium)", p)
		}
		t.Skipf("Chromium not found at %s (apt-get install -y chromium)", p)
	}
	return p
}

// TestBrowser signs in to the console in headless Chromium through Ward's
// pages (password, then TOTP), opens every page with realistic data and
// no console error or CSP violation, revokes a session with the page's
// own button (htmx, its confirmation accepted), and takes screenshots at
// desktop and phone width (WARD_SCREENSHOT_DIR keeps them).
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	exe := chromium(t)
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		for _, u := range seedUsers {
			c.StaticUsers = append(c.StaticUsers, config.StaticUser{Username: u.name, Email: u.name + "@contoso.example", DisplayName: u.display, Password: opPassword})
		}
	}})
	ids := seed(t, in)
	applyPolicies(t, in, "first policies", policiesV1)
	applyPolicies(t, in, "office excluded from the MFA trial", policiesV2)
	shots := os.Getenv("WARD_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// Start the browser before any timeout (a timeout on the first Run
	// would stop the browser), then collect the console and accept
	// htmx's confirmations as the operator would.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if strings.HasSuffix(m.URL, "/favicon.ico") {
				continue // Ward's sign-in pages name no icon; the browser asks anyway
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	tctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()
	check := func(where string) {
		t.Helper()
		time.Sleep(100 * time.Millisecond) // let the last messages arrive
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("%s: %s", where, p)
		}
		problems = nil
	}
	shot := func(name string) {
		t.Helper()
		a := chromedp.FullScreenshot(100)
		if strings.HasPrefix(name, "logs") {
			a = chromedp.CaptureScreenshot() // the first rows
		}
		buf, err := chromedp.Run(tctx, a)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	code, err := totp.GenerateCode(wardtest.AliceTOTP, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(tctx,
		chromedp.Navigate(in.URL+"/console/"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), wardtest.AlicePassword),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name=otp]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=otp]`), code),
		chromedp.Submit(chromedp.CSS(`input[name=otp]`)),
		chromedp.WaitVisible(chromedp.CSS(`section.tiles`)),
	)
	if err != nil {
		t.Fatalf("sign-in: %v\n%s", err, tail(in.LogText(), 20))
	}
	if h1 := text("main h1"); h1 != "Dashboard" {
		t.Fatalf("after sign-in: %q", h1)
	}
	check("sign-in")
	shot("dashboard-desktop")
	// Every page renders without an error.
	for _, p := range []string{"/console/users", "/console/users?n=2", "/console/devices", "/console/devices/dev-erik-x1", "/console/logs", "/console/logs?tab=audit", "/console/?range=7d"} {
		if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+p), chromedp.WaitVisible(chromedp.CSS(`main h1`))); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if p == "/console/logs?tab=audit" {
			// The verification fragment loads (htmx) and says the log verified.
			if err := chromedp.Do(tctx, chromedp.WaitVisible(chromedp.CSS(`#verification strong`))); err != nil {
				t.Fatalf("verification: %v", err)
			}
			if v := text("#verification"); !strings.Contains(v, "Log verified") {
				t.Errorf("verification: %q", v)
			}
			shot("logs-desktop")
		}
		if p == "/console/devices/dev-erik-x1" {
			shot("device-desktop")
		}
		if p == "/console/users?n=2" {
			// A short page: the pager offers the next page.
			if v := text("nav.pager"); !strings.Contains(v, "Next 2 users") {
				t.Errorf("users pager: %q", v)
			}
			shot("users-desktop")
		}
		check(p)
	}
	// Conditional Access: policies, the diff of the two versions, What-If
	// typed into its form, report-only results.
	for _, p := range []struct{ path, wait, shot string }{
		{"/console/access", "#h-pol", "access-desktop"},
		{"/console/access/diff?from=1&to=2", "#h-diff", "access-diff-desktop"},
		{"/console/access/report-only", "main h1", "access-report-desktop"},
	} {
		if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+p.path), chromedp.WaitVisible(chromedp.CSS(p.wait))); err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		shot(p.shot)
		check(p.path)
	}
	if r := text("main"); !strings.Contains(r, "ro-mfa-web") || !strings.Contains(r, "would have required more") || strings.Contains(r, "would have required more 0") {
		t.Errorf("report-only results: %q", r)
	}
	err = chromedp.Do(tctx,
		chromedp.Navigate(in.URL+"/console/access/whatif"),
		chromedp.WaitVisible(chromedp.ID("wi-user")),
		chromedp.SendKeys(chromedp.ID("wi-user"), "dana"),
		chromedp.SendKeys(chromedp.ID("wi-app"), "native"),
		chromedp.SendKeys(chromedp.ID("wi-ip"), "203.0.113.24"),
		chromedp.Click(chromedp.CSS(`form[action="/console/access/whatif"] button`)),
	)
	if err != nil {
		t.Fatalf("what-if: %v", err)
	}
	if d := waitText(t, tctx, "main", "Blocked by"); !strings.Contains(d, "Blocked by block-native") {
		t.Errorf("what-if for native: %q", d)
	}
	shot("access-whatif-desktop")
	check("what-if")
	// Applications and signing keys: rotate the keys with the button.
	if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+"/console/clients/web"), chromedp.WaitVisible(chromedp.ID("h-reg"))); err != nil {
		t.Fatal(err)
	}
	check("client")
	kid := in.App.Keys.ActiveKID()
	err = chromedp.Do(tctx,
		chromedp.Navigate(in.URL+"/console/keys"), chromedp.WaitVisible(chromedp.CSS(`table.list`)),
		chromedp.Click(chromedp.CSS(`form[action="/console/keys/rotate"] button`)),
	)
	if err != nil {
		t.Fatalf("rotate keys: %v", err)
	}
	if n := waitText(t, tctx, "p.notice", "signing key"); !strings.Contains(n, "signing key") {
		t.Errorf("notice after rotating: %q", n)
	}
	if len(in.App.Keys.Keys()) < 2 || !strings.Contains(text("table.list"), kid) {
		t.Errorf("keys after rotating: %d", len(in.App.Keys.Keys()))
	}
	shot("keys-desktop")
	check("keys")
	// Erik's page; revoke his bearer session with its button.
	erik, sid := ids["erik"], ids["session:erik:web"]
	if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+"/console/users/"+erik), chromedp.WaitVisible(chromedp.ID("h-sessions"))); err != nil {
		t.Fatal(err)
	}
	shot("user-desktop")
	err = chromedp.Do(tctx,
		chromedp.Click(chromedp.CSS(`form[action$="/sessions/`+sid+`/revoke"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`p.notice`)),
	)
	if err != nil {
		t.Fatalf("revoke: %v\n%s", err, tail(in.LogText(), 20))
	}
	if n := text("p.notice"); !strings.Contains(n, "revoked") {
		t.Errorf("notice after revoking: %q", n)
	}
	s, err := in.App.Sessions.Get(context.Background(), sid)
	if err != nil || s.RevokedAt.IsZero() {
		t.Fatalf("erik's session after the click: %+v %v", s, err)
	}
	var byAlice bool
	for _, e := range events(t, in, model.EventSessionRevoked) {
		if e.SessionID == sid && e.Actor == userID(t, in, "alice") {
			byAlice = true
		}
	}
	if !byAlice {
		t.Error("the revocation does not name alice")
	}
	check("revoke")
	// Dismiss erik's detections with a reason typed into the form.
	err = chromedp.Do(tctx,
		chromedp.SendKeys(chromedp.ID("dismiss-reason"), "travel to Reykjavik confirmed by phone"),
		chromedp.Click(chromedp.CSS(`form[action$="/risk/dismiss"] button`)),
	)
	if err != nil {
		t.Fatalf("dismiss: %v", err)
	}
	if n := waitText(t, tctx, "p.notice", "dismissed"); !strings.Contains(n, "dismissed") {
		t.Errorf("notice after dismissing: %q", n)
	}
	var dismissed bool
	for _, e := range events(t, in, model.EventRiskDismissed) {
		dismissed = dismissed || (e.UserID == erik && e.Reason == "travel to Reykjavik confirmed by phone")
	}
	if !dismissed {
		t.Error("no risk.dismissed with the typed reason")
	}
	check("dismiss")
	// Incidents: the list, george's incident; comment, revoke his
	// sessions with the response form, resolve with a reason.
	george := ids["george"]
	incs, err := in.App.Incidents.List(context.Background(), incident.Filter{UserID: george})
	if err != nil || len(incs) != 1 {
		t.Fatalf("george's incidents: %v %v", incs, err)
	}
	inc := incs[0].Name
	if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+"/console/incidents"), chromedp.WaitVisible(chromedp.CSS(`table.list`))); err != nil {
		t.Fatal(err)
	}
	if l := text("table.list"); !strings.Contains(l, inc) || !strings.Contains(l, "Lateral Movement") {
		t.Errorf("incident list: %q", l)
	}
	shot("incidents-desktop")
	check("incidents")
	if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+"/console/incidents/"+inc), chromedp.WaitVisible(chromedp.ID("h-dets"))); err != nil {
		t.Fatal(err)
	}
	shot("incident-desktop")
	// Its investigation graph: the root cause in words, then the SVG with
	// the address the replay came from outlined as the root cause.
	if rc := text("#h-graph ~ p.root-cause"); !strings.Contains(rc, "198.51.100.201") {
		t.Errorf("incident graph's root cause: %q", rc)
	}
	if n, err := chromedp.Run(tctx, chromedp.Evaluate[int](`document.querySelectorAll('#graph-svg g.g-root[data-node="ip:198.51.100.201"]').length`)); err != nil || n != 1 {
		t.Errorf("the attacker's address as root cause in the SVG: %d %v", n, err)
	}
	if buf, err := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS(`section.graph`))); err != nil {
		t.Errorf("screenshot of the graph: %v", err)
	} else if err := os.WriteFile(filepath.Join(shots, "incident-graph-desktop.png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
	check("incident graph")
	err = chromedp.Do(tctx,
		chromedp.SendKeys(chromedp.ID("comment"), "Refresh token replayed from 198.51.100.201; calling george."),
		chromedp.Click(chromedp.CSS(`form[action$="/comment"] button`)),
	)
	if err != nil {
		t.Fatalf("comment: %v", err)
	}
	if n := waitText(t, tctx, "ol.timeline", "calling george"); !strings.Contains(n, "calling george") {
		t.Errorf("timeline after commenting: %q", n)
	}
	check("comment")
	err = chromedp.Do(tctx,
		chromedp.SetValue(chromedp.ID("act-action"), incident.ActionRevokeSessions),
		chromedp.Click(chromedp.CSS(`form[action$="/act"] button`)),
	)
	if err != nil {
		t.Fatalf("response action: %v", err)
	}
	if n := waitText(t, tctx, "#h-result", "Revoke"); !strings.Contains(strings.ToLower(n), "revoke") {
		t.Errorf("outcome heading: %q", n)
	}
	if gs, _ := in.App.Sessions.Get(context.Background(), ids["session:george:web"]); gs == nil || gs.RevokedAt.IsZero() {
		t.Error("george's session is still active after the response action")
	}
	check("act")
	err = chromedp.Do(tctx,
		chromedp.SetValue(chromedp.ID("status"), model.IncidentResolved),
		chromedp.SendKeys(chromedp.ID("status-reason"), "sessions revoked, password reset with george"),
		chromedp.Click(chromedp.CSS(`form[action$="/status"] button`)),
	)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if n := waitText(t, tctx, "p.notice", "status"); !strings.Contains(n, "status") {
		t.Errorf("notice after resolving: %q", n)
	}
	if d, _ := in.App.Incidents.Get(context.Background(), inc); d == nil || d.Status != model.IncidentResolved || d.StatusReason != "sessions revoked, password reset with george" {
		t.Errorf("incident after resolving: %+v", d)
	}
	shot("incident-resolved-desktop")
	check("resolve")
	// Sign out: the Ward session ends.
	if err := chromedp.Do(tctx, chromedp.Click(chromedp.CSS(`form[action="/console/logout"] button`))); err != nil {
		t.Fatalf("sign out: %v", err)
	}
	if h := waitText(t, tctx, "main h1", "Signed out"); h != "Signed out" {
		t.Errorf("after signing out: %q", h)
	}
	var loggedOut bool
	for _, e := range events(t, in, model.EventSessionLoggedOut) {
		loggedOut = loggedOut || e.UserID == userID(t, in, "alice")
	}
	if !loggedOut {
		t.Error("signing out did not end the Ward session")
	}
	check("sign out")
	// Sign in again (the Ward session is over: password and a fresh code).
	code2, err := totp.GenerateCode(wardtest.AliceTOTP, time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(tctx,
		chromedp.Navigate(in.URL+"/console/"),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), wardtest.AlicePassword),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name=otp]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=otp]`), code2),
		chromedp.Submit(chromedp.CSS(`input[name=otp]`)),
		chromedp.WaitVisible(chromedp.CSS(`section.tiles`)),
	)
	if err != nil {
		t.Fatalf("second sign-in: %v", err)
	}
	check("second sign-in")
	// Keyboard: the skip link is the first stop.
	if err := chromedp.Do(tctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	focused, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.activeElement.className`))
	if err != nil {
		t.Fatal(err)
	}
	if focused != "skip" {
		t.Errorf("first Tab stop: %q, want the skip link", focused)
	}
	// Phone width.
	if err := chromedp.Do(tctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(in.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS(`section.tiles`))); err != nil {
		t.Fatal(err)
	}
	shot("dashboard-phone")
	if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+"/console/users/"+erik), chromedp.WaitVisible(chromedp.ID("h-sessions"))); err != nil {
		t.Fatal(err)
	}
	shot("user-phone")
	if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+"/console/incidents/"+inc), chromedp.WaitVisible(chromedp.ID("h-dets"))); err != nil {
		t.Fatal(err)
	}
	shot("incident-phone")
	check("phone")
	// Readable on a phone: nothing makes the page scroll sideways (wide
	// tables scroll in their own box).
	for _, p := range []string{"/console/", "/console/users/" + erik, "/console/devices/dev-erik-x1", "/console/logs", "/console/incidents?status=all", "/console/incidents/" + inc,
		"/console/access", "/console/access/diff?from=1&to=2", "/console/access/whatif?user=dana&app=native", "/console/access/report-only", "/console/clients", "/console/clients/web", "/console/keys"} {
		if err := chromedp.Do(tctx, chromedp.Navigate(in.URL+p), chromedp.WaitVisible(chromedp.CSS(`main h1`))); err != nil {
			t.Fatal(err)
		}
		wide, err := chromedp.Run(tctx, chromedp.Evaluate[string](`(() => {
			const w = document.documentElement.clientWidth;
			if (document.documentElement.scrollWidth <= w) return "";
			return [...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > w + 1 && (!e.closest(".table-wrap") || e.classList.contains("table-wrap")))
				.slice(0, 5).map(e => e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right)).join(", ") || "scrollWidth " + document.documentElement.scrollWidth;
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		if wide != "" {
			t.Errorf("%s is wider than a phone: %s", p, wide)
		}
	}
}

// waitText waits up to 10 s for the text of sel to contain want and
// returns the last text seen.
func waitText(t *testing.T, ctx context.Context, sel, want string) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(`+"`"+sel+"`"+`) || {}).textContent || ""`))
		if err == nil {
			got = strings.TrimSpace(s)
			if strings.Contains(got, want) {
				break
			}
		}
	}
	return got
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
