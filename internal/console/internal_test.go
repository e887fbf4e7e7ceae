package console

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/users/x":             "/console/users/x",
		"/console/logs?tab=audit":      "/console/logs?tab=audit",
		"":                             "/console/",
		"//evil.example/console/":      "/console/",
		"https://evil.example/console": "/console/",
		"/consolex":                    "/console/",
		"/console/\\evil.example":      "/console/",
		"/console/login?next=/x":       "/console/",
		"/console/callback?code=x":     "/console/",
		"/console/x\r\nSet-Cookie: a":  "/console/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNiceMax(t *testing.T) {
	for in, want := range map[int64]int64{0: 4, 1: 4, 4: 4, 5: 8, 9: 12, 23: 40, 40: 40, 41: 80, 99: 120, 101: 120, 1234: 2000} {
		if got := niceMax(in); got != want || got < in {
			t.Errorf("niceMax(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestAllowed(t *testing.T) {
	if Allowed([]string{"reader"}, PermRevokeSessions) || !Allowed([]string{"reader", "helpdesk"}, PermRevokeSessions) ||
		Allowed(nil, PermView) || Allowed([]string{"auditor"}, PermView) || !Allowed([]string{"admin"}, PermManageDevices) {
		t.Error("role permissions")
	}
}

// TestCookiesUnderHTTPS: over HTTPS the console's cookies are __Host-
// prefixed and Secure; the session cookie is SameSite Strict.
func TestCookiesUnderHTTPS(t *testing.T) {
	key := make([]byte, 32)
	for _, tc := range []struct {
		issuer, name string
		secure       bool
	}{{"https://id.example.com", "__Host-ward_console", true}, {"http://127.0.0.1:8700", "ward_console", false}} {
		c, err := New(Deps{Issuer: tc.issuer, CookieKey: key})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		c.setCookie(w, cookieSession, "v", time.Now().Add(time.Hour), http.SameSiteStrictMode)
		ck := w.Result().Cookies()[0]
		if ck.Name != tc.name || ck.Secure != tc.secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" {
			t.Errorf("%s: %+v", tc.issuer, ck)
		}
	}
	if _, err := New(Deps{Issuer: "https://id.example.com", CookieKey: key[:16]}); err == nil {
		t.Error("a short cookie key was accepted")
	}
}

// TestSealer: a sealed cookie opens only under its own name and key.
func TestSealer(t *testing.T) {
	a, _ := newSealer(make([]byte, 32))
	k := make([]byte, 32)
	k[0] = 1
	b, _ := newSealer(k)
	v, err := a.seal("ward_console", sessionCookie{AccessToken: "t", Nonce: "n", Exp: 1})
	if err != nil {
		t.Fatal(err)
	}
	var sc sessionCookie
	if err := a.open("ward_console", v, &sc); err != nil || sc.AccessToken != "t" {
		t.Fatalf("open: %v %+v", err, sc)
	}
	if a.open("ward_console_login", v, &sc) == nil || b.open("ward_console", v, &sc) == nil {
		t.Error("a cookie opened under another name or key")
	}
	if a.csrf("n1", "s") == a.csrf("n2", "s") || a.csrf("n", "s1") == a.csrf("n", "s2") || a.csrf("n", "s") != a.csrf("n", "s") {
		t.Error("CSRF tokens are not bound to the session")
	}
}
