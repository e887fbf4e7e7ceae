package interop

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestBrowserSignIn drives the sign-in pages in a real browser (Debian's
// Chromium through playwright-core): password, TOTP, redirect to the
// client, SSO, cookies and CSP (browser.mjs).
func TestBrowserSignIn(t *testing.T) {
	node := requireNode(t)
	chromium := os.Getenv("WARD_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(chromium); err != nil {
		const fix = "apt-get install -y chromium"
		if os.Getenv("CI") != "" {
			t.Fatalf("Chromium not found at %s; CI must run the browser tests; %s", chromium, fix)
		}
		t.Skipf("Chromium not found at %s; %s", chromium, fix)
	}
	// The client's redirect URI is a real page on 127.0.0.1, as a web app's
	// callback would be.
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<!doctype html><title>client</title><p>client callback</p>"))
	}))
	defer callback.Close()
	redirect := callback.URL + "/callback"
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "browser-app", Name: "Browser App", AuthMethod: "client_secret_basic",
			Secret: wardtest.WebSecret, RedirectURIs: []string{redirect}, GrantTypes: []string{"authorization_code"}, Scopes: []string{"openid", "profile"}})
	}})
	shots := os.Getenv("WARD_SCREENSHOT_DIR") // keep the screenshots there; default: a temp dir
	if shots == "" {
		shots = t.TempDir()
	}
	env := []string{
		"WARD_ISSUER=" + in.URL,
		"WARD_CLIENT_ID=browser-app",
		"WARD_CLIENT_SECRET=" + wardtest.WebSecret,
		"WARD_REDIRECT_URI=" + redirect,
		"WARD_USERNAME=alice",
		"WARD_PASSWORD=" + wardtest.AlicePassword,
		"WARD_TOTP_SECRET=" + wardtest.AliceTOTP,
		"WARD_CHROMIUM=" + chromium,
		"WARD_SCREENSHOT_DIR=" + shots,
	}
	if !runNode(t, node, "browser.mjs", env) {
		logTail(t, in.LogText(), 40)
	}
	if _, err := os.Stat(shots + "/login.png"); err != nil {
		t.Errorf("no screenshot of the login page: %v", err)
	}
}
