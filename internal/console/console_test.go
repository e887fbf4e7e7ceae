package console_test

import (
	"context"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/console"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Operators of the fixtures: every one signs in with a password and TOTP
// (alice, the global administrator, comes from wardtest).
const opPassword = "correct-horse-battery-C3"

var operators = map[string]string{
	"sofia": model.RoleSecurityOperator,
	"hank":  model.RoleHelpdesk,
	"rita":  model.RoleReader,
	"nora":  "", // no console role
}

func startWard(t *testing.T) *wardtest.Instance {
	t.Helper()
	return startWardOn(t, "", nil)
}

// backends runs f on SQLite and, when WARD_TEST_POSTGRES_DSN is set, on
// PostgreSQL.
func backends(t *testing.T, f func(t *testing.T, in *wardtest.Instance)) {
	t.Run("sqlite", func(t *testing.T) { f(t, startWardOn(t, "", nil)) })
	if dsn := os.Getenv("WARD_TEST_POSTGRES_DSN"); dsn != "" {
		t.Run("postgres", func(t *testing.T) { f(t, startWardOn(t, dsn, nil)) })
	}
}

func startWardOn(t *testing.T, dsn string, configure func(*config.Config)) *wardtest.Instance {
	t.Helper()
	o := wardtest.Options{PostgresDSN: dsn, Configure: func(c *config.Config) {
		if configure != nil {
			configure(c)
		}
		for name, role := range operators {
			su := config.StaticUser{Username: name, Email: name + "@example.com", DisplayName: strings.ToUpper(name[:1]) + name[1:],
				Password: opPassword, TOTPSecret: wardtest.AliceTOTP}
			if role != "" {
				su.Roles = []string{role}
			}
			c.StaticUsers = append(c.StaticUsers, su)
		}
	}}
	return wardtest.Start(t, o)
}

// operator is a browser signed in to the console.
type operator struct {
	t    *testing.T
	in   *wardtest.Instance
	b    *http.Client
	user *model.User
}

func userID(t *testing.T, in *wardtest.Instance, name string) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	return u.ID
}

