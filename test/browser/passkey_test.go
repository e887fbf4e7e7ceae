package browser

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

func chromiumPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WARD_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(p); err != nil {
		const fix = "apt-get install -y chromium"
		if os.Getenv("CI") != "" {
			t.Fatalf("Chromium not found at %s; CI must run the browser tests; %s", p, fix)
		}
		t.Skipf("Chromium not found at %s; %s", p, fix)
	}
	return p
}

// TestPasskeyInChromium enrols a passkey in "My account" and signs in
// with it, usernameless, through the real pages in headless Chromium
// with the DevTools virtual authenticator (CTAP2, resident keys, user
// verification): the page's script runs the ceremonies under the pages'
// CSP, and no CSP violation is reported.
func TestPasskeyInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>client</title><p id=cb>client callback</p>")
	}))
	defer callback.Close()
	redirect := callback.URL + "/callback"
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		// localhost: an origin browsers allow WebAuthn on.
		c.Issuer = strings.Replace(c.Issuer, "127.0.0.1", "localhost", 1)
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "browser-app", Name: "Browser App", AuthMethod: "client_secret_basic",
			Secret: wardtest.WebSecret, RedirectURIs: []string{redirect}, GrantTypes: []string{"authorization_code"}, Scopes: []string{"openid", "profile"}})
	}})
	shots := os.Getenv("WARD_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(900, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// Start the browser (no timeout on the first run: it would stop it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	var mu sync.Mutex
	var console []string
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m.String())
			mu.Unlock()
		}
	}()
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(ctx, 30*time.Second)
		defer c()
		if err := chromedp.Do(sctx, actions...); err != nil {
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			body, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
			t.Fatalf("%s: %v (at %s)\n%.1500s\nward log:\n%s", name, err, loc, body, tail(in.LogText(), 30))
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The virtual authenticator: a platform authenticator with resident
	// keys and user verification (a PIN or biometric that succeeds).
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	va, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
	}})
	if err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}

	authorize := func() string {
		_, challenge := wardtest.PKCE()
		u, _ := url.Parse(in.URL + "/authorize")
		u.RawQuery = url.Values{"response_type": {"code"}, "client_id": {"browser-app"}, "redirect_uri": {redirect}, "scope": {"openid profile"},
			"state": {"s1"}, "nonce": {"n1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}.Encode()
		return u.String()
	}

	// 1. Password + TOTP (no JavaScript needed), to get a session.
	code, _ := totp.GenerateCode(wardtest.AliceTOTP, time.Now())
	step("password sign-in",
		chromedp.Navigate(authorize()),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), wardtest.AlicePassword),
		chromedp.Click(chromedp.CSS(`form[action="/login"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#otp")),
		chromedp.SendKeys(chromedp.CSS("#otp"), code),
		chromedp.Click(chromedp.CSS(`form[action="/login/mfa"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#cb")),
	)

	// 2. "My account": add a passkey.
	step("enrol",
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible(chromedp.CSS(`form[data-webauthn=create] #pk-name-passkey`)),
		chromedp.SendKeys(chromedp.CSS(`#pk-name-passkey`), "Chromium"),
		chromedp.Click(chromedp.CSS(`form[data-webauthn=create] button`)),
		chromedp.WaitVisible(chromedp.CSS(`p.warning[role=status]`)),
	)
	if notice, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p.warning[role=status]`))); err != nil || notice != "Added Chromium." {
		t.Fatalf("account notice %q, %v", notice, err)
	}
	shot("account.png")

	// Rename it: the page's own form (no script), the new name shown.
	step("rename",
		chromedp.Click(chromedp.CSS(`details.rename summary`)),
		chromedp.WaitVisible(chromedp.CSS(`details.rename input[name=name]`)),
		chromedp.Clear(chromedp.CSS(`details.rename input[name=name]`)),
		chromedp.SendKeys(chromedp.CSS(`details.rename input[name=name]`), "Chromium on the desk"),
		chromedp.Click(chromedp.CSS(`details.rename button[type=submit]`)),
	)
	// The page before the post shows "Added Chromium." in the same element,
	// so wait for the reloaded page's notice (reads fail while it navigates).
	notice, deadline := "", time.Now().Add(15*time.Second)
	for notice != "Renamed to Chromium on the desk." && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		rctx, c := context.WithTimeout(ctx, 2*time.Second)
		notice, _ = chromedp.Run(rctx, chromedp.Text(chromedp.CSS(`p.warning[role=status]`)))
		c()
	}
	if notice != "Renamed to Chromium on the desk." {
		t.Fatalf("rename notice %q", notice)
	}
	step("rename form open", chromedp.Click(chromedp.CSS(`details.rename summary`)))
	shot("account-rename.png")
	creds, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: va.AuthenticatorID})
	if err != nil || len(creds.Credentials) != 1 || !creds.Credentials[0].IsResidentCredential || creds.Credentials[0].RpID != "localhost" {
		t.Fatalf("virtual authenticator credentials: %v %+v", err, creds)
	}
	stored, err := in.App.Identity.ListPasskeys(context.Background(), aliceID(t, in))
	if err != nil || len(stored) != 1 || stored[0].Name != "Chromium on the desk" || !stored[0].Discoverable ||
		base64.RawURLEncoding.EncodeToString(stored[0].CredentialID) != base64.RawURLEncoding.EncodeToString(creds.Credentials[0].CredentialID) {
		t.Fatalf("stored passkeys: %v %+v", err, stored)
	}

	// 3. Signed out (a fresh browser state): usernameless passkey sign-in.
	if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, struct{}{}); err != nil {
		t.Fatalf("clear cookies: %v", err)
	}
	step("passkey page",
		chromedp.Navigate(authorize()),
		chromedp.WaitVisible(chromedp.CSS(`form[data-webauthn=get] button`)),
	)
	shot("passkey-signin.png")
	step("passkey sign-in",
		chromedp.Click(chromedp.CSS(`form[data-webauthn=get] button`)),
		chromedp.WaitVisible(chromedp.CSS("#cb")),
	)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.Parse(loc); u.Query().Get("code") == "" || u.Query().Get("state") != "s1" {
		t.Fatalf("back at the client without a code: %s", loc)
	}
	creds, _ = chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: va.AuthenticatorID})
	stored, _ = in.App.Identity.ListPasskeys(context.Background(), aliceID(t, in))
	if len(creds.Credentials) != 1 || len(stored) != 1 || stored[0].SignCount != uint32(creds.Credentials[0].SignCount) || stored[0].LastUsedAt.IsZero() {
		t.Errorf("counter: stored %+v, authenticator %+v", stored, creds.Credentials)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, m := range console {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Refused to") {
			t.Errorf("CSP violation: %s", m)
		}
	}
}

func aliceID(t *testing.T, in *wardtest.Instance) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