// signIn drives the console's sign-in through Ward's pages: the console
// redirects to /authorize, the login form, the TOTP form, the callback.
func signIn(t *testing.T, in *wardtest.Instance, name string) *operator {
	t.Helper()
	in.Clock.Advance(31 * time.Second) // a fresh TOTP step: codes are one-time per user
	b := in.Browser()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/users", nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/login?next=") {
		t.Fatalf("signed-out console page: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = wardtest.Do(t, b, http.MethodGet, in.URL+resp.Header.Get("Location"), nil)
	authorize := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(authorize, in.URL+"/authorize?") {
		t.Fatalf("console login: %d %s", resp.StatusCode, authorize)
	}
	pw := opPassword
	if name == "alice" {
		pw = wardtest.AlicePassword
	}
	resp, body := in.TryLogin(t, b, authorize, name, pw, in.TOTP(t, 0))
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(cb, in.URL+"/console/callback?") {
		t.Fatalf("sign-in: %d %s %.300s", resp.StatusCode, cb, body)
	}
	resp, body = wardtest.Do(t, b, http.MethodGet, cb, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/users" {
		t.Fatalf("callback: %d %s %.400s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	u, _ := in.App.Store.GetUserByUsername(context.Background(), name)
	return &operator{t: t, in: in, b: b, user: u}
}

// get fetches a console page.
func (o *operator) get(path string) (*http.Response, string) {
	o.t.Helper()
	return wardtest.Do(o.t, o.b, http.MethodGet, o.in.URL+path, nil)
}

// csrf reads the page's synchronizer token.
func (o *operator) csrf() string {
	o.t.Helper()
	resp, body := o.get("/console/")
	tok := wardtest.HiddenFields(body).Get("csrf")
	if resp.StatusCode != http.StatusOK || tok == "" {
		o.t.Fatalf("dashboard: %d, csrf %q", resp.StatusCode, tok)
	}
	return tok
}

// post sends a form as a console page would (Origin of the console),
// with token as its CSRF token; headers are added as given.
func (o *operator) post(path, token string, hdr map[string]string) (*http.Response, string) {
	o.t.Helper()
	form := url.Values{}
	if token != "" {
		form.Set("csrf", token)
	}
	req, err := http.NewRequest(http.MethodPost, o.in.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", o.in.URL)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := o.b.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// events returns the stored events of type typ.
func events(t *testing.T, in *wardtest.Instance, typ model.EventType) []*audit.Record {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), audit.Query{Types: []model.EventType{typ}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// denied reports whether a console.access_denied with reason was recorded
// for user on path.
func denied(t *testing.T, in *wardtest.Instance, user, reason, path string) bool {
	t.Helper()
	for _, e := range events(t, in, model.EventConsoleAccessDenied) {
		if e.UserID == user && e.Reason == reason && e.Data["path"] == path {
			return true
		}
	}
	return false
}

// userSession signs name in to the "web" client: a session to act on.
func userSession(t *testing.T, in *wardtest.Instance, name, password string) string {
	t.Helper()
	b := in.Browser()
	_, ch := wardtest.PKCE()
	in.Login(t, b, in.AuthorizeURL("web", ch, nil), name, password, "")
	ss, err := in.App.Sessions.List(context.Background(), session.Filter{UserID: userID(t, in, name), ActiveOnly: true})
	if err != nil || len(ss) == 0 {
		t.Fatalf("sessions of %s: %v %v", name, ss, err)
	}
	return ss[0].ID
}

func TestSignIn(t *testing.T) { backends(t, testSignIn) }

func testSignIn(t *testing.T, in *wardtest.Instance) {
	op := signIn(t, in, "alice")
	resp, body := op.get("/console/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<h1>Dashboard</h1>") {
		t.Fatalf("dashboard: %d %.300s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	if strings.Contains(body, " style=") || strings.Contains(body, "<script>") {
		t.Error("the page has an inline style or script")
	}
	// htmx sends the session's CSRF token with every request it makes.
	if tok := wardtest.HiddenFields(body).Get("csrf"); tok == "" || !strings.Contains(body, `hx-headers='{"X-CSRF-Token":"`+tok+`"}'`) {
		t.Errorf("no htmx CSRF header of the session on the page")
	}
	// The cookie: HttpOnly, SameSite=Strict, host-only, whole path.
	var found bool
	for _, c := range op.b.Jar.Cookies(mustURL(t, in.URL+"/console/")) {
		if c.Name == "ward_console" {
			found = true
		}
	}
	if !found {
		t.Fatal("no console cookie")
	}
	evs := events(t, in, model.EventConsoleSignedIn)
	if len(evs) != 1 || evs[0].UserID != op.user.ID || evs[0].ClientID != app.ConsoleClientID || evs[0].Data["roles"] != model.RoleAdmin {
		t.Fatalf("console.signed_in: %+v", evs)
	}
	// The sign-in is Ward's: a token for the console's client, with MFA.
	var issued bool
	for _, e := range events(t, in, model.EventTokenIssued) {
		if e.ClientID == app.ConsoleClientID && e.UserID == op.user.ID {
			issued = true
		}
	}
	if !issued {
		t.Error("no token.issued for the console client")
	}
	for _, p := range []string{"/console/users", "/console/users/" + op.user.ID, "/console/devices", "/console/logs", "/console/logs?tab=audit", "/console/logs/verification"} {
		if resp, body := op.get(p); resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %.300s", p, resp.StatusCode, body)
		}
	}
}

func TestSetCookieAttributes(t *testing.T) {
	in := startWard(t)
	in.Clock.Advance(31 * time.Second)
	b := in.Browser()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/login", nil)
	resp, _ = in.TryLogin(t, b, resp.Header.Get("Location"), "alice", wardtest.AlicePassword, in.TOTP(t, 0))
	resp, _ = wardtest.Do(t, b, http.MethodGet, resp.Header.Get("Location"), nil)
	var sc string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "ward_console=") {
			sc = v
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	if strings.Contains(sc, "Domain=") {
		t.Errorf("Set-Cookie %q names a domain", sc)
	}
	// The cookie holds no readable token.
	if strings.Contains(sc, "eyJ") {
		t.Errorf("the console cookie shows a JWT: %q", sc)
	}
}

func TestSecondFactorRequired(t *testing.T) {
	in := startWard(t)
	// bob has no second factor: Ward asks for one and cannot get it.
	if err := in.App.Identity.SetRoles(context.Background(), "test", userID(t, in, "bob"), []string{model.RoleReader}); err != nil {
		t.Fatal(err)
	}
	b := in.Browser()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/login", nil)
	resp, body := in.TryLogin(t, b, resp.Header.Get("Location"), "bob", wardtest.BobPassword, "")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Access requires more") {
		t.Fatalf("bob without a second factor: %d %.300s", resp.StatusCode, body)
	}
	if resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console after a refused sign-in: %d", resp.StatusCode)
	}
}

func TestNoConsoleRole(t *testing.T) {
	in := startWard(t)
	in.Clock.Advance(31 * time.Second)
	b := in.Browser()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/login", nil)
	resp, _ = in.TryLogin(t, b, resp.Header.Get("Location"), "nora", opPassword, in.TOTP(t, 0))
	resp, body := wardtest.Do(t, b, http.MethodGet, resp.Header.Get("Location"), nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no console role") {
		t.Fatalf("nora: %d %.300s", resp.StatusCode, body)
	}
	if !denied(t, in, userID(t, in, "nora"), "role_missing", "/console/callback") {
		t.Error("no console.access_denied for nora")
	}
	if resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("nora reached the console: %d", resp.StatusCode)
	}
}

// TestRoles: every action as every role; a refused one changes nothing
// and is recorded, an allowed one gets past the check.
func TestRoles(t *testing.T) {
	in := startWard(t)
	bob := userID(t, in, "bob")
	ops := map[string]*operator{"admin": signIn(t, in, "alice")}
	for name, role := range operators {
		if role != "" {
			ops[role] = signIn(t, in, name)
		}
	}
	type action struct {
		name, method, path string
		allowed            []string
	}
	all := []string{model.RoleAdmin, model.RoleSecurityOperator, model.RoleHelpdesk, model.RoleReader}
	actions := []action{
		{"dashboard", "GET", "/console/", all},
		{"users", "GET", "/console/users/" + bob, all},
		{"logs", "GET", "/console/logs", all},
		{"export", "GET", "/console/logs/export?tab=audit", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"revoke", "POST", "/console/users/" + bob + "/sessions/revoke", []string{model.RoleAdmin, model.RoleSecurityOperator, model.RoleHelpdesk}},
		{"unlock", "POST", "/console/users/" + bob + "/unlock", []string{model.RoleAdmin, model.RoleHelpdesk}},
		{"disable", "POST", "/console/users/" + bob + "/disable", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"enable", "POST", "/console/users/" + bob + "/enable", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"device", "POST", "/console/devices/no-such-device/disable", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"device lost", "POST", "/console/devices/no-such-device/lost", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"device enable", "POST", "/console/devices/no-such-device/enable", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"revoke one", "POST", "/console/users/" + bob + "/sessions/no-such-session/revoke", []string{model.RoleAdmin, model.RoleSecurityOperator, model.RoleHelpdesk}},
		{"device page", "GET", "/console/devices", all},
		{"verification", "GET", "/console/logs/verification", all},
		{"password", "POST", "/console/users/" + bob + "/password", []string{model.RoleAdmin, model.RoleHelpdesk}},
		{"dismiss risk", "POST", "/console/users/" + bob + "/risk/dismiss", []string{model.RoleAdmin, model.RoleSecurityOperator}},
		{"confirm compromised", "POST", "/console/users/" + bob + "/risk/confirm-compromised", []string{model.RoleAdmin, model.RoleSecurityOperator}},
	}
	for _, a := range actions {
		for _, role := range all {
			op := ops[role]
			var resp *http.Response
			var body string
			if a.method == "GET" {
				resp, body = op.get(a.path)
			} else {
				resp, body = op.post(a.path, op.csrf(), nil)
			}
			path, _, _ := strings.Cut(a.path, "?")
			if slices.Contains(a.allowed, role) {
				if resp.StatusCode == http.StatusForbidden || resp.StatusCode >= 500 {
					t.Errorf("%s as %s: %d %.200s", a.name, role, resp.StatusCode, body)
				}
				continue
			}
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "roles do not allow") {
				t.Errorf("%s as %s: %d, want 403; %.200s", a.name, role, resp.StatusCode, body)
			}
			if !denied(t, in, op.user.ID, "role_missing", path) {
				t.Errorf("%s as %s: no console.access_denied", a.name, role)
			}
		}
	}
	// The reader's page offers no action at all.
	_, body := ops[model.RoleReader].get("/console/users/" + bob)
	for _, action := range []string{"/sessions/revoke", "/disable", "/password", "/risk/"} {
		if strings.Contains(body, action) {
			t.Errorf("the reader's user page offers %s", action)
		}
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	in := startWard(t)
	bob := userID(t, in, "bob")
	alice, sofia := signIn(t, in, "alice"), signIn(t, in, "sofia")
	path := "/console/users/" + bob + "/disable"
	tests := []struct {
		name   string
		token  string
		hdr    map[string]string
		reason string
	}{
		{"no token", "", nil, "csrf_invalid"},
		{"wrong token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", nil, "csrf_invalid"},
		{"another operator's token", sofia.csrf(), nil, "csrf_invalid"},
		{"token in a header of another session", "", map[string]string{"X-CSRF-Token": sofia.csrf()}, "csrf_invalid"},
		{"cross-origin", alice.csrf(), map[string]string{"Origin": "https://evil.example"}, "origin_invalid"},
		{"origin null", alice.csrf(), map[string]string{"Origin": "null"}, "origin_invalid"},
		{"no origin, cross-site fetch", alice.csrf(), map[string]string{"Origin": "", "Sec-Fetch-Site": "cross-site"}, "origin_invalid"},
		{"no origin at all", alice.csrf(), map[string]string{"Origin": ""}, "origin_invalid"},
	}
	for _, tc := range tests {
		resp, body := alice.post(path, tc.token, tc.hdr)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403; %.200s", tc.name, resp.StatusCode, body)
		}
		if !denied(t, in, alice.user.ID, tc.reason, path) {
			t.Errorf("%s: no console.access_denied %s", tc.name, tc.reason)
		}
	}
	if u, _ := in.App.Identity.GetUser(context.Background(), bob); u.Disabled {
		t.Fatal("a refused request disabled bob")
	}
	// The right token from the console's origin works, as a form field,
	// as htmx's header, and with Sec-Fetch-Site alone.
	if resp, body := alice.post(path, alice.csrf(), nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("disable: %d %.300s", resp.StatusCode, body)
	}
	if resp, body := alice.post("/console/users/"+bob+"/enable", "", map[string]string{"X-CSRF-Token": alice.csrf(), "Origin": "", "Sec-Fetch-Site": "same-origin"}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("enable with the header: %d %.300s", resp.StatusCode, body)
	}
	// A GET changes nothing: the action routes take POST only.
	if resp, _ := alice.get(path); resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s: %d", path, resp.StatusCode)
	}
}

// TestRevokedSession: the console session ends with its Ward session, at
// the next request, whoever ended it; a copied cookie is no better.
func TestRevokedSession(t *testing.T) { backends(t, testRevokedSession) }

func testRevokedSession(t *testing.T, in *wardtest.Instance) {
	op := signIn(t, in, "sofia")
	token := op.csrf()
	stolen := in.Browser()
	stolen.Jar.SetCookies(mustURL(t, in.URL+"/"), op.b.Jar.Cookies(mustURL(t, in.URL+"/")))
	if resp, _ := wardtest.Do(t, stolen, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("copied cookie before the revocation: %d", resp.StatusCode)
	}
	if _, err := in.App.Sessions.RevokeUser(context.Background(), "admin-x", op.user.ID, model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}
	resp, _ := op.get("/console/users")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/login") {
		t.Fatalf("after revocation: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if !denied(t, in, op.user.ID, "session_ended", "/console/users") {
		t.Error("no console.access_denied session_ended")
	}
	// The copied cookie (the cleared one is gone from op's jar) changes
	// nothing either.
	stolenOp := &operator{t: t, in: in, b: stolen, user: op.user}
	resp, body := stolenOp.post("/console/users/"+userID(t, in, "bob")+"/disable", token, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("action with a revoked session's cookie: %d %.200s", resp.StatusCode, body)
	}
	if u, _ := in.App.Identity.GetUser(context.Background(), userID(t, in, "bob")); u.Disabled {
		t.Fatal("a revoked session disabled bob")
	}
	// Signing in again goes through the login page: the SSO session is over.
	resp, _ = wardtest.Do(t, op.b, http.MethodGet, in.URL+"/console/login", nil)
	resp, body = wardtest.Do(t, op.b, http.MethodGet, resp.Header.Get("Location"), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="password"`) {
		t.Fatalf("sign-in after revocation: %d, want the login page", resp.StatusCode)
	}
}

// TestAccountChanges: a disabled operator or a removed role loses the
// console at the next request.
func TestAccountChanges(t *testing.T) {
	in := startWard(t)
	ctx := context.Background()
	hank, rita := signIn(t, in, "hank"), signIn(t, in, "rita")
	if err := in.App.Identity.SetRoles(ctx, "test", rita.user.ID, nil); err != nil {
		t.Fatal(err)
	}
	if resp, _ := rita.get("/console/"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("reader without her role: %d", resp.StatusCode)
	}
	if err := in.App.Identity.SetDisabled(ctx, "test", hank.user.ID, true); err != nil {
		t.Fatal(err)
	}
	if resp, _ := hank.get("/console/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("disabled helpdesk: %d", resp.StatusCode)
	}
}

func TestTamperedCookie(t *testing.T) {
	in := startWard(t)
	op := signIn(t, in, "alice")
	u := mustURL(t, in.URL+"/")
	for _, c := range op.b.Jar.Cookies(u) {
		if c.Name == "ward_console" {
			v := []byte(c.Value)
			v[len(v)/2] ^= 1
			c.Value = string(v)
			op.b.Jar.SetCookies(u, []*http.Cookie{c})
		}
	}
	resp, _ := op.get("/console/")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("tampered cookie: %d", resp.StatusCode)
	}
	var recorded bool
	for _, e := range events(t, in, model.EventConsoleAccessDenied) {
		if e.Reason == "cookie_invalid" {
			recorded = true
		}
	}
	if !recorded {
		t.Error("no console.access_denied cookie_invalid")
	}
}

// TestActionsAudited: what an operator does is recorded by the services
// with the operator as actor, and takes effect.
func TestActionsAudited(t *testing.T) { backends(t, testActionsAudited) }

func testActionsAudited(t *testing.T, in *wardtest.Instance) {
	ctx := context.Background()
	bob := userID(t, in, "bob")
	sid := userSession(t, in, "bob", wardtest.BobPassword)
	op := signIn(t, in, "sofia")
	resp, body := op.get("/console/users/" + bob)
	if err := in.App.Identity.AddMember(ctx, "test", mustGroup(t, in, "finance"), bob); err != nil {
		t.Fatal(err)
	}
	resp, body = op.get("/console/users/" + bob)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "/sessions/"+sid+"/revoke") || !strings.Contains(body, "Not bound") ||
		!strings.Contains(body, "<dd>finance</dd>") {
		t.Fatalf("bob's page: %d %.500s", resp.StatusCode, body)
	}
	resp, _ = op.post("/console/users/"+bob+"/sessions/"+sid+"/revoke", op.csrf(), nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/users/"+bob+"?done=revoked" {
		t.Fatalf("revoke: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	s, _ := in.App.Sessions.Get(ctx, sid)
	if s.RevokedAt.IsZero() || s.RevokeCause != string(model.CauseAdminRevoked) {
		t.Fatalf("session after revoke: %+v", s)
	}
	var rec bool
	for _, e := range events(t, in, model.EventSessionRevoked) {
		if e.SessionID == sid && e.Actor == op.user.ID {
			rec = true
		}
	}
	if !rec {
		t.Error("session.revoked does not name the operator")
	}
	// A session of another user is not bob's.
	ss, _ := in.App.Sessions.List(ctx, session.Filter{UserID: op.user.ID})
	other := ss[0].ID
	if resp, _ := op.post("/console/users/"+bob+"/sessions/"+other+"/revoke", op.csrf(), nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("revoking alice's session under bob: %d", resp.StatusCode)
	}
	if resp, _ := op.post("/console/users/"+bob+"/disable", op.csrf(), nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("disable: %d", resp.StatusCode)
	}
	var dis bool
	for _, e := range events(t, in, model.EventUserDisabled) {
		if e.UserID == bob && e.Actor == op.user.ID {
			dis = true
		}
	}
	if !dis {
		t.Error("user.disabled does not name the operator")
	}
	// An operator cannot disable herself.
	if resp, _ := op.post("/console/users/"+op.user.ID+"/disable", op.csrf(), nil); resp.StatusCode != http.StatusConflict {
		t.Errorf("self-disable: %d", resp.StatusCode)
	}
	// The helpdesk resets a password: shown once, never logged.
	hank := signIn(t, in, "hank")
	resp, body = hank.post("/console/users/"+bob+"/password", hank.csrf(), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "shown once") {
		t.Fatalf("reset: %d %.300s", resp.StatusCode, body)
	}
	i := strings.Index(body, `<code class="big">`)
	pw := body[i+len(`<code class="big">`) : i+len(`<code class="big">`)+20]
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Error("the page with the password may be cached")
	}
	if strings.Contains(in.LogText(), pw) {
		t.Error("the temporary password is in the log")
	}
}

func TestExport(t *testing.T) { backends(t, testExport) }

func testExport(t *testing.T, in *wardtest.Instance) {
	userSession(t, in, "bob", wardtest.BobPassword)
	op := signIn(t, in, "sofia")
	resp, body := op.get("/console/logs/export?tab=signins&user=bob")
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("export: %d %v", resp.StatusCode, resp.Header)
	}
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"signin.succeeded"`) {
		t.Fatalf("export of bob's sign-ins: %q", body)
	}
	evs := events(t, in, model.EventConsoleLogsExported)
	if len(evs) != 1 || evs[0].Actor != op.user.ID || evs[0].Data["count"] != "1" {
		t.Fatalf("console.logs_exported: %+v", evs)
	}
	// The logs page filters by user, result and IP.
	_, body = op.get("/console/logs?tab=signins&user=bob&result=failure")
	if !strings.Contains(body, "Nothing matches") {
		t.Errorf("bob has no failed sign-in: %.300s", body)
	}
	_, body = op.get("/console/logs?tab=signins&ip=not-an-ip")
	if !strings.Contains(body, "not an address") {
		t.Error("a bad IP filter is not reported")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestBrowserBinding: once the Ward session is bound to the browser's key
// (DBSC), the console cookie alone no longer works: the bound cookie that
// only that browser can renew must come with it.
func TestBrowserBinding(t *testing.T) {
	in := startWard(t)
	ctx := context.Background()
	op := signIn(t, in, "sofia")
	ss, err := in.App.Sessions.List(ctx, session.Filter{UserID: op.user.ID, ActiveOnly: true})
	if err != nil || len(ss) != 1 {
		t.Fatalf("sessions: %v %v", ss, err)
	}
	if resp, _ := op.get("/console/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before binding: %d", resp.StatusCode)
	}
	jwk := []byte(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`)
	if err := in.App.Store.BindSessionKey(ctx, ss[0].ID, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", jwk); err != nil {
		t.Fatal(err)
	}
	resp, _ := op.get("/console/")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bound session without its bound cookie: %d", resp.StatusCode)
	}
	if !denied(t, in, op.user.ID, "browser_binding", "/console/") {
		t.Error("no console.access_denied browser_binding")
	}
}

// TestLoginState: a callback needs the state of this browser's own
// sign-in; a code injected into another browser's callback is refused.
func TestLoginState(t *testing.T) {
	in := startWard(t)
	in.Clock.Advance(31 * time.Second)
	attacker := in.Browser()
	resp, _ := wardtest.Do(t, attacker, http.MethodGet, in.URL+"/console/login", nil)
	resp, _ = in.TryLogin(t, attacker, resp.Header.Get("Location"), "sofia", opPassword, in.TOTP(t, 0))
	cb := resp.Header.Get("Location")
	victim := in.Browser()
	if resp, _ := wardtest.Do(t, victim, http.MethodGet, in.URL+"/console/login", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatal(resp.StatusCode)
	}
	resp, body := wardtest.Do(t, victim, http.MethodGet, cb, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not started here") {
		t.Fatalf("injected callback: %d %.200s", resp.StatusCode, body)
	}
	if resp, _ := wardtest.Do(t, victim, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the victim is signed in as the attacker: %d", resp.StatusCode)
	}
	// Open redirects: next stays in the console.
	for _, next := range []string{"//evil.example/x", "https://evil.example/", "/console/../x", "/consolex", "/console/\\evil"} {
		b := in.Browser()
		resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/login?next="+url.QueryEscape(next), nil)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login: %d", resp.StatusCode)
		}
	}
}

// TestDisabled: console.disabled leaves no console and no client.
func TestDisabled(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) { c.Console.Disabled = true }})
	resp, _ := wardtest.Do(t, in.Browser(), http.MethodGet, in.URL+"/console/", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/console/ with the console disabled: %d", resp.StatusCode)
	}
	if _, err := in.App.Clients.Get(context.Background(), app.ConsoleClientID); err == nil {
		t.Error("the console's client exists with the console disabled")
	}
}

// TestNoSecretsLogged: the console's session cookie, its client secret
// and the tokens behind them reach no log line and no stored column.
func TestNoSecretsLogged(t *testing.T) {
	in := startWard(t)
	op := signIn(t, in, "alice")
	op.get("/console/users/" + op.user.ID)
	var cookie string
	for _, c := range op.b.Jar.Cookies(mustURL(t, in.URL+"/")) {
		if c.Name == "ward_console" {
			cookie = c.Value
		}
	}
	sec := in.App.ConsoleClientSecret().Reveal()
	if cookie == "" || len(sec) < 40 {
		t.Fatalf("cookie %q, secret length %d", cookie, len(sec))
	}
	db, err := os.ReadFile(in.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	if wal, err := os.ReadFile(in.DBPath + "-wal"); err == nil {
		db = append(db, wal...) // what is not checkpointed yet
	}
	logs := in.LogText()
	for name, v := range map[string]string{"console cookie": cookie, "client secret": sec} {
		if strings.Contains(logs, v) {
			t.Errorf("the %s is in the log", name)
		}
		if strings.Contains(string(db), v) {
			t.Errorf("the %s is in the database", name)
		}
	}
	if strings.Contains(logs, "eyJ") {
		t.Error("a JWT is in the log")
	}
}

// TestRiskDecisions: security operators dismiss detections and confirm a
// compromise, with a reason, recorded with their id; helpdesk and readers
// cannot.
func TestRiskDecisions(t *testing.T) {
	in := startWard(t)
	ctx := context.Background()
	bob := userID(t, in, "bob")
	sid := userSession(t, in, "bob", wardtest.BobPassword)
	if err := in.App.Risk.SetUserLevel(ctx, "detector-test", bob, "medium", "unfamiliar sign-in properties"); err != nil {
		t.Fatal(err)
	}
	sofia, hank := signIn(t, in, "sofia"), signIn(t, in, "hank")
	post := func(op *operator, path, reason string) (*http.Response, string) {
		form := url.Values{"csrf": {op.csrf()}, "reason": {reason}}
		req, _ := http.NewRequest(http.MethodPost, in.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", in.URL)
		resp, err := op.b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	dismiss, confirm := "/console/users/"+bob+"/risk/dismiss", "/console/users/"+bob+"/risk/confirm-compromised"
	if resp, _ := post(hank, dismiss, "helpdesk says so"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("helpdesk dismissing: %d", resp.StatusCode)
	}
	if resp, _ := post(sofia, dismiss, ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("dismiss without a reason: %d", resp.StatusCode)
	}
	if resp, _ := post(sofia, dismiss, "line one\nline two"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("dismiss with a two-line reason: %d", resp.StatusCode)
	}
	if resp, body := post(sofia, dismiss, "travel confirmed by phone"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("dismiss: %d %.300s", resp.StatusCode, body)
	}
	if u, _ := in.App.Identity.GetUser(ctx, bob); u.RiskLevel != "none" && u.RiskLevel != "" {
		t.Errorf("risk after dismissal: %q", u.RiskLevel)
	}
	var dismissed bool
	for _, e := range events(t, in, model.EventRiskDismissed) {
		dismissed = dismissed || (e.UserID == bob && e.Actor == sofia.user.ID && e.Reason == "travel confirmed by phone")
	}
	if !dismissed {
		t.Error("risk.dismissed does not name the operator and the reason")
	}
	if resp, _ := post(sofia, dismiss, "again"); resp.StatusCode != http.StatusConflict {
		t.Errorf("dismissing nothing: %d", resp.StatusCode)
	}
	if resp, _ := post(hank, confirm, "helpdesk"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("helpdesk confirming: %d", resp.StatusCode)
	}
	if resp, body := post(sofia, confirm, "replay from AS64500 confirmed"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("confirm: %d %.300s", resp.StatusCode, body)
	}
	if s, _ := in.App.Sessions.Get(ctx, sid); s.RevokedAt.IsZero() {
		t.Error("bob's session survived the confirmed compromise")
	}
	var confirmed bool
	for _, e := range events(t, in, model.EventRiskCompromiseConfirmed) {
		confirmed = confirmed || (e.UserID == bob && e.Actor == sofia.user.ID)
	}
	if !confirmed {
		t.Error("risk.compromise_confirmed does not name the operator")
	}
	// A detection of another user cannot be dismissed under bob.
	form := url.Values{"csrf": {sofia.csrf()}, "reason": {"x"}, "detection": {"det-of-someone-else"}}
	req, _ := http.NewRequest(http.MethodPost, in.URL+dismiss, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", in.URL)
	resp, err := sofia.b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("dismissing a detection bob does not have: %d", resp.StatusCode)
	}
}

// TestAddPage: a page another part of Ward adds gets the console's
// sign-in, roles and layout, and a place in the navigation.
func TestAddPage(t *testing.T) {
	in := startWard(t)
	in.Server.Console.AddPage(console.Page{Path: "/hunting", Title: "Hunting", Permission: console.PermManageRisk,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			op := console.OperatorOf(r.Context())
			in.Server.Console.Render(w, r, "Hunting", template.HTML("<h1>Hunting</h1><p>for "+template.HTMLEscapeString(op.User.Username)+"</p>"))
		})})
	if resp, _ := wardtest.Do(t, in.Browser(), http.MethodGet, in.URL+"/console/hunting", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("signed out: %d", resp.StatusCode)
	}
	sofia, rita := signIn(t, in, "sofia"), signIn(t, in, "rita")
	resp, body := sofia.get("/console/hunting")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<p>for sofia</p>") || !strings.Contains(body, `href="/console/hunting" aria-current="page"`) {
		t.Fatalf("security operator: %d %.600s", resp.StatusCode, body)
	}
	if resp, _ := rita.get("/console/hunting"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("reader: %d", resp.StatusCode)
	}
	if _, body := rita.get("/console/"); strings.Contains(body, "/console/hunting") {
		t.Error("the reader's navigation lists a page she may not open")
	}
}

// TestConditionalAccess: the console is an application like any other: a
// policy that blocks it refuses the sign-in, and the sign-in log says so.
func TestConditionalAccess(t *testing.T) {
	in := startWard(t)
	d, err := policy.DecodeYAML([]byte(`
policies:
  - id: block-console
    name: Console blocked
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [ward-console]}
    grant: {block: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), d, access.ApplyOptions{Actor: "test", ExpectVersion: access.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	in.Clock.Advance(31 * time.Second)
	b := in.Browser()
	resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/login", nil)
	resp, body := in.TryLogin(t, b, resp.Header.Get("Location"), "sofia", opPassword, in.TOTP(t, 0))
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(cb, "error=access_denied") {
		t.Fatalf("blocked sign-in: %d %s %.200s", resp.StatusCode, cb, body)
	}
	resp, body = wardtest.Do(t, b, http.MethodGet, cb, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Conditional Access") {
		t.Fatalf("console after the block: %d %.300s", resp.StatusCode, body)
	}
	if resp, _ := wardtest.Do(t, b, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("console reachable after a blocked sign-in: %d", resp.StatusCode)
	}
	var logged bool
	for _, e := range events(t, in, model.EventSignInFailed) {
		logged = logged || (e.ClientID == app.ConsoleClientID && e.UserID == userID(t, in, "sofia"))
	}
	if !logged {
		t.Error("the blocked console sign-in is not in the sign-in log")
	}
}

// TestHomeLinksConsole: Ward's home page leads to the console.
func TestHomeLinksConsole(t *testing.T) {
	in := startWard(t)
	resp, body := wardtest.Do(t, in.Browser(), http.MethodGet, in.URL+"/", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `href="/console/"`) {
		t.Errorf("home: %d %.300s", resp.StatusCode, body)
	}
}

// TestRestart: the console session lives in the browser and in the
// database, not in the process: it survives a restart, and so does its
// revocation.
func TestRestart(t *testing.T) {
	in := startWard(t)
	op := signIn(t, in, "sofia")
	in = in.Restart(t)
	op.in = in
	if resp, _ := op.get("/console/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a restart: %d", resp.StatusCode)
	}
	if _, err := in.App.Sessions.RevokeUser(context.Background(), "admin-x", op.user.ID, model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}
	in = in.Restart(t)
	op.in = in
	if resp, _ := op.get("/console/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoked, after a restart: %d", resp.StatusCode)
	}
}

// TestConcurrentRevocations: operators revoking one session at once
// revoke it once, recorded once.
func TestConcurrentRevocations(t *testing.T) {
	in := startWard(t)
	bob := userID(t, in, "bob")
	sid := userSession(t, in, "bob", wardtest.BobPassword)
	ops := []*operator{signIn(t, in, "alice"), signIn(t, in, "sofia"), signIn(t, in, "hank")}
	tokens := make([]string, len(ops))
	for i, op := range ops {
		tokens[i] = op.csrf()
	}
	var wg sync.WaitGroup
	codes := make(chan int, 3*len(ops))
	for i := 0; i < 3*len(ops); i++ {
		op, tok := ops[i%len(ops)], tokens[i%len(ops)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := op.post("/console/users/"+bob+"/sessions/"+sid+"/revoke", tok, nil)
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusSeeOther {
			t.Errorf("concurrent revoke: %d", c)
		}
	}
	n := 0
	for _, e := range events(t, in, model.EventSessionRevoked) {
		if e.SessionID == sid {
			n++
		}
	}
	if n != 1 {
		t.Errorf("session.revoked recorded %d times, want once", n)
	}
}

// TestHTMXSignInAgain: an htmx request of an ended session is told to
// leave the page for the sign-in (HX-Redirect), not given the login page
// to swap in.
func TestHTMXSignInAgain(t *testing.T) {
	in := startWard(t)
	op := signIn(t, in, "rita")
	if _, err := in.App.Sessions.RevokeUser(context.Background(), "admin-x", op.user.ID, model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, in.URL+"/console/users", nil)
	req.Header.Set("HX-Request", "true")
	resp, err := op.b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("HX-Redirect"), "/console/login") {
		t.Fatalf("htmx request of a revoked session: %d %q", resp.StatusCode, resp.Header.Get("HX-Redirect"))
	}
}

// TestStrictLocation: a Conditional Access strict-location control on the
// console holds on every console request, not only at sign-in: the same
// cookie from outside the trusted networks is refused at once.
func TestStrictLocation(t *testing.T) {
	in := startWardOn(t, "", func(c *config.Config) { c.TrustedProxies = []string{"127.0.0.0/8"} })
	d, err := policy.DecodeYAML([]byte(`
locations:
  - id: corp
    name: Corporate networks
    trusted: true
    ip_ranges: [203.0.113.0/24]
policies:
  - id: console-strict-location
    name: Console only from trusted networks
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [ward-console]}
    session: {strict_location: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Access.Apply(context.Background(), d, access.ApplyOptions{Actor: "test", ExpectVersion: access.AnyVersion}); err != nil {
		t.Fatal(err)
	}
	// The operator's browser is in the office (a proxy in front of Ward
	// says so).
	office := in.Browser()
	office.Transport = headerTransport{"X-Forwarded-For": "203.0.113.40"}
	in.Clock.Advance(31 * time.Second)
	resp, _ := wardtest.Do(t, office, http.MethodGet, in.URL+"/console/login", nil)
	resp, body := in.TryLogin(t, office, resp.Header.Get("Location"), "sofia", opPassword, in.TOTP(t, 0))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %.200s", resp.StatusCode, body)
	}
	if resp, body = wardtest.Do(t, office, http.MethodGet, resp.Header.Get("Location"), nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %.300s", resp.StatusCode, body)
	}
	if resp, _ := wardtest.Do(t, office, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("from the office: %d", resp.StatusCode)
	}
	// The same cookie from elsewhere.
	away := &http.Client{Jar: office.Jar, CheckRedirect: office.CheckRedirect, Transport: headerTransport{"X-Forwarded-For": "198.51.100.9"}}
	if resp, _ := wardtest.Do(t, away, http.MethodGet, in.URL+"/console/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("from outside the trusted networks: %d", resp.StatusCode)
	}
	if !denied(t, in, userID(t, in, "sofia"), "strict_location", "/console/") {
		t.Error("no console.access_denied strict_location")
	}
}

// headerTransport adds headers to every request.
type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func mustGroup(t *testing.T, in *wardtest.Instance, name string) string {
	t.Helper()
	g, err := in.App.Identity.CreateGroup(context.Background(), "test", name)
	if err != nil {
		t.Fatal(err)
	}
	return g.ID
}
